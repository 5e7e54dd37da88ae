"""Softmax cross-entropy: finite differences, stability for huge logits, label checks."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from minisnn import Tensor
from minisnn.functions.loss import log_softmax_array, mean_over_time, softmax_cross_entropy
from minisnn.gradcheck import gradcheck


@settings(max_examples=30)
@given(st.integers(1, 5), st.integers(2, 6), st.data())
def test_cross_entropy_gradient(n, k, data):
    z = data.draw(hnp.arrays(np.float64, (n, k), elements=st.floats(-5, 5)))
    labels = np.array(data.draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n)))
    gradcheck(lambda t: softmax_cross_entropy(t, labels), z)


@settings(max_examples=20)
@given(st.integers(1, 4), st.integers(1, 3), st.integers(2, 4), st.data())
def test_mean_over_time_then_loss_gradient(t, n, k, data):
    y = data.draw(hnp.arrays(np.float64, (t, n, k), elements=st.floats(-3, 3)))
    labels = np.array(data.draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n)))
    gradcheck(lambda v: softmax_cross_entropy(mean_over_time(v), labels), y)


def test_value_matches_definition_and_is_stable():
    z = np.array([[1000.0, 0.0, -1000.0], [0.1, 0.2, 0.3]])
    labels = np.array([0, 2])
    loss = softmax_cross_entropy(Tensor(z, requires_grad=True), labels)
    p = np.exp(z[1] - z[1].max()) / np.exp(z[1] - z[1].max()).sum()
    assert np.isfinite(loss.item())
    np.testing.assert_allclose(loss.item(), (0.0 - np.log(p[2])) / 2, rtol=1e-12)


def test_bad_labels_are_reported():
    z = Tensor(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="labels must lie"):
        softmax_cross_entropy(z, np.array([0, 3]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\), got range \[-1, 0\]"):
        softmax_cross_entropy(z, np.array([-1, 0]))  # a negative label would silently pick the last class
    with pytest.raises(ValueError, match="labels"):
        softmax_cross_entropy(z, np.array([0]))
    with pytest.raises(ValueError, match=r"expects logits \[N, K\], got shape \(2, 2, 3\)"):
        softmax_cross_entropy(Tensor(np.zeros((2, 2, 3))), np.array([0, 1]))


def test_log_softmax_runs_over_the_last_axis_of_any_shape():
    z = np.random.default_rng(0).standard_normal((2, 3, 4)) * 10
    expected = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    np.testing.assert_allclose(log_softmax_array(z), expected, rtol=1e-12, atol=1e-12)
