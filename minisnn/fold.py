"""Folding tdBN into the convolution before it: the inference network without batch norm.

In eval mode a tdBN layer is a fixed affine map per channel c (``BatchNorm.fold_scale_shift``)::

    y_c = a_c * x_c + b_c,    a_c = lambda_c * alpha * V_th / sqrt(running_var_c + eps),
                              b_c = beta_c - a_c * running_mean_c.

A convolution (weights W, bias c, zero when it has none) followed by it is therefore one convolution
with bias, whose output feeds the LIF neuron unchanged::

    y = a * (W * x + c) + b = (a W) * x + (a c + b)

    W'[o] = a[o] * W[o],    c'[o] = a[o] * c[o] + b[o] = beta[o] + (c[o] - running_mean[o]) * a[o].

The same holds for a Linear layer followed by batch norm, and for plain batch norm (``BatchNorm``,
scale 1; with ``per_timestep`` too, since eval mode uses one set of running statistics for every t).

``fold_tdbn(model)`` returns a new, eval-mode model of the same classes in which every
``ConvBN`` (``models/resnet.py``) and every Conv2d/Linear directly followed by a batch norm in a
``Sequential`` (``models/plain.py``) is replaced by one Conv2d/Linear with folded weights and bias;
the original model is left untouched. The model's own forward code runs the folded network.

Exactness: the folded network computes the same function, but rounds differently ((a W) * x rather
than a * (W * x)). The folding arithmetic therefore runs in float64 (``Module.astype``); a float64 folded
network differs from the float64 original by ~1e-16 relative in the membrane potentials, so its spikes
agree unless a membrane sits within that distance of V_th (``tests/test_fold.py`` checks both).
"""
import copy

import numpy as np

from .models.resnet import ConvBN
from .nn import BatchNorm, Conv2d, Linear, Sequential


def fold_tdbn(model, dtype=None):
    """A copy of ``model`` in eval mode with every batch norm folded into the layer before it.

    dtype: of the folded model's parameters (default: the model's own). The folding itself is
    computed in float64. Raises ValueError if a batch norm does not directly follow a Conv2d or Linear.
    """
    params = model.parameters()
    target = np.dtype(dtype) if dtype is not None else (params[0].dtype if params else np.float32)
    folded = copy.deepcopy(model).astype(np.float64)
    folded = _fold(folded)
    left = [name for name, m in folded.named_modules() if isinstance(m, BatchNorm)]
    if left:
        raise ValueError(f"fold_tdbn: cannot fold {left}: a batch norm folds only into a Conv2d or Linear "
                         "directly before it")
    return folded.astype(target).eval()


def _fold(module):
    """The replacement of ``module`` with every (conv or linear, batch norm) pair below it folded."""
    if isinstance(module, ConvBN):
        return fold_pair(module.conv, module.bn)
    if isinstance(module, Sequential):
        layers = []
        for layer in module:
            layer = _fold(layer)
            if isinstance(layer, BatchNorm) and layers and isinstance(layers[-1], (Conv2d, Linear)):
                layers[-1] = fold_pair(layers[-1], layer)
            else:
                layers.append(layer)
        return Sequential(*layers)
    for name, child in list(module._modules.items()):
        new = _fold(child)
        if new is not child:
            setattr(module, name, new)
    return module


def fold_pair(layer, bn):
    """One Conv2d/Linear with bias equal to ``bn(layer(x))`` in eval mode:

        W' = a W (a per output channel),   c' = a c + b,   (a, b) = bn.fold_scale_shift().
    """
    a, b = bn.fold_scale_shift()
    c = layer.bias.data if layer.bias is not None else 0
    if isinstance(layer, Conv2d):
        new = Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                     bias=True)
        new.weight.data = layer.weight.data * a.reshape(-1, 1, 1, 1)
    elif isinstance(layer, Linear):
        new = Linear(layer.in_features, layer.out_features, bias=True)
        new.weight.data = layer.weight.data * a.reshape(-1, 1)
    else:
        raise TypeError(f"fold_pair: can fold a batch norm only into a Conv2d or Linear, got {layer!r}")
    if a.shape != (new.weight.shape[0],):
        raise ValueError(f"fold_pair: {bn!r} has {a.shape[0]} channels but {layer!r} has "
                         f"{new.weight.shape[0]} outputs")
    new.bias.data = a * c + b
    return new
