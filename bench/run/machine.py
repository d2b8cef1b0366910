"""The machine a run or sweep uses: usable cores, the device, torch threads, and the TF32 state.

The one place that reads these (the runner, the sweep, the roofline and the environment record all ask here).
"""

from __future__ import annotations

import os
import sys

import torch


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity on Linux)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when CUDA is available, else 'cpu'; any other name as given."""
    if device != "auto":
        return device

    return "cuda" if torch.cuda.is_available() else "cpu"


def set_threads(threads: int) -> None:
    """Torch (and OpenMP/MKL/OpenBLAS) threads for this process.

    Sets the environment, which torch reads when it is first imported, and torch's own setting if torch
    is already loaded; the runner's worker initializer calls this before any cell imports torch. numpy's BLAS
    (loaded with pandas before this runs) is limited at run time through threadpoolctl: a numpy peer (JENN) in
    each of two workers would otherwise run two BLAS threads each on two cores, several times slower than one
    (results/measurements/README.md, "Threads for small networks").
    """
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads, user_api="blas")  # a call (not a with block): the limit stays


def tf32_enabled(device: str | None = None) -> bool:
    """Whether CUDA float32 matmuls may use TF32 now (~1e-3 relative error); recorded with every result.

    Only matmuls matter here (the zoo has no convolutions, so cudnn's own TF32 flag is not read);
    ``torch.set_float32_matmul_precision("high")`` turns this on too. With ``device``: always False off CUDA.
    """
    if device is not None and torch.device(device).type != "cuda":
        return False
    return bool(torch.backends.cuda.matmul.allow_tf32)
