"""Splitting a batch across CPU workers: the slices, the thread pool, the worker count.

That the Functions split this way still compute what their references do is tested in
tests/test_fast_paths.py."""
import threading

import numpy as np
import pytest
from hypothesis import given, strategies as st

from minisnn.fast import parallel


@pytest.fixture
def workers(monkeypatch):
    """Set the worker count for one test (small jobs split too); restore the default afterwards."""
    monkeypatch.setattr(parallel, "SPLIT_BYTES", 0)
    before = parallel.workers()
    yield parallel.set_workers
    parallel.set_workers(before)


@given(st.integers(0, 100), st.integers(1, 12))
def test_chunks_cover_the_range_in_order_without_empty_slices(n, parts):
    slices = parallel.chunks(n, parts)
    covered = [i for s in slices for i in range(n)[s]]
    assert covered == list(range(n))
    assert len(slices) == max(1, min(parts, n))
    lengths = [s.stop - s.start for s in slices]
    assert n == 0 or (min(lengths) >= 1 and max(lengths) - min(lengths) <= 1)


@pytest.mark.parametrize("count", [1, 3])
def test_map_chunks_returns_results_in_order_and_raises_worker_errors(workers, count):
    workers(count)
    assert parallel.map_chunks(lambda s: (s.start, s.stop), 7, np, nbytes=4 * parallel.CHUNK_BYTES) == [(0, 1), (1, 3), (3, 5), (5, 7)]

    def fail(s):
        raise KeyError("from a worker")
    with pytest.raises(KeyError, match="from a worker"):
        parallel.map_chunks(fail, 7, np)


def test_small_job_runs_in_the_calling_thread_in_cache_sized_chunks(workers, monkeypatch):
    """Under SPLIT_BYTES there is no pool (BLAS keeps its own threads), but still one chunk per CHUNK_BYTES."""
    monkeypatch.setattr(parallel, "SPLIT_BYTES", 8 * parallel.CHUNK_BYTES)
    workers(2)
    got = parallel.map_chunks(lambda s: (s.start, s.stop, threading.current_thread().name), 6, np,
                              nbytes=3 * parallel.CHUNK_BYTES)
    here = threading.current_thread().name
    assert got == [(0, 2, here), (2, 4, here), (4, 6, here)]


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_bad_thread_count_in_environment_is_an_error(monkeypatch, workers, value):
    monkeypatch.setenv(parallel.ENV_VAR, value)
    monkeypatch.setattr(parallel, "_workers", None)
    with pytest.raises(ValueError, match="MINISNN_THREADS"):
        parallel.workers()


def test_thread_count_from_environment(monkeypatch, workers):
    monkeypatch.setenv(parallel.ENV_VAR, "3")
    monkeypatch.setattr(parallel, "_workers", None)
    assert parallel.workers() == 3
