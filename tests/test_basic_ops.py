"""Every basic op: hand-written backward against central finite differences in float64 (Hypothesis)."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from minisnn import Function, Tensor
from minisnn.functions import basic as F
from minisnn.gradcheck import GradientCheckError, gradcheck

EXAMPLES = settings(max_examples=25)
shapes = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4)


def values(shape, lo=-2.0, hi=2.0):
    return hnp.arrays(np.float64, shape, elements=st.floats(lo, hi, allow_nan=False, width=64))


@st.composite
def broadcast_pair(draw):
    """Two shapes that broadcast against each other (some axes 1, some dropped)."""
    shape = draw(shapes)
    other = tuple(1 if draw(st.booleans()) else n for n in shape)
    other = other[draw(st.integers(0, len(other) - 1)):]
    a, b = (shape, other) if draw(st.booleans()) else (other, shape)
    return draw(values(a)), draw(values(b))


@EXAMPLES
@given(broadcast_pair(), st.sampled_from(["add", "sub", "mul"]))
def test_binary_arithmetic_with_broadcasting(pair, op):
    gradcheck(getattr(F, op), *pair)


@EXAMPLES
@given(broadcast_pair())
def test_div(pair):
    a, b = pair
    b = np.where(np.abs(b) < 0.5, 0.5 + np.abs(b), b)  # keep away from the pole at 0
    gradcheck(F.div, a, b)


@EXAMPLES
@given(shapes.flatmap(values))
def test_neg_exp(x):
    gradcheck(F.neg, x)
    gradcheck(F.exp, x)


@EXAMPLES
@given(shapes.flatmap(lambda s: values(s, 0.2, 3.0)), st.sampled_from([2, 3, 0.5, -1.5]))
def test_pow_log(x, c):
    gradcheck(F.log, x)
    gradcheck(lambda t: F.pow(t, c), x)


@EXAMPLES
@given(shapes.flatmap(values))
def test_clip(x):
    x = np.where(np.abs(np.abs(x) - 1.0) < 1e-3, 0.0, x)  # keep away from the kinks at +-1
    gradcheck(lambda t: F.clip(t, -1.0, 1.0), x)


@EXAMPLES
@given(st.integers(1, 4), st.integers(1, 4), st.integers(1, 4), st.data())
def test_matmul(n, k, m, data):
    a = data.draw(values((n, k)))
    b = data.draw(values((k, m)))
    gradcheck(F.matmul, a, b)


@EXAMPLES
@given(shapes.flatmap(values), st.data())
def test_reshape_transpose(x, data):
    gradcheck(lambda t: F.reshape(t, (x.size,)), x)
    axes = tuple(data.draw(st.permutations(range(x.ndim))))
    gradcheck(lambda t: F.transpose(t, axes), x)
    gradcheck(lambda t: F.transpose(t), x)


@EXAMPLES
@given(shapes.flatmap(values), st.data(), st.booleans())
def test_sum_mean(x, data, keepdims):
    axis = data.draw(st.none() | st.integers(-x.ndim, x.ndim - 1))
    gradcheck(lambda t: F.sum(t, axis, keepdims), x)
    gradcheck(lambda t: F.mean(t, axis, keepdims), x)


@EXAMPLES
@given(shapes.flatmap(values), st.data(), st.booleans())
def test_max(x, data, keepdims):
    x = x + np.arange(x.size).reshape(x.shape) * 1e-2  # distinct values: max is differentiable
    axis = data.draw(st.none() | st.integers(0, x.ndim - 1))
    gradcheck(lambda t: F.max(t, axis, keepdims), x)


def test_max_splits_the_gradient_evenly_between_ties():
    x = Tensor(np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]]), requires_grad=True)
    y = F.max(x, axis=1)
    assert y.data.tolist() == [3.0, 2.0]
    (y * np.array([1.0, 6.0])).sum().backward()
    np.testing.assert_array_equal(x.grad, [[0.0, 0.5, 0.5], [2.0, 2.0, 2.0]])
    x.zero_grad()
    F.max(x, axis=0, keepdims=True).sum().backward()  # columns: 2 beats 1; 3 beats 2 twice
    np.testing.assert_array_equal(x.grad, [[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    x.zero_grad()
    F.max(x).backward()  # over everything: two 3s share the one gradient
    np.testing.assert_array_equal(x.grad, [[0.0, 0.5, 0.5], [0.0, 0.0, 0.0]])


def test_clip_passes_the_gradient_at_its_bounds_and_blocks_it_outside():
    x = Tensor(np.array([-2.0, -1.0, -0.5, 1.0, 3.0]), requires_grad=True)
    y = F.clip(x, -1.0, 1.0)
    assert y.data.tolist() == [-1.0, -1.0, -0.5, 1.0, 1.0]
    (y * np.array([1.0, 2.0, 3.0, 4.0, 5.0])).sum().backward()
    np.testing.assert_array_equal(x.grad, [0.0, 2.0, 3.0, 4.0, 0.0])


@EXAMPLES
@given(broadcast_pair())
def test_broadcast_to_and_sum_to(pair):
    a, b = pair
    big = np.broadcast_shapes(a.shape, b.shape)
    gradcheck(lambda t: F.broadcast_to(t, big), a)
    full = np.broadcast_to(a, big).copy()
    gradcheck(lambda t: F.sum_to(t, a.shape), full)


@EXAMPLES
@given(shapes.flatmap(values), st.data())
def test_getitem(x, data):
    i = data.draw(st.integers(0, x.shape[0] - 1))
    gradcheck(lambda t: F.getitem(t, i), x)
    gradcheck(lambda t: F.getitem(t, slice(None, None, 2)), x)
    picks = np.array(data.draw(st.lists(st.integers(0, x.shape[0] - 1), min_size=1, max_size=5)))
    gradcheck(lambda t: F.getitem(t, picks), x)  # repeated indices must accumulate


@EXAMPLES
@given(st.lists(st.integers(1, 3), min_size=1, max_size=3), st.integers(1, 3), st.data())
def test_concatenate_and_stack(sizes, width, data):
    xs = [data.draw(values((n, width))) for n in sizes]
    gradcheck(lambda *ts: F.concatenate(ts, axis=0), *xs)
    gradcheck(lambda *ts: F.concatenate(ts, axis=1), *[x.T.copy() for x in xs])
    same = [data.draw(values((2, width))) for _ in sizes]
    axis = data.draw(st.integers(0, 2))
    gradcheck(lambda *ts: F.stack(ts, axis=axis), *same)


def test_matmul_refuses_arrays_that_are_not_2d():
    for a, b in ((np.ones(3), np.ones((3, 2))), (np.ones((2, 3)), np.ones(3)), (np.ones((1, 2, 3)), np.ones((3, 2)))):
        with pytest.raises(ValueError, match="matmul expects 2-D arrays"):
            F.matmul(Tensor(a), Tensor(b))


def test_broadcasting_against_an_empty_batch_gives_zero_gradients_of_the_right_shape():
    x = Tensor(np.ones((0, 3)), requires_grad=True)
    b = Tensor(np.ones((1, 3)), requires_grad=True)
    (x * b + b).sum().backward()
    assert x.grad.shape == (0, 3) and b.grad.tolist() == [[0.0, 0.0, 0.0]]


def test_gradcheck_catches_a_wrong_backward():
    class WrongSquare(Function):
        def forward(self, x):
            self.x = x
            return x * x

        def backward(self, gy):
            return gy * self.x  # missing the factor 2

    with pytest.raises(GradientCheckError, match="index"):
        gradcheck(lambda t: WrongSquare()(t), np.array([1.0, 2.0, 3.0]))


def test_gradcheck_requires_float64():
    with pytest.raises(TypeError, match="float64"):
        gradcheck(F.exp, np.ones(3, dtype=np.float32))


def test_operators_dispatch_to_the_ops():
    a = Tensor(np.array([[1.0, 2.0], [3.0, 4.0]]), requires_grad=True)
    y = (2 - a) * a / 2 + a ** 2 - (-a) + 1 / (a + 1) + a @ a.T
    y.sum().backward()
    x = a.data
    ones = np.ones((2, 2))
    # d/da of sum(a @ a.T) = ones @ a + ones^T @ a
    expected = (2 - 2 * x) / 2 + 2 * x + 1 - 1 / (x + 1) ** 2 + ones @ x + ones.T @ x
    np.testing.assert_allclose(a.grad, expected, rtol=1e-12)


def test_tensor_methods_take_shapes_and_axes_as_arguments_or_one_sequence():
    x = Tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    for y in (x.reshape(3, 2), x.reshape((3, 2)), x.reshape([3, 2])):
        assert y.shape == (3, 2) and y.data.tolist() == [[0, 1], [2, 3], [4, 5]]
    for y in (x.transpose(), x.transpose(1, 0), x.transpose((1, 0)), x.transpose([1, 0]), x.T):
        assert y.data.tolist() == [[0, 3], [1, 4], [2, 5]]
    cube = Tensor(np.zeros((2, 3, 4)))
    assert cube.transpose(2, 0, 1).shape == (4, 2, 3) and cube.transpose((1, 2, 0)).shape == (3, 4, 2)
    (x.reshape(6) * np.arange(6.0)).sum().backward()
    assert x.grad.tolist() == [[0, 1, 2], [3, 4, 5]]


def test_reductions_and_joins_have_the_documented_defaults():
    x = Tensor(np.arange(6.0).reshape(2, 3))
    assert x.sum().shape == () and x.mean().shape == () and F.max(x).shape == ()
    assert F.Sum()(x).shape == () and F.Mean()(x).shape == () and F.Max()(x).shape == ()
    assert F.sum(x, axis=1).shape == (2,) and F.mean(x, axis=0).shape == (3,) and F.max(x, axis=1).shape == (2,)
    assert F.concatenate([x, x]).shape == (4, 3) and F.stack([x, x]).shape == (2, 2, 3)
    assert F.sum(x, axis=1, keepdims=True).shape == (2, 1) and F.Sum(0, keepdims=True)(x).shape == (1, 3)
    three = Tensor(np.arange(12.0).reshape(3, 4))  # joined: the new axis first, as numpy.stack puts it
    assert F.stack([three, three]).shape == (2, 3, 4) and F.concatenate([three, three]).shape == (6, 4)


def test_a_reshape_broadcast_or_sum_to_the_same_shape_is_the_tensor_itself():
    x = Tensor(np.ones((2, 3)), requires_grad=True)
    assert F.reshape(x, (2, 3)) is x and F.broadcast_to(x, (2, 3)) is x and F.sum_to(x, (2, 3)) is x
    assert F.reshape(x, (3, 2)).creator is not None and F.broadcast_to(x, (4, 2, 3)).shape == (4, 2, 3)
    assert F.sum_to(x, (1, 3)).data.tolist() == [[2.0, 2.0, 2.0]]
    raw = np.ones((2, 3))
    for same in (F.reshape(raw, (2, 3)), F.broadcast_to(raw, (2, 3)), F.sum_to(raw, (2, 3))):
        assert isinstance(same, Tensor) and same.shape == (2, 3)  # a raw array is wrapped, whatever its shape
    assert F.sum_to(raw, (3,)).data.tolist() == [2.0, 2.0, 2.0]


def test_repeat_over_time_presents_the_input_at_every_step_and_sums_the_gradients():
    x = Tensor(np.array([[1.0, 2.0]]), requires_grad=True)
    y = F.repeat_over_time(x, 3)
    assert y.shape == (3, 1, 2) and all(y.data[t].tolist() == [[1.0, 2.0]] for t in range(3))
    (y * np.arange(3.0)[:, None, None]).sum().backward()
    assert x.grad.tolist() == [[3.0, 3.0]]
    assert F.repeat_over_time(np.zeros((4, 5)), 2).shape == (2, 4, 5)  # a raw array works too


def test_getitem_with_a_mixed_index_accumulates_repeated_positions():
    x = Tensor(np.zeros((2, 3)), requires_grad=True)
    F.getitem(x, (1, np.array([2, 2, 0]))).sum().backward()
    assert x.grad.tolist() == [[0.0, 0.0, 0.0], [1.0, 0.0, 2.0]]
