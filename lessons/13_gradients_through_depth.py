"""Lesson 13 -- gradient norms through depth: how tdBN keeps the backward signal level, block by block.

What you will learn: the paper's central argument, measured. In a deep net the gradient reaching
layer l is the gradient at layer l+1 times that layer's backward gain; over L layers the gains
multiply, so a gain a little above 1 explodes and a little below 1 vanishes. For one block
[conv -> norm -> LIF] the gain from its spikes o_l back to its input spikes o_{l-1} is, roughly,

    ||dL/do_{l-1}|| / ||dL/do_l||  ~  sqrt(2 q_l) * m_l

    q_l   the share of layer l's neurons inside the surrogate window |u - V_th| < a/2 (only they pass
          gradient: h' = 1/a there, 0 elsewhere -- lesson 05)
    m_l   the norm's multiplier, std(norm output) / std(conv output): lambda alpha V_th / sigma for
          tdBN, lambda / sigma for plain BN, 1 without normalisation
    2     the Kaiming-initialised conv's own gain, fan_out Var(W) = 2 for equal widths

(an estimate: it ignores the mean subtraction in the norm's backward, the path back through time and
correlations between neurons). tdBN's alpha V_th puts about half the neurons in the window with
m near 1, so the gain stays near 1; plain BN's wider currents (std 1 instead of V_th) give m near 1.5
and a gain above 1; without normalisation m = 1 and fewer neurons near threshold, a gain below 1.

What you will see, at initialisation, on one batch of digits:

1. The input currents of the LIF neurons at layers 1, 15 and 30 of a 30-layer plain spiking net
   (``PlainSpikingNet``, width 8, T = 2) with tdBN, plain BN (statistics per timestep) and none
   (``13_preactivations.png``).
2. Block by block: ||dL/do_l||, the measured gain, q_l, m_l and the estimate, and the gradient norm
   of each conv's weights (``13_gradients.png``). tdBN: a gain of about 0.97 per block, so layer 1
   gets about a third of layer 30's gradient; plain BN: about 1.26 per block, some 750 times more at
   layer 1 than at layer 30 (it explodes); without normalisation: about 0.91, some 25 times less at
   layer 1 (it vanishes). The estimate sqrt(2 q) m gets the direction right for all three, within
   about 10 %.
3. The same in a spiking ResNet, block by block: shortcuts do not rescue plain BN -- its gradient
   still grows some 600 times over 16 blocks -- while with tdBN it changes about 10 times.

Lesson 14 trains these nets and shows what the gains do to learning.

Run:  python lessons/13_gradients_through_depth.py      (add --fast or MINISNN_FAST=1 for the test mode)
"""
import numpy as np

from _common import FAST, finish, plt, save_figure, section, title
from minisnn import Tensor
from minisnn.data import get_dataset
from minisnn.functions.basic import repeat_over_time
from minisnn.functions.loss import mean_over_time, softmax_cross_entropy
from minisnn.models import PlainSpikingNet
from minisnn.nn import LIF, BatchNorm, Conv2d, GlobalAvgPool2d, Linear, Module, Sequential, TdBN
from minisnn.paper import RESIDUAL_ALPHA, SURROGATE_WIDTH, V_TH

INTRODUCES = ("minisnn.models.PlainSpikingNet",)

NORMS = ("tdbn", "bn", "none")
LABELS = {"tdbn": "tdBN", "bn": "plain BN", "none": "no norm"}
DEPTH = 12 if FAST else 30
BLOCKS = 6 if FAST else 16
SHOWN = (0, DEPTH // 2 - 1, DEPTH - 1)


def geometric_mean(values):
    return float(np.exp(np.mean(np.log(values))))


def probe_plain(norm, images, labels):
    """One forward and backward pass of a plain net, with hooks collecting what each block saw."""
    model = PlainSpikingNet(depth=DEPTH, width=8, norm=norm, T=2, seed=0)
    spikes, currents, conv_out = [], [], []
    for _, layer in model.named_modules():
        if isinstance(layer, LIF):
            layer.register_forward_pre_hook(lambda module, inputs: currents.append(inputs[0].data))
            layer.register_forward_hook(lambda module, inputs, output: spikes.append(output))
        elif isinstance(layer, Conv2d):
            layer.register_forward_hook(lambda module, inputs, output: conv_out.append(output.data))
    softmax_cross_entropy(model(Tensor(images)), labels).backward(retain_grad=True)   # keep dL/do_l
    neurons = [m for _, m in model.named_modules() if isinstance(m, LIF)]
    grad = np.array([float(np.linalg.norm(o.grad)) for o in spikes])
    q = np.array([float((np.abs(n.membrane(c) - V_TH) < SURROGATE_WIDTH / 2).mean())
                  for n, c in zip(neurons, currents)])
    m = np.array([c.std() / v.std() for c, v in zip(currents, conv_out)])
    weights = np.array([float(np.linalg.norm(c.weight.grad)) for _, c in model.named_modules() if isinstance(c, Conv2d)])
    return {"grad": grad, "gain": grad[:-1] / grad[1:], "estimate": np.sqrt(2 * q[1:]) * m[1:], "q": q, "m": m,
            "weights": weights, "rates": np.array([float(o.data.mean()) for o in spikes]), "currents": currents}


def make_norm(norm, channels, alpha):
    if norm == "tdbn":
        return TdBN(channels, alpha=alpha)
    return BatchNorm(channels, per_timestep=True)


class Block(Module):
    """A BasicBlock (lesson 10) with identity shortcut and a choice of normalisation."""

    def __init__(self, width, norm, alpha, rng):
        super().__init__()
        self.branch = Sequential(Conv2d(width, width, 3, padding=1, seed=rng), make_norm(norm, width, 1.0), LIF(),
                                 Conv2d(width, width, 3, padding=1, seed=rng), make_norm(norm, width, alpha))
        self.lif = LIF()

    def forward(self, x):
        return self.lif(self.branch(x) + x)


def probe_resnet(norm, alpha, images, labels):
    """||dL/d(output of block b)|| for every block of a spiking ResNet of BLOCKS identity blocks."""
    rng = np.random.default_rng(0)
    blocks = [Block(8, norm, alpha, rng) for _ in range(BLOCKS)]
    net = Sequential(Conv2d(1, 8, 3, padding=1, seed=rng), make_norm(norm, 8, 1.0), LIF(), *blocks,
                     GlobalAvgPool2d(), Linear(8, 10, seed=rng))
    outputs = []
    for block in blocks:
        block.register_forward_hook(lambda module, inputs, output: outputs.append(output))
    loss = softmax_cross_entropy(mean_over_time(net(repeat_over_time(Tensor(images), 2))), labels)
    loss.backward(retain_grad=True)
    return np.array([float(np.linalg.norm(o.grad)) for o in outputs])


def main(argv=None):
    title(f"Lesson 13: gradient norms through depth, {DEPTH} layers")
    data = get_dataset("digits")
    images, labels = next(data.loader("train", 32 if FAST else 64, seed=0).batches())

    section(f"1. what the neurons see: a {DEPTH}-layer plain spiking net at initialisation")
    stats = {norm: probe_plain(norm, images, labels) for norm in NORMS}
    for norm in NORMS:
        c = stats[norm]["currents"]
        print(f"{LABELS[norm]:>8}: std of the currents at layers " + " / ".join(str(k + 1) for k in SHOWN) + " = "
              + " / ".join(f"{c[k].std():.2f}" for k in SHOWN)
              + "; firing rate " + " / ".join(f"{stats[norm]['rates'][k]:.2f}" for k in SHOWN))
    fig, axes = plt.subplots(len(NORMS), 3, figsize=(10, 7), sharey="row")
    for row, norm in enumerate(NORMS):
        for col, layer in enumerate(SHOWN):
            x = stats[norm]["currents"][layer].ravel()
            axes[row, col].hist(x, bins=np.linspace(-3, 3, 61), color=f"C{row}", density=True)
            axes[row, col].axvspan(V_TH - SURROGATE_WIDTH / 2, V_TH + SURROGATE_WIDTH / 2, color="gray", alpha=0.15)
            axes[row, col].axvline(V_TH, color="k", ls="--", lw=1)
            axes[row, col].set_title(f"{LABELS[norm]}, layer {layer + 1}: std {x.std():.2f}, "
                                     f"{(x >= V_TH).mean():.0%} >= V_th", fontsize=8)
    fig.suptitle(f"input currents of the LIF neurons (dashed: V_th = {V_TH}; grey: the surrogate window)", fontsize=9)
    save_figure(fig, "13_preactivations.png")

    section("2. block by block: gradient, gain, and where the gain comes from")
    print(f"{'block':>5} | " + " | ".join(f"{LABELS[n] + ': ||dL/do||  gain  q     m    est':<43}" for n in NORMS))
    for layer in range(DEPTH - 1, 0, -max(1, DEPTH // 10)):
        cells = []
        for norm in NORMS:
            s, k = stats[norm], layer - 1      # gain[k] = grad[k] / grad[k + 1]: from block k+2 back to block k+1
            cells.append(f"{s['grad'][layer]:>21.2e} {s['gain'][k]:5.2f} {s['q'][layer]:5.2f} {s['m'][layer]:5.2f} "
                         f"{s['estimate'][k]:5.2f}")
        print(f"{layer + 1:>5} | " + " | ".join(f"{c:<43}" for c in cells))
    summary = {}
    for norm in NORMS:
        s = stats[norm]
        inner = slice(3, DEPTH - 2)                      # away from the analog input and the read-out
        summary[norm] = {"gain": geometric_mean(s["gain"][inner]), "estimate": geometric_mean(s["estimate"][inner]),
                         "first_over_last": float(s["grad"][0] / s["grad"][-1]),
                         "weights_first_over_last": float(s["weights"][0] / s["weights"][-1])}
        print(f"{LABELS[norm]:>8}: gain per block {summary[norm]['gain']:.3f} (estimate {summary[norm]['estimate']:.3f}); "
              f"||dL/do|| at layer 1 / layer {DEPTH} = {summary[norm]['first_over_last']:.3g}; "
              f"||dL/dW|| conv 1 / conv {DEPTH} = {summary[norm]['weights_first_over_last']:.3g}")

    fig, (ax_o, ax_w) = plt.subplots(1, 2, figsize=(11, 3.8))
    depth = np.arange(1, DEPTH + 1)
    for norm in NORMS:
        ax_o.semilogy(depth, stats[norm]["grad"], "o-", label=f"{LABELS[norm]} (gain {summary[norm]['gain']:.2f})")
        ax_w.semilogy(depth, stats[norm]["weights"], "o-", label=LABELS[norm])
    ax_o.set(xlabel="block", ylabel="||dL/do||", title="gradient reaching each block's spikes")
    ax_w.set(xlabel="layer", ylabel="||dL/dW||", title="gradient of each conv's weights")
    ax_o.legend(fontsize=8)
    ax_w.legend(fontsize=8)
    save_figure(fig, "13_gradients.png")

    section(f"3. a spiking ResNet of {BLOCKS} identity blocks, block by block")
    resnet = {"tdBN, alpha = 1/sqrt(2)": probe_resnet("tdbn", RESIDUAL_ALPHA, images, labels),
              "tdBN, alpha = 1": probe_resnet("tdbn", 1.0, images, labels),
              "plain BN": probe_resnet("bn", 1.0, images, labels)}
    for name, grad in resnet.items():
        print(f"{name:<24} ||dL/d(block output)||, block 1..{BLOCKS}: "
              + " ".join(f"{g:.1e}" for g in grad[::max(1, BLOCKS // 8)]) + f"   first / last = {grad[0] / grad[-1]:.3g}")
    print("The shortcut adds a path around each branch, but the LIF after every join still gates the gradient,\n"
          "so plain BN's gain above 1 compounds block after block. (alpha = 1 keeps this gradient even more level\n"
          "at initialisation; what alpha = 1/sqrt(2) fixes is the forward scale at the join, lesson 10.)")

    return finish({"gain_per_block": {LABELS[n]: summary[n]["gain"] for n in NORMS},
                   "estimate_per_block": {LABELS[n]: summary[n]["estimate"] for n in NORMS},
                   "first_over_last": {LABELS[n]: summary[n]["first_over_last"] for n in NORMS},
                   "resnet_first_over_last": {name: float(g[0] / g[-1]) for name, g in resnet.items()}},
                  "lesson 14 -- the three nets trained for the same budget.")


if __name__ == "__main__":
    main()
