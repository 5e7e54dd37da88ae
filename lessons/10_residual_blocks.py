"""Lesson 10 -- residual blocks, and why alpha = 1/sqrt(2) where two branches meet.

What you will learn: the block the paper's ResNet-19 is built of, and the one number that tdBN sets
differently inside it. A spiking BasicBlock:

    o = LIF( tdBN_alpha(conv3x3(LIF(tdBN(conv3x3(x))))) + shortcut(x) )
    shortcut(x) = x                                  when the shape stays (identity)
                = tdBN_alpha(conv1x1, stride s)(x)   when the block changes width or size

The LIF after the sum fires on the sum of two currents. tdBN makes each normalised branch
N(0, (alpha V_th)^2); two branches that are (nearly) uncorrelated add their variances:

    Var[branch + shortcut] = 2 (alpha V_th)^2     -> V_th^2, the scale of a single tdBN, iff alpha = 1/sqrt(2)

With alpha = 1 the neuron after the join would see currents sqrt(2) times wider than every other
neuron of the net and fire more; alpha = ``minisnn.paper.RESIDUAL_ALPHA`` = 1/sqrt(2) on both
branches keeps the join on the scale of the rest. With an identity shortcut only the branch is
normalised; the spikes x (0 or 1, rate r) add a variance r (1 - r) of their own.

What you will see:

1. The block written by hand from the layers of lessons 03, 07 and 09, and the engine's
   ``minisnn.models.resnet.BasicBlock`` with the same weights: the same spikes.
2. The variance at the join of a block whose two branches are normalised, with alpha = 1 and with
   alpha = 1/sqrt(2): 2 V_th^2 against V_th^2, the branches' correlation, and the firing rate after
   the join against that of a single tdBN (``10_residual_join.png``, left).
3. A stack of identity blocks: the join's variance and firing rate block by block for both alphas
   (``10_residual_join.png``, right).
4. The engine's spiking ResNets (``resnet_small``, the paper's ``resnet19``) are stems, stages of these
   blocks, global average pooling and a linear read-out; a forward pass of ``resnet_small`` on digits.

Run:  python lessons/10_residual_blocks.py      (add --fast or MINISNN_FAST=1 for the test mode)
"""
import numpy as np

from _common import FAST, finish, plt, save_figure, section, title
from minisnn import Tensor, no_grad
from minisnn.data import get_dataset
from minisnn.models import SpikingResNet, resnet_small
from minisnn.models.resnet import BasicBlock
from minisnn.nn import LIF, Conv2d, Module, TdBN
from minisnn.paper import RESIDUAL_ALPHA, V_TH

INTRODUCES = ("minisnn.paper.RESIDUAL_ALPHA", "minisnn.models.resnet.BasicBlock", "minisnn.models.SpikingResNet",
              "minisnn.models.resnet_small")


class HandBlock(Module):
    """o = LIF(tdBN_alpha(conv(LIF(tdBN(conv(x))))) + shortcut(x)); keeps the sum at the join in ``self.join``."""

    def __init__(self, cin, cout, stride=1, alpha=RESIDUAL_ALPHA, seed=0):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.conv1, self.bn1, self.lif1 = Conv2d(cin, cout, 3, stride, 1, seed=rng), TdBN(cout), LIF()
        self.conv2, self.bn2 = Conv2d(cout, cout, 3, 1, 1, seed=rng), TdBN(cout, alpha=alpha)
        self.downsample = stride != 1 or cin != cout
        if self.downsample:
            self.conv_skip, self.bn_skip = Conv2d(cin, cout, 1, stride, seed=rng), TdBN(cout, alpha=alpha)
        self.lif = LIF()

    def branches(self, x):
        branch = self.bn2(self.conv2(self.lif1(self.bn1(self.conv1(x)))))
        skip = self.bn_skip(self.conv_skip(x)) if self.downsample else x
        return branch, skip

    def forward(self, x):
        branch, skip = self.branches(x)
        self.join = branch + skip
        return self.lif(self.join)


def join_statistics(block, x):
    """Variance of each branch and of their sum, their correlation, and the firing rate after the join."""
    with no_grad():
        branch, skip = (t.data for t in block.branches(Tensor(x)))
        spikes = block.lif(Tensor(branch + skip)).data
    corr = float(np.corrcoef(branch.ravel(), skip.ravel())[0, 1])
    return {"var_branch": float(branch.var()), "var_skip": float(skip.var()), "var_join": float((branch + skip).var()),
            "corr": corr, "rate": float(spikes.mean()), "join": (branch + skip).ravel()}


def main(argv=None):
    title("Lesson 10: residual blocks and alpha = 1/sqrt(2)")
    rng = np.random.default_rng(0)
    T, N, C, H = (2, 8, 8, 6) if FAST else (2, 32, 16, 8)
    x = (rng.random((T, N, C, H, H)) < 0.16).astype(np.float32)        # input spikes, rate about 16 %

    section("1. the block by hand and the engine's BasicBlock")
    engine = BasicBlock(C, 2 * C, stride=2, rng=np.random.default_rng(1))
    hand = HandBlock(C, 2 * C, stride=2)
    pairs = list(zip(hand.parameters(), engine.parameters()))
    assert len(pairs) == len(engine.parameters()) and all(p.shape == q.shape for p, q in pairs)
    for p, q in pairs:                                  # the same order: conv1, bn1, conv2, bn2, shortcut conv, bn
        p.data = q.data.copy()
    print(engine)
    with no_grad():
        out = hand(Tensor(x)).data
        same_spikes = bool(np.array_equal(out, engine(Tensor(x)).data))
    print(f"input {x.shape} -> output {out.shape}; hand-made block and BasicBlock give the same spikes: {same_spikes}")

    section("2. the variance at the join, both branches normalised (a block that doubles the width)")
    stats = {}
    for alpha in (1.0, RESIDUAL_ALPHA):
        stats[alpha] = join_statistics(HandBlock(C, 2 * C, stride=2, alpha=alpha, seed=2), x)
        s = stats[alpha]
        print(f"alpha = {alpha:.4f}: Var[branch] {s['var_branch']:.4f}, Var[shortcut] {s['var_skip']:.4f}, "
              f"correlation {s['corr']:+.3f} -> Var[join] {s['var_join']:.4f}; firing rate after the join {s['rate']:.3f}")
    with no_grad():
        single = float(LIF()(TdBN(2 * C)(Conv2d(C, 2 * C, 3, 2, 1, seed=3)(Tensor(x)))).data.mean())
    print(f"theory: 2 (alpha V_th)^2 = {2 * V_TH ** 2:.4f} for alpha = 1, {2 * (RESIDUAL_ALPHA * V_TH) ** 2:.4f} "
          f"(= V_th^2) for alpha = 1/sqrt(2); a single conv + tdBN + LIF fires at {single:.3f}")

    section("3. a stack of identity blocks, block by block")
    depth = 4 if FAST else 10
    rows = {}
    for alpha in (1.0, RESIDUAL_ALPHA):
        h, rows[alpha] = Tensor(x), []
        for b in range(depth):
            block = HandBlock(C, C, alpha=alpha, seed=10 + b)
            s = join_statistics(block, h.data)
            with no_grad():
                h = block(h)
            rows[alpha].append((s["var_join"], s["var_skip"], s["rate"]))
    print(f"{'block':>5} | {'alpha = 1: Var[join]  skip var  rate':^38} | {'alpha = 1/sqrt(2): Var[join]  skip var  rate':^46}")
    for b in range(depth):
        (v1, s1, r1), (v2, s2, r2) = rows[1.0][b], rows[RESIDUAL_ALPHA][b]
        print(f"{b + 1:>5} | {v1:>20.3f} {s1:>9.3f} {r1:>6.3f} | {v2:>28.3f} {s2:>9.3f} {r2:>6.3f}")
    print("With identity shortcuts the skip is the spikes themselves, variance r (1 - r), which tdBN does not\n"
          "scale: the join widens as the rates rise from block to block, less with alpha = 1/sqrt(2).")

    fig, (ax_h, ax_s) = plt.subplots(1, 2, figsize=(11, 3.8))
    for alpha, color in ((1.0, "C1"), (RESIDUAL_ALPHA, "C0")):
        ax_h.hist(stats[alpha]["join"], bins=np.linspace(-3, 3, 91), density=True, histtype="step", color=color,
                  label=f"alpha = {alpha:.3f}: Var {stats[alpha]['var_join']:.3f}, rate {stats[alpha]['rate']:.3f}")
        ax_s.plot(range(1, depth + 1), [v for v, _, _ in rows[alpha]], "o-", color=color, label=f"Var[join], alpha = {alpha:.3f}")
        ax_s.plot(range(1, depth + 1), [r for _, _, r in rows[alpha]], "x--", color=color, label=f"rate, alpha = {alpha:.3f}")
    ax_h.axvline(V_TH, color="k", ls="--", lw=1)
    ax_h.set(xlabel="current at the join (branch + shortcut)", title="a block with both branches normalised")
    ax_h.legend(fontsize=8)
    ax_s.axhline(V_TH ** 2, color="gray", ls=":", lw=1)
    ax_s.set(xlabel="block", title="a stack of identity blocks (dotted: V_th^2)")
    ax_s.legend(fontsize=7)
    save_figure(fig, "10_residual_join.png")

    section("4. the engine's spiking ResNet: a stem, stages of blocks, pooling, a read-out")
    data = get_dataset("digits")
    model = resnet_small(num_classes=10, in_channels=1, T=2, width=8, blocks=(1, 1), seed=0)
    blocks = [name for name, m in model.named_modules() if isinstance(m, BasicBlock)]
    print(f"resnet_small(width=8, blocks=(1, 1)) is a {type(model).__name__} with {model.num_parameters():,} "
          f"parameters; its blocks: {blocks}")
    images = next(data.loader("test", 16).batches())[0]
    with no_grad():
        logits = model(Tensor(images))
    print(f"digits {images.shape} -> the same image at T = {model.T} steps -> logits {logits.shape} (the mean over T "
          "of the last layer); untrained, so the answers are guesses")
    print(f"the paper's ResNet-19 is SpikingResNet([(128, 3, 1), (256, 3, 2), (512, 2, 2)], stem=128): lesson 18.")

    return finish({"hand_equals_engine": same_spikes, "resnet_is_blocks": isinstance(model, SpikingResNet) and len(blocks) == 2,
                   "var_join_alpha_1": stats[1.0]["var_join"], "var_join_alpha_rsqrt2": stats[RESIDUAL_ALPHA]["var_join"],
                   "branch_correlation": [stats[1.0]["corr"], stats[RESIDUAL_ALPHA]["corr"]],
                   "rate_after_join": [stats[1.0]["rate"], stats[RESIDUAL_ALPHA]["rate"]], "rate_single_tdbn": single,
                   "identity_stack_rates": [[r for _, _, r in rows[a]] for a in (1.0, RESIDUAL_ALPHA)]},
                  "lesson 11 -- the training loop, written out by hand, then the same with the Trainer.")


if __name__ == "__main__":
    main()
