"""Threshold-dependent batch normalisation (tdBN) and plain batch norm, with a closed-form backward.

tdBN (Zheng et al., AAAI 2021) normalises the pre-activation x of a spiking layer, shape
[T, N, C, H, W] (or [T, N, C] after a linear layer), per channel c over (T, N, H, W) at once:

    mean_c = E[x_c],   var_c = Var[x_c] (biased),
    x_hat  = alpha * V_th * (x - mean_c) / sqrt(var_c + eps),
    y      = lambda_c * x_hat + beta_c.

So the input of the LIF neuron is scaled to its firing threshold V_th (alpha = 1, or 1/sqrt(2) on
both branches that meet at a residual addition). Plain batch norm is the same code with
scale = alpha * V_th = 1; with ``per_timestep=True`` it takes statistics separately at every t, as a
2-D batch norm applied step by step does. In eval mode running statistics replace the batch ones;
training updates them as running = (1 - momentum) * running + momentum * batch, using the unbiased
variance n / (n - 1) * var_c for running_var (as PyTorch does).

This file is the reference, written to be read. ``batch_norm`` runs the fast version of
``BatchNormFunction`` where one exists (``minisnn/fast/norm.py``: sums in float64, every pass on batch
chunks across the CPU cores), which the tests check equal to this one.

Data-parallel training (``minisnn/dist``) splits a batch over K ranks. ``SyncBatchNormFunction`` takes the
statistics over the whole batch all the same, adding the ranks' per-channel sums with one allreduce in
forward and one in backward; ``batch_norm(..., group=...)`` runs it.
"""
from ..backend import get_array_module
from ..core import Function, as_tensor
from ..fast import version_of
from ..paper import V_TH
from .basic import concatenate, reshape


class BatchNormFunction(Function):
    """Per-channel normalisation of a [B, C, ...] array over every axis but the channel axis 1.

    Inputs x [B, C, ...], weight lambda [C], bias beta [C]; s = ``scale`` (alpha * V_th for tdBN,
    1 for plain batch norm). With n = number of elements per channel and means/sums per channel:

        forward:   istd = 1 / sqrt(var + eps),   xn = (x - mean) * istd,   y = lambda * s * xn + beta

    Training (mean, var = the batch's own per-channel statistics, which depend on x):

        g_hat   = gy * lambda * s
        dx      = istd * (g_hat - mean(g_hat) - xn * mean(g_hat * xn))
        dlambda = sum(gy * s * xn),    dbeta = sum(gy)

    Eval (mean, var = running_mean, running_var, constants):

        dx = istd * g_hat,   dlambda and dbeta as above.

    Training also updates ``running_mean`` / ``running_var`` in place (when they are given).
    """

    def __init__(self, running_mean, running_var, training, scale=1.0, momentum=0.1, eps=1e-5):
        self.running_mean, self.running_var = running_mean, running_var
        self.training, self.scale, self.momentum, self.eps = training, scale, momentum, eps

    def forward(self, x, weight, bias):
        xp = get_array_module(x)
        x3 = x.reshape(x.shape[0], x.shape[1], -1)          # [B, C, S]: statistics over axes 0 and 2
        if self.training:
            mean, var = x3.mean(axis=(0, 2)), x3.var(axis=(0, 2))
            self._update_running(mean, var, x3.shape[0] * x3.shape[2])
        else:
            mean, var = self.running_mean, self.running_var
        self.istd = xp.asarray(1 / xp.sqrt(var + self.eps), dtype=x.dtype)[:, None]
        self.xn = (x3 - xp.asarray(mean, dtype=x.dtype)[:, None]) * self.istd
        self.weight = weight
        y = (weight * self.scale)[:, None] * self.xn + bias[:, None]
        return y.reshape(x.shape)

    def _update_running(self, mean, var, n):
        """running = (1 - m) * running + m * batch, with the unbiased variance n/(n-1) var for running_var."""
        if self.running_mean is None:
            return
        m = self.momentum
        self.running_mean[...] = (1 - m) * self.running_mean + m * mean
        self.running_var[...] = (1 - m) * self.running_var + m * var * (n / (n - 1))

    def backward(self, gy):
        xn, istd = self.xn, self.istd
        gy3 = gy.reshape(xn.shape)
        dbeta = gy3.sum(axis=(0, 2))
        dlambda = (gy3 * xn).sum(axis=(0, 2)) * self.scale
        gx = None
        if self.needs_input_grad[0]:
            g_hat = gy3 * (self.weight * self.scale)[:, None]
            if self.training:
                g_hat = (g_hat - g_hat.mean(axis=(0, 2), keepdims=True)
                         - xn * (g_hat * xn).mean(axis=(0, 2), keepdims=True))
            gx = (istd * g_hat).reshape(gy.shape)
        return gx, dlambda, dbeta


class SyncBatchNormFunction(BatchNormFunction):
    """``BatchNormFunction`` in training mode with the statistics of the whole batch that a group of K ranks
    shares (``minisnn/dist``): rank k holds rows x_k of it, and ``group.allreduce_`` sums an array over ranks.

    Forward: every rank sums its rows per channel, in float64; one allreduce adds the ranks' sums,

        n = sum_k n_k,   S1 = sum_k sum(x_k),   S2 = sum_k sum(x_k^2)
        mean = S1 / n,   var = S2 / n - mean^2,

    and then each rank normalises its own rows as ``BatchNormFunction`` does: y_k = lambda * s * xn_k + beta.

    Backward: the per-channel means in dx run over the whole batch too. With gy_k the gradient that
    arrives at rank k (every rank's gy must be the gradient of one shared loss), one allreduce adds

        G1 = sum_k sum(gy_k),   G2 = sum_k sum(gy_k * xn_k),
        dx_k = istd * lambda * s * (gy_k - G1 / n - xn_k * G2 / n),

    which is ``BatchNormFunction``'s dx restricted to rank k's rows. dlambda and dbeta stay the sums over
    the rank's own rows: the gradient allreduce of the parameters adds them up like every other gradient.
    Running statistics are updated with the shared mean and variance, so they agree on every rank.
    """

    def __init__(self, group, running_mean, running_var, scale=1.0, momentum=0.1, eps=1e-5):
        super().__init__(running_mean, running_var, True, scale, momentum, eps)
        self.group = group

    def forward(self, x, weight, bias):
        xp = get_array_module(x)
        x3 = x.reshape(x.shape[0], x.shape[1], -1)           # [B_k, C, S]: statistics over axes 0 and 2
        C, x64 = x3.shape[1], x3.astype(xp.float64)
        sums = xp.concatenate([x64.sum(axis=(0, 2)), (x64 * x64).sum(axis=(0, 2)),
                               xp.full(1, x3.shape[0] * x3.shape[2], dtype=xp.float64)])
        self.group.allreduce_(sums, what="the tdBN statistics (sync-norm forward)")
        n = sums[2 * C]
        mean = sums[:C] / n
        var = xp.maximum(sums[C:2 * C] / n - mean * mean, 0)
        self._update_running(mean, var, n)
        self.n = n
        self.istd = xp.asarray(1 / xp.sqrt(var + self.eps), dtype=x.dtype)[:, None]
        self.xn = (x3 - xp.asarray(mean, dtype=x.dtype)[:, None]) * self.istd
        self.weight = weight
        y = (weight * self.scale)[:, None] * self.xn + bias[:, None]
        return y.reshape(x.shape)

    def backward(self, gy):
        xp = get_array_module(gy)
        xn, istd = self.xn, self.istd
        gy3 = gy.reshape(xn.shape)
        C = xn.shape[1]
        # this rank's sum(gy) and sum(gy * xn) per channel, in float64: its dbeta and dlambda / s, and its
        # part of G1 and G2, which one allreduce adds up over the ranks
        own = xp.concatenate([gy3.sum(axis=(0, 2), dtype=xp.float64), (gy3 * xn).sum(axis=(0, 2), dtype=xp.float64)])
        dbeta, dlambda = own[:C].astype(gy.dtype), (own[C:] * self.scale).astype(gy.dtype)
        gx = None
        if self.needs_input_grad[0]:
            sums = own.copy()
            self.group.allreduce_(sums, what="the tdBN gradient sums (sync-norm backward)")
            mean_gy = xp.asarray(sums[:C] / self.n, dtype=gy.dtype)[:, None]
            mean_gy_xn = xp.asarray(sums[C:] / self.n, dtype=gy.dtype)[:, None]
            gain = (self.weight * self.scale)[:, None] * istd
            gx = (gain * (gy3 - mean_gy - xn * mean_gy_xn)).reshape(gy.shape)
        return gx, dlambda, dbeta


def batch_norm(x, weight, bias, running_mean, running_var, training, per_timestep=False, scale=1.0,
               momentum=0.1, eps=1e-5, group=None):
    """Batch norm of a [T, N, C, ...] Tensor: y = lambda * scale * (x - mean_c) / sqrt(var_c + eps) + beta.

    weight (lambda), bias (beta): Tensors [C]. running_mean, running_var: arrays [C] updated in place
    when ``training`` (may be None in training to skip the update), used instead of the batch
    statistics when not training. Statistics run over (T, N, H, W) -- T folded into the batch --
    unless ``per_timestep``, which normalises each x[t] with its own statistics (and updates the
    running statistics once per step). scale = alpha * V_th makes this tdBN; see ``tdbn``.
    group: in training, the group of data-parallel ranks whose rows together make the batch; the
    statistics are then those of the whole batch (``SyncBatchNormFunction``). None: this rank's rows alone.
    """
    x, weight, bias = (as_tensor(a) for a in (x, weight, bias))
    _check(x, weight, bias, running_mean, running_var, training, one_rank=group is None)
    if per_timestep and training:  # (in eval mode every t uses the same running statistics)
        return concatenate([batch_norm(x[t:t + 1], weight, bias, running_mean, running_var, training,
                                       False, scale, momentum, eps, group) for t in range(x.shape[0])])
    T, N = x.shape[:2]
    folded = reshape(x, (T * N,) + x.shape[2:])
    if training and group is not None:
        function = SyncBatchNormFunction(group, running_mean, running_var, scale, momentum, eps)
    else:
        function = version_of(BatchNormFunction, folded)(running_mean, running_var, training, scale, momentum, eps)
    y = function(folded, weight, bias)
    return reshape(y, x.shape)


def tdbn(x, weight, bias, running_mean, running_var, training, alpha=1.0, v_th=V_TH, momentum=0.1, eps=1e-5):
    """Threshold-dependent batch norm of a [T, N, C, ...] Tensor, statistics over (T, N, H, W):

        y = lambda * alpha * V_th * (x - mean_c) / sqrt(var_c + eps) + beta.

    Arguments as in ``batch_norm``; alpha = 1/sqrt(2) on branches that meet at a residual addition.
    """
    return batch_norm(x, weight, bias, running_mean, running_var, training, per_timestep=False,
                      scale=alpha * v_th, momentum=momentum, eps=eps)


def _check(x, weight, bias, running_mean, running_var, training, one_rank=True):
    if x.ndim < 3:
        raise ValueError(f"batch_norm: expected x of shape [T, N, C, ...], got shape {x.shape}")
    if x.dtype.kind != "f":
        raise TypeError(f"batch_norm: x must be a floating-point array, got dtype {x.dtype}")
    C = x.shape[2]
    for name, a in (("weight", weight), ("bias", bias), ("running_mean", running_mean),
                    ("running_var", running_var)):
        if a is None:
            if name.startswith("running") and not training:
                raise ValueError(f"batch_norm: eval mode needs {name}, got None")
            continue
        if tuple(a.shape) != (C,):
            raise ValueError(f"batch_norm: x has {C} channels (axis 2 of shape {x.shape}) "
                             f"but {name} has shape {tuple(a.shape)}")
        if name in ("weight", "bias") and a.dtype != x.dtype:
            raise TypeError(f"batch_norm: {name} has dtype {a.dtype} but x has {x.dtype}; "
                            "cast them to the same dtype")
    if training and one_rank and x.size // C < 2:  # (a rank's shard may hold one value: the group has more)
        raise ValueError(f"batch_norm: training needs more than one value per channel, got shape {x.shape}")
