"""linear, avg_pool2d, global_avg_pool2d (finite differences, naive loops) and the [T, N, ...] nn layers."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minisnn import Tensor
from minisnn import nn
from minisnn.functions.conv import AvgPool2d, avg_pool2d, conv2d, global_avg_pool2d
from minisnn.functions.linear import linear
from minisnn.gradcheck import gradcheck
from reference import naive_avg_pool
from strategies import seeds

EXAMPLES = settings(max_examples=30)


# ------------------------------------------------------------------------------------- linear
@EXAMPLES
@given(st.integers(1, 4), st.integers(1, 5), st.integers(1, 4), st.booleans(), seeds)
def test_linear_gradcheck_and_forward(batch, fan_in, fan_out, with_bias, seed):
    rng = np.random.default_rng(seed)
    x, W, b = rng.standard_normal((batch, fan_in)), rng.standard_normal((fan_out, fan_in)), rng.standard_normal(fan_out)
    expected = np.array([[sum(x[n, k] * W[o, k] for k in range(fan_in)) + (b[o] if with_bias else 0.0)
                          for o in range(fan_out)] for n in range(batch)])
    if with_bias:
        np.testing.assert_allclose(linear(Tensor(x), Tensor(W), Tensor(b)).data, expected, rtol=1e-10, atol=1e-12)
        gradcheck(linear, x, W, b)
    else:
        np.testing.assert_allclose(linear(Tensor(x), Tensor(W)).data, expected, rtol=1e-10, atol=1e-12)
        gradcheck(linear, x, W)


def test_linear_bad_shapes_and_dtypes():
    with pytest.raises(ValueError, match="linear"):
        linear(Tensor(np.zeros((2, 3))), Tensor(np.zeros((4, 5))))
    with pytest.raises(ValueError, match="bias"):
        linear(Tensor(np.zeros((2, 3))), Tensor(np.zeros((4, 3))), Tensor(np.zeros(3)))
    with pytest.raises(TypeError, match="floating dtype"):
        linear(Tensor(np.zeros((2, 3), np.float32)), Tensor(np.zeros((4, 3))))


# ------------------------------------------------------------------------------------ pooling
@st.composite
def pool_cases(draw):
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = draw(st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    ph, pw = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
    h, w = draw(st.integers(max(1, kh - 2 * ph), 6)), draw(st.integers(max(1, kw - 2 * pw), 6))
    rng = np.random.default_rng(draw(seeds))
    x = rng.standard_normal((draw(st.integers(1, 2)), draw(st.integers(1, 3)), h, w))
    return x, (kh, kw), stride, (ph, pw)


@EXAMPLES
@given(pool_cases())
def test_avg_pool2d_forward_and_gradcheck(case):
    x, kernel, stride, padding = case
    y = avg_pool2d(Tensor(x), kernel, stride, padding)
    np.testing.assert_allclose(y.data, naive_avg_pool(x, kernel, stride, padding), rtol=1e-10, atol=1e-12)
    gradcheck(lambda x: avg_pool2d(x, kernel, stride, padding), x)


@EXAMPLES
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 5), st.integers(1, 5), seeds)
def test_global_avg_pool2d_forward_and_gradcheck(n, c, h, w, seed):
    x = np.random.default_rng(seed).standard_normal((n, c, h, w))
    expected = np.array([[sum(x[i, k].ravel()) / (h * w) for k in range(c)] for i in range(n)])
    np.testing.assert_allclose(global_avg_pool2d(Tensor(x)).data, expected, rtol=1e-10, atol=1e-12)
    gradcheck(global_avg_pool2d, x)


def test_average_pooling_defaults_to_non_overlapping_windows_without_padding():
    x = np.arange(2 * 3 * 4 * 6, dtype=np.float64).reshape(2, 3, 4, 6)
    y = avg_pool2d(Tensor(x), 2)
    np.testing.assert_allclose(y.data, naive_avg_pool(x, (2, 2), (2, 2), (0, 0)), rtol=1e-14)
    np.testing.assert_array_equal(AvgPool2d(2)(x).data, y.data)


def test_pooling_keeps_float32():
    x = Tensor(np.ones((2, 3, 4, 4), np.float32), requires_grad=True)
    y = avg_pool2d(x, 2)
    g = global_avg_pool2d(x)
    assert y.dtype == g.dtype == np.float32
    (y.sum() + g.sum()).backward()
    assert x.grad.dtype == np.float32


def test_pooling_rejects_non_4d():
    with pytest.raises(ValueError, match="avg_pool2d"):
        avg_pool2d(Tensor(np.zeros((3, 4, 4))), 2)
    with pytest.raises(ValueError, match="global_avg_pool2d"):
        global_avg_pool2d(Tensor(np.zeros((3, 4, 4))))


# -------------------------------------------------------------------------------- nn layers
def spikes(shape, seed=0):
    return Tensor((np.random.default_rng(seed).random(shape) < 0.3).astype(np.float32))


@pytest.mark.parametrize("layer, in_shape, out_shape", [
    (nn.Conv2d(3, 8, 3, padding=1), (4, 2, 3, 8, 8), (4, 2, 8, 8, 8)),
    (nn.Conv2d(3, 8, (3, 1), stride=(2, 1), padding=(1, 0)), (2, 3, 3, 8, 6), (2, 3, 8, 4, 6)),
    (nn.Conv2d(4, 6, 1, stride=2, bias=True), (1, 2, 4, 7, 7), (1, 2, 6, 4, 4)),
    (nn.Linear(5, 3), (4, 2, 5), (4, 2, 3)),
    (nn.AvgPool2d(2), (3, 2, 4, 8, 6), (3, 2, 4, 4, 3)),
    (nn.GlobalAvgPool2d(), (3, 2, 4, 5, 5), (3, 2, 4)),
    (nn.Flatten(), (3, 2, 4, 5, 5), (3, 2, 100)),
])
def test_layer_shapes_dtype_and_gradients(layer, in_shape, out_shape):
    x = spikes(in_shape)
    x.requires_grad = True
    y = layer(x)
    assert y.shape == out_shape and y.dtype == np.float32
    y.backward(np.ones(out_shape, np.float32))
    assert x.grad.shape == in_shape and x.grad.dtype == np.float32
    for p in layer.parameters():
        assert p.dtype == np.float32 and p.grad.shape == p.shape and p.grad.dtype == np.float32


@pytest.mark.parametrize("layer, in_shape", [
    (nn.Conv2d(3, 8, 3), (4, 3, 8, 8)),       # no time axis
    (nn.Conv2d(3, 8, 3), (4, 2, 5, 8, 8)),    # wrong channel count
    (nn.Linear(5, 3), (4, 2, 1, 5)),
    (nn.Linear(5, 3), (4, 2, 6)),
    (nn.AvgPool2d(2), (4, 8, 8)),
    (nn.GlobalAvgPool2d(), (2, 4, 8, 8, 1, 1)),
    (nn.Flatten(), (4, 2)),
])
def test_layer_bad_shape_names_the_layer(layer, in_shape):
    with pytest.raises(ValueError, match=type(layer).__name__):
        layer(spikes(in_shape))


def test_layers_fold_time_into_the_batch():
    """Each timestep of a layer's output equals the op applied to that timestep alone."""
    conv, fc = nn.Conv2d(2, 3, 3, stride=(1, 2), padding=1, bias=True, seed=1), nn.Linear(6, 4, seed=2)
    conv.bias.data[:] = np.arange(3, dtype=np.float32)
    fc.bias.data[:] = np.arange(4, dtype=np.float32)
    x, v = spikes((3, 2, 2, 5, 5)), spikes((3, 2, 6))
    y, z = conv(x), fc(v)
    for t in range(3):
        np.testing.assert_allclose(y.data[t], conv2d(Tensor(x.data[t]), conv.weight, conv.bias, (1, 2), 1).data,
                                   rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(z.data[t], v.data[t] @ fc.weight.data.T + fc.bias.data, rtol=1e-6, atol=1e-6)


def test_conv_layer_gradcheck_through_the_fold():
    layer = nn.Conv2d(2, 3, (2, 3), stride=(2, 1), padding=(0, 1), bias=True, seed=0)
    layer.weight.data = layer.weight.data.astype(np.float64)
    layer.bias.data = np.random.default_rng(1).standard_normal(3)
    gradcheck(layer, np.random.default_rng(2).standard_normal((2, 2, 2, 4, 3)))


def test_kaiming_init_and_seed():
    layer = nn.Conv2d(64, 32, 3, seed=0)
    w = layer.weight.data
    assert w.dtype == np.float32 and layer.bias is None
    assert abs(w.std() / np.sqrt(2 / (64 * 9)) - 1) < 0.05 and abs(w.mean()) < 0.01
    np.testing.assert_array_equal(w, nn.Conv2d(64, 32, 3, seed=0).weight.data)
    fc = nn.Linear(400, 300, seed=0)
    assert abs(fc.weight.data.std() / np.sqrt(2 / 400) - 1) < 0.05
    assert np.all(fc.bias.data == 0) and fc.bias.dtype == np.float32
    assert [name for name, _ in nn.Sequential(layer, fc).named_parameters()] == ["0.weight", "1.weight", "1.bias"]


def test_repr_is_readable():
    assert repr(nn.Conv2d(3, 8, 3, padding=1)) == \
        "Conv2d(3, 8, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), bias=False)"
    assert repr(nn.Linear(5, 3)) == "Linear(in_features=5, out_features=3, bias=True)"
    assert repr(nn.AvgPool2d(2)) == "AvgPool2d(kernel_size=(2, 2), stride=(2, 2), padding=(0, 0))"
