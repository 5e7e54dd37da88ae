"""The fast optimizers: SGD and Adam in cache-sized blocks on the CPU, one fused kernel per parameter
on the GPU. Both do the reference's arithmetic (``optim.py``) in the reference's order, so the results
are bit for bit the same.

**CPU** (``ChunkedSGD``, ``ChunkedAdam``). The reference update is three to six whole-array operations
per parameter, each a pass over memory, and most allocate a temporary as large as the parameter
(g = grad + wd p, lr v, ...): for ResNet-19's 50 MB of weights that is hundreds of megabytes of
traffic and fresh pages per step. Here each parameter is walked in blocks of BLOCK elements: the
block's operations run one after another while it sits in the core's cache, into a small scratch
array of the thread instead of new temporaries, so the parameter, its gradient and its slots are
read from memory once and written once. The blocks of a large parameter run on all cores
(``parallel.map_chunks``). The gradient is only read: two parameters may share one gradient array.

**GPU** (``FusedSGD``, ``FusedAdam``). The reference's operations are each a kernel launch (six per
parameter tensor for SGD with momentum and weight decay). Here each parameter's whole update is one
kernel, and it also raises a flag on the device when the new value is not finite -- the cheap check
the trainer reads after each step (``nonfinite``), at no extra launch.
"""
import functools
import threading

import numpy as np

from ..backend import get_array_module, is_gpu_array
from ..optim import SGD, Adam
from . import register
from .parallel import map_chunks

# elements updated together: 256 KB per float32 array, so that a block's arrays (parameter, gradient, slots and
# three scratch arrays) stay in a 2 MB L2 cache, and each block's work is long against the Python between
# blocks: with 16K elements two workers were slower than one (ResNet-19's SGD step: 56 ms against 33 ms, on
# the machine of benchmarks/RESULTS.md), queueing for Python's GIL; with 64K, 28-31 ms
BLOCK = 1 << 16

_thread = threading.local()


def _scratch(count, dtype):
    """``count`` arrays of BLOCK elements, this thread's own, reused from call to call."""
    kept = getattr(_thread, "scratch", None)
    if kept is None or kept.shape[0] < count or kept.shape[1] < BLOCK or kept.dtype != dtype:
        kept = _thread.scratch = np.empty((count, BLOCK), dtype)
    return kept


def _blockwise(update, arrays):
    """Run update(*block views, scratch) over blocks of the flattened ``arrays`` (a parameter, its
    gradient and its slots; all C-contiguous but the gradient, which is only read), the blocks of a
    large parameter split across the cores."""
    flat = [a.reshape(-1) for a in arrays]            # views (the gradient: a copy, if it is not contiguous)
    n = flat[0].size
    count = -(-n // BLOCK)

    def blocks(chunk):
        scratch = _scratch(3, flat[0].dtype)
        for k in range(chunk.start, chunk.stop):
            rows = slice(k * BLOCK, min(n, (k + 1) * BLOCK))
            size = rows.stop - rows.start
            update(*(a[rows] for a in flat), *(s[:size] for s in scratch))

    map_chunks(blocks, count, np, nbytes=sum(a.nbytes for a in flat))


def _blockable(p):
    """Whether p's update can run blockwise: NumPy arrays, and p.data contiguous (it is written in place)."""
    return isinstance(p.data, np.ndarray) and isinstance(p.grad, np.ndarray) and p.data.flags.c_contiguous


class ChunkedSGD(SGD):
    """``SGD`` on the CPU in cache-sized blocks across the cores, without temporaries (module docstring)."""

    def update(self, i, p):
        if not _blockable(p):
            return super().update(i, p)
        lr, momentum, weight_decay = self.lr, self.momentum, self.weight_decay
        first = momentum and self.velocity[i] is None
        if first:
            self.velocity[i] = np.empty_like(p.data)
        slots = (self.velocity[i],) if momentum else ()

        def step(p, grad, *rest):
            *velocity, g, lr_v, _ = rest                    # velocity: [v] with momentum, else []
            if weight_decay:                               # g = grad + weight_decay p
                np.multiply(p, weight_decay, out=g)
                g += grad
            else:
                g = grad
            for v in velocity:                             # v = momentum v + g (v = g at the first step)
                if first:
                    v[...] = g
                else:
                    v *= momentum
                    v += g
                g = v
            np.multiply(g, lr, out=lr_v)                   # p = p - lr v
            p -= lr_v

        _blockwise(step, (p.data, p.grad) + slots)


class ChunkedAdam(Adam):
    """``Adam`` on the CPU in cache-sized blocks across the cores, without temporaries (module docstring)."""

    def update(self, i, p):
        if not _blockable(p):
            return super().update(i, p)
        if self.m[i] is None:
            self.m[i], self.v[i] = np.zeros_like(p.data), np.zeros_like(p.data)
        beta1, beta2, eps, weight_decay = self.beta1, self.beta2, self.eps, self.weight_decay
        step_size = self.lr / (1 - beta1 ** self.steps)
        bias2 = 1 - beta2 ** self.steps

        def step(p, grad, m, v, g, a, b):
            if weight_decay:                               # g = grad + weight_decay p
                np.multiply(p, weight_decay, out=g)
                g += grad
            else:
                g = grad
            m *= beta1                                     # m = b1 m + (1 - b1) g
            np.multiply(g, 1 - beta1, out=a)
            m += a
            v *= beta2                                     # v = b2 v + (1 - b2) g^2
            np.multiply(g, g, out=a)
            a *= 1 - beta2
            v += a
            np.divide(v, bias2, out=a)                     # p = p - step_size m / (sqrt(v / bias2) + eps)
            np.sqrt(a, out=a)
            a += eps
            np.multiply(m, step_size, out=b)
            b /= a
            p -= b

        _blockwise(step, (p.data, p.grad, self.m[i], self.v[i]))

_SGD_SOURCE = """
const T g = weight_decay != (T)0 ? grad + weight_decay * p : grad;    // g = grad + weight_decay p
v = first ? g : momentum * v + g;                                       // v = momentum v + g
p = p - lr * v;                                                         // p = p - lr v
if (!isfinite(p)) nonfinite[0] = 1;
"""

_SGD_PLAIN_SOURCE = """
const T g = weight_decay != (T)0 ? grad + weight_decay * p : grad;
p = p - lr * g;
if (!isfinite(p)) nonfinite[0] = 1;
"""

_ADAM_SOURCE = """
const T g = weight_decay != (T)0 ? grad + weight_decay * p : grad;
m = m * beta1 + one_minus_beta1 * g;                                    // m = b1 m + (1 - b1) g
v = v * beta2 + one_minus_beta2 * (g * g);                              // v = b2 v + (1 - b2) g^2
p = p - step_size * m / (sqrt(v / bias2) + eps);                        // p = p - lr m_hat / (sqrt(v_hat) + eps)
if (!isfinite(p)) nonfinite[0] = 1;
"""


@functools.lru_cache(maxsize=None)
def _kernel(cp, which):
    if which == "sgd":
        return cp.ElementwiseKernel("T grad, T lr, T momentum, T weight_decay, bool first",
                                    "T p, T v, raw int32 nonfinite", _SGD_SOURCE, "minisnn_sgd")
    if which == "sgd_plain":
        return cp.ElementwiseKernel("T grad, T lr, T weight_decay", "T p, raw int32 nonfinite",
                                    _SGD_PLAIN_SOURCE, "minisnn_sgd_plain")
    return cp.ElementwiseKernel(
        "T grad, T beta1, T beta2, T one_minus_beta1, T one_minus_beta2, T step_size, T bias2, T eps, "
        "T weight_decay", "T p, T m, T v, raw int32 nonfinite", _ADAM_SOURCE, "minisnn_adam")


class _Fused:
    """What the fused optimizers share: the device flag, reset at every step."""

    def step(self):
        if not is_gpu_array(self.params[0].data):
            self._flag = None
            return super().step()
        cp = get_array_module(self.params[0].data)
        if getattr(self, "_flag", None) is None or self._flag.device != self.params[0].data.device:
            self._flag = cp.zeros(1, dtype=cp.int32)
        else:
            self._flag.fill(0)
        return super().step()

    def nonfinite(self):
        if getattr(self, "_flag", None) is None:
            return super().nonfinite()
        return self._flag[0]


class FusedSGD(_Fused, SGD):
    """``SGD`` with each parameter's update (weight decay, momentum, step) as one CUDA kernel."""

    def update(self, i, p):
        if not is_gpu_array(p.data):
            return super().update(i, p)
        cp = get_array_module(p.data)
        if not self.momentum:
            _kernel(cp, "sgd_plain")(p.grad, self.lr, self.weight_decay, p.data, self._flag)
            return
        first = self.velocity[i] is None
        if first:
            self.velocity[i] = cp.empty_like(p.data)
        _kernel(cp, "sgd")(p.grad, self.lr, self.momentum, self.weight_decay, first, p.data, self.velocity[i],
                           self._flag)


class FusedAdam(_Fused, Adam):
    """``Adam`` with each parameter's update (weight decay, both moments, step) as one CUDA kernel."""

    def update(self, i, p):
        if not is_gpu_array(p.data):
            return super().update(i, p)
        cp = get_array_module(p.data)
        if self.m[i] is None:
            self.m[i], self.v[i] = cp.zeros_like(p.data), cp.zeros_like(p.data)
        _kernel(cp, "adam")(p.grad, self.beta1, self.beta2, 1 - self.beta1, 1 - self.beta2,
                            self.lr / (1 - self.beta1 ** self.steps), 1 - self.beta2 ** self.steps, self.eps,
                            self.weight_decay, p.data, self.m[i], self.v[i], self._flag)


register(SGD, cpu=ChunkedSGD, cuda=FusedSGD)
register(Adam, cpu=ChunkedAdam, cuda=FusedAdam)
