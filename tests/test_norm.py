"""tdBN and plain batch norm: gradients, statistics axes, running statistics, eval mode, dtypes, errors."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minisnn.core import Tensor
from minisnn.fast import reference_only
from minisnn.functions.norm import batch_norm, tdbn
from minisnn.gradcheck import gradcheck
from minisnn.nn import BatchNorm, TdBN
from reference import reference_batch_norm as reference
from strategies import norm_cases as cases

BOTH_PATHS = pytest.mark.parametrize("reference_path", [True, False], ids=["reference", "fast"])

V_TH = 0.5
EPS = 1e-5


def stat_axes(ndim):
    """(T, N, H, W) for [T, N, C, H, W]; (T, N) for [T, N, C]."""
    return (0, 1) + tuple(range(3, ndim))


# ------------------------------------------------------------------------------------ gradients
@BOTH_PATHS
@settings(max_examples=30)
@given(cases(), st.floats(0.2, 1.5))
def test_tdbn_train_gradients_match_finite_differences(reference_path, case, alpha):
    x, w, b, _ = case
    with reference_only(reference_path):
        gradcheck(lambda x, w, b: tdbn(x, w, b, None, None, True, alpha=alpha), x, w, b)


@settings(max_examples=15)
@given(cases(per_timestep=True))
def test_per_timestep_batch_norm_gradients_match_finite_differences(case):
    x, w, b, _ = case
    gradcheck(lambda x, w, b: batch_norm(x, w, b, None, None, True, per_timestep=True), x, w, b)


@BOTH_PATHS
@settings(max_examples=20)
@given(cases(), st.floats(0.2, 1.5))
def test_tdbn_eval_gradients_match_finite_differences(reference_path, case, alpha):
    x, w, b, rng = case
    C = x.shape[2]
    rm, rv = rng.standard_normal(C), rng.uniform(0.2, 3, C)
    with reference_only(reference_path):
        gradcheck(lambda x, w, b: tdbn(x, w, b, rm, rv, False, alpha=alpha), x, w, b)


def test_module_gradients_reach_lambda_and_beta():
    rng = np.random.default_rng(1)
    bn = TdBN(3, alpha=2 ** -0.5)
    x = rng.normal(2, 3, (2, 4, 3, 3, 3)).astype(np.float32)
    gy = rng.standard_normal(x.shape).astype(np.float32)
    bn(Tensor(x)).backward(gy)
    axes = stat_axes(5)
    xn = reference(x, np.ones(3), np.zeros(3), 1.0, axes)
    np.testing.assert_allclose(bn.bias.grad, gy.sum(axis=axes), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(bn.weight.grad, (gy * xn).sum(axis=axes) * 2 ** -0.5 * V_TH, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------------- statistics
@pytest.mark.parametrize("spatial", [(3, 4), ()])
def test_statistics_run_over_time_batch_and_space(spatial):
    """Timesteps with very different means: tdBN centres the whole sequence per channel, not each t."""
    rng = np.random.default_rng(2)
    T, N, C = 4, 5, 3
    x = rng.standard_normal((T, N, C) + spatial) + 10.0 * np.arange(T).reshape((T, 1, 1) + (1,) * len(spatial))
    y = tdbn(Tensor(x), Tensor(np.ones(C)), Tensor(np.zeros(C)), None, None, True).data
    axes = stat_axes(x.ndim)
    np.testing.assert_allclose(y.mean(axis=axes), 0, atol=1e-10)
    per_step = y.mean(axis=tuple(a for a in axes if a != 0))  # [T, C]
    assert np.all(per_step[0] < -0.5) and np.all(per_step[-1] > 0.5)
    np.testing.assert_allclose(y, reference(x, np.ones(C), np.zeros(C), V_TH, axes), rtol=1e-10, atol=1e-12)


@settings(max_examples=20)
@given(cases(), st.floats(0.2, 1.5))
def test_output_has_mean_beta_and_std_lambda_alpha_vth(case, alpha):
    x, w, b, _ = case
    y = tdbn(Tensor(x), Tensor(w), Tensor(b), None, None, True, alpha=alpha).data
    axes = stat_axes(x.ndim)
    np.testing.assert_allclose(y.mean(axis=axes), b, atol=1e-9)
    var = x.var(axis=axes)
    expected_std = np.abs(w) * alpha * V_TH * np.sqrt(var / (var + EPS))
    np.testing.assert_allclose(y.std(axis=axes), expected_std, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(y, reference(x, w, b, alpha * V_TH, axes), rtol=1e-9, atol=1e-9)


# -------------------------------------------------------------------------- running statistics
@BOTH_PATHS
def test_running_statistics_follow_momentum_and_drive_eval_mode(reference_path):
    rng = np.random.default_rng(3)
    C = 3
    bn = TdBN(C, alpha=2 ** -0.5)
    axes = stat_axes(5)
    batches = [rng.normal(1.5, 2.0, (4, 2, C, 3, 3)).astype(np.float32) for _ in range(2)]
    expected_mean, expected_var = np.zeros(C), np.ones(C)
    for x in batches:
        with reference_only(reference_path):
            bn(Tensor(x))
        expected_mean = 0.9 * expected_mean + 0.1 * x.mean(axis=axes, dtype=np.float64)
        expected_var = 0.9 * expected_var + 0.1 * x.var(axis=axes, ddof=1, dtype=np.float64)
    assert bn.running_mean.dtype == np.float32 and bn.running_var.dtype == np.float32
    np.testing.assert_allclose(bn.running_mean, expected_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn.running_var, expected_var, rtol=1e-5)

    bn.weight.data[:] = rng.standard_normal(C)
    bn.bias.data[:] = rng.standard_normal(C)
    bn.eval()
    x = rng.normal(-1.0, 3.0, (4, 2, C, 3, 3)).astype(np.float32)
    y = bn(Tensor(x)).data
    want = reference(x.astype(np.float64), bn.weight.data, bn.bias.data, 2 ** -0.5 * V_TH, axes,
                     expected_mean, expected_var)
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bn.running_mean, expected_mean, rtol=1e-5, atol=1e-6)  # eval leaves them

    # eval is per frame: one timestep alone gives the same output as inside the longer sequence
    np.testing.assert_allclose(bn(Tensor(x[2:3])).data, y[2:3], rtol=1e-6, atol=1e-6)
    bn.train()  # ... which training mode (batch statistics) does not
    assert not np.allclose(bn(Tensor(x[2:3])).data, bn(Tensor(x)).data[2:3], atol=1e-2)


def test_fold_scale_shift_reproduces_eval_output():
    rng = np.random.default_rng(4)
    for bn, shape in ((TdBN(4, alpha=2 ** -0.5), (3, 2, 4, 2, 2)), (BatchNorm(4), (3, 5, 4))):
        for _ in range(3):
            bn(Tensor(rng.normal(2, 3, shape).astype(np.float32)))
        bn.weight.data[:] = rng.standard_normal(4)
        bn.bias.data[:] = rng.standard_normal(4)
        bn.eval()
        x = rng.normal(2, 3, shape).astype(np.float32)
        a, b = bn.fold_scale_shift()
        assert a.dtype == np.float32 and b.dtype == np.float32
        per_channel = (1, 1, -1) + (1,) * (len(shape) - 3)
        np.testing.assert_allclose(bn(Tensor(x)).data, a.reshape(per_channel) * x + b.reshape(per_channel),
                                   rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------- per-timestep batch norm
def test_per_timestep_batch_norm_differs_from_tdbn_when_timesteps_differ():
    rng = np.random.default_rng(5)
    T, N, C = 3, 6, 2
    x = rng.standard_normal((T, N, C, 2, 2)) + 5.0 * np.arange(T).reshape(T, 1, 1, 1, 1)
    w, b = rng.standard_normal(C), rng.standard_normal(C)
    rm, rv = np.zeros(C), np.ones(C)
    y = batch_norm(Tensor(x), Tensor(w), Tensor(b), rm, rv, True, per_timestep=True).data
    for t in range(T):  # each step normalised with its own statistics
        np.testing.assert_allclose(y[t:t + 1], reference(x[t:t + 1], w, b, 1.0, stat_axes(5)), rtol=1e-9, atol=1e-9)
    expected_mean, expected_var = np.zeros(C), np.ones(C)
    for t in range(T):  # running statistics updated once per step, in order
        expected_mean = 0.9 * expected_mean + 0.1 * x[t].mean(axis=(0, 2, 3))
        expected_var = 0.9 * expected_var + 0.1 * x[t].var(axis=(0, 2, 3), ddof=1)
    np.testing.assert_allclose(rm, expected_mean, rtol=1e-12)
    np.testing.assert_allclose(rv, expected_var, rtol=1e-12)
    y_tdbn = tdbn(Tensor(x), Tensor(w), Tensor(b), None, None, True, alpha=1 / V_TH).data  # scale 1
    assert not np.allclose(y, y_tdbn, atol=1e-2)


def test_per_timestep_batch_norm_equals_tdbn_for_one_timestep_with_scale_one():
    rng = np.random.default_rng(6)
    x = rng.normal(1, 2, (1, 5, 3, 2, 3))
    w, b = rng.standard_normal(3), rng.standard_normal(3)
    stats = [(np.zeros(3), np.ones(3)) for _ in range(2)]
    y_bn = batch_norm(Tensor(x), Tensor(w), Tensor(b), *stats[0], True, per_timestep=True).data
    y_td = tdbn(Tensor(x), Tensor(w), Tensor(b), *stats[1], True, alpha=1 / V_TH).data
    np.testing.assert_allclose(y_bn, y_td, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(stats[0], stats[1], rtol=1e-12)


# ----------------------------------------------------------------------------- dtypes and errors
@BOTH_PATHS
@pytest.mark.parametrize("layer", [TdBN(3), BatchNorm(3, per_timestep=True)])
@pytest.mark.parametrize("training", [True, False])
def test_float32_in_float32_out(reference_path, layer, training):
    layer.train(training)
    layer.running_var = layer.running_var.astype(np.float64)  # float64 statistics do not promote the output
    x = Tensor(np.random.default_rng(7).standard_normal((2, 4, 3, 2, 2)).astype(np.float32), requires_grad=True)
    with reference_only(reference_path):
        y = layer(x)
    assert y.dtype == np.float32
    y.backward(np.ones(y.shape, np.float32))
    assert x.grad.dtype == np.float32 and layer.weight.grad.dtype == np.float32 and layer.bias.grad.dtype == np.float32
    layer.zero_grad()


def test_wrong_input_raises_clear_errors():
    x = Tensor(np.zeros((2, 4, 3, 5, 5), np.float32))
    with pytest.raises(ValueError, match="TdBN\\(4\\).*got shape \\(2, 4, 3, 5, 5\\)"):
        TdBN(4)(x)
    with pytest.raises(ValueError, match="\\[T, N, 3, H, W\\]"):
        TdBN(3)(Tensor(np.zeros((4, 3, 5, 5), np.float32)))  # forgot the time axis
    with pytest.raises(ValueError, match="3 channels.*weight has shape \\(4,\\)"):
        tdbn(x, Tensor(np.ones(4, np.float32)), Tensor(np.zeros(4, np.float32)), None, None, True)
    with pytest.raises(TypeError, match="weight has dtype float64"):
        tdbn(x, Tensor(np.ones(3)), Tensor(np.zeros(3, np.float32)), None, None, True)
    with pytest.raises(ValueError, match="eval mode needs running_mean"):
        tdbn(x, Tensor(np.ones(3, np.float32)), Tensor(np.zeros(3, np.float32)), None, None, False)
    with pytest.raises(ValueError, match="more than one value per channel"):
        TdBN(3)(Tensor(np.zeros((1, 1, 3), np.float32)))
    ones, zeros = Tensor(np.ones(3, np.float32)), Tensor(np.zeros(3, np.float32))
    with pytest.raises(ValueError, match=r"expected x of shape \[T, N, C, \.\.\.\], got shape \(4, 3\)"):
        tdbn(Tensor(np.zeros((4, 3), np.float32)), ones, zeros, None, None, True)
    with pytest.raises(TypeError, match="x must be a floating-point array, got dtype int64"):
        tdbn(Tensor(np.zeros((2, 4, 3), np.int64)), ones, zeros, None, None, True)


@BOTH_PATHS
@pytest.mark.parametrize("training", [True, False])
def test_eps_momentum_and_the_statistics_axes_reach_the_computation(reference_path, training):
    """Small variances, where eps matters; tdbn passes its own momentum and eps on; batch norm without
    per_timestep takes statistics over (T, N, H, W) at once."""
    rng = np.random.default_rng(8)
    x = rng.normal(0.3, 0.003, (3, 4, 2, 2, 2)) + 0.002 * np.arange(3).reshape(3, 1, 1, 1, 1)
    w, b = rng.uniform(0.5, 1.5, 2), rng.standard_normal(2)
    axes = stat_axes(5)
    mean, var = np.array([0.29, 0.31]), np.array([1e-5, 3e-5])
    for eps, momentum in ((1e-5, 0.1), (3e-5, 0.5)):
        rm, rv = (np.zeros(2), np.ones(2)) if training else (mean.copy(), var.copy())
        with reference_only(reference_path):
            y = tdbn(Tensor(x), Tensor(w), Tensor(b), rm, rv, training, alpha=0.8, momentum=momentum, eps=eps).data
            plain = batch_norm(Tensor(x), Tensor(w), Tensor(b), None, None, True).data if training else None
        want = reference(x, w, b, 0.8 * V_TH, axes, *(() if training else (mean, var)), eps=eps)
        np.testing.assert_allclose(y, want, rtol=1e-10, atol=1e-10)
        if training:
            np.testing.assert_allclose(rm, momentum * x.mean(axis=axes), rtol=1e-12)
            np.testing.assert_allclose(rv, 1 - momentum + momentum * x.var(axis=axes, ddof=1), rtol=1e-12)
            np.testing.assert_allclose(plain, reference(x, w, b, 1.0, axes), rtol=1e-10, atol=1e-10)


def test_the_function_defaults_are_plain_batch_norms():
    from minisnn.functions.norm import BatchNormFunction
    function = BatchNormFunction(None, None, True)
    assert (function.scale, function.momentum, function.eps) == (1.0, 0.1, 1e-5)
