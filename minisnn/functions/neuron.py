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

This file is the reference, written to be read. ``lif_unrolled`` is the same neuron built from basic
Tensor operations, differentiated by the engine's autograd: the check of the hand-written backward. ``lif`` runs the fast version of ``LIF`` where one
exists (``minisnn/fast/neuron.py``: the loop on chunks of neurons across the CPU cores; one fused
kernel per pass on CUDA), which the tests check equal to this one, bit for bit.
"""
from ..backend import get_array_module
from ..core import Function
from ..fast import version_of
from ..paper import TAU_DECAY, V_TH
from .basic import stack
from .surrogate import get_surrogate


class LIF(Function):
    """o = LIF(x): spikes o[t] of leaky integrate-and-fire neurons driven by currents x[t].

    x: [T, N, ...] float array. Returns o [T, N, ...] in x's dtype.
    Saves for backward: the membrane u (x's dtype) and the spikes o (1 byte each for a Heaviside
    spike; floats for the smooth spike, whose o is not 0/1).
    """

    def __init__(self, v_th=V_TH, tau_decay=TAU_DECAY, surrogate="rectangular", detach_reset=False):
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
        tau, spike = self.tau_decay, self.surrogate.spike
        u = xp.empty_like(x)
        o = xp.empty(x.shape, dtype=xp.uint8 if self.surrogate.heaviside else x.dtype)
        for t in range(len(x)):
            if t == 0:
                u[0] = x[0]                                            # u[-1] = o[-1] = 0
            else:
                u[t] = tau * u[t - 1] * (1 - o[t - 1]) + x[t]
            o[t] = spike(u[t] - self.v_th)
        self.u, self.o = u, o
        return o.astype(x.dtype)

    def backward(self, gy):
        """STBP, t = T-1 .. 0, starting from dL/du[T] = 0:

        dL/do[t] = gy[t] - tau_decay * u[t] * dL/du[t+1]          (gy[t] alone if detach_reset)
        dL/du[t] = dL/do[t] * h'(u[t] - V_th) + tau_decay * dL/du[t+1] * (1 - o[t])
        dL/dx[t] = dL/du[t]
        """
        xp = get_array_module(gy)
        tau, u, o = self.tau_decay, self.u, self.o
        surrogate_grad = self.surrogate.grad(u - self.v_th)           # h'(u[t] - V_th), all t at once
        gx = xp.empty_like(u)                                          # gx[t] = dL/du[t] = dL/dx[t]
        last = len(u) - 1
        for t in reversed(range(len(u))):
            if t == last:                                              # dL/du[T] = 0
                gx[t] = gy[t] * surrogate_grad[t]
                continue
            g_o = gy[t] if self.detach_reset else gy[t] - tau * u[t] * gx[t + 1]
            gx[t] = g_o * surrogate_grad[t] + tau * gx[t + 1] * (1 - o[t])
        return gx


def lif(x, v_th=V_TH, tau_decay=TAU_DECAY, surrogate="rectangular", detach_reset=False):
    """Spikes o [T, N, ...] of LIF neurons driven by input currents x [T, N, ...] (see ``LIF``).

    v_th: firing threshold V_th. tau_decay: membrane decay factor per step, in [0, 1].
    surrogate: a name from ``surrogate.SURROGATES`` or a Surrogate object.
    detach_reset: treat the reset factor (1 - o[t-1]) as a constant in the backward pass.
    Runs the fast version of ``LIF`` for x's device (``minisnn.fast.version_of``).
    """
    return version_of(LIF, x)(v_th, tau_decay, surrogate, detach_reset)(x)


class Spike(Function):
    """o = H(v) in the forward pass; dL/dv = dL/do * h'(v), the surrogate, in the backward pass."""

    def __init__(self, surrogate="rectangular"):
        self.surrogate = get_surrogate(surrogate)

    def forward(self, v):
        self.v = v
        return self.surrogate.spike(v)

    def backward(self, gy):
        return gy * self.surrogate.grad(self.v)


def lif_unrolled(x, v_th=V_TH, tau_decay=TAU_DECAY, surrogate="rectangular", detach_reset=False):
    """``lif`` built from basic Tensor operations, one step at a time: the engine's autograd walks its
    5 T graph nodes, where ``LIF`` runs its hand-written STBP loop. Slow; it exists to check ``LIF``
    (tests/test_neuron.py) and to show the difference (lesson 06).

        u[t] = tau_decay * u[t-1] * (1 - o[t-1]) + x[t],    o[t] = Spike(u[t] - V_th)
    """
    spikes, u, o = [], None, None
    for t in range(x.shape[0]):
        if t == 0:
            u = x[0]                                                 # u[-1] = o[-1] = 0
        else:
            keep = 1 - (o.detach() if detach_reset else o)           # the reset factor (1 - o[t-1])
            u = tau_decay * u * keep + x[t]
        o = Spike(surrogate)(u - v_th)
        spikes.append(o)
    return stack(spikes)


def _check_input(x):
    if x.ndim < 2:
        raise ValueError(f"lif: x must have shape [T, N, ...] (at least 2 dimensions), got shape {x.shape}")
    if x.dtype.kind != "f":
        raise TypeError(f"lif: x must be a float array (float32 or float64), got dtype {x.dtype}")
