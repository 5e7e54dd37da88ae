"""Normalisation layers: tdBN (threshold-dependent batch norm) and plain batch norm for comparison.

Both take and return [T, N, C, H, W] (after a convolution) or [T, N, C] (after a linear layer) and
learn a per-channel weight lambda (initialised to 1) and bias beta (initialised to 0); the running
mean and variance (buffers, float32, initialised to 0 and 1) are used in eval mode.
"""
import numpy as np  # host-side initial values only; .to(device) moves them

from ..backend import get_array_module
from ..functions.norm import batch_norm
from ..paper import V_TH
from .module import Module, Parameter


class BatchNorm(Module):
    """Plain batch norm: y = lambda * (x - mean_c) / sqrt(var_c + eps) + beta.

    Statistics per channel over (T, N, H, W), or over (N, H, W) at each t separately when
    ``per_timestep`` (a 2-D batch norm applied step by step). ``scale`` multiplies the normalised
    input (1 here; alpha * V_th in ``TdBN``). ``sync_group``: None, or the group of data-parallel ranks
    whose rows make up the batch, to take the statistics over all of them in training
    (``minisnn.dist.sync_norm`` sets it).
    """

    def __init__(self, num_channels, per_timestep=False, eps=1e-5, momentum=0.1, scale=1.0):
        super().__init__()
        self.num_channels, self.per_timestep = num_channels, per_timestep
        self.eps, self.momentum, self.scale = eps, momentum, scale
        self.weight = Parameter(np.ones(num_channels, dtype=np.float32))
        self.bias = Parameter(np.zeros(num_channels, dtype=np.float32))
        self.register_buffer("running_mean", np.zeros(num_channels, dtype=np.float32))
        self.register_buffer("running_var", np.ones(num_channels, dtype=np.float32))
        self.sync_group = None

    def forward(self, x):
        if x.ndim not in (3, 5) or x.shape[2] != self.num_channels:
            raise ValueError(f"{type(self).__name__}({self.num_channels}): expected input [T, N, "
                             f"{self.num_channels}, H, W] or [T, N, {self.num_channels}], got shape {x.shape}")
        return batch_norm(x, self.weight, self.bias, self.running_mean, self.running_var, self.training,
                          per_timestep=self.per_timestep, scale=self.scale, momentum=self.momentum,
                          eps=self.eps, group=self.sync_group)

    def fold_scale_shift(self):
        """Per-channel arrays (a, b) with y = a * x + b in eval mode, for folding into the layer before:

            a = lambda * scale / sqrt(running_var + eps),   b = beta - a * running_mean.
        """
        xp = get_array_module(self.weight.data)
        a = self.weight.data * (self.scale / xp.sqrt(self.running_var + self.eps))
        return a, self.bias.data - a * self.running_mean

    def extra_repr(self):
        return f"{self.num_channels}, per_timestep={self.per_timestep}"


class TdBN(BatchNorm):
    """Threshold-dependent batch norm (STBP-tdBN), statistics per channel over (T, N, H, W):

        y = lambda * alpha * V_th * (x - mean_c) / sqrt(var_c + eps) + beta.

    alpha = 1 in general, 1/sqrt(2) on both branches that meet at a residual addition.
    """

    def __init__(self, num_channels, alpha=1.0, v_th=V_TH, eps=1e-5, momentum=0.1):
        super().__init__(num_channels, per_timestep=False, eps=eps, momentum=momentum, scale=alpha * v_th)
        self.alpha, self.v_th = alpha, v_th

    def extra_repr(self):
        return f"{self.num_channels}, alpha={self.alpha:.4g}, v_th={self.v_th:g}"
