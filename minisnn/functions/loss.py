"""Softmax cross-entropy on the time-averaged output of a spiking network.

With direct encoding the network's output is the mean over T of the last layer, z = (1/T) sum_t y[t]
(see ``mean_over_time``). The loss for logits z [N, K] and integer labels c [N] is

    L = -(1/N) sum_n log softmax(z_n)[c_n],   softmax(z)_k = exp(z_k - max z) / sum_j exp(z_j - max z)

and its gradient is dL/dz = (softmax(z) - onehot(c)) / N. Subtracting max z keeps exp from
overflowing for any finite logits.
"""
from ..backend import get_array_module, is_gpu_array
from ..core import Function
from .basic import mean


def log_softmax_array(z):
    """log softmax over the last axis, stable for large |z|."""
    xp = get_array_module(z)
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=-1, keepdims=True))


class SoftmaxCrossEntropy(Function):
    """L = mean_n(-log softmax(z_n)[c_n]);  dL/dz = (softmax(z) - onehot(c)) / N.

    Labels on the host are checked to lie in [0, K). Labels already on the GPU are not: reading them
    back would stop the GPU once per step, so check them before they are moved (minisnn's data sets
    check their labels when they read them).
    """

    def forward(self, z, labels):
        xp = get_array_module(z)
        if z.ndim != 2:
            raise ValueError(f"cross-entropy expects logits [N, K], got shape {z.shape}")
        if labels.shape != (z.shape[0],):
            raise ValueError(f"cross-entropy expects labels [N] = [{z.shape[0]}], got shape {labels.shape}")
        if not is_gpu_array(labels) and labels.size and (labels.min() < 0 or labels.max() >= z.shape[1]):
            raise ValueError(f"labels must lie in [0, {z.shape[1]}), got range "
                             f"[{int(labels.min())}, {int(labels.max())}]")
        self.labels = labels.astype(xp.int64, copy=False)
        log_p = log_softmax_array(z)
        self.log_p = log_p
        rows = xp.arange(z.shape[0])
        return -log_p[rows, self.labels].mean()

    def backward(self, gy):
        xp = get_array_module(gy)
        n = self.log_p.shape[0]
        gz = xp.exp(self.log_p)
        gz[xp.arange(n), self.labels] -= 1
        return gz * (gy / n), None


def softmax_cross_entropy(logits, labels):
    """Mean cross-entropy of logits [N, K] against integer labels [N]."""
    return SoftmaxCrossEntropy()(logits, labels)


def mean_over_time(y):
    """The network's readout: the mean over the time axis (axis 0) of y [T, N, K]."""
    return mean(y, axis=0)
