"""Splitting a batch across CPU workers: the slices, where they run, the worker count.

That the Functions split this way still compute what their references do is tested in
tests/test_fast_paths.py."""
import threading
import time

import numpy as np
import pytest
from hypothesis import given, strategies as st
from threadpoolctl import threadpool_info

from minisnn.fast import parallel


@pytest.fixture
def workers(monkeypatch):
    """Set the worker count for one test (small jobs split too); restore the default afterwards."""
    monkeypatch.setattr(parallel, "SPLIT_BYTES", 0)
    before = parallel.workers()
    yield parallel.set_workers
    parallel.set_workers(before)


def in_worker():
    return threading.current_thread().name.startswith("minisnn")


def blas_threads():
    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]


@given(st.integers(0, 100), st.integers(1, 12))
def test_chunks_cover_the_range_in_order_without_empty_slices(n, parts):
    slices = parallel.chunks(n, parts)
    covered = [i for s in slices for i in range(n)[s]]
    assert covered == list(range(n))
    assert len(slices) == max(1, min(parts, n))
    lengths = [s.stop - s.start for s in slices]
    assert n == 0 or (min(lengths) >= 1 and max(lengths) - min(lengths) <= 1)


@pytest.mark.parametrize("count, expected", [
    (1, [(0, 1), (1, 3), (3, 5), (5, 7)]),                       # one slice per CHUNK_BYTES
    (3, [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 7)]),       # rounded up to a multiple of 3 workers
])
def test_map_chunks_returns_results_in_order_and_raises_worker_errors(workers, count, expected):
    workers(count)
    assert parallel.map_chunks(lambda s: (s.start, s.stop), 7, np, nbytes=4 * parallel.CHUNK_BYTES) == expected

    def fail(s):
        raise KeyError("from a worker")
    with pytest.raises(KeyError, match="from a worker"):
        parallel.map_chunks(fail, 7, np, nbytes=4 * parallel.CHUNK_BYTES)


def test_split_runs_on_as_many_threads_as_workers_with_blas_on_one_thread(workers):
    """The calling thread takes slices too; so does each of the pool's workers - 1 threads."""
    workers(3)
    gate = threading.Barrier(3, timeout=10)                   # only passes if three threads run slices at once

    def job(rows):
        if rows.start < 3:
            gate.wait()
        return threading.current_thread().name, blas_threads()

    seen = parallel.map_chunks(job, 6, np, nbytes=6 * parallel.CHUNK_BYTES)
    names = {name for name, _ in seen}
    assert len(names) == 3 and threading.current_thread().name in names
    assert all(threads == [1] * len(threads) for _, threads in seen)


def test_an_error_in_any_thread_reaches_the_caller_after_every_thread_stopped(workers):
    workers(3)
    running = []

    def job(rows):
        running.append(rows.start)
        if rows.start == 4:
            raise KeyError("slice 4")
        time.sleep(0.01)
        running.remove(rows.start)

    with pytest.raises(KeyError, match="slice 4"):
        parallel.map_chunks(job, 12, np, nbytes=12 * parallel.CHUNK_BYTES)
    assert running == [4]                                     # nothing else still running when it is raised


def test_small_job_runs_in_the_calling_thread_in_cache_sized_chunks_with_blas_on_one_thread(workers, monkeypatch):
    """Under SPLIT_BYTES there is no pool, and BLAS is held at one thread (a small product gains nothing
    from BLAS threads, which once woken spin for a while), but still one chunk per CHUNK_BYTES."""
    monkeypatch.setattr(parallel, "SPLIT_BYTES", 8 * parallel.CHUNK_BYTES)
    workers(2)
    got = parallel.map_chunks(lambda s: (s.start, s.stop, in_worker(), blas_threads()), 6, np,
                              nbytes=3 * parallel.CHUNK_BYTES)
    assert [g[:2] for g in got] == [(0, 2), (2, 4), (4, 6)]
    assert not any(g[2] for g in got) and all(g[3] == [1] * len(g[3]) for g in got)


@given(n=st.integers(1, 40), chunk_units=st.integers(1, 30), min_chunk=st.integers(1, 12), count=st.integers(1, 4))
def test_slices_keep_min_chunk_and_a_multiple_of_the_workers(n, chunk_units, min_chunk, count):
    before = parallel.workers()
    parallel.set_workers(count)
    try:
        slices = parallel.map_chunks(lambda s: s, n, np, nbytes=chunk_units * parallel.CHUNK_BYTES, min_chunk=min_chunk)
    finally:
        parallel.set_workers(before)
    lengths = [s.stop - s.start for s in slices]
    assert sum(lengths) == n
    assert len(slices) % count == 0 or len(slices) == n             # chunks() caps the count at n
    assert len(slices) <= count or min(lengths) >= min_chunk
    assert len(slices) <= -(-chunk_units // count) * count          # no more than CHUNK_BYTES asks for, rounded up


def test_one_worker_runs_big_jobs_here_with_all_of_blas(workers):
    """MINISNN_THREADS=1: every chunk in the calling thread, and BLAS keeps its threads for the products."""
    workers(1)
    before = blas_threads()
    seen = parallel.map_chunks(lambda s: (in_worker(), blas_threads()), 4, np, nbytes=4 * parallel.CHUNK_BYTES)
    assert seen == [(False, before)] * 4


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_bad_thread_count_in_environment_is_an_error(monkeypatch, workers, value):
    monkeypatch.setenv(parallel.ENV_VAR, value)
    monkeypatch.setattr(parallel, "_workers", None)
    with pytest.raises(ValueError, match="MINISNN_THREADS"):
        parallel.workers()


def test_an_empty_thread_count_is_no_setting(monkeypatch, workers):
    """``MINISNN_THREADS= minisnn train ...`` (set but empty, as shells allow) means every core, as unset."""
    monkeypatch.setenv(parallel.ENV_VAR, " ")
    monkeypatch.setattr(parallel, "_workers", None)
    monkeypatch.setenv(parallel.GPU_CHUNK_ENV_VAR, "")
    parallel.check_settings()
    os = parallel.os
    assert parallel.workers() == (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())


def test_thread_count_from_environment(monkeypatch, workers):
    monkeypatch.setenv(parallel.ENV_VAR, "3")
    monkeypatch.setattr(parallel, "_workers", None)
    assert parallel.workers() == 3


def test_without_the_variable_every_core_is_a_worker(monkeypatch, workers):
    monkeypatch.delenv(parallel.ENV_VAR, raising=False)
    monkeypatch.setattr(parallel, "_workers", None)
    os = parallel.os
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert parallel.workers() == cores


def test_set_workers_checks_its_argument(workers):
    workers(3)
    assert parallel.workers() == 3
    with pytest.raises(ValueError, match="positive int"):
        workers(0)
