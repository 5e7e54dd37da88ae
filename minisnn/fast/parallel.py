"""Splitting a batch into chunks: across the CPU's cores, and within a memory budget on the GPU.

NumPy runs its elementwise loops, copies and reductions on one core. So on the CPU minisnn splits a
large batch into contiguous chunks and runs a function on each:

    map_chunks(fn, n, xp, nbytes)  ->  [fn(slice(0, n_1)), fn(slice(n_1, n_2)), ...]

**The chunks.** One per CHUNK_BYTES of the memory the job touches (``nbytes``): a few megabytes stay
in the cores' caches and the allocator hands the same blocks back chunk after chunk. Their number is
rounded up to a multiple of the worker count, so that every worker gets the same share. The slices
depend only on the job's size and the worker count, never on how they are run: the results are the
same, bit for bit, whichever way below runs them.

**Two ways to run them.**

* *split*: the chunks run in a thread pool of ``workers()`` threads. NumPy releases the GIL inside its
  loops and BLAS calls, so they really run at the same time. Meanwhile BLAS is held at one thread per
  worker (through threadpoolctl, which finds the BLAS library NumPy was built with and calls its own
  thread setter), so that the two levels of threading do not fight for the cores.
* *here*: one after another in the calling thread, with BLAS free to run each product on all cores.

Splitting wins when the copies and elementwise work around the products are large (they then run on
every core instead of one); running here wins when the products dominate and BLAS spreads them well,
or when the job is too small to be worth handing over. Where the line falls depends on the machine:
on the 2-core AMD EPYC of benchmarks/RESULTS.md, OpenBLAS ran a thin product such as
[32, 288] x [288, 4096] at 21 GFLOP/s on one thread and 58 on two, so a small-map net trained faster
here, while ResNet-19 trained faster split. So each kind of job measures: a job is known by the
function run on its chunks and its size (n, nbytes); its first calls run split and here in turn,
TRIALS times each, and from then on it runs the way whose fastest call was faster.

``MINISNN_THREADS=n`` fixes the choice instead: n workers that always split (n = 1: always here);
``set_workers(n)`` does the same at run time. Unset, there is one worker per core this process may run
on and each job chooses. Jobs smaller than SPLIT_BYTES always run here, with BLAS on one thread
(handing them over costs more than it saves; so would waking BLAS's threads, which then spin for a
while on cores the next job needs). On CuPy ``map_chunks`` runs one chunk: the GPU is parallel already.

On the GPU the limit is memory, not cores: a convolution's im2col columns are kh*kw times its input,
so a large batch is cut into ``gpu_chunks`` whose temporaries fit ``gpu_chunk_bytes()`` -- a quarter
of the memory the device has free (what the driver reports free plus what CuPy's pool holds unused),
or ``MINISNN_GPU_CHUNK_MB`` megabytes when set.
"""
import contextlib
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .phases import carried

ENV_VAR = "MINISNN_THREADS"
GPU_CHUNK_ENV_VAR = "MINISNN_GPU_CHUNK_MB"
CHUNK_BYTES = 4 << 20  # the memory one chunk should touch: a share of the L2/L3 cache
SPLIT_BYTES = 1 << 20  # smaller jobs stay in the calling thread: handing them over costs more than it saves
TRIALS = 2             # calls each way before a job settles on the faster one

_workers = None  # the worker count; None until first asked
_fixed = None    # "split" or "here" when MINISNN_THREADS or set_workers fixed the way; None: each job measures
_pool = None
_blas = None
_timings = {}    # job -> {"split": [seconds, ...], "here": [...]} while it measures
_choices = {}    # job -> the way it settled on


def _configure():
    global _workers, _fixed
    raw = os.environ.get(ENV_VAR)
    if raw is None:
        _workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        _fixed = "here" if _workers == 1 else None
        return
    if not raw.strip().isdigit() or int(raw) < 1:
        raise ValueError(f"${ENV_VAR} must be a positive integer, got {raw!r}")
    _workers = int(raw)
    _fixed = "here" if _workers == 1 else "split"


def workers():
    """How many threads run the chunks of a CPU batch when it is split."""
    if _workers is None:
        _configure()
    return _workers


def set_workers(n):
    """Use n worker threads from now on, and always split (n = 1: run the chunks one after another in the
    calling thread)."""
    global _workers, _fixed, _pool
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"workers must be a positive int, got {n!r}")
    if _pool is not None:
        _pool.shutdown()
        _pool = None
    _workers, _fixed = n, ("here" if n == 1 else "split")


def mode():
    """"split" or "here" when fixed (``MINISNN_THREADS``, ``set_workers``), else "measured"."""
    workers()
    return _fixed or "measured"


def chunks(n, parts):
    """Split range(n) into at most `parts` contiguous slices of near-equal length (none empty)."""
    parts = max(1, min(parts, n))
    bounds = [n * k // parts for k in range(parts + 1)]
    return [slice(bounds[k], bounds[k + 1]) for k in range(parts)]


@contextlib.contextmanager
def _blas_one_thread():
    """Hold BLAS at one thread inside the block (threadpoolctl finds the BLAS library NumPy was built with
    and calls its own thread setter), then give it back the threads it had."""
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
    """Call fn(slice) for contiguous slices covering range(n), on the CPU split across the workers or one
    after another here (see the module docstring); return the results in slice order. fn must only read
    shared arrays and write to disjoint parts of outputs.

    nbytes: how much memory the whole job touches; it sets the number of slices: one per CHUNK_BYTES,
    but none shorter than ``min_chunk``, and for a job that may be split a multiple of the worker count
    (at least one slice per worker, even if shorter than ``min_chunk``).
    """
    if xp is not np:
        return [fn(slice(0, n))]
    most = max(1, n // min_chunk)                    # slices no shorter than min_chunk
    parts = min(-(-nbytes // CHUNK_BYTES), most)
    if nbytes >= SPLIT_BYTES:                        # a multiple of the workers: up if min_chunk allows
        count = workers()
        up = -(-max(parts, 1) // count) * count
        parts = up if up <= most else max(count, most // count * count)
    slices = chunks(n, parts)                        # chunks() keeps parts within [1, n]
    if nbytes < SPLIT_BYTES:                         # small products gain nothing from BLAS threads,
        with _blas_one_thread():                     # and once woken they would spin for a while
            return [fn(rows) for rows in slices]
    if len(slices) == 1:
        return [fn(rows) for rows in slices]
    way = _fixed or _choices.get((fn.__code__, n, nbytes))
    if way is not None:
        return _run(way, fn, slices)
    return _measure((fn.__code__, n, nbytes), fn, slices)


def _run(way, fn, slices):
    if way == "here":
        return [fn(rows) for rows in slices]
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(workers(), thread_name_prefix="minisnn")
    with _blas_one_thread():
        return list(_pool.map(carried(fn), slices))


def _measure(job, fn, slices):
    """Run the job the way it has tried less (split first), time it, and settle once both were tried
    TRIALS times: on the way whose fastest call was faster."""
    times = _timings.setdefault(job, {"split": [], "here": []})
    way = "split" if len(times["split"]) <= len(times["here"]) else "here"
    start = time.perf_counter()
    results = _run(way, fn, slices)
    times[way].append(time.perf_counter() - start)
    if len(times["here"]) >= TRIALS:
        _choices[job] = min(("split", "here"), key=lambda w: min(times[w]))
        del _timings[job]
    return results


def choices():
    """The ways the jobs measured so far settled on, and how many are still measuring: a dict
    {"split": count, "here": count, "measuring": count}."""
    settled = list(_choices.values())
    return {"split": settled.count("split"), "here": settled.count("here"), "measuring": len(_timings)}


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
