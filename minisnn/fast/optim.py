"""The fast optimizers: SGD and Adam on the GPU as one fused kernel per parameter.

The reference updates in ``optim.py`` are three to six array operations per parameter, each a kernel
launch on the GPU (six per parameter tensor for SGD with momentum and weight decay). Here each
parameter's whole update is one kernel, doing the reference's arithmetic in the reference's order (so
the results are bit for bit the same), and it also raises a flag on the device when the new value is
not finite -- the cheap check the trainer reads after each step (``nonfinite``), at no extra launch.
On the CPU they are the reference optimizers.
"""
import functools

from ..backend import get_array_module, is_gpu_array
from ..optim import SGD, Adam
from . import register

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


register(SGD, cuda=FusedSGD)
register(Adam, cuda=FusedAdam)
