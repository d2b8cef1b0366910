"""Row blocks on CPU: cache-sized blocks, and one contiguous share of them per core.

torch parallelizes each op across its intra-op threads; for the many small ops of a blocked tangent pass that
means an OpenMP barrier per op, and on a busy machine one descheduled thread stalls every barrier (measured on
the 2-core CPU with other jobs running: 2 threads were several times slower than 1; results/measurements/README.md,
"Block size and per-core shares on the CPU"). Instead each core takes a contiguous share of the rows and runs it
single-threaded; the ops release the GIL, so the shares run in parallel with no synchronization but the final
join. torch's thread count is set to 1 for the duration of the call and restored afterwards.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch

MIN_SHARE = 512  # rows: the smallest share handed to a thread of its own (see split_over_cores)
_POOL: ThreadPoolExecutor | None = None
_LOCK = threading.Lock()


def _pool(workers: int) -> ThreadPoolExecutor:
    global _POOL
    with _LOCK:
        if _POOL is None or _POOL._max_workers < workers:
            _POOL = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="jacbench-blocks")
        return _POOL


def split_over_cores(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, rows: int, min_rows: int = MIN_SHARE
) -> torch.Tensor:
    """fn(x) computed as fn over one contiguous share of x's rows per CPU thread, concatenated.

    fn must be a pure per-row function of its input (its result's row i depends on x's row i only) that
    builds no graph. Shares are whole blocks of `rows` (the block size fn uses inside) where the batch allows,
    and at least `min_rows`: handing a share to a thread costs tens of microseconds, and on the forum MLP shares of
    128 rows gained nothing over one thread, shares of 512 rows did (measured: results/measurements/README.md,
    "Block size and per-core shares on the CPU"). fn always
    runs with one torch thread, even for a single share: a small batch gains nothing from intra-op threads and
    loses most to their barriers on a busy machine.
    """
    if x.device.type != "cpu":
        return fn(x)
    threads = torch.get_num_threads()
    workers = max(1, min(threads, x.shape[0] // min_rows))
    share = math.ceil(x.shape[0] / workers)
    if share > rows:
        share = math.ceil(share / rows) * rows  # whole blocks per worker
    parts = x.split(share)
    if threads == 1:
        return fn(x)
    torch.set_num_threads(1)
    try:
        if len(parts) == 1:
            return fn(x)
        return torch.cat(list(_pool(len(parts)).map(fn, parts)))
    finally:
        torch.set_num_threads(threads)
