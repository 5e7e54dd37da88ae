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
"""
from ..core import Function, as_tensor
from ..backend import get_array_module
from ..parallel import map_chunks
from .basic import concatenate, reshape


class BatchNormFunction(Function):
    """Per-channel normalisation of a [B, C, ...] array over every axis but the channel axis 1.

    Inputs x [B, C, ...], weight lambda [C], bias beta [C]; s = ``scale`` (alpha * V_th for tdBN,
    1 for plain batch norm). With n = number of elements per channel:

        forward:   istd = 1 / sqrt(var + eps),   xn = (x - mean) * istd,   y = lambda * s * xn + beta

    Training (mean, var = the batch's own per-channel statistics, which depend on x):

        g_hat   = gy * lambda * s
        dx      = istd * (g_hat - mean(g_hat) - xn * mean(g_hat * xn))      (means per channel)
        dlambda = sum(gy * s * xn),    dbeta = sum(gy)                       (sums per channel)

    Eval (mean, var = running_mean, running_var, constants):

        dx = istd * g_hat,   dlambda and dbeta as above.

    Statistics: mean = sum(x) / n (summed in float64), then var = mean((x - mean)^2) from the
    centred x that y is built from anyway, so no array beyond y is made. Only x is kept for backward
    -- it is alive anyway as this Function's input -- and x - mean is rebuilt from it there, so no
    normalised copy waits in memory between forward and backward.
    The per-channel means in dx reuse the parameter gradients: mean(g_hat) = lambda * s * dbeta / n
    and mean(g_hat * xn) = lambda * dlambda / n, so backward makes only two reductions.
    Training also updates ``running_mean`` / ``running_var`` in place (when they are given).
    On the CPU every pass -- the sums, centring, scaling, and dx -- runs on batch chunks across the
    cores (``parallel.map_chunks``); per-channel sums add the chunks' partial sums.
    """

    def __init__(self, running_mean, running_var, training, scale=1.0, momentum=0.1, eps=1e-5):
        self.running_mean, self.running_var = running_mean, running_var
        self.training, self.scale, self.momentum, self.eps = training, scale, momentum, eps

    def forward(self, x, weight, bias):
        xp = get_array_module(x)
        x3 = x.reshape(x.shape[0], x.shape[1], -1)  # [B, C, S]: statistics over axes 0 and 2
        n = x3.shape[0] * x3.shape[2]
        if self.training:
            mean = self._sum(lambda b: x3[b].sum(axis=(0, 2), dtype=xp.float64), x3) / n
        else:
            mean = self.running_mean
        self.mean = mean.astype(x.dtype)[:, None]                    # per channel, broadcast over S
        y = xp.empty_like(x3)

        def centre(b):                                               # y = x - mean; its sum of squares
            xp.subtract(x3[b], self.mean, out=y[b])
            return xp.einsum("bcs,bcs->c", y[b], y[b]) if self.training else None

        squares = self._sum(centre, x3)
        if self.training:
            var = squares / n                                        # biased, two-pass: no cancellation
            self._update_running(mean, var, n)
        else:
            var = self.running_var
        self.istd = (1 / xp.sqrt(var + self.eps)).astype(x.dtype)[:, None]
        self.x3, self.weight = x3, weight
        gain, shift = self.istd * (weight[:, None] * self.scale), bias[:, None]

        def scale(b):                                                # lambda s (x - mean) istd + beta
            y[b] *= gain
            y[b] += shift

        map_chunks(scale, len(y), xp, y.nbytes)
        return y.reshape(x.shape)

    @staticmethod
    def _sum(per_chunk, x3):
        """Sum of per_chunk(b) over chunks b of the batch axis, computed across the CPU cores."""
        parts = map_chunks(per_chunk, len(x3), get_array_module(x3), x3.nbytes)
        return None if parts[0] is None else sum(parts[1:], parts[0])

    def _update_running(self, mean, var, n):
        """running = (1 - m) * running + m * batch, with the unbiased variance for running_var."""
        if self.running_mean is None:
            return
        m = self.momentum
        self.running_mean[...] = (1 - m) * self.running_mean + m * mean
        self.running_var[...] = (1 - m) * self.running_var + m * var * (n / (n - 1))

    def backward(self, gy):
        xp = get_array_module(gy)
        x3, mean, istd = self.x3, self.mean, self.istd
        gy3 = gy.reshape(x3.shape)
        n = gy3.shape[0] * gy3.shape[2]
        sums = self._sum(lambda b: xp.stack([gy3[b].sum(axis=(0, 2)),
                                             xp.einsum("bcs,bcs->c", gy3[b], x3[b] - mean)]), x3)
        sum_gy, sum_gy_xn = sums[0], sums[1] * istd[:, 0]          # = dbeta and dlambda / s
        gx = None
        if self.needs_input_grad[0]:
            gain = self.weight[:, None] * (self.scale * istd)        # dy/dx with the statistics held fixed
            gx = xp.empty_like(x3)

            def input_grad(b):                                       # gain (gy - sum_gy/n - xn sum_gy_xn/n)
                g = gx[b]
                if not self.training:
                    xp.multiply(gy3[b], gain, out=g)
                    return
                xp.subtract(x3[b], mean, out=g)                      # x - mean; xn = (x - mean) istd
                g *= istd * (-sum_gy_xn[:, None] / n)
                g += gy3[b]
                g -= sum_gy[:, None] / n
                g *= gain

            map_chunks(input_grad, len(gx), xp, gx.nbytes)
            gx = gx.reshape(gy.shape)
        return gx, sum_gy_xn * self.scale, sum_gy


def batch_norm(x, weight, bias, running_mean, running_var, training, per_timestep=False, scale=1.0,
               momentum=0.1, eps=1e-5):
    """Batch norm of a [T, N, C, ...] Tensor: y = lambda * scale * (x - mean_c) / sqrt(var_c + eps) + beta.

    weight (lambda), bias (beta): Tensors [C]. running_mean, running_var: arrays [C] updated in place
    when ``training`` (may be None in training to skip the update), used instead of the batch
    statistics when not training. Statistics run over (T, N, H, W) -- T folded into the batch --
    unless ``per_timestep``, which normalises each x[t] with its own statistics (and updates the
    running statistics once per step). scale = alpha * V_th makes this tdBN; see ``tdbn``.
    """
    x, weight, bias = (as_tensor(a) for a in (x, weight, bias))
    _check(x, weight, bias, running_mean, running_var, training)
    if per_timestep and training:  # (in eval mode every t uses the same running statistics)
        return concatenate([batch_norm(x[t:t + 1], weight, bias, running_mean, running_var, training,
                                       False, scale, momentum, eps) for t in range(x.shape[0])])
    T, N = x.shape[:2]
    folded = reshape(x, (T * N,) + x.shape[2:])
    y = BatchNormFunction(running_mean, running_var, training, scale, momentum, eps)(folded, weight, bias)
    return reshape(y, x.shape)


def tdbn(x, weight, bias, running_mean, running_var, training, alpha=1.0, v_th=0.5, momentum=0.1, eps=1e-5):
    """Threshold-dependent batch norm of a [T, N, C, ...] Tensor, statistics over (T, N, H, W):

        y = lambda * alpha * V_th * (x - mean_c) / sqrt(var_c + eps) + beta.

    Arguments as in ``batch_norm``; alpha = 1/sqrt(2) on branches that meet at a residual addition.
    """
    return batch_norm(x, weight, bias, running_mean, running_var, training, per_timestep=False,
                      scale=alpha * v_th, momentum=momentum, eps=eps)


def _check(x, weight, bias, running_mean, running_var, training):
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
    if training and x.size // C < 2:
        raise ValueError(f"batch_norm: training needs more than one value per channel, got shape {x.shape}")
