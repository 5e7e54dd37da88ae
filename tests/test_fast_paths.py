"""Every fast Function equals its reference (minisnn/fast/ against minisnn/functions/), on every path.

Hypothesis draws the shapes and, for the CPU split, the number of workers and the chunk size (one
sample per chunk up to the whole batch in one), so that each arrangement of the work is compared with
the straight-line reference: conv's flipped-kernel dx (stride 1) and col2im dx (strided), dW from dx's columns or from
im2col(x), im2col without padding copies into buffers that keep their zeros, products per image or
per chunk, the chunked LIF loop (bit for bit), batch norm's float64 chunked sums, and the blockwise
SGD and Adam updates (bit for bit), and Linear with BLAS held at one thread while the workers split.
"""
import contextlib

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from threadpoolctl import threadpool_info, threadpool_limits

from minisnn import Tensor
from minisnn.fast import conv as fast_conv, optim as fast_optim, parallel, reference_only, version_of
from minisnn.fast.conv import ChunkedConv2d
from minisnn.fast.linear import CPULinear
from minisnn.fast.neuron import ChunkedLIF, FusedLIF
from minisnn.fast.norm import ChunkedBatchNorm
from minisnn.fast.optim import ChunkedAdam, ChunkedSGD
from minisnn.functions.conv import Conv2d, col2im, im2col
from minisnn.functions.linear import Linear
from minisnn.functions.neuron import LIF
from minisnn.functions.norm import BatchNormFunction
from minisnn.functions.surrogate import SURROGATES, get_surrogate
from minisnn.nn import Parameter
from minisnn.optim import SGD, Adam
from strategies import conv_cases, lif_cases, norm_cases, seeds

splits = st.tuples(st.integers(1, 3), st.sampled_from([1, 1 << 10, parallel.CHUNK_BYTES]))
# the conv's own knobs: one product per image or per chunk, chunk width, the tile of the dW sums, and
# column buffers kept per thread (1: every other geometry evicts the last one)
conv_knobs = st.fixed_dictionaries({"PER_IMAGE_GEMM": st.sampled_from([1, 10 ** 9]),
                                    "MIN_COLUMNS": st.sampled_from([1, 7, 512]),
                                    "TILE": st.sampled_from([1, 3, 128]),
                                    "TILE_O": st.sampled_from([1, 2, 32]),
                                    "COLUMN_BUFFERS": st.sampled_from([1, 8])})


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


@contextlib.contextmanager
def knobs(module, values):
    """Set module constants for the block."""
    saved = {name: getattr(module, name) for name in values}
    for name, value in values.items():
        setattr(module, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(module, name, value)


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
@settings(max_examples=80)
@given(st.lists(st.tuples(conv_cases(max_batch=4), st.booleans(), st.booleans(), seeds), min_size=1, max_size=3),
       splits, conv_knobs)
def test_chunked_conv_equals_reference(calls, split, conv_knob_values):
    """A few convolutions in a row, as in a net: the column buffers they leave behind (zeros kept in the
    padding, possibly for more images than the next call has) must not change the next one's result."""
    for case, bias, need_dx, seed in calls:
        x, W, b, stride, padding = case
        inputs = (x, W, b) if bias else (x, W)
        y_shape = Conv2d(stride, padding).forward(*inputs).shape
        gy = np.random.default_rng(seed).standard_normal(y_shape)
        needs = [need_dx] + [True] * (len(inputs) - 1)
        want = run(Conv2d(stride, padding), inputs, gy, needs)
        with cpu_split(*split), knobs(fast_conv, conv_knob_values):
            got = run(ChunkedConv2d(stride, padding), inputs, gy, needs)
        assert_same(got, want)


@st.composite
def stride_one_cases(draw):
    """A stride-1 convolution whose padding is below the kernel (dx as a flipped-kernel convolution, dW from
    its columns and summed by ``_sum_flipped``), with up to 6 images and 5 output channels, float64."""
    n, cin, cout = draw(st.integers(1, 6)), draw(st.integers(1, 3)), draw(st.integers(1, 5))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    padding = (draw(st.integers(0, kh - 1)), draw(st.integers(0, kw - 1)))
    h, w = draw(st.integers(max(1, kh - 2 * padding[0]), 5)), draw(st.integers(max(1, kw - 2 * padding[1]), 5))
    rng = np.random.default_rng(draw(seeds))
    return rng.standard_normal((n, cin, h, w)), rng.standard_normal((cout, cin, kh, kw)), padding


@settings(max_examples=60)
@given(stride_one_cases(), splits, conv_knobs, seeds)
def test_chunked_conv_dw_from_the_dx_columns_equals_reference(case, split, conv_knob_values, seed):
    """The flipped-kernel path with many chunks: every chunk's part of dW, added in chunk order and turned
    into W's layout tile by tile (on one worker and on several). The test above draws this path rarely
    (stride 1 in both directions, padding below the kernel, dx needed, several chunks)."""
    x, W, padding = case
    gy = np.random.default_rng(seed).standard_normal(Conv2d(1, padding).forward(x, W).shape)
    want = run(Conv2d(1, padding), (x, W), gy)
    with cpu_split(*split), knobs(fast_conv, dict(conv_knob_values, MIN_COLUMNS=1)):
        got = run(ChunkedConv2d(1, padding), (x, W), gy)
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
    original = fast_conv.col2im_into
    fast_conv.col2im_into = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        for stride, expect_col2im in ((1, False), (2, True)):
            calls.clear()
            gy = rng.standard_normal(Conv2d(stride, 1).forward(x, W).shape)
            assert_same(run(ChunkedConv2d(stride, 1), (x, W), gy), run(Conv2d(stride, 1), (x, W), gy))
            assert bool(calls) == expect_col2im
    finally:
        fast_conv.col2im_into = original


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



@pytest.mark.parametrize("count, chunk_bytes", [(1, 1), (2, 1), (1, parallel.CHUNK_BYTES)])
def test_chunked_batch_norm_statistics_keep_float32_accuracy_far_from_zero(count, chunk_bytes):
    """Chunks that centre on their own means and are then moved to the batch mean lose nothing to
    cancellation: float32 activations around 1000 with unit spread give the float64 mean and variance
    to float32 precision (a sum of squares minus the squared mean would not)."""
    rng = np.random.default_rng(3)
    x = (1000 + rng.standard_normal((6, 3, 5, 5)) * np.array([1, 0.5, 2])[:, None, None]).astype(np.float32)
    C = x.shape[1]
    running_mean, running_var = np.zeros(C, np.float32), np.zeros(C, np.float32)
    with cpu_split(count, chunk_bytes):
        ChunkedBatchNorm(running_mean, running_var, True, momentum=1.0).forward(x, np.ones(C, np.float32),
                                                                                  np.zeros(C, np.float32))
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(running_mean, x64.mean(axis=(0, 2, 3)), rtol=1e-7)
    np.testing.assert_allclose(running_var, x64.var(axis=(0, 2, 3), ddof=1), rtol=1e-5)

# ----------------------------------------------------------------------------------- optimizers
@st.composite
def optimizer_cases(draw):
    """Parameters of a few shapes (one with a transposed, non-contiguous gradient; two sharing one gradient
    array), three steps of random gradients, and the hyperparameters of SGD or Adam."""
    rng = np.random.default_rng(draw(seeds))
    shapes = draw(st.lists(st.sampled_from([(1,), (5,), (3, 4), (40, 3), (2, 3, 5)]), min_size=1, max_size=4))
    data = [rng.standard_normal(shape) for shape in shapes]
    steps = []
    for _ in range(3):
        grads = [rng.standard_normal(shape) for shape in shapes]
        if len(grads) > 1 and shapes[0] == shapes[1]:
            grads[1] = grads[0]                                  # one gradient array for two parameters
        if shapes[-1] == (40, 3):
            grads[-1] = np.ascontiguousarray(grads[-1].T).T      # not C-contiguous
        steps.append(grads)
    return data, steps


@settings(max_examples=60)
@given(optimizer_cases(), st.sampled_from(["sgd", "adam"]), st.sampled_from([0.0, 0.9]), st.sampled_from([0.0, 5e-4]),
       st.sampled_from([np.float32, np.float64]), st.sampled_from([1, 7, 1 << 14]), splits)
def test_blockwise_optimizers_equal_the_reference_bit_for_bit(case, which, momentum, weight_decay, dtype, block, split):
    data, steps = case
    reference, fast = (SGD, ChunkedSGD) if which == "sgd" else (Adam, ChunkedAdam)
    settings_ = dict(lr=0.05, momentum=momentum) if which == "sgd" else dict(lr=1e-2)
    results = []
    for cls in (reference, fast):
        params = [Parameter(d.astype(dtype)) for d in data]
        optimizer = cls(params, weight_decay=weight_decay, **settings_)
        with cpu_split(*split), knobs(fast_optim, {"BLOCK": block}):
            for grads in steps:
                given_grads = [g.astype(dtype) if g.flags.c_contiguous else np.ascontiguousarray(g.T, dtype).T
                               for g in grads]
                if len(grads) > 1 and grads[1] is grads[0]:
                    given_grads[1] = given_grads[0]
                before = [g.copy() for g in given_grads]
                for p, g in zip(params, given_grads):
                    p.grad = g
                optimizer.step()
                for g, b in zip(given_grads, before):               # gradients are only read
                    np.testing.assert_array_equal(g, b)
        results.append(([p.data for p in params], optimizer.state_dict()))
    (want, want_state), (got, got_state) = results
    for u, v in zip(got, want):
        np.testing.assert_array_equal(u, v)
    assert got_state.keys() == want_state.keys()
    for key in want_state:
        np.testing.assert_array_equal(got_state[key], want_state[key])


def test_the_one_spot_picks_the_blockwise_optimizers_on_the_cpu():
    x = np.zeros(3)
    assert version_of(SGD, x) is ChunkedSGD and version_of(Adam, x) is ChunkedAdam


# --------------------------------------------------------------------------------------- linear
def blas_threads():
    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]


@settings(max_examples=30)
@given(st.integers(1, 5), st.integers(1, 6), st.integers(1, 4), st.booleans(), st.integers(1, 3), seeds)
def test_cpu_linear_equals_reference(batch, n_in, n_out, bias, count, seed):
    rng = np.random.default_rng(seed)
    x, W, b = rng.standard_normal((batch, n_in)), rng.standard_normal((n_out, n_in)), rng.standard_normal(n_out)
    inputs = (x, W, b) if bias else (x, W)
    gy = rng.standard_normal((batch, n_out))
    want = run(Linear(), inputs, gy)
    with cpu_split(count, parallel.CHUNK_BYTES):
        got = run(CPULinear(), inputs, gy)
    assert_same(got, want)


@pytest.mark.parametrize("count", [1, 2])
def test_cpu_linear_holds_blas_at_one_thread_only_while_the_workers_split(monkeypatch, count):
    """With two workers its products run on one BLAS thread (BLAS's threads would spin on the workers'
    cores); with one worker BLAS keeps its threads; either way BLAS has its threads back afterwards."""
    seen = []
    reference_forward, reference_backward = Linear.forward, Linear.backward
    monkeypatch.setattr(Linear, "forward", lambda self, *a: seen.append(blas_threads()) or reference_forward(self, *a))
    monkeypatch.setattr(Linear, "backward", lambda self, gy: seen.append(blas_threads()) or reference_backward(self, gy))
    rng = np.random.default_rng(0)
    with threadpool_limits(2, user_api="blas"), cpu_split(count, parallel.CHUNK_BYTES):
        before = blas_threads()
        run(CPULinear(), (rng.standard_normal((4, 3)), rng.standard_normal((2, 3))), rng.standard_normal((4, 2)))
        after = blas_threads()
    assert before and all(n == 2 for n in before)
    assert seen == [[1] * len(before) if count > 1 else before] * 2 and after == before
    assert version_of(Linear, np.zeros(2)) is CPULinear
