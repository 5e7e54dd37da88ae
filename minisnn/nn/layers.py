"""Spatial layers for spiking nets: Conv2d, Linear, AvgPool2d, GlobalAvgPool2d, Flatten.

Every layer takes a sequence [T, N, ...], folds time into the batch ([T*N, ...]), applies its
operation once to the whole folded batch, and unfolds the result back to [T, N, ...]. Only the
neurons loop over T.

Weights use Kaiming-normal initialisation for ReLU-like units, W ~ N(0, 2 / fan_in) with
fan_in = in_channels * kh * kw (or in_features), drawn in float32 on the host with
``numpy.random.default_rng(seed)``; biases start at zero. Move a model to the GPU with ``.to('cuda')``.
"""
import numpy as np

from ..core import as_tensor
from ..functions.conv import as_pair, avg_pool2d, conv2d, global_avg_pool2d
from ..functions.linear import linear
from .module import Module, Parameter


def _kaiming_normal(shape, fan_in, seed):
    """Host-side float32 init: W ~ N(0, 2 / fan_in)."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def _fold(layer, x, trailing, what):
    """Check that x is [T, N, *trailing dims]; return (x folded to [T*N, ...] as a Tensor, T, N)."""
    x = as_tensor(x)
    if x.ndim != 2 + trailing:
        raise ValueError(f"{layer!r}: expected input {what}, got shape {x.shape}")
    T, N = x.shape[:2]
    return x.reshape(T * N, *x.shape[2:]), T, N


def _unfold(y, T, N):
    return y.reshape(T, N, *y.shape[1:])


class Conv2d(Module):
    """2-D convolution over [T, N, C_in, H, W] -> [T, N, C_out, Ho, Wo] (see functions.conv.Conv2d).

    kernel_size, stride, padding: an int or an (h, w) pair. bias defaults to False because tdBN
    follows every convolution. seed: for the weight initialisation (an int or a numpy Generator).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=False, seed=None):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = as_pair(kernel_size, "kernel_size")
        self.stride, self.padding = as_pair(stride, "stride"), as_pair(padding, "padding")
        kh, kw = self.kernel_size
        self.weight = Parameter(_kaiming_normal((out_channels, in_channels, kh, kw), in_channels * kh * kw, seed))
        self.bias = Parameter(np.zeros(out_channels, dtype=np.float32)) if bias else None

    def forward(self, x):
        x, T, N = _fold(self, x, 3, f"[T, N, {self.in_channels}, H, W]")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"{self!r}: expected {self.in_channels} input channels, got input shape "
                             f"{(T, N) + x.shape[1:]}")
        return _unfold(conv2d(x, self.weight, self.bias, self.stride, self.padding), T, N)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, bias={self.bias is not None}")


class Linear(Module):
    """Fully connected layer over [T, N, in_features] -> [T, N, out_features]: y = x W^T + b.

    seed: for the weight initialisation (an int or a numpy Generator).
    """

    def __init__(self, in_features, out_features, bias=True, seed=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(_kaiming_normal((out_features, in_features), in_features, seed))
        self.bias = Parameter(np.zeros(out_features, dtype=np.float32)) if bias else None

    def forward(self, x):
        x, T, N = _fold(self, x, 1, f"[T, N, {self.in_features}]")
        if x.shape[1] != self.in_features:
            raise ValueError(f"{self!r}: expected {self.in_features} input features, got input shape "
                             f"{(T, N) + x.shape[1:]}")
        return _unfold(linear(x, self.weight, self.bias), T, N)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class AvgPool2d(Module):
    """Average pooling over [T, N, C, H, W]; stride defaults to the kernel size."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size = as_pair(kernel_size, "kernel_size")
        self.stride = self.kernel_size if stride is None else as_pair(stride, "stride")
        self.padding = as_pair(padding, "padding")

    def forward(self, x):
        x, T, N = _fold(self, x, 3, "[T, N, C, H, W]")
        return _unfold(avg_pool2d(x, self.kernel_size, self.stride, self.padding), T, N)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class GlobalAvgPool2d(Module):
    """Mean over the feature map: [T, N, C, H, W] -> [T, N, C]."""

    def forward(self, x):
        x, T, N = _fold(self, x, 3, "[T, N, C, H, W]")
        return _unfold(global_avg_pool2d(x), T, N)


class Flatten(Module):
    """[T, N, d1, d2, ...] -> [T, N, d1*d2*...]."""

    def forward(self, x):
        x = as_tensor(x)
        if x.ndim < 3:
            raise ValueError(f"{self!r}: expected input [T, N, ...] with at least 3 dims, got shape {x.shape}")
        return x.reshape(x.shape[0], x.shape[1], -1)
