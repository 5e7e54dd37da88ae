"""Every fast Function equals its reference (minisnn/fast/ against minisnn/functions/), on every path.

Hypothesis draws the shapes and, for the CPU split, the number of workers and the chunk size (one
sample per chunk up to the whole batch in one), so that each arrangement of the work is compared with
the straight-line reference: conv's flipped-kernel dx (stride 1) and col2im dx (strided), im2col
without padding copies, the chunked LIF loop (bit for bit), and batch norm's float64 chunked sums.
"""
import contextlib

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minisnn import Tensor
from minisnn.fast import conv as fast_conv, parallel, reference_only, version_of
from minisnn.fast.conv import ChunkedConv2d
from minisnn.fast.neuron import ChunkedLIF, FusedLIF
from minisnn.fast.norm import ChunkedBatchNorm
from minisnn.functions.conv import Conv2d, col2im, im2col
from minisnn.functions.neuron import LIF
from minisnn.functions.norm import BatchNormFunction
from minisnn.functions.surrogate import SURROGATES, get_surrogate
from strategies import conv_cases, lif_cases, norm_cases, seeds

splits = st.tuples(st.integers(1, 3), st.sampled_from([1, 1 << 10, parallel.CHUNK_BYTES]))


@contextlib.contextmanager
def cpu_split(workers, chunk_bytes):
    """Run the CPU split with ``workers`` threads and chunks of ``chunk_bytes`` (1: one sample per chunk);
    small jobs split too."""
    before = parallel.workers()
    saved = parallel.CHUNK_BYTES, parallel.SPLIT_BYTES
    parallel.set_workers(workers)
    parallel.CHUNK_BYTES, parallel.SPLIT_BYTES = chunk_bytes, 0
    try:
        yield
    finally:
        parallel.set_workers(before)
        parallel.CHUNK_BYTES, parallel.SPLIT_BYTES = saved


def run(function, inputs, gy, needs=None):
    """Forward and backward of one Function instance: (output, gradient of every input that wants one)."""
    needs = needs or [True] * len(inputs)
    tensors = [Tensor(a.copy(), requires_grad=n) for a, n in zip(inputs, needs)]
    y = function(*tensors)
    y.backward(gy.copy())
    return y.data, [t.grad for t in tensors]


def assert_same(a, b, exact=False):
    ya, ga = a
    yb, gb = b
    check = np.testing.assert_array_equal if exact else (
        lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-12, atol=1e-12))
    check(ya, yb)
    assert len(ga) == len(gb)
    for u, v in zip(ga, gb):
        assert (u is None) == (v is None)
        if u is not None:
            check(u, v)


def test_the_one_spot_picks_the_fast_version_and_reference_only_turns_it_off():
    x = np.zeros((2, 3))
    assert version_of(Conv2d, x) is ChunkedConv2d and version_of(LIF, Tensor(x)) is ChunkedLIF
    assert version_of(BatchNormFunction, x) is ChunkedBatchNorm
    with reference_only():
        assert version_of(Conv2d, x) is Conv2d and version_of(LIF, x) is LIF
    assert version_of(Conv2d, x) is ChunkedConv2d


# ----------------------------------------------------------------------------------------- conv
@settings(max_examples=60)
@given(conv_cases(max_batch=4), splits, st.booleans(), st.booleans(), seeds)
def test_chunked_conv_equals_reference(case, split, bias, need_dx, seed):
    x, W, b, stride, padding = case
    inputs = (x, W, b) if bias else (x, W)
    y_shape = Conv2d(stride, padding).forward(*inputs).shape
    gy = np.random.default_rng(seed).standard_normal(y_shape)
    needs = [need_dx] + [True] * (len(inputs) - 1)
    want = run(Conv2d(stride, padding), inputs, gy, needs)
    with cpu_split(*split):
        got = run(ChunkedConv2d(stride, padding), inputs, gy, needs)
    assert_same(got, want)


@settings(max_examples=60)
@given(conv_cases(), seeds)
def test_unpadded_im2col_and_col2im_equal_the_reference(case, seed):
    x, W, _, stride, padding = case
    kh, kw = W.shape[2:]
    cols = im2col(x, kh, kw, stride, padding)
    np.testing.assert_array_equal(fast_conv.im2col_unpadded(x, kh, kw, stride, padding), cols)
    c = np.random.default_rng(seed).standard_normal(cols.shape)
    out = np.full(x.shape, np.nan)
    fast_conv.col2im_unpadded(c, x.shape, kh, kw, stride, padding, out=out)
    np.testing.assert_allclose(out, col2im(c, x.shape, kh, kw, stride, padding), rtol=1e-12, atol=1e-12)


def test_both_dx_paths_of_the_chunked_conv_are_drawn():
    """Stride 1 (padding < kernel) takes the flipped-kernel convolution; stride 2 takes col2im."""
    rng = np.random.default_rng(0)
    x, W = rng.standard_normal((2, 2, 5, 5)), rng.standard_normal((3, 2, 3, 3))
    calls = []
    original = fast_conv.col2im_unpadded
    fast_conv.col2im_unpadded = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        for stride, expect_col2im in ((1, False), (2, True)):
            calls.clear()
            gy = rng.standard_normal(Conv2d(stride, 1).forward(x, W).shape)
            assert_same(run(ChunkedConv2d(stride, 1), (x, W), gy), run(Conv2d(stride, 1), (x, W), gy))
            assert bool(calls) == expect_col2im
    finally:
        fast_conv.col2im_unpadded = original


# ------------------------------------------------------------------------------------------ LIF
@settings(max_examples=60)
@given(lif_cases(), st.sampled_from(sorted(SURROGATES)), st.booleans(), splits, seeds)
def test_chunked_lif_equals_reference_bit_for_bit(case, name, detach_reset, split, seed):
    x, v_th, tau = case
    surrogate = get_surrogate(name)
    gy = np.random.default_rng(seed).standard_normal(x.shape)
    want = run(LIF(v_th, tau, surrogate, detach_reset), (x,), gy)
    with cpu_split(*split):
        fn = ChunkedLIF(v_th, tau, surrogate, detach_reset)
        got = run(fn, (x,), gy)
    assert_same(got, want, exact=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_lif_on_numpy_input_would_not_fuse_and_runs_the_reference(dtype):
    """FusedLIF decides per call: float16 or a surrogate without CUDA source never takes the kernel."""
    fn = FusedLIF(surrogate="smooth_sigmoid")
    assert not fn.fusable(np.zeros(2, dtype))
    assert not FusedLIF().fusable(np.zeros(2, np.float16))
    assert FusedLIF().fusable(np.zeros(2, dtype))


# ----------------------------------------------------------------------------------- batch norm
@settings(max_examples=60)
@given(norm_cases(), st.booleans(), st.floats(0.2, 1.5), splits, seeds)
def test_chunked_batch_norm_equals_reference(case, training, scale, split, seed):
    x, w, b, rng = case
    folded = x.reshape((-1,) + x.shape[2:])
    C = x.shape[2]
    stats = rng.standard_normal(C), rng.uniform(0.2, 3, C)
    gy = np.random.default_rng(seed).standard_normal(folded.shape)
    results = []
    for version in (BatchNormFunction, ChunkedBatchNorm):
        running = [s.copy() for s in stats]
        with cpu_split(*split) if version is ChunkedBatchNorm else contextlib.nullcontext():
            results.append((run(version(*running, training, scale), (folded, w, b), gy), running))
    (got, got_running), (want, want_running) = results[1], results[0]
    assert_same(got, want)
    for g, w_ in zip(got_running, want_running):
        np.testing.assert_allclose(g, w_, rtol=1e-12, atol=1e-12)
