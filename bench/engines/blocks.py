"""Row blocks on CPU: cache-sized blocks, and one contiguous share of them per core.

torch parallelizes each op across its intra-op threads; for the many small ops of a blocked tangent pass that
means an OpenMP barrier per op, and on a busy machine one descheduled thread stalls every barrier (measured
on the 2-core CPU with other jobs running: 2 threads gave 1.8e4 Jacobians/s, 1 thread 1.1e5). Instead each
core takes a contiguous share of the rows and runs it single-threaded; the ops release the GIL, so the
shares run in parallel with no synchronization but the final join. torch's thread count is set to 1 for
the duration of the call and restored afterwards.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch

_POOL: ThreadPoolExecutor | None = None
_LOCK = threading.Lock()


def _pool(workers: int) -> ThreadPoolExecutor:
    global _POOL
    with _LOCK:
        if _POOL is None or _POOL._max_workers < workers:
            _POOL = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="jacbench-blocks")
        return _POOL


def split_over_cores(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, rows: int) -> torch.Tensor:
    """fn(x) computed as fn over one contiguous share of x's rows per CPU thread, concatenated.

    fn must be a pure per-row function of its input (its result's row i depends on x's row i only) that
    builds no graph; `rows` (the block size fn uses inside) only aligns the shares.
    """
    threads = torch.get_num_threads()
    if x.device.type != "cpu" or threads < 2 or x.shape[0] < 2 * rows:
        return fn(x)
    workers = min(threads, x.shape[0] // rows)
    share = math.ceil(x.shape[0] / (workers * rows)) * rows  # whole blocks per worker
    parts = x.split(share)
    torch.set_num_threads(1)
    try:
        outs = list(_pool(len(parts)).map(fn, parts))
    finally:
        torch.set_num_threads(threads)
    return torch.cat(outs)
