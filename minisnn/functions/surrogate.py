"""Spike functions and their surrogate gradients.

A LIF neuron fires when its membrane potential u reaches the threshold V_th. With v = u - V_th,

    o = H(v),    H(v) = 1 if v >= 0 else 0.

We take v >= 0 (not v > 0): a membrane exactly at threshold fires. This is the usual convention
(SpikingJelly's ``heaviside`` does the same), and the fused GPU kernel in ``functions/neuron.py``
follows it too.

H has derivative 0 almost everywhere, so STBP replaces dH/dv in the backward pass by a *surrogate*
h'(v): the derivative of a smooth step h that rises from 0 to 1 around v = 0. Every surrogate
here integrates to 1 over v, so it is a "soft" version of the Dirac delta that H' really is.

Surrogates (default parameter in brackets), each with the smooth step h whose derivative it is:

* ``rectangular`` [a = 1, the paper's]:  h'(v) = (1/a) * 1{|v| < a/2};   h(v) = clip(v/a + 1/2, 0, 1)
* ``sigmoid``  [k = 4]:      h'(v) = k * s * (1 - s), s = sigmoid(k v);   h(v) = sigmoid(k v)
* ``atan``     [alpha = 2]:  h'(v) = (alpha/2) / (1 + (pi/2 * alpha * v)^2);
                             h(v) = 1/2 + arctan(pi/2 * alpha * v) / pi
* ``triangle`` [a = 1]:      h'(v) = (1/a) * max(0, 1 - |v|/a);   h(v) piecewise quadratic, 0 -> 1 on [-a, a]

``smooth_sigmoid`` is not a surrogate but a teaching/testing device: its forward *is* sigmoid(k v)
instead of H(v), and its grad is the exact derivative. A LIF neuron built on it is a smooth function
of its input, so its hand-written STBP backward can be checked against finite differences exactly.

Each surrogate also gives its h'(v) as CUDA C (``cuda_grad``) for the fused GPU kernels; that
source mirrors ``grad`` line by line (same operations in the same order, constants cast to F, the
input's float type). Custom surrogates subclass ``Surrogate`` and implement ``grad``; without
``cuda_grad`` they run on the GPU through the plain array code.
"""
import math

from ..backend import get_array_module
from ..paper import SURROGATE_WIDTH


def _positive(name, value):
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"surrogate parameter {name} must be a finite number > 0, got {value!r}")
    return value


def _constant(value, what):
    """A constant of the CUDA source, written so that C reads back the same double (repr round-trips);
    a parameter whose constant overflows is refused, since no float can hold it."""
    if not math.isfinite(value):
        raise ValueError(f"surrogate parameters give {what} = {value}, which no float can hold; choose a "
                         "parameter closer to 1")
    return repr(value)


class Surrogate:
    """Base class: Heaviside forward ``spike(v)`` and surrogate derivative ``grad(v)``, v = u - V_th.

    ``heaviside`` tells the LIF neuron that spikes are exactly 0/1, so it may store them in 1 byte.
    """
    heaviside = True

    def spike(self, v):
        """o = H(v) = 1 if v >= 0 else 0, in v's dtype."""
        return (v >= 0).astype(v.dtype)

    def grad(self, v):
        """h'(v): the derivative that stands in for dH/dv in the backward pass."""
        raise NotImplementedError(f"{type(self).__name__} must implement grad(v)")

    def cuda_grad(self):
        """CUDA C source of ``__device__ F surrogate_grad(F v)``, or None (no fused GPU kernel)."""
        return None

    def __repr__(self):
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({params})"


class Rectangular(Surrogate):
    """h'(v) = (1/a) * 1{|v| < a/2}: a box of width a and height 1/a (the paper's choice, a = 1)."""

    def __init__(self, a=SURROGATE_WIDTH):
        self.a = _positive("a", a)
        self.cuda_grad()  # refuse a width whose constants overflow now, not when the kernel compiles

    def grad(self, v):
        xp = get_array_module(v)
        inside = (xp.abs(v) < self.a / 2).astype(v.dtype)   # 1{|v| < a/2}
        return inside * (1 / self.a)

    def cuda_grad(self):
        return f"""
__device__ F surrogate_grad(F v) {{
    const F inside = (F)(fabs(v) < (F){_constant(self.a / 2, "a/2")});
    return inside * (F){_constant(1 / self.a, "1/a")};
}}"""


class Sigmoid(Surrogate):
    """h'(v) = k * s * (1 - s) with s = sigmoid(k v), the derivative of sigmoid(k v).

    s is computed as (1 + tanh(k v / 2)) / 2, which equals 1 / (1 + exp(-k v)) but never overflows:
    tanh saturates at +-1, so for huge |v| s is exactly 0 or 1 and h' is exactly 0, never NaN
    (the naive exp(-k v) overflows to inf for v << 0; cf. snntorch#427).
    """

    def __init__(self, k=4.0):
        self.k = _positive("k", k)
        self.cuda_grad()

    def _sigmoid(self, v):
        xp = get_array_module(v)
        return 0.5 * (1 + xp.tanh(v * (self.k / 2)))

    def grad(self, v):
        s = self._sigmoid(v)
        return self.k * s * (1 - s)

    def cuda_grad(self):
        return f"""
__device__ F surrogate_grad(F v) {{
    const F s = (F)0.5 * ((F)1 + tanh(v * (F){_constant(self.k / 2, "k/2")}));
    return (F){_constant(self.k, "k")} * s * ((F)1 - s);
}}"""


class ATan(Surrogate):
    """h'(v) = (alpha/2) / (1 + (pi/2 * alpha * v)^2), the derivative of 1/2 + arctan(pi/2 alpha v)/pi."""

    def __init__(self, alpha=2.0):
        self.alpha = _positive("alpha", alpha)
        self.cuda_grad()

    def grad(self, v):
        z = v * (math.pi / 2 * self.alpha)
        return (self.alpha / 2) / (1 + z * z)

    def cuda_grad(self):
        return f"""
__device__ F surrogate_grad(F v) {{
    const F z = v * (F){_constant(math.pi / 2 * self.alpha, "pi/2 alpha")};
    return (F){_constant(self.alpha / 2, "alpha/2")} / ((F)1 + z * z);
}}"""


class Triangle(Surrogate):
    """h'(v) = (1/a) * max(0, 1 - |v|/a): a triangle of half-width a and height 1/a."""

    def __init__(self, a=1.0):
        self.a = _positive("a", a)
        self.cuda_grad()

    def grad(self, v):
        xp = get_array_module(v)
        return xp.maximum(1 - xp.abs(v) * (1 / self.a), 0) * (1 / self.a)

    def cuda_grad(self):
        return f"""
__device__ F surrogate_grad(F v) {{
    return fmax((F)1 - fabs(v) * (F){_constant(1 / self.a, "1/a")}, (F)0) * (F){_constant(1 / self.a, "1/a")};
}}"""


class SmoothSigmoid(Sigmoid):
    """Not a surrogate: forward o = sigmoid(k v) itself, grad = k * s * (1 - s) its exact derivative.

    Only for checking the LIF backward against finite differences (spikes are then real numbers
    in (0, 1), stored as floats).
    """
    heaviside = False

    def spike(self, v):
        return self._sigmoid(v)

    def cuda_grad(self):
        return None


SURROGATES = {
    "rectangular": Rectangular,
    "sigmoid": Sigmoid,
    "atan": ATan,
    "triangle": Triangle,
    "smooth_sigmoid": SmoothSigmoid,
}


def get_surrogate(surrogate="rectangular", **params):
    """A Surrogate from its name and parameters, e.g. ``get_surrogate("sigmoid", k=10)``.

    A Surrogate instance is returned as it is (then no parameters may be given).
    """
    if isinstance(surrogate, Surrogate):
        if params:
            raise TypeError(f"get_surrogate: parameters {sorted(params)} given with a ready-made {surrogate!r}; "
                            "pass a name instead, or set them on the object")
        return surrogate
    if isinstance(surrogate, str) and surrogate.lower() in SURROGATES:
        return SURROGATES[surrogate.lower()](**params)
    raise ValueError(f"unknown surrogate {surrogate!r}; choose one of {sorted(SURROGATES)} "
                     "or pass a Surrogate instance")
