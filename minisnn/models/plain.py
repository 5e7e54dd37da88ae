"""A deep plain (no shortcut) spiking convnet, for comparing normalisations across depth.

    x -> [conv3x3 -> norm -> LIF] x depth -> global average pooling -> FC -> mean over T

norm is "tdbn" (statistics over (T, N, H, W), scaled by V_th), "bn" (plain batch norm with
per-timestep statistics, the usual ANN layer applied at each t) or "none". Without a shortcut, every
layer's firing depends on the layer before: this is the net in which the paper's argument -- tdBN keeps
pre-activations, firing rates and gradient norms in a healthy range at every depth -- is easiest to see.
"""
import numpy as np

from ..core import Tensor
from ..functions.basic import mean, repeat_over_time
from ..nn import LIF, BatchNorm, Conv2d, GlobalAvgPool2d, Linear, Module, Sequential, TdBN
from .resnet import v_th_of

NORMS = ("tdbn", "bn", "none")


def make_norm(kind, channels, v_th):
    if kind == "tdbn":
        return TdBN(channels, v_th=v_th)
    if kind == "bn":
        return BatchNorm(channels, per_timestep=True)
    if kind == "none":
        return None
    raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")


class PlainSpikingNet(Module):
    """depth conv layers of the given width (stride 1), each followed by the chosen norm and a LIF."""

    def __init__(self, depth=20, width=16, norm="tdbn", in_channels=1, num_classes=10, T=4, neuron=None,
                 seed=0):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.T, self.norm = T, norm
        layers, cin = [], in_channels
        for _ in range(depth):
            layers.append(Conv2d(cin, width, 3, padding=1, bias=(norm == "none"), seed=rng))
            bn = make_norm(norm, width, v_th_of(neuron or {}))
            if bn is not None:
                layers.append(bn)
            layers.append(LIF(**(neuron or {})))
            cin = width
        self.features = Sequential(*layers)
        self.pool = GlobalAvgPool2d()
        self.fc = Linear(width, num_classes, seed=rng)

    def forward(self, x):
        """x: [N, C, H, W] presented at every timestep, or [T, N, C, H, W]. Returns logits [N, K]."""
        if not isinstance(x, Tensor):
            x = Tensor(x)
        if x.ndim == 4:
            x = repeat_over_time(x, self.T)
        return mean(self.fc(self.pool(self.features(x))), axis=0)

    def forward_order(self):
        """(name, part) in the order forward applies them to the sequence [T, N, ...]; the direct
        encoding before them and the mean over T after them are not layers."""
        return [("features", self.features), ("pool", self.pool), ("fc", self.fc)]
