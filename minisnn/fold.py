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

``fold_tdbn(model)`` returns a new, eval-mode model of the same classes in which every batch norm
that forward applies right after a Conv2d or Linear is folded into it. It finds those pairs by
walking the model in forward order (``forward_order``): a Sequential's children, or the
``forward_order()`` a model or block gives (``models/resnet.py``, ``models/plain.py``). In a
Sequential the folded layer keeps the conv's name and the batch norm's name disappears (``features.0``,
``features.2``, ...: no renumbering, so names match the original model's); a module made of just the
two (``ConvBN``) is replaced by the folded layer under its own name. The original model is left
untouched, and the model's own forward code runs the folded network.

Exactness: the folded network computes the same function, but rounds differently ((a W) * x rather
than a * (W * x)). The folding arithmetic therefore runs in float64 (``Module.astype``); a float64 folded
network differs from the float64 original by ~1e-16 relative in the membrane potentials, so its spikes
agree unless a membrane sits within that distance of V_th (``tests/test_fold.py`` checks both).
"""
import copy

import numpy as np

from .models.resnet import Residual
from .nn import BatchNorm, Conv2d, Linear, Sequential


def forward_order(module):
    """The (name, part) pairs ``module`` applies one after the other, or None for a layer.

    A Sequential's are its children; a model or block lists its own with a ``forward_order()``
    method, in which a residual sum stands as (None, ``Residual``)."""
    if isinstance(module, Sequential):
        return list(module._modules.items())
    if hasattr(module, "forward_order"):
        return list(module.forward_order())
    return None


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
    """The replacement of ``module`` with every (Conv2d or Linear, batch norm) pair that its forward
    order applies one after the other folded into one layer (nothing folds across a residual sum)."""
    order = forward_order(module)
    if order is None:
        return module
    kept = []
    for name, part in order:
        if isinstance(part, Residual):
            for path_name, path in part.paths:
                new = _fold(path) if path is not None else None
                if new is not path:
                    setattr(module, path_name, new)
            kept.append((name, part))
            continue
        new = _fold(part)
        if isinstance(new, BatchNorm) and kept and isinstance(kept[-1][1], (Conv2d, Linear)):
            kept[-1] = (kept[-1][0], fold_pair(kept[-1][1], new))
        else:
            kept.append((name, new))
    if isinstance(module, Sequential):
        return _sequential(kept)
    if len(kept) < len(order):
        if len(kept) == 1:  # the module computed just this pair: it becomes the folded layer
            return kept[0][1]
        raise ValueError(f"fold_tdbn: {type(module).__name__} applies a batch norm after a Conv2d or Linear "
                         "among other parts; only a Sequential, or a module made of just the two, can be folded")
    for name, new in kept:
        if name is not None and new is not getattr(module, name):
            setattr(module, name, new)
    return module


def _sequential(named_layers):
    """A Sequential of (name, layer) pairs that keeps the names (``Sequential(*layers)`` numbers them anew)."""
    sequential = Sequential()
    for name, layer in named_layers:
        setattr(sequential, name, layer)
    return sequential


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
