"""The fast LIF: the same loops as ``functions/neuron.py``, arranged for speed.

* ``ChunkedLIF`` (CPU): the neurons of the [T, M] view are split into chunks run on all cores
  (``parallel.map_chunks``), and each step is written in place into u[t], o[t] and gx[t], so the loop
  makes no temporaries beyond one per step; the spikes are converted to x's dtype (the output) chunk by
  chunk too. The arithmetic is the reference's, in the same order, so the results are bit for bit the
  same.
* ``FusedLIF`` (CUDA): forward and backward each run as one kernel -- one thread per neuron, looping
  over t -- whose source below mirrors the reference loop line by line. It is compiled with
  --fmad=false so that a * b + c rounds twice, exactly like NumPy. It runs for float32 and float64 with
  a surrogate that gives its CUDA source (``Surrogate.cuda_grad``); anything else runs the reference.
"""
import functools
import math

from ..backend import get_array_module
from ..functions.neuron import LIF, _check_input
from . import register
from .parallel import map_chunks
from .phases import timed


class ChunkedLIF(LIF):
    """``LIF`` with the loop over t run on chunks of neurons across the CPU cores, in place."""

    @timed("LIF")
    def forward(self, x):
        xp = get_array_module(x)
        _check_input(x)
        u, spikes = xp.empty(x.shape, x.dtype), xp.empty(x.shape, x.dtype)
        o = xp.empty(x.shape, dtype=xp.uint8 if self.surrogate.heaviside else x.dtype)
        per_step = (len(x), -1)                    # [T, M]: neurons side by side, chunked across cores
        x_, u_, o_, spikes_ = (a.reshape(per_step) for a in (x, u, o, spikes))
        touched = x.nbytes + u.nbytes + o.nbytes + spikes.nbytes
        map_chunks(lambda n: self._forward_loop(x_[:, n], u_[:, n], o_[:, n], spikes_[:, n]), u_.shape[1], xp,
                   touched)
        self.u, self.o = u, o
        return spikes

    def _forward_loop(self, x, u, o, spikes):
        """The loop over t for one chunk of neurons, each step written in place into u[t] and o[t], and o[t]
        in x's dtype into spikes[t] (the output) while it is in cache."""
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
            spikes[t] = o[t]

    @timed("LIF")
    def backward(self, gy):
        xp = get_array_module(gy)
        gx = xp.empty_like(self.u)
        per_step = (len(gx), -1)
        gy_, u_, o_, gx_ = (a.reshape(per_step) for a in (gy, self.u, self.o, gx))
        # the memory a chunk touches, the surrogate derivative's few temporaries included: chunks that fit
        # in cache with all of them
        touched = gy.nbytes + self.u.nbytes + self.o.nbytes + gx.nbytes + 4 * gx.nbytes
        map_chunks(lambda n: self._backward_loop(gy_[:, n], u_[:, n], o_[:, n], gx_[:, n]), gx_.shape[1], xp,
                   touched)
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


# ------------------------------------------------------------------------ fused CUDA kernels
# One thread per neuron i of the [T, M] view (M = N * ...), looping over t. F is x's float type.

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


class FusedLIF(LIF):
    """``LIF`` on CuPy arrays as one fused kernel per pass (float32/float64 with a surrogate that has CUDA
    source); otherwise the reference loop, which runs on CuPy as it is."""

    def fusable(self, x):
        return x.dtype.kind == "f" and x.dtype.itemsize in (4, 8) and self.surrogate.cuda_grad() is not None

    def forward(self, x):
        self.fused = self.fusable(x)
        if not self.fused:
            return super().forward(x)
        _check_input(x)
        cp = get_array_module(x)
        x = cp.ascontiguousarray(x)
        steps, neurons = x.shape[0], math.prod(x.shape[1:])
        u, o, spikes = cp.empty_like(x), cp.empty(x.shape, cp.uint8), cp.empty_like(x)
        _forward_kernel(cp)(x, steps, neurons, self.v_th, self.tau_decay, u, o, spikes, size=neurons)
        self.u, self.o = u, o
        return spikes

    def backward(self, gy):
        if not self.fused:
            return super().backward(gy)
        cp = get_array_module(gy)
        u = self.u
        gy = cp.ascontiguousarray(gy, dtype=u.dtype)
        steps, neurons = u.shape[0], math.prod(u.shape[1:])
        gx = cp.empty_like(u)
        _backward_kernel(cp, self.surrogate.cuda_grad())(gy, u, self.o, steps, neurons, self.v_th,
                                                         self.tau_decay, self.detach_reset, gx, size=neurons)
        return gx


register(LIF, cpu=ChunkedLIF, cuda=FusedLIF)
