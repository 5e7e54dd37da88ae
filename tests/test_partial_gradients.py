"""Asking a Function for only some of its gradients -- a frozen weight, input data, a frozen bias -- gives
exactly those, each equal to what asking for all of them gives; the inputs that need none get None.

Every Function that reads ``needs_input_grad`` is here, on the reference code and on its fast version."""
import itertools

import numpy as np
import pytest

from minisnn import Tensor
from minisnn.fast import reference_only
from minisnn.functions import basic as F
from minisnn.functions.conv import conv2d
from minisnn.functions.linear import linear
from minisnn.functions.norm import batch_norm, tdbn


def cases():
    """name -> (function of Tensors, its input arrays)."""
    rng = np.random.default_rng(0)

    def draw(*shape):
        return rng.standard_normal(shape)

    running_mean, running_var = draw(4) * 0.1, rng.uniform(0.5, 2.0, 4)
    return {
        "mul": (F.mul, [draw(3, 4), draw(4)]),
        "div": (F.div, [draw(3, 4), rng.uniform(1.0, 2.0, 4)]),
        "matmul": (F.matmul, [draw(3, 5), draw(5, 2)]),
        "linear": (linear, [draw(5, 3), draw(4, 3)]),
        "linear with bias": (linear, [draw(5, 3), draw(4, 3), draw(4)]),
        "conv2d": (lambda x, w: conv2d(x, w, stride=1, padding=1), [draw(2, 3, 5, 5), draw(4, 3, 3, 3)]),
        "conv2d with bias, stride 2": (lambda x, w, b: conv2d(x, w, b, stride=2, padding=1),
                                       [draw(2, 3, 5, 5), draw(4, 3, 3, 3), draw(4)]),
        "tdbn, training": (lambda x, w, b: tdbn(x, w, b, None, None, training=True, alpha=0.7),
                           [draw(2, 3, 4, 3, 3), rng.uniform(0.5, 1.5, 4), draw(4)]),
        "tdbn, eval": (lambda x, w, b: tdbn(x, w, b, running_mean, running_var, training=False),
                       [draw(2, 3, 4, 3, 3), rng.uniform(0.5, 1.5, 4), draw(4)]),
        "batch norm per timestep": (lambda x, w, b: batch_norm(x, w, b, None, None, training=True, per_timestep=True),
                                    [draw(2, 3, 4), rng.uniform(0.5, 1.5, 4), draw(4)]),
    }


def gradients(function, arrays, wanted):
    """The gradients of L = sum(y * G) (G fixed) for the inputs whose index is in ``wanted``."""
    inputs = [Tensor(a.copy(), requires_grad=i in wanted) for i, a in enumerate(arrays)]
    y = function(*inputs)
    weight = np.random.default_rng(1).standard_normal(y.shape)
    (y * weight).sum().backward()
    return [x.grad for x in inputs]


@pytest.mark.parametrize("reference", [False, True], ids=["fast", "reference"])
@pytest.mark.parametrize("name", list(cases()))
def test_each_subset_of_requested_gradients_equals_the_full_request(name, reference):
    function, arrays = cases()[name]
    everything = set(range(len(arrays)))
    with reference_only(reference):
        full = gradients(function, arrays, everything)
        assert all(g is not None and np.any(g != 0) for g in full)
        for size in range(1, len(arrays)):
            for wanted in itertools.combinations(sorted(everything), size):
                got = gradients(function, arrays, set(wanted))
                for i, g in enumerate(got):
                    if i in wanted:
                        assert g is not None, f"input {i} asked for its gradient alone with {wanted} and got none"
                        np.testing.assert_allclose(g, full[i], rtol=1e-12, atol=1e-12,
                                                   err_msg=f"input {i}, wanted {wanted}")
                    else:
                        assert g is None, f"input {i} needs no gradient but got one (wanted {wanted})"


def test_a_linear_layer_with_a_frozen_weight_still_passes_the_gradient_to_its_input():
    """The case a fine-tuning user meets: dL/dx = gy W with W frozen."""
    rng = np.random.default_rng(2)
    x, W = Tensor(rng.standard_normal((5, 3)), requires_grad=True), Tensor(rng.standard_normal((4, 3)))
    linear(x, W).sum().backward()
    np.testing.assert_allclose(x.grad, np.ones((5, 4)) @ W.data, rtol=1e-14)
    assert W.grad is None
