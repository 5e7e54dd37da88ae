"""Spiking ResNets with tdBN, as in STBP-tdBN (Zheng et al., AAAI 2021).

Every block is conv -> tdBN -> LIF. At a residual join both branches are normalised with
alpha = 1/sqrt(2), so that their sum has the same pre-activation scale as a single branch, and the LIF
fires after the sum:

    BasicBlock:   o = LIF( tdBN_a(conv3x3(LIF(tdBN(conv3x3(x))))) + shortcut(x) )
    Bottleneck:   o = LIF( tdBN_a(conv1x1(LIF(tdBN(conv3x3(LIF(tdBN(conv1x1(x)))))))) + shortcut(x) )
    shortcut(x) = x, or tdBN_a(conv1x1(x)) when the shape changes,       a = 1/sqrt(2).

ResNet-19 (CIFAR-10): conv3x3 128 + tdBN + LIF; BasicBlocks 3x128, 3x256 (stride 2), 2x512 (stride 2);
global average pooling; FC 256 + LIF; FC 10. Input images are presented unchanged at every timestep
(direct encoding); the output is the mean over T of the last layer.

ResNet-34 for ImageNet (the paper's ImageNet net, T = 6): the ImageNet stem -- conv7x7 64, stride 2, +
tdBN + LIF, then 3x3 pooling with stride 2 -- so that a 224x224 image reaches the first stage at 56x56;
BasicBlocks 3x64, 4x128, 6x256, 3x512 (stride 2 from the second stage on); global average pooling; FC.
"""
import numpy as np

from ..core import Tensor
from ..functions.basic import mean, repeat_over_time
from ..nn import LIF, AvgPool2d, Conv2d, GlobalAvgPool2d, Linear, Module, Sequential, TdBN
from ..paper import RESIDUAL_ALPHA, V_TH


def v_th_of(neuron):
    """The firing threshold the LIF layers built from the settings ``neuron`` will use (tdBN scales its
    output by it): ``neuron["v_th"]``, else the paper's V_TH."""
    return neuron.get("v_th", V_TH)


class Residual:
    """A residual join in a ``forward_order``: the sum of its ``paths``, (name, module) pairs that all
    receive the same input; a module of None is the identity. It has no layer of its own, so it
    stands in a forward order under the name None."""

    def __init__(self, *paths):
        self.paths = paths


class ConvBN(Module):
    """conv (no bias: tdBN's beta is the bias) followed by tdBN with the given alpha."""

    def __init__(self, cin, cout, kernel, stride=1, alpha=1.0, v_th=V_TH, seed=None):
        super().__init__()
        self.conv = Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False, seed=seed)
        self.bn = TdBN(cout, alpha=alpha, v_th=v_th)

    def forward(self, x):
        return self.bn(self.conv(x))

    def forward_order(self):
        """(name, layer) in the order forward applies them."""
        return [("conv", self.conv), ("bn", self.bn)]


class BasicBlock(Module):
    """Two conv3x3 layers; the second tdBN uses alpha = 1/sqrt(2) before the residual add."""
    expansion = 1

    def __init__(self, cin, width, stride=1, neuron=None, rng=None):
        super().__init__()
        neuron = neuron or {}
        cout = width * self.expansion
        self.branch = self.make_branch(cin, width, stride, neuron, rng)
        self.shortcut = (ConvBN(cin, cout, 1, stride, alpha=RESIDUAL_ALPHA, v_th=v_th_of(neuron), seed=rng)
                         if stride != 1 or cin != cout else None)
        self.lif = LIF(**neuron)

    def make_branch(self, cin, width, stride, neuron, rng):
        v_th = v_th_of(neuron)
        return Sequential(
            ConvBN(cin, width, 3, stride, v_th=v_th, seed=rng), LIF(**neuron),
            ConvBN(width, width, 3, 1, alpha=RESIDUAL_ALPHA, v_th=v_th, seed=rng),
        )

    def forward(self, x):
        skip = x if self.shortcut is None else self.shortcut(x)
        return self.lif(self.branch(x) + skip)

    def forward_order(self):
        """(name, part) in the order forward applies them: the residual sum branch(x) + shortcut(x)
        (a shortcut of None is the identity), then the LIF."""
        return [(None, Residual(("branch", self.branch), ("shortcut", self.shortcut))), ("lif", self.lif)]


class Bottleneck(BasicBlock):
    """conv1x1 -> conv3x3 (stride) -> conv1x1 expanding the width 4 times."""
    expansion = 4

    def make_branch(self, cin, width, stride, neuron, rng):
        v_th = v_th_of(neuron)
        return Sequential(
            ConvBN(cin, width, 1, 1, v_th=v_th, seed=rng), LIF(**neuron),
            ConvBN(width, width, 3, stride, v_th=v_th, seed=rng), LIF(**neuron),
            ConvBN(width, width * self.expansion, 1, 1, alpha=RESIDUAL_ALPHA, v_th=v_th, seed=rng),
        )


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class SpikingResNet(Module):
    """A spiking ResNet for small images ([N, C, H, W] static input or [T, N, C, H, W] frames).

    stem: channels of the first conv3x3. stages: a list of (width, blocks, stride).
    fc_hidden: width of the spiking hidden FC layer before the classifier (0 for none).
    T: timesteps for static input (frames carry their own T).
    stem_kernel, stem_stride: the first conv (3, 1 for small images; 7, 2 for ImageNet).
    stem_pool: a 3x3 average pooling with stride 2 after the stem's LIF (ImageNet's stem). It averages
    spikes, so the first stage sees rates in {0, 1/9, ..., 1}; minisnn has no max pooling.
    """

    def __init__(self, stages, stem=128, block="basic", in_channels=3, num_classes=10, fc_hidden=256,
                 T=2, neuron=None, seed=0, stem_kernel=3, stem_stride=1, stem_pool=False):
        super().__init__()
        rng = np.random.default_rng(seed)  # host-side, for initialisation only
        neuron = dict(neuron or {})
        self.T = T
        self.stem = Sequential(ConvBN(in_channels, stem, stem_kernel, stem_stride, v_th=v_th_of(neuron), seed=rng),
                               LIF(**neuron))
        self.stem_pool = AvgPool2d(3, stride=2, padding=1) if stem_pool else None
        cin, layers = stem, []
        cls = BLOCKS[block]
        for width, blocks, stride in stages:
            for i in range(blocks):
                layers.append(cls(cin, width, stride if i == 0 else 1, neuron, rng))
                cin = width * cls.expansion
        self.layers = Sequential(*layers)
        self.pool = GlobalAvgPool2d()
        head = []
        if fc_hidden:
            head += [Linear(cin, fc_hidden, seed=rng), LIF(**neuron)]
            cin = fc_hidden
        head.append(Linear(cin, num_classes, seed=rng))
        self.head = Sequential(*head)

    def forward(self, x):
        """x: [N, C, H, W] (the same image at every timestep) or [T, N, C, H, W]. Returns logits [N, K],
        the mean over T of the last layer's output."""
        if not isinstance(x, Tensor):
            x = Tensor(x)
        if x.ndim == 4:
            # Direct encoding: conv and tdBN of a repeated image are the same at every t (tdBN's
            # statistics over T copies equal those over one), so compute them on one timestep and
            # repeat the result T times; the repeat's backward sums the T gradients back.
            conv_bn, lif = self.stem[0], self.stem[1]
            h = conv_bn(repeat_over_time(x, 1))
            h = lif(repeat_over_time(h.reshape(h.shape[1:]), self.T))
        elif x.ndim == 5:
            h = self.stem(x)
        else:
            raise ValueError(f"SpikingResNet expects [N, C, H, W] or [T, N, C, H, W] input, got shape {x.shape}")
        if self.stem_pool is not None:
            h = self.stem_pool(h)
        h = self.layers(h)
        h = self.head(self.pool(h))
        return mean(h, axis=0)

    def forward_order(self):
        """(name, part) in the order forward applies them to the sequence [T, N, ...]; the direct
        encoding before them and the mean over T after them are not layers."""
        return [("stem", self.stem), ("layers", self.layers), ("pool", self.pool), ("head", self.head)]


def resnet19(num_classes=10, in_channels=3, T=2, **kwargs):
    """The paper's ResNet-19 for CIFAR-10 (12,697,994 parameters: about 12.7 M; lesson 18 counts them)."""
    return SpikingResNet([(128, 3, 1), (256, 3, 2), (512, 2, 2)], stem=128, block="basic",
                         in_channels=in_channels, num_classes=num_classes, T=T, **kwargs)


def resnet34(num_classes=10, in_channels=3, T=2, **kwargs):
    """A 34-layer spiking ResNet (BasicBlocks 3-4-6-3), CIFAR-sized stem."""
    return SpikingResNet([(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)], stem=64, block="basic",
                         in_channels=in_channels, num_classes=num_classes, T=T, fc_hidden=0, **kwargs)


def resnet50(num_classes=10, in_channels=3, T=2, **kwargs):
    """A 50-layer bottleneck spiking ResNet (3-4-6-3 bottlenecks), CIFAR-sized stem."""
    return SpikingResNet([(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)], stem=64, block="bottleneck",
                         in_channels=in_channels, num_classes=num_classes, T=T, fc_hidden=0, **kwargs)


def resnet34_imagenet(num_classes=1000, in_channels=3, T=6, **kwargs):
    """The paper's ImageNet ResNet-34: the ImageNet stem (conv7x7 stride 2, 3x3 pooling stride 2), BasicBlocks
    3-4-6-3 of widths 64-128-256-512, global average pooling, FC to the classes; T = 6 by default."""
    return SpikingResNet([(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)], stem=64, block="basic",
                         in_channels=in_channels, num_classes=num_classes, T=T, fc_hidden=0, stem_kernel=7,
                         stem_stride=2, stem_pool=True, **kwargs)


def resnet_small(num_classes=10, in_channels=3, T=2, width=32, blocks=(1, 1, 1), strides=None, fc_hidden=0,
                 **kwargs):
    """A CPU-sized spiking ResNet: stages of width w, 2w, 4w, ... with the given blocks per stage.

    strides: the stride of each stage's first block, default (1, 2, 2, ...). A first stride of 2 halves
    the image before any 3x3 block and so costs about a quarter of the compute.
    """
    strides = tuple(strides) if strides is not None else (1,) + (2,) * (len(blocks) - 1)
    if len(strides) != len(blocks):
        raise ValueError(f"resnet_small: {len(blocks)} stages (blocks {tuple(blocks)}) need as many strides, "
                         f"got {strides}")
    stages = [(width * 2 ** i, n, stride) for i, (n, stride) in enumerate(zip(blocks, strides))]
    return SpikingResNet(stages, stem=width, block="basic", in_channels=in_channels,
                         num_classes=num_classes, T=T, fc_hidden=fc_hidden, **kwargs)
