"""im2col / col2im and conv2d: against a naive nested-loop convolution and central finite differences,
on the reference path and on the fast one (tests/test_fast_paths.py checks the two equal directly)."""
import numpy as np
import pytest
from hypothesis import given, settings

from minisnn import Tensor
from minisnn.fast import reference_only
from minisnn.functions.conv import Conv2d, col2im, conv2d, im2col
from minisnn.gradcheck import gradcheck
from reference import naive_conv, naive_conv_grads
from strategies import conv_cases, seeds

EXAMPLES = settings(max_examples=60)
BOTH_PATHS = pytest.mark.parametrize("reference", [True, False], ids=["reference", "fast"])


@BOTH_PATHS
@EXAMPLES
@given(conv_cases())
def test_conv2d_matches_naive_loop_forward_and_backward(reference, case):
    x, W, b, stride, padding = case
    tx, tW, tb = Tensor(x, requires_grad=True), Tensor(W, requires_grad=True), Tensor(b, requires_grad=True)
    with reference_only(reference):
        y = conv2d(tx, tW, tb, stride=stride, padding=padding)
        expected = naive_conv(x, W, b, stride, padding)
        assert y.shape == expected.shape
        np.testing.assert_allclose(y.data, expected, rtol=1e-10, atol=1e-10)
        gy = np.random.default_rng(1).standard_normal(y.shape)
        y.backward(gy)
    for got, want in zip((tx.grad, tW.grad, tb.grad), naive_conv_grads(x, W, gy, stride, padding)):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


@BOTH_PATHS
@settings(max_examples=30)
@given(conv_cases(max_side=5))
def test_conv2d_gradcheck(reference, case):
    x, W, b, stride, padding = case
    with reference_only(reference):
        gradcheck(lambda x, W, b: conv2d(x, W, b, stride=stride, padding=padding), x, W, b)


@settings(max_examples=10)
@given(conv_cases(max_side=5))
def test_conv2d_gradcheck_without_bias(case):
    x, W, _, stride, padding = case
    gradcheck(lambda x, W: conv2d(x, W, stride=stride, padding=padding), x, W)


@EXAMPLES
@given(conv_cases(), seeds)
def test_im2col_col2im_adjoint(case, seed):
    """<im2col(x), c> == <x, col2im(c)> for every x and c: col2im is exactly the transpose of im2col."""
    x, W, _, stride, padding = case
    kh, kw = W.shape[2:]
    cols = im2col(x, kh, kw, stride, padding)
    c = np.random.default_rng(seed).standard_normal(cols.shape)
    back = col2im(c, x.shape, kh, kw, stride, padding)
    assert back.shape == x.shape
    np.testing.assert_allclose(np.sum(cols * c), np.sum(x * back), rtol=1e-10, atol=1e-10)


def test_im2col_reads_non_contiguous_input():
    x = np.random.default_rng(0).standard_normal((3, 2, 5, 4)).transpose(0, 1, 3, 2)
    np.testing.assert_array_equal(im2col(x, 2, 3, (1, 2), 1), im2col(np.ascontiguousarray(x), 2, 3, (1, 2), 1))


@BOTH_PATHS
def test_first_layer_skips_dx_but_gets_dW(reference):
    rng = np.random.default_rng(0)
    x, W = rng.standard_normal((2, 3, 5, 5)), rng.standard_normal((4, 3, 3, 3))
    tx, tW = Tensor(x), Tensor(W, requires_grad=True)
    with reference_only(reference):
        y = conv2d(tx, tW, padding=1)
        gy = rng.standard_normal(y.shape)
        y.backward(gy)
    assert tx.grad is None
    np.testing.assert_allclose(tW.grad, naive_conv_grads(x, W, gy, 1, 1)[1], rtol=1e-10, atol=1e-10)


@BOTH_PATHS
def test_float32_stays_float32(reference):
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((2, 3, 6, 6)).astype(np.float32), requires_grad=True)
    W = Tensor(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), requires_grad=True)
    b = Tensor(np.zeros(4, np.float32), requires_grad=True)
    with reference_only(reference):
        y = conv2d(x, W, b, stride=2, padding=1)
        assert y.dtype == np.float32 and y.data.flags.c_contiguous
        y.backward()
    assert x.grad.dtype == W.grad.dtype == b.grad.dtype == np.float32


@BOTH_PATHS
@pytest.mark.parametrize("x_shape, w_shape, kwargs, error, match", [
    ((3, 6, 6), (4, 3, 3, 3), {}, ValueError, "4-D input"),
    ((1, 3, 6, 6), (4, 2, 3, 3), {}, ValueError, "does not fit"),
    ((1, 3, 6, 6), (4, 3, 3, 3), {"bias": (3,)}, ValueError, r"bias shape \(3,\) != \(4,\)"),
    ((1, 3, 2, 2), (4, 3, 3, 3), {}, ValueError, "larger than the padded input"),
    ((1, 3, 6, 2), (4, 3, 3, 3), {}, ValueError, "larger than the padded input"),  # too wide only
    ((1, 3, 1, 6), (4, 3, 4, 4), {"padding": 1}, ValueError, "larger than the padded input"),  # 1 + 2 < 4
    ((1, 3, 6, 1), (4, 3, 4, 4), {"padding": 1}, ValueError, "larger than the padded input"),
    ((1, 3, 6, 6), (4, 3, 0, 3), {}, ValueError, "kernel size must be positive"),
    ((1, 3, 6, 6), (4, 3, 3, 0), {}, ValueError, "kernel size must be positive"),
    ((1, 3, 6, 6), (4, 3, 3, 3), {"stride": 0}, ValueError, "stride must be positive"),
    ((1, 3, 6, 6), (4, 3, 3, 3), {"stride": (1, 0)}, ValueError, "stride must be positive"),
    ((1, 3, 6, 6), (4, 3, 3, 3), {"stride": (0, 1)}, ValueError, "stride must be positive"),
    ((1, 3, 6, 6), (4, 3, 3, 3), {"stride": (1, 2, 3)}, ValueError, "pair of ints"),
    ((1, 3, 6, 6), (4, 3, 3, 3), {"stride": (1, 1.5)}, ValueError, "pair of ints"),
    ((1, 3, 6, 6), (4, 3, 3, 3), {"padding": -1}, ValueError, "non-negative"),
    ((1, 3, 6, 6), (4, 3, 3, 3), {"padding": (0, -1)}, ValueError, "non-negative"),
    ((1, 3, 6, 6), (4, 3, 3, 3), {"padding": (-1, 0)}, ValueError, "non-negative"),
])
def test_conv2d_bad_arguments(reference, x_shape, w_shape, kwargs, error, match):
    kwargs = dict(kwargs)
    bias = Tensor(np.zeros(kwargs.pop("bias"))) if "bias" in kwargs else None
    with reference_only(reference), pytest.raises(error, match=match):
        conv2d(Tensor(np.zeros(x_shape)), Tensor(np.zeros(w_shape)), bias, **kwargs)


def test_im2col_and_col2im_defaults_and_refusals():
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5))
    cols = im2col(x, 2, 3)  # stride 1, no padding
    np.testing.assert_array_equal(cols, im2col(x, 2, 3, 1, 0))
    np.testing.assert_array_equal(col2im(cols, x.shape, 2, 3), col2im(cols, x.shape, 2, 3, 1, 0))
    with pytest.raises(ValueError, match="im2col expects a 4-D input"):
        im2col(x[0], 2, 2)
    with pytest.raises(ValueError, match=r"col2im: cols shape \(18, 17\) does not match .* expected \(18, 18\)"):
        col2im(cols[:, :-1], x.shape, 2, 3)
    W = np.random.default_rng(1).standard_normal((4, 3, 2, 3))
    np.testing.assert_array_equal(Conv2d()(Tensor(x), Tensor(W)).data, conv2d(Tensor(x), Tensor(W), stride=1).data)


def test_conv2d_refuses_mixed_dtypes():
    with pytest.raises(TypeError, match="floating dtype"):
        conv2d(Tensor(np.zeros((1, 3, 6, 6), np.float32)), Tensor(np.zeros((4, 3, 3, 3))))
