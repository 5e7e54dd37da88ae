"""The LIF neuron unrolled over time, with its hand-written STBP backward.

Forward (iterative LIF of STBP-tdBN), for input currents x[t], t = 0 .. T-1, element by element::

    u[t] = tau_decay * u[t-1] * (1 - o[t-1]) + x[t]        leak, reset to 0 after a spike, integrate
    o[t] = H(u[t] - V_th)                                  fire: H(v) = 1 if v >= 0 else 0
    u[-1] = o[-1] = 0                                      every call starts at rest

Backward (STBP), t = T-1 down to 0, with dL/du[T] = 0 and gy[t] = dL/do[t] from the layers above::

    dL/do[t] = gy[t] + dL/du[t+1] * (-tau_decay * u[t])                   through the reset of u[t+1]
    dL/du[t] = dL/do[t] * h'(u[t] - V_th) + dL/du[t+1] * tau_decay * (1 - o[t])   spike + leak paths
    dL/dx[t] = dL/du[t]

h' is the surrogate derivative (``functions/surrogate.py``). With ``detach_reset`` the reset factor
(1 - o[t-1]) is treated as a constant, which drops the reset path: dL/do[t] = gy[t].

On CuPy arrays with a named Heaviside surrogate, forward and backward each run as one fused kernel
(one thread per neuron, looping over T) whose source below mirrors the NumPy loops line by line.
"""
import functools
import math

from ..backend import get_array_module, is_gpu_array
from ..core import Function
from ..parallel import map_chunks
from .surrogate import get_surrogate


class LIF(Function):
    """o = LIF(x): spikes o[t] of leaky integrate-and-fire neurons driven by currents x[t].

    x: [T, N, ...] float array. Returns o [T, N, ...] in x's dtype.
    Saves for backward: the membrane u (x's dtype) and the spikes o (1 byte each for a Heaviside
    spike; floats for the smooth spike, whose o is not 0/1).
    """

    def __init__(self, v_th=0.5, tau_decay=0.25, surrogate="rectangular", detach_reset=False):
        self.v_th = float(v_th)
        self.tau_decay = float(tau_decay)
        if not 0 <= self.tau_decay <= 1:
            raise ValueError(f"lif: tau_decay is a decay factor in [0, 1], got {tau_decay!r}")
        self.surrogate = get_surrogate(surrogate)
        self.detach_reset = bool(detach_reset)

    def forward(self, x):
        """u[t] = tau_decay * u[t-1] * (1 - o[t-1]) + x[t];  o[t] = H(u[t] - V_th);  u[-1] = o[-1] = 0."""
        xp = get_array_module(x)
        _check_input(x)
        self.fused = is_gpu_array(x) and self.surrogate.cuda_grad() is not None
        if self.fused:
            self.u, self.o, spikes = _fused_forward(x, self.v_th, self.tau_decay)
            return spikes
        heaviside = self.surrogate.heaviside
        u = xp.empty(x.shape, x.dtype)
        o = xp.empty(x.shape, dtype=xp.uint8 if heaviside else x.dtype)
        per_step = (len(x), -1)                    # [T, M]: neurons side by side, chunked across cores
        x_, u_, o_ = x.reshape(per_step), u.reshape(per_step), o.reshape(per_step)
        map_chunks(lambda n: self._forward_loop(x_[:, n], u_[:, n], o_[:, n]), u_.shape[1], xp, u.nbytes)
        self.u, self.o = u, o
        return o.astype(x.dtype)

    def _forward_loop(self, x, u, o):
        """The loop over t for one chunk of neurons, each step written in place into u[t] and o[t]."""
        xp = get_array_module(x)
        tau, heaviside = self.tau_decay, self.surrogate.heaviside
        for t in range(len(x)):
            u_t = u[t]
            if t == 0:
                u_t[...] = x[0]                    # u[-1] = o[-1] = 0
            else:
                xp.multiply(u[t - 1], tau, out=u_t)
                u_t *= 1 - o[t - 1]
                u_t += x[t]
            if heaviside:                          # H(u - V_th) = (u >= V_th), written as 0/1 bytes
                xp.greater_equal(u_t, self.v_th, out=o[t])
            else:
                o[t] = self.surrogate.spike(u_t - self.v_th)

    def backward(self, gy):
        """STBP, t = T-1 .. 0, starting from dL/du[T] = 0:

        dL/do[t] = gy[t] - tau_decay * u[t] * dL/du[t+1]          (gy[t] alone if detach_reset)
        dL/du[t] = dL/do[t] * h'(u[t] - V_th) + tau_decay * dL/du[t+1] * (1 - o[t])
        dL/dx[t] = dL/du[t]
        """
        xp = get_array_module(gy)
        if self.fused:
            return _fused_backward(gy, self.u, self.o, self.v_th, self.tau_decay, self.detach_reset,
                                   self.surrogate.cuda_grad())
        gx = xp.empty_like(self.u)
        per_step = (len(gx), -1)
        gy_, u_, o_, gx_ = (a.reshape(per_step) for a in (gy, self.u, self.o, gx))
        map_chunks(lambda n: self._backward_loop(gy_[:, n], u_[:, n], o_[:, n], gx_[:, n]), gx_.shape[1], xp,
                   gx.nbytes)
        return gx

    def _backward_loop(self, gy, u, o, gx):
        """The STBP loop over t for one chunk of neurons, dL/du[t] written in place into gx[t]."""
        xp = get_array_module(gy)
        tau = self.tau_decay
        surrogate_grad = self.surrogate.grad(u - self.v_th)   # h'(u[t] - V_th), all t at once
        for t in reversed(range(len(u))):
            g = gx[t]                                         # becomes dL/du[t], in place
            if t == len(u) - 1 or self.detach_reset:          # dL/du[T] = 0, or the reset path cut
                xp.multiply(gy[t], surrogate_grad[t], out=g)
            else:
                xp.multiply(u[t], tau, out=g)
                g *= gx[t + 1]
                xp.subtract(gy[t], g, out=g)                  # dL/do[t]
                g *= surrogate_grad[t]
            if t < len(u) - 1:
                leak = gx[t + 1] * tau
                leak *= 1 - o[t]
                g += leak


def lif(x, v_th=0.5, tau_decay=0.25, surrogate="rectangular", detach_reset=False):
    """Spikes o [T, N, ...] of LIF neurons driven by input currents x [T, N, ...] (see ``LIF``).

    v_th: firing threshold V_th. tau_decay: membrane decay factor per step, in [0, 1].
    surrogate: a name from ``surrogate.SURROGATES`` or a Surrogate object.
    detach_reset: treat the reset factor (1 - o[t-1]) as a constant in the backward pass.
    """
    return LIF(v_th, tau_decay, surrogate, detach_reset)(x)


def _check_input(x):
    if x.ndim < 2:
        raise ValueError(f"lif: x must have shape [T, N, ...] (at least 2 dimensions), got shape {x.shape}")
    if x.dtype.kind != "f":
        raise TypeError(f"lif: x must be a float array (float32 or float64), got dtype {x.dtype}")


# ------------------------------------------------------------------------ fused GPU kernels
# One thread per neuron i of the [T, M] view (M = N * ...), looping over t. F is x's float type.
# Compiled with --fmad=false so that a * b + c rounds twice, exactly like the NumPy loop.

_FORWARD_SOURCE = """
F u_prev = 0;                                        // u[-1] = 0
unsigned char o_prev = 0;                            // o[-1] = 0
for (ptrdiff_t t = 0; t < steps; ++t) {
    const ptrdiff_t k = t * neurons + i;             // element (t, i)
    const F u_t = tau * u_prev * (F)(1 - o_prev) + x[k];     // u[t] = tau u[t-1] (1 - o[t-1]) + x[t]
    const unsigned char o_t = (u_t - v_th) >= 0;             // o[t] = H(u[t] - V_th)
    u[k] = u_t;
    o[k] = o_t;
    spikes[k] = (F)o_t;
    u_prev = u_t;
    o_prev = o_t;
}
"""

_BACKWARD_SOURCE = """
F g_next = 0;                                        // dL/du[T] = 0
for (ptrdiff_t t = steps - 1; t >= 0; --t) {
    const ptrdiff_t k = t * neurons + i;             // element (t, i)
    const F u_t = u[k];
    const F g_o = detach_reset ? gy[k] : gy[k] - tau * u_t * g_next;                 // dL/do[t]
    const F g_u = g_o * surrogate_grad(u_t - v_th) + tau * g_next * (F)(1 - o[k]);  // dL/du[t]
    gx[k] = g_u;                                     // dL/dx[t] = dL/du[t]
    g_next = g_u;
}
"""


@functools.lru_cache(maxsize=None)
def _forward_kernel(cp):
    return cp.ElementwiseKernel(
        "raw F x, int64 steps, int64 neurons, F v_th, F tau",
        "raw F u, raw uint8 o, raw F spikes",
        _FORWARD_SOURCE, "minisnn_lif_forward", options=("--fmad=false",))


@functools.lru_cache(maxsize=None)
def _backward_kernel(cp, surrogate_source):
    return cp.ElementwiseKernel(
        "raw F gy, raw F u, raw uint8 o, int64 steps, int64 neurons, F v_th, F tau, bool detach_reset",
        "raw F gx",
        _BACKWARD_SOURCE, "minisnn_lif_backward", preamble=surrogate_source, options=("--fmad=false",))


def _fused_forward(x, v_th, tau_decay):
    """The forward loop as one CuPy kernel. Returns u, o (uint8) and the spikes in x's dtype."""
    cp = get_array_module(x)
    x = cp.ascontiguousarray(x)
    steps, neurons = x.shape[0], math.prod(x.shape[1:])
    u, o, spikes = cp.empty_like(x), cp.empty(x.shape, cp.uint8), cp.empty_like(x)
    _forward_kernel(cp)(x, steps, neurons, v_th, tau_decay, u, o, spikes, size=neurons)
    return u, o, spikes


def _fused_backward(gy, u, o, v_th, tau_decay, detach_reset, surrogate_source):
    """The STBP backward loop as one CuPy kernel. Returns dL/dx."""
    cp = get_array_module(gy)
    gy = cp.ascontiguousarray(gy, dtype=u.dtype)
    steps, neurons = u.shape[0], math.prod(u.shape[1:])
    gx = cp.empty_like(u)
    _backward_kernel(cp, surrogate_source)(gy, u, o, steps, neurons, v_th, tau_decay, detach_reset, gx,
                                           size=neurons)
    return gx
