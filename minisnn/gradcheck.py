"""Finite-difference gradient checking, shared by the tests, the lessons and users.

For a function f of tensors x_1..x_k with output y, draw a fixed random cotangent w and look at the
scalar L = sum(w * f(x)). Its gradient from backward, dL/dx_i, is compared with the central difference

    dL/dx_i[j]  ~=  (L(x_i[j] + eps) - L(x_i[j] - eps)) / (2 eps)

element by element, and an element passes when |analytic - numeric| <= atol + rtol * |numeric|.
Work in float64: in float32 the rounding error of L swamps the difference quotient.
"""
import numpy as np

from .backend import as_numpy, get_array_module
from .core import Tensor


class GradientCheckError(AssertionError):
    """Raised by ``gradcheck`` with the worst element's index and both values."""


def numerical_grad(fn, arrays, index, weight, eps):
    """Central-difference dL/d(arrays[index]) of L = sum(weight * fn(*arrays)), one element at a time."""
    x = arrays[index]
    grad = np.zeros(x.shape, dtype=np.float64)
    flat = x.reshape(-1)  # a view: x must be contiguous (gradcheck makes it so)
    for j in range(flat.size):
        saved = flat[j].item()
        flat[j] = saved + eps
        plus = _loss(fn, arrays, weight)
        flat[j] = saved - eps
        minus = _loss(fn, arrays, weight)
        flat[j] = saved
        grad.reshape(-1)[j] = (plus - minus) / (2 * eps)
    return grad


def _loss(fn, arrays, weight):
    from .core import no_grad
    with no_grad():
        y = fn(*[Tensor(a) for a in arrays])
    return float((as_numpy(y.data).astype(np.float64) * weight).sum())


def gradcheck(fn, *arrays, eps=1e-6, atol=1e-6, rtol=1e-4, wrt=None, seed=0):
    """Check the backward of ``fn`` against central differences; raise GradientCheckError if off.

    fn: takes Tensors (one per array) and returns one Tensor.
    arrays: float64 NumPy or CuPy arrays, the point at which to check.
    wrt: indices of the arrays to check (default: all).
    Returns the largest |analytic - numeric| over all checked elements.
    """
    arrays = [get_array_module(a).ascontiguousarray(a) for a in arrays]
    for i, a in enumerate(arrays):
        if a.dtype != np.float64:
            raise TypeError(f"gradcheck: input {i} has dtype {a.dtype}; check gradients in float64")
    wrt = range(len(arrays)) if wrt is None else wrt

    inputs = [Tensor(a.copy(), requires_grad=(i in wrt)) for i, a in enumerate(arrays)]
    y = fn(*inputs)
    if not isinstance(y, Tensor):
        raise TypeError(f"gradcheck: fn must return a Tensor, got {type(y).__name__}")
    xp = get_array_module(y.data)
    weight = np.random.default_rng(seed).standard_normal(y.shape)
    y.backward(xp.asarray(weight, dtype=y.dtype))

    worst = 0.0
    for i in wrt:
        analytic = as_numpy(inputs[i].grad) if inputs[i].grad is not None else np.zeros(arrays[i].shape)
        numeric = numerical_grad(fn, arrays, i, weight, eps)
        error = np.abs(analytic - numeric)
        excess = error - (atol + rtol * np.abs(numeric))
        j = np.unravel_index(int(np.argmax(excess)), excess.shape) if excess.size else ()
        if excess.size and excess[j] > 0:
            raise GradientCheckError(
                f"gradient of input {i} (shape {arrays[i].shape}) is off at index {tuple(int(k) for k in j)}: "
                f"backward gives {analytic[j]:.10g}, finite differences give {numeric[j]:.10g} "
                f"(|diff| = {error[j]:.3g} > atol {atol:g} + rtol {rtol:g} * |numeric|); "
                f"{int((excess > 0).sum())} of {excess.size} elements fail")
        worst = max(worst, float(error.max()) if error.size else 0.0)
    return worst
