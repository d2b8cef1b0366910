"""Chunking: any engine over an arbitrarily large batch with bounded memory.

The default chunk size keeps an engine's intermediate tensors near `MEMORY_BUDGET_BYTES`. Estimate per sample:
every engine here carries at most (1 + max(n_in, n_out)) copies (primal plus tangents or cotangents) of the
model's activations; a layer's activations are about the larger side of its weight (a Linear's width, a KAN
layer's in x basis size); a factor 4 covers temporaries (pre-activations, derivatives, saved tensors).
Forum MLP (4 -> 100x4 -> 4, float32): 4 x 5 x 500 floats x 4 bytes = 40 KB a sample, 6553 samples a chunk.
Only the inputs and the output J (B, n_out, n_in) grow with the batch: 1e7 samples of a 4x4 Jacobian in float32
are 0.8 GB.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from bench.engines import coupling

MEMORY_BUDGET_BYTES = 256 * 2**20  # intermediate tensors of one chunk (CPU; and the least on a GPU)
GPU_FREE_FRACTION = 0.25  # on a GPU: up to this share of its free memory (small chunks starve a GPU)
TEMPORARIES = 4


def activation_floats(model: nn.Module) -> int:
    """Rough floats of activations per sample: the larger side of each weight matrix, summed over layers."""
    sizes = [max(p.shape[0], math.prod(p.shape[1:])) for p in model.parameters() if p.dim() >= 2]
    return max(1, sum(sizes))


def memory_budget(device: torch.device) -> int:
    """Bytes of intermediates one chunk may use: 256 MiB on CPU, a quarter of the free memory on a GPU."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return max(MEMORY_BUDGET_BYTES, int(free * GPU_FREE_FRACTION))
    return MEMORY_BUDGET_BYTES


def default_chunk_size(
    model: nn.Module, x: torch.Tensor, budget_bytes: int | None = None, copies: int | None = None
) -> int:
    """Samples per chunk so that one chunk's intermediates stay within `budget_bytes` (None: memory_budget).

    copies: activation copies a sample carries (default 1 + max(n_in, n_out): primal plus tangents or cotangents).
    """
    budget_bytes = memory_budget(x.device) if budget_bytes is None else budget_bytes
    if copies is None:
        n_in = x.shape[1]
        copies = 1 + max(n_in, int(getattr(model, "n_out", n_in)))
    per_sample = copies * activation_floats(model) * x.element_size() * TEMPORARIES
    return max(1, budget_bytes // per_sample)


def run_engine(
    eng,
    model: nn.Module,
    x: torch.Tensor,
    chunk_size: int | None,
    create_graph: bool,
    order: int = 1,
    chunk_size_for: Callable[[nn.Module, torch.Tensor], int] = default_chunk_size,
) -> torch.Tensor:
    """One engine over x (B, n_in) in chunks: the call behind `jacobian`, `hessian` and `laplacian`.

    A batch-sum engine is guarded on each chunk's own rows by the coupling check of its derivative ``order``
    (every pair, every call: bench.engines.coupling). chunk_size None: the whole batch for an engine that blocks
    its own work on the CPU (and keeps no graph), else ``chunk_size_for(model, x)``.
    """

    def one_chunk(xc: torch.Tensor) -> torch.Tensor:
        if eng.batch_sum:
            coupling.require_batch_independent(model, xc, eng.name, order=order)
        return eng.fn(model, xc, create_graph=create_graph)

    size = chunk_size
    if size is None:
        own_blocks = eng.blocks_on_cpu and x.device.type == "cpu" and not create_graph
        size = x.shape[0] if own_blocks else chunk_size_for(model, x)
    return chunked(one_chunk, x, size, keep_graph=create_graph)


def chunked(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, chunk_size: int, keep_graph: bool):
    """fn over row chunks of x (B, n_in), results concatenated along dim 0.

    Without a graph the chunks are written into one preallocated output, so peak memory is one chunk's
    intermediates plus the result; with one (create_graph) every chunk's graph is kept anyway, so torch.cat.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if x.shape[0] <= chunk_size:
        return fn(x)
    parts = x.split(chunk_size)
    if keep_graph:
        return torch.cat([fn(p) for p in parts])
    first = fn(parts[0])
    out = first.new_empty((x.shape[0], *first.shape[1:]))
    out[: first.shape[0]] = first
    start = first.shape[0]
    for p in parts[1:]:
        out[start : start + p.shape[0]] = fn(p)
        start += p.shape[0]
    return out
