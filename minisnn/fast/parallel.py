"""Splitting a batch into chunks: across the CPU's cores, and within a memory budget on the GPU.

NumPy runs its elementwise loops, copies and reductions on one core. So on the CPU minisnn splits a
large batch into contiguous chunks (about CHUNK_BYTES each, at least one per worker) and runs them in a
thread pool:

    map_chunks(fn, n, xp)  ->  [fn(slice(0, n_1)), fn(slice(n_1, n_2)), ...]

NumPy releases the GIL inside its loops and BLAS calls, so the chunks really run at the same time.
While they run, BLAS is held at one thread per worker (through threadpoolctl, which finds the BLAS
library NumPy was built with and calls its own thread setter), so that the two levels of threading
do not fight for the cores. BLAS gets its thread count back afterwards.

Jobs smaller than SPLIT_BYTES run in the calling thread, still chunk by chunk so that their
temporaries stay in cache, with BLAS free to use all its threads.

Which is faster depends on the net. On the 2-core machine of benchmarks/RESULTS.md, the split wins
for nets with large feature maps: a batch-32 step of resnet_small with 32x32 stage-1 maps takes
0.64 s with two workers and 0.80 s with one. For small maps it loses: OpenBLAS with two threads runs
a thin product such as [32, 288] x [288, 4096] at 58 GFLOP/s, against 21 GFLOP/s on one thread, more
than the split gains on the copies. The same net with stride 2 in every stage takes 0.25 s per step
with one worker and 0.28-0.35 s with two (benchmarks/RESULTS.md). Set ``MINISNN_THREADS=1`` for such
nets.

``MINISNN_THREADS`` sets the number of workers (default: the cores this process may run on);
``set_workers(n)`` changes it at run time. On CuPy ``map_chunks`` runs one chunk: the GPU is parallel
already.

On the GPU the limit is memory, not cores: a convolution's im2col columns are kh*kw times its input,
so a large batch is cut into ``gpu_chunks`` whose temporaries fit ``gpu_chunk_bytes()`` -- a quarter
of the memory the device has free (what the driver reports free plus what CuPy's pool holds unused),
or ``MINISNN_GPU_CHUNK_MB`` megabytes when set.
"""
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .phases import carried

ENV_VAR = "MINISNN_THREADS"
GPU_CHUNK_ENV_VAR = "MINISNN_GPU_CHUNK_MB"
CHUNK_BYTES = 4 << 20  # the memory one chunk should touch: a share of the L2/L3 cache
SPLIT_BYTES = 1 << 20  # smaller jobs stay in the calling thread: handing them over costs more than it saves

_workers = None
_pool = None
_blas = None


def _default_workers():
    raw = os.environ.get(ENV_VAR)
    if raw is None:
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if not raw.strip().isdigit() or int(raw) < 1:
        raise ValueError(f"${ENV_VAR} must be a positive integer, got {raw!r}")
    return int(raw)


def workers():
    """How many threads run the chunks of a CPU batch."""
    global _workers
    if _workers is None:
        _workers = _default_workers()
    return _workers


def set_workers(n):
    """Use n worker threads from now on (1 runs the chunks one after another in the calling thread)."""
    global _workers, _pool
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"workers must be a positive int, got {n!r}")
    if _pool is not None:
        _pool.shutdown()
        _pool = None
    _workers = n


def chunks(n, parts):
    """Split range(n) into at most `parts` contiguous slices of near-equal length (none empty)."""
    parts = max(1, min(parts, n))
    bounds = [n * k // parts for k in range(parts + 1)]
    return [slice(bounds[k], bounds[k + 1]) for k in range(parts)]


def _blas_one_thread():
    global _blas
    if _blas is None:
        from threadpoolctl import ThreadpoolController
        _blas = ThreadpoolController()  # NumPy is imported above, so its BLAS is found
    return _blas.limit(limits=1, user_api="blas")


def map_chunks(fn, n, xp=np, nbytes=0):
    """Call fn(slice) for contiguous slices covering range(n), in parallel on the CPU; return the results
    in slice order. fn must only read shared arrays and write to disjoint parts of outputs.

    nbytes: how much memory the whole job touches. The CPU split has one slice per CHUNK_BYTES of that
    (a few megabytes stay in cache and are reused by the allocator, while a fresh 100 MB temporary costs
    a page fault per 4 KB on first touch), and at least one per worker. Jobs smaller than SPLIT_BYTES
    (and every job when there is one worker) run their slices one after another in the calling thread.
    """
    if xp is not np:
        return [fn(slice(0, n))]
    parts = -(-nbytes // CHUNK_BYTES)  # chunks() keeps it within [1, n]
    if workers() == 1 or nbytes < SPLIT_BYTES:
        return [fn(rows) for rows in chunks(n, parts)]
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(workers(), thread_name_prefix="minisnn")
    with _blas_one_thread():
        return list(_pool.map(carried(fn), chunks(n, max(parts, workers()))))


def gpu_chunk_bytes(cp):
    """The most bytes the temporaries of one GPU chunk may take: $MINISNN_GPU_CHUNK_MB megabytes, else a
    quarter of the device memory that is free (free on the device plus unused in CuPy's pool)."""
    raw = os.environ.get(GPU_CHUNK_ENV_VAR)
    if raw is not None:
        if not raw.strip().isdigit() or int(raw) < 1:
            raise ValueError(f"${GPU_CHUNK_ENV_VAR} must be a positive number of megabytes, got {raw!r}")
        return int(raw) << 20
    free, _ = cp.cuda.runtime.memGetInfo()
    return (free + cp.get_default_memory_pool().free_bytes()) // 4


def gpu_chunks(n, nbytes, cp):
    """Contiguous slices covering range(n), as few as keep each one's share of ``nbytes`` within
    ``gpu_chunk_bytes``."""
    return chunks(n, -(-nbytes // gpu_chunk_bytes(cp)))
