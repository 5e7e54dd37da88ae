"""Spike surrogates: derivative of the right smooth step, no overflow, unit area, Heaviside forward."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minisnn.functions.surrogate import SURROGATES, Surrogate, get_surrogate
from strategies import seeds

HEAVISIDE = ["rectangular", "sigmoid", "atan", "triangle"]
PARAM = {"rectangular": "a", "sigmoid": "k", "atan": "alpha", "triangle": "a", "smooth_sigmoid": "k"}


# Smooth steps h(v) written independently of the library; each surrogate must be h'(v).
def _step_rectangular(v, a):
    return np.clip(v / a + 0.5, 0, 1)


def _step_sigmoid(v, k):
    return 1 / (1 + np.exp(-k * v))


def _step_atan(v, alpha):
    return 0.5 + np.arctan(np.pi / 2 * alpha * v) / np.pi


def _step_triangle(v, a):
    w = np.clip(v / a, -1, 1)
    return np.where(w < 0, (1 + w) ** 2 / 2, 1 - (1 - w) ** 2 / 2)


STEPS = {"rectangular": _step_rectangular, "sigmoid": _step_sigmoid, "atan": _step_atan,
         "triangle": _step_triangle, "smooth_sigmoid": _step_sigmoid}
KINKS = {"rectangular": lambda a: (-a / 2, a / 2), "triangle": lambda a: (-a, 0.0, a)}


@settings(max_examples=60)
@given(name=st.sampled_from(sorted(SURROGATES)), param=st.floats(0.2, 8.0),
       seed=seeds)
def test_grad_is_derivative_of_its_smooth_step(name, param, seed):
    v = np.random.default_rng(seed).uniform(-3, 3, size=200)
    eps = 1e-6
    for kink in KINKS.get(name, lambda _: ())(param):  # h is not differentiable there
        v = v[np.abs(v - kink) > 10 * eps]
    surrogate = get_surrogate(name, **{PARAM[name]: param})
    step = STEPS[name]
    numeric = (step(v + eps, param) - step(v - eps, param)) / (2 * eps)
    np.testing.assert_allclose(surrogate.grad(v), numeric, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", HEAVISIDE)
def test_forward_is_heaviside_with_threshold_included(name):
    surrogate = get_surrogate(name)
    v = np.array([-1e6, -1.0, -1e-12, 0.0, 1e-12, 1.0, 1e6])
    np.testing.assert_array_equal(surrogate.spike(v), (v >= 0).astype(v.dtype))
    assert surrogate.spike(np.array([0.0]))[0] == 1.0, "H(0) = 1: a membrane exactly at V_th fires"
    assert surrogate.heaviside


def test_smooth_sigmoid_forward_is_the_sigmoid():
    surrogate = get_surrogate("smooth_sigmoid", k=3.0)
    v = np.linspace(-5, 5, 41)
    np.testing.assert_allclose(surrogate.spike(v), _step_sigmoid(v, 3.0), rtol=1e-12, atol=1e-15)
    assert not surrogate.heaviside


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(SURROGATES))
def test_no_overflow_nan_or_inf_for_huge_inputs(name, dtype):
    v = np.array([-1e6, -1e5, -1e3, -50.0, -1.0, 0.0, 1.0, 50.0, 1e3, 1e5, 1e6], dtype=dtype)
    surrogate = get_surrogate(name)
    with np.errstate(all="raise"):  # any overflow or invalid operation fails the test
        grad, spike = surrogate.grad(v), surrogate.spike(v)
    assert grad.dtype == dtype and spike.dtype == dtype
    assert np.all(np.isfinite(grad)) and np.all(np.isfinite(spike))
    assert np.all(grad >= 0)
    assert grad[0] < 1e-6 and grad[-1] < 1e-6  # far from threshold the surrogate vanishes


@pytest.mark.parametrize("a", [1.0, 0.3, 2.5])
def test_rectangular_integrates_to_one(a):
    v, dv = np.linspace(-2 * a, 2 * a, 400_001, retstep=True)
    area = get_surrogate("rectangular", a=a).grad(v).sum() * dv
    assert area == pytest.approx(1.0, abs=1e-4)
    assert get_surrogate("rectangular", a=a).grad(np.array([0.0]))[0] == pytest.approx(1 / a)


@pytest.mark.parametrize("name, param", [("sigmoid", 4.0), ("sigmoid", 0.7), ("triangle", 1.0), ("triangle", 0.4)])
def test_smooth_surrogates_integrate_to_one(name, param):
    v, dv = np.linspace(-60, 60, 600_001, retstep=True)
    area = get_surrogate(name, **{PARAM[name]: param}).grad(v).sum() * dv
    assert area == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("alpha", [2.0, 0.5])
def test_atan_area_matches_its_closed_form(alpha):
    v, dv = np.linspace(-50, 50, 500_001, retstep=True)
    area = get_surrogate("atan", alpha=alpha).grad(v).sum() * dv
    exact = 2 / math.pi * math.atan(math.pi / 2 * alpha * 50)  # -> 1 as the range grows
    assert area == pytest.approx(exact, abs=1e-6)


def test_get_surrogate_by_name_object_and_errors():
    assert isinstance(get_surrogate("Rectangular"), SURROGATES["rectangular"])
    assert get_surrogate("sigmoid", k=10).k == 10.0
    obj = get_surrogate("atan", alpha=3)
    assert get_surrogate(obj) is obj
    with pytest.raises(TypeError, match="ready-made"):
        get_surrogate(obj, alpha=2)
    with pytest.raises(ValueError, match="unknown surrogate 'relu'"):
        get_surrogate("relu")
    with pytest.raises(ValueError, match="a must be a finite number > 0"):
        get_surrogate("rectangular", a=0)
    with pytest.raises(ValueError, match="k must be"):
        get_surrogate("sigmoid", k=float("nan"))
    with pytest.raises(TypeError):
        get_surrogate("sigmoid", a=1.0)  # wrong parameter name
    with pytest.raises(NotImplementedError):
        Surrogate().grad(np.zeros(1))


@pytest.mark.parametrize("name", HEAVISIDE)
def test_named_heaviside_surrogates_have_gpu_source(name):
    source = get_surrogate(name).cuda_grad()
    assert "surrogate_grad(F v)" in source
    assert get_surrogate("smooth_sigmoid").cuda_grad() is None


def test_the_documented_defaults():
    assert get_surrogate("rectangular").a == 1.0  # the paper's width
    assert (get_surrogate("sigmoid").k, get_surrogate("atan").alpha, get_surrogate("triangle").a) == (4.0, 2.0, 1.0)


@pytest.mark.parametrize("a", [1.0, 0.5, 2.5])
def test_the_rectangular_window_is_open_at_its_edges(a):
    v = np.array([-a / 2, -a / 2 * 0.999, 0.0, a / 2 * 0.999, a / 2, a])
    np.testing.assert_array_equal(get_surrogate("rectangular", a=a).grad(v), np.array([0, 1, 1, 1, 0, 0]) / a)


def test_the_gpu_source_carries_each_constant_as_the_float_it_is():
    """Parameters become Python floats (a NumPy scalar's repr is no C), written so C reads the same double."""
    source = get_surrogate("sigmoid", k=np.float32(2.5)).cuda_grad()
    assert "(F)1.25)" in source and "(F)2.5 *" in source and "np." not in source
    source = get_surrogate("rectangular", a=0.1).cuda_grad()
    assert f"(F){0.1 / 2!r})" in source and f"(F){1 / 0.1!r};" in source
    assert type(get_surrogate("atan", alpha=np.float64(3)).alpha) is float


@pytest.mark.parametrize("name, param, value, says", [
    ("rectangular", "a", 1e-310, "1/a"), ("triangle", "a", 1e-310, "1/a"), ("atan", "alpha", 1.5e308, "pi/2 alpha")])
def test_a_parameter_whose_constant_overflows_is_refused_when_made(name, param, value, says):
    with pytest.raises(ValueError, match=f"surrogate parameters give {says} = inf, which no float can hold"):
        get_surrogate(name, **{param: value})
