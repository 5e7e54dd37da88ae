"""Splitting a batch into chunks: across the CPU's cores, and within a memory budget on the GPU.

NumPy runs its elementwise loops, copies and reductions on one core. So on the CPU minisnn splits a
large batch into contiguous chunks and runs a function on each:

    map_chunks(fn, n, xp, nbytes)  ->  [fn(slice(0, n_1)), fn(slice(n_1, n_2)), ...]

**The chunks.** One per CHUNK_BYTES of the memory the job touches (``nbytes``): they stay in the
cores' caches, and the allocator hands the same blocks back chunk after chunk. None is shorter than
``min_chunk``, and a job that is split has a multiple of the worker count, so that every worker gets
the same share.

**How they run**, decided for each call from the job's size and the worker count alone:

* A job of SPLIT_BYTES or more, with more than one worker, is *split*: its chunks run on ``workers()``
  threads -- the calling thread and a pool of ``workers() - 1`` -- each taking the next chunk as soon
  as it is free. NumPy releases the GIL inside its loops and BLAS calls, so they really run at the same
  time. Meanwhile BLAS is held at one thread per worker (through threadpoolctl, which finds the BLAS
  library NumPy was built with and calls its own thread setter), so that the two levels of threading
  do not fight for the cores.
* A smaller job runs its chunks one after another in the calling thread, with BLAS held at one thread
  too: handing it over would cost more than it saves, and so would waking BLAS's own threads, which
  then spin for a while on the cores the next job needs.
* With one worker (``MINISNN_THREADS=1``) every job runs in the calling thread and BLAS keeps its
  threads: each product then runs on all cores, the copies and elementwise work on one.

``MINISNN_THREADS=n`` sets the number of workers (default: the cores this process may run on);
``set_workers(n)`` changes it at run time. On CuPy ``map_chunks`` runs one chunk: the GPU is parallel
already.

Why the choice never depends on timings. Choosing per job by timing both ways was tried, and dropped:
OpenBLAS does not always give the same bits on one thread as on two (for a product with one to three
rows and a long inner dimension its threads split the sum), so two runs of one command -- or a run and
its resumption -- could have computed different numbers, depending on the load of the machine at the
time. Measured side by side, the split was the faster way on the Intel machine of benchmarks/RESULTS.md
for ResNet-19 and for the README's small CIFAR-sample net alike; where one worker is faster (the
2-core AMD EPYC ran that small net faster so before issue 19's changes), ``MINISNN_THREADS=1`` says so.

On the GPU the limit is memory, not cores: a convolution's im2col columns are kh*kw times its input,
so a large batch is cut into ``gpu_chunks`` whose temporaries fit ``gpu_chunk_bytes()`` -- a quarter
of the memory the device has free (what the driver reports free plus what CuPy's pool holds unused),
or ``MINISNN_GPU_CHUNK_MB`` megabytes when set.
"""
import contextlib
import os
import threading
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


def _positive_setting(var, what):
    """The positive integer in environment variable ``var``, or None where it is unset or empty."""
    raw = os.environ.get(var, "")
    if not raw.strip():
        return None
    if not raw.strip().isdigit() or int(raw) < 1:
        raise ValueError(f"${var} must be {what}, got {raw!r}")
    return int(raw)


def check_settings():
    """Refuse a malformed $MINISNN_THREADS or $MINISNN_GPU_CHUNK_MB now, before any work starts."""
    _positive_setting(ENV_VAR, "a positive integer")
    _positive_setting(GPU_CHUNK_ENV_VAR, "a positive number of megabytes")


def _default_workers():
    n = _positive_setting(ENV_VAR, "a positive integer")
    if n is None:
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return n


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


@contextlib.contextmanager
def blas_one_thread():
    """Hold BLAS at one thread inside the block, then give it back the threads it had."""
    global _blas
    if _blas is None:
        from threadpoolctl import ThreadpoolController
        _blas = ThreadpoolController().select(user_api="blas").lib_controllers  # NumPy is imported above
    before = [library.get_num_threads() for library in _blas]
    for library in _blas:
        library.set_num_threads(1)
    try:
        yield
    finally:
        for library, threads in zip(_blas, before):
            library.set_num_threads(threads)


def map_chunks(fn, n, xp=np, nbytes=0, min_chunk=1):
    """Call fn(slice) for contiguous slices covering range(n): on the CPU split across the workers, or one
    after another in the calling thread (see the module docstring); return the results in slice order.
    fn must only read shared arrays and write to disjoint parts of outputs.

    nbytes: how much memory the whole job touches; it sets the number of slices: one per CHUNK_BYTES,
    but none shorter than ``min_chunk``, and for a job that is split a multiple of the worker count (at
    least one slice per worker, even if shorter than ``min_chunk``).
    """
    if xp is not np:
        return [fn(slice(0, n))]
    most = max(1, n // min_chunk)                    # slices no shorter than min_chunk
    parts = min(-(-nbytes // CHUNK_BYTES), most)
    split = workers() > 1 and nbytes >= SPLIT_BYTES
    if split:                                        # a multiple of the workers: up if min_chunk allows
        count = workers()
        up = -(-max(parts, 1) // count) * count
        parts = up if up <= most else max(count, most // count * count)
    slices = chunks(n, parts)                        # chunks() keeps parts within [1, n]
    if split and len(slices) > 1:
        with blas_one_thread():
            return _split(fn, slices)
    if nbytes < SPLIT_BYTES:
        with blas_one_thread():
            return [fn(rows) for rows in slices]
    return [fn(rows) for rows in slices]


def _split(fn, slices):
    """fn over the slices on workers() threads, the calling thread among them, each taking the next slice
    when it is free (one hand-over per worker, not per slice); the results in slice order."""
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(workers() - 1, thread_name_prefix="minisnn")
    results, taken, lock = [None] * len(slices), iter(range(len(slices))), threading.Lock()
    failed = []

    def drain():
        while not failed:
            with lock:
                i = next(taken, None)
            if i is None:
                return
            try:
                results[i] = fn(slices[i])
            except BaseException:
                failed.append(True)                  # the others stop taking slices
                raise

    helpers = [_pool.submit(carried(drain)) for _ in range(workers() - 1)]
    try:
        drain()
    finally:
        for helper in helpers:
            helper.exception()                       # wait for every helper before anything is re-raised
    for helper in helpers:
        helper.result()                              # a helper's error, if the calling thread had none
    return results


def gpu_chunk_bytes(cp):
    """The most bytes the temporaries of one GPU chunk may take: $MINISNN_GPU_CHUNK_MB megabytes, else a
    quarter of the device memory that is free (free on the device plus unused in CuPy's pool)."""
    megabytes = _positive_setting(GPU_CHUNK_ENV_VAR, "a positive number of megabytes")
    if megabytes is not None:
        return megabytes << 20
    free, _ = cp.cuda.runtime.memGetInfo()
    return (free + cp.get_default_memory_pool().free_bytes()) // 4


def gpu_chunks(n, nbytes, cp):
    """Contiguous slices covering range(n), as few as keep each one's share of ``nbytes`` within
    ``gpu_chunk_bytes``."""
    return chunks(n, -(-nbytes // gpu_chunk_bytes(cp)))
