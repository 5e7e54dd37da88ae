"""Splitting a batch across CPU workers: the slices, the thread pool, and a conv split into many chunks."""
import threading

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minisnn import Tensor, parallel
from minisnn.functions.conv import conv2d
from minisnn.functions.neuron import lif
from minisnn.functions.norm import batch_norm
from test_conv import naive_conv, naive_conv_grads


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


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 6), st.integers(0, 1), st.integers(1, 2), st.integers(0, 2**32 - 1))
def test_conv_split_into_one_chunk_per_sample_matches_naive_loop(workers_count, padding, stride, seed):
    """With CHUNK_BYTES = 1 every sample is its own chunk: y, dx, dW and db must not change."""
    rng = np.random.default_rng(seed)
    x, W, b = rng.standard_normal((5, 2, 6, 5)), rng.standard_normal((3, 2, 3, 3)), rng.standard_normal(3)
    before, saved_bytes = parallel.workers(), parallel.CHUNK_BYTES
    parallel.set_workers(workers_count)
    parallel.CHUNK_BYTES = 1
    try:
        tx, tW, tb = (Tensor(a, requires_grad=True) for a in (x, W, b))
        y = conv2d(tx, tW, tb, stride=stride, padding=padding)
        gy = rng.standard_normal(y.shape)
        y.backward(gy)
    finally:
        parallel.set_workers(before)
        parallel.CHUNK_BYTES = saved_bytes
    np.testing.assert_allclose(y.data, naive_conv(x, W, b, stride, padding), rtol=1e-10, atol=1e-10)
    for got, want in zip((tx.grad, tW.grad, tb.grad), naive_conv_grads(x, W, gy, stride, padding)):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


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


@pytest.mark.parametrize("surrogate", ["rectangular", "sigmoid"])
@pytest.mark.parametrize("detach_reset", [False, True])
def test_lif_split_across_workers_is_bit_identical(workers, surrogate, detach_reset):
    """The LIF loop is elementwise per neuron, so chunking the neurons must not change one bit."""
    rng = np.random.default_rng(0)
    x, gy = rng.standard_normal((2, 4, 3, 5, 7)), rng.standard_normal((4, 4, 3, 5, 7))
    x = np.concatenate([x, x]) * 0.8  # T = 4

    def run():
        tx = Tensor(x, requires_grad=True)
        o = lif(tx, surrogate=surrogate, detach_reset=detach_reset)
        o.backward(gy)
        return o.data, tx.grad

    workers(1)
    expected = run()
    workers(3)
    for got, want in zip(run(), expected):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_split_into_one_chunk_per_sample_matches_unsplit(workers, monkeypatch, training):
    """Chunked sums only reorder additions: y, dx, dlambda and dbeta agree to rounding."""
    rng = np.random.default_rng(0)
    x, gy = rng.standard_normal((2, 5, 3, 4, 4)) * 2 + 1, rng.standard_normal((2, 5, 3, 4, 4))
    weight, bias = rng.standard_normal(3), rng.standard_normal(3)

    def run():
        running = (rng.standard_normal(3), rng.random(3) + 0.5) if not training else (None, None)
        tx, tw, tb = (Tensor(a, requires_grad=True) for a in (x, weight, bias))
        y = batch_norm(tx, tw, tb, *running, training=training, scale=0.5)
        y.backward(gy)
        return y.data, tx.grad, tw.grad, tb.grad

    rng = np.random.default_rng(1)
    workers(1)
    expected = run()
    rng = np.random.default_rng(1)
    workers(3)
    monkeypatch.setattr(parallel, "CHUNK_BYTES", 1)
    got = run()
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-12)
