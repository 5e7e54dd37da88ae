"""The LIF neuron: forward against plain references, hand-written STBP backward against finite
differences (smooth spike) and against autograd over the unrolled graph (Heaviside spike)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minisnn import nn
from minisnn.core import Tensor, no_grad
from minisnn.fast import reference_only
from minisnn.functions.neuron import LIF, lif, lif_unrolled
from minisnn.functions.surrogate import get_surrogate
from minisnn.gradcheck import gradcheck, numerical_grad
from reference import reference_lif
from strategies import lif_cases, seeds

HEAVISIDE = ["rectangular", "sigmoid", "atan", "triangle"]
BOTH_PATHS = pytest.mark.parametrize("reference", [True, False], ids=["reference", "fast"])


# ---------------------------------------------------------------------------------- forward
def test_known_trace_for_one_neuron():
    # V_th = 0.5, tau = 0.25, constant x = 0.45:
    # u0 = 0.45 (no spike); u1 = 0.25*0.45 + 0.45 = 0.5625 (spike); u2 = 0.45 after the reset; ...
    x = np.full((6, 1), 0.45)
    fn = LIF()
    o = fn(Tensor(x)).data
    np.testing.assert_allclose(fn.u[:, 0], [0.45, 0.5625, 0.45, 0.5625, 0.45, 0.5625])
    np.testing.assert_array_equal(o[:, 0], [0, 1, 0, 1, 0, 1])
    # x = 0.3: u = 0.3, 0.375, 0.39375, 0.3984375 -> 0.3 / (1 - 0.25) = 0.4 < V_th, never fires
    fn = LIF()
    o = fn(Tensor(np.full((4, 1), 0.3))).data
    np.testing.assert_allclose(fn.u[:, 0], [0.3, 0.375, 0.39375, 0.3984375])
    assert not o.any()
    # x = 0.5 = V_th fires at once (H(0) = 1), and again after every reset
    np.testing.assert_array_equal(lif(Tensor(np.full((3, 1), 0.5))).data[:, 0], [1, 1, 1])


@settings(max_examples=60)
@given(case=lif_cases())
def test_forward_matches_plain_python_loop(case):
    x, v_th, tau = case
    fn = LIF(v_th, tau)
    o = fn(Tensor(x)).data
    u_ref, o_ref = reference_lif(x, v_th, tau)
    np.testing.assert_array_equal(o, o_ref)
    np.testing.assert_allclose(fn.u, u_ref, rtol=0, atol=0)
    with no_grad():
        np.testing.assert_array_equal(lif(Tensor(x), v_th, tau).data, o_ref)  # the fast path too


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_kept_and_spikes_are_stored_in_one_byte(dtype):
    x = np.random.default_rng(0).normal(0.5, 0.5, size=(4, 3, 5)).astype(dtype)
    t = Tensor(x, requires_grad=True)
    fn = LIF()
    y = fn(t)
    assert y.dtype == dtype and y.shape == x.shape
    assert fn.u.dtype == dtype
    assert fn.o.dtype.itemsize == 1, "Heaviside spikes must be saved as 1-byte arrays"
    y.backward(np.ones_like(x))
    assert t.grad.dtype == dtype


def test_smooth_spike_is_stored_as_float():
    fn = LIF(surrogate="smooth_sigmoid")
    fn(Tensor(np.zeros((2, 3))))
    assert fn.o.dtype == np.float64


def test_the_neuron_has_the_papers_defaults():
    neuron = LIF()
    assert (neuron.v_th, neuron.tau_decay, neuron.detach_reset) == (0.5, 0.25, False)
    assert type(neuron.surrogate).__name__ == "Rectangular" and neuron.surrogate.a == 1.0


@BOTH_PATHS
def test_bad_input_raises_clear_errors(reference):
    with reference_only(reference), pytest.raises(ValueError, match=r"\[T, N, \.\.\.\]"):
        lif(Tensor(np.zeros(5)))
    with reference_only(reference), pytest.raises(TypeError, match="x must be a float array"):
        lif(Tensor(np.zeros((2, 3), dtype=np.int64)))
    for tau in (1.5, -0.1):
        with pytest.raises(ValueError, match="tau_decay"):
            lif(Tensor(np.zeros((2, 3))), tau_decay=tau)
    assert lif(Tensor(np.array([[0.7], [0.4]])), tau_decay=0.0).data.tolist() == [[1.0], [0.0]]  # no memory
    with pytest.raises(ValueError, match="unknown surrogate"):
        lif(Tensor(np.zeros((2, 3))), surrogate="nope")


# --------------------------------------------------------------------------------- backward
@BOTH_PATHS
@settings(max_examples=50)
@given(case=lif_cases(), k=st.floats(1.0, 6.0))
def test_smooth_spike_backward_matches_finite_differences(reference, case, k):
    x, v_th, tau = case
    smooth = get_surrogate("smooth_sigmoid", k=k)
    with reference_only(reference):
        gradcheck(lambda t: lif(t, v_th, tau, smooth), x, atol=1e-7, rtol=1e-5)


@settings(max_examples=50)
@given(case=lif_cases(), k=st.floats(1.0, 6.0), seed=seeds)
def test_smooth_spike_detach_reset_matches_finite_differences_with_frozen_reset(case, k, seed):
    # detach_reset is the exact gradient of the LIF whose reset factor (1 - o[t-1]) is held at its
    # current value: differentiate that function numerically.
    x, v_th, tau = case
    smooth = get_surrogate("smooth_sigmoid", k=k)
    weight = np.random.default_rng(seed).standard_normal(x.shape)
    t = Tensor(x.copy(), requires_grad=True)
    lif(t, v_th, tau, smooth, detach_reset=True).backward(weight.copy())

    _, frozen = reference_lif(x, v_th, tau, spike=smooth.spike)
    frozen_lif = lambda xt: Tensor(reference_lif(xt.data, v_th, tau, smooth.spike, reset=frozen)[1])
    numeric = numerical_grad(frozen_lif, [x.copy()], 0, weight, eps=1e-6)
    np.testing.assert_allclose(t.grad, numeric, rtol=1e-5, atol=1e-7)


@BOTH_PATHS
@settings(max_examples=60)
@given(case=lif_cases(), name=st.sampled_from(HEAVISIDE), detach_reset=st.booleans(), seed=seeds)
def test_heaviside_backward_matches_autograd_of_unrolled_graph(reference, case, name, detach_reset, seed):
    x, v_th, tau = case
    surrogate = get_surrogate(name)
    weight = np.random.default_rng(seed).standard_normal(x.shape)

    engine = Tensor(x.copy(), requires_grad=True)
    with reference_only(reference):
        y = lif(engine, v_th, tau, surrogate, detach_reset)
        y.backward(weight.copy())

    unrolled = Tensor(x.copy(), requires_grad=True)
    y_ref = lif_unrolled(unrolled, v_th, tau, surrogate, detach_reset)
    y_ref.backward(weight.copy())

    np.testing.assert_array_equal(y.data, y_ref.data)
    np.testing.assert_allclose(engine.grad, unrolled.grad, rtol=1e-10, atol=1e-10)


def test_the_unrolled_lif_has_the_defaults_of_lif():
    # the same spikes and input gradients with no options given (V_th, tau_decay, surrogate, no detach)
    x = np.array([[0.6, 0.2], [0.4, 0.9], [0.1, 0.45], [0.7, 0.3]])
    ours, unrolled = Tensor(x.copy(), requires_grad=True), Tensor(x.copy(), requires_grad=True)
    y, y_ref = lif(ours), lif_unrolled(unrolled)
    y.backward(np.ones_like(x))
    y_ref.backward(np.ones_like(x))
    np.testing.assert_array_equal(y.data, y_ref.data)
    assert y.data.any()  # the resets happen, so a detached reset would change the gradient
    np.testing.assert_allclose(unrolled.grad, ours.grad, rtol=1e-12)


def test_detach_reset_known_gradients():
    # V_th = 0.5, tau = 0.25, rectangular h' = 1 on |v| < 0.5; x = 0.6, 0.4, 0.1 gives
    # u = 0.6 (spike), 0.4, 0.2 and, for L = sum(o), by the recursion (g = dL/du):
    #   g2 = 1
    #   g1 = (1 - tau u1 g2) * 1 + tau g2 (1 - o1) = 0.9 + 0.25 = 1.15     (detached: 1 + 0.25 = 1.25)
    #   g0 = (1 - tau u0 g1) * 1 + tau g1 (1 - o0) = 1 - 0.25*0.6*1.15 = 0.8275   (detached: 1)
    x = np.array([[0.6], [0.4], [0.1]])
    for detach, expected in ((False, [0.8275, 1.15, 1.0]), (True, [1.0, 1.25, 1.0])):
        t = Tensor(x.copy(), requires_grad=True)
        lif(t, detach_reset=detach).backward(np.ones_like(x))
        np.testing.assert_allclose(t.grad[:, 0], expected, rtol=1e-12)


# ------------------------------------------------------------------------------------ module
def test_module_matches_function_keeps_no_state_and_gives_its_membrane():
    x = np.random.default_rng(1).normal(0.5, 0.5, size=(5, 2, 3))
    layer = nn.LIF(v_th=0.4, tau_decay=0.5, surrogate="sigmoid", k=8)
    assert layer.surrogate.k == 8.0 and layer.parameters() == []
    first = layer(Tensor(x)).data
    np.testing.assert_array_equal(first, lif(Tensor(x), 0.4, 0.5).data)
    np.testing.assert_array_equal(layer(Tensor(x)).data, first)  # every call starts from rest
    assert set(vars(layer)) == {"_parameters", "_buffers", "_modules", "_forward_pre_hooks", "_forward_hooks",
                                "training", "v_th", "tau_decay", "surrogate", "detach_reset"}  # no state
    np.testing.assert_allclose(layer.membrane(x), reference_lif(x, 0.4, 0.5)[0], rtol=1e-12)
    assert "sigmoid" in repr(layer).lower()


def test_module_gradient_flows_and_rejects_bad_settings():
    x = Tensor(np.random.default_rng(2).normal(0.5, 0.5, size=(3, 4)), requires_grad=True)
    nn.LIF(detach_reset=True)(x).sum().backward()
    assert x.grad is not None and x.grad.shape == (3, 4)
    with pytest.raises(ValueError, match="tau_decay"):
        nn.LIF(tau_decay=-0.1)
    with pytest.raises(ValueError, match="unknown surrogate"):
        nn.LIF(surrogate="step")
