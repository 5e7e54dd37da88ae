"""Lesson 19 -- folding tdBN into the convolution, and counting synaptic operations exactly.

What you will learn: what a trained net becomes for inference. In eval mode tdBN (lesson 09) uses
fixed running statistics, so per channel o it is a fixed affine map, and a convolution followed by it
is one convolution with a bias:

    tdBN(y)_o = a_o y_o + b_o,     a_o = lambda_o alpha V_th / sqrt(running_var_o + eps),
                                   b_o = beta_o - a_o running_mean_o
    tdBN(W * x) = (a W) * x + b    ->    W'[o] = a_o W[o],   bias'[o] = b_o

The folded net has no normalisation left -- what a neuromorphic chip or NIR (lesson 20) can take -- and
emits the same spikes. Then its cost. A spike arriving at a synapse causes one accumulate (an "SOP");
a conv whose input is spikes s does, exactly,

    SOPs = C_out * sum over the input spikes of coverage(h, w),

where coverage(h, w) is the number of output positions whose kernel window covers pixel (h, w):
col2im of ones, lesson 07 -- 9 inside a 3x3 conv with padding 1, 6 on an edge, 4 in a corner. The
usual estimate SOPs ~ MACs x rate x T (what ``Recorder`` reports) takes coverage = k^2 everywhere, and
so overcounts at the borders: on an 8x8 map by about 16 %. Energy (Horowitz, 45 nm, 32-bit float):
E = 0.9 pJ x SOPs + 4.6 pJ x MACs of the layers whose input is not spikes.

What you will see:

1. A small spiking ResNet trained for a few steps on the digits (so its tdBN statistics are real).
2. One conv + tdBN folded by hand: the same currents (to rounding) and the same spikes.
3. ``minisnn.fold.fold_tdbn`` on the whole net: every ConvBN becomes a Conv2d with bias; in float64
   every LIF layer emits exactly the same spikes at every step; in float32, how many flip.
4. SOPs per layer counted exactly, spike by spike, against the MACs x rate x T estimate
   (``19_sops.png``), and the energy of the net as an SNN and as an ANN.

Run:  python lessons/19_folding_and_sops.py      (add --fast or MINISNN_FAST=1 for the test mode)
"""
import copy

import numpy as np

from _common import FAST, finish, plt, save_figure, section, title
from minisnn import Tensor, no_grad
from minisnn.data import get_dataset
from minisnn.fold import fold_pair, fold_tdbn
from minisnn.functions.conv import col2im, im2col
from minisnn.functions.loss import softmax_cross_entropy
from minisnn.models import resnet_small
from minisnn.monitor import E_AC_PJ, E_MAC_PJ, Recorder
from minisnn.nn import LIF, BatchNorm, Conv2d, Linear
from minisnn.optim import Adam

INTRODUCES = ("minisnn.fold.fold_tdbn", "minisnn.fold.fold_pair", "minisnn.monitor.E_AC_PJ", "minisnn.monitor.E_MAC_PJ")

T = 4


def coverage(layer, height, width):
    """How many output positions of ``layer`` (a Conv2d) read each input pixel: col2im of ones."""
    (kh, kw), stride, padding = layer.kernel_size, layer.stride[0], layer.padding[0]
    ones = np.ones(im2col(np.zeros((1, 1, height, width)), kh, kw, stride, padding).shape)
    return col2im(ones, (1, 1, height, width), kh, kw, stride, padding)[0, 0]


def exact_sops(layer, spikes, images):
    """Accumulates caused by the input ``spikes`` [T, N, ...] of a Conv2d or Linear, per image."""
    if isinstance(layer, Linear):
        return layer.out_features * float(spikes.sum()) / images
    cover = coverage(layer, *spikes.shape[-2:])
    return layer.out_channels * float((spikes * cover).sum()) / images


def main(argv=None):
    title("Lesson 19: folding tdBN, and counting synaptic operations")
    data = get_dataset("digits")

    section("1. a small spiking ResNet, trained a little")
    model = resnet_small(num_classes=10, in_channels=1, T=T, width=8, blocks=(1, 1), seed=0)
    optimizer = Adam(model.parameters(), lr=0.005)
    steps = 3 if FAST else 40
    loader = data.loader("train", 32, seed=0)
    for step, (images, labels) in zip(range(steps), (b for epoch in range(10) for b in loader.batches(epoch))):
        loss = softmax_cross_entropy(model(Tensor(images)), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    images = next(data.loader("test", 64).batches())[0]
    with no_grad():
        accuracy = float((model(Tensor(images)).data.argmax(axis=1) == next(data.loader("test", 64).batches())[1]).mean())
    print(f"{steps} Adam steps; loss {loss.item():.3f}; accuracy on 64 test digits {accuracy:.0%} (it only needs real "
          "running statistics here)")

    section("2. one conv + tdBN folded by hand (eval mode)")
    conv_bn = model.stem[0]
    bn = conv_bn.bn
    a = bn.weight.data * bn.alpha * bn.v_th / np.sqrt(bn.running_var + bn.eps)
    b = bn.bias.data - a * bn.running_mean
    folded_conv = Conv2d(conv_bn.conv.in_channels, conv_bn.conv.out_channels, 3, padding=1, bias=True)
    folded_conv.weight.data = conv_bn.conv.weight.data * a.reshape(-1, 1, 1, 1)
    folded_conv.bias.data = b
    x = Tensor(images[None])                                              # T = 1: [1, N, 1, 8, 8]
    with no_grad():
        before, after = conv_bn(x).data, folded_conv(x).data
        spikes_equal = bool(np.array_equal(LIF()(Tensor(before)).data, LIF()(Tensor(after)).data))
    by_hand_gap = float(np.abs(before - after).max())
    engine_pair = fold_pair(conv_bn.conv, bn)
    pair_gap = float(max(np.abs(engine_pair.weight.data - folded_conv.weight.data).max(),
                         np.abs(engine_pair.bias.data - folded_conv.bias.data).max()))
    print("a = lambda alpha V_th / sqrt(running_var + eps) = " + " ".join(f"{v:.3f}" for v in a[:4]) + " ...")
    print(f"max |tdBN(conv(x)) - folded conv(x)| = {by_hand_gap:.1e} (float32 rounding); spikes equal: {spikes_equal}")
    print(f"minisnn.fold.fold_pair computes the same W' and bias': max difference {pair_gap:.1e}")

    section("3. fold_tdbn on the whole network")
    reference = copy.deepcopy(model).astype(np.float64).eval()
    folded = fold_tdbn(model, dtype=np.float64)
    print(f"before: {sum(isinstance(m, BatchNorm) for _, m in model.named_modules())} tdBN layers, "
          f"{model.num_parameters():,} parameters; after: "
          f"{sum(isinstance(m, BatchNorm) for _, m in folded.named_modules())} tdBN layers, {folded.num_parameters():,} "
          f"parameters (lambda, beta and the statistics became the biases)")
    x64 = images.astype(np.float64)
    with no_grad(), Recorder(reference) as rec_ref:
        logits_ref = reference(Tensor(x64)).data
    with no_grad(), Recorder(folded) as rec_fold:
        logits_fold = folded(Tensor(x64)).data
    names = rec_ref.order_of_lif()
    identical = all(np.array_equal(rec_ref.spikes[n], rec_fold.spikes[n]) for n in names)
    membrane_gap = max(float(np.abs(rec_ref.membrane[n] - rec_fold.membrane[n]).max()) for n in names)
    print(f"float64: {len(names)} LIF layers, every spike at every step equal: {identical}; largest membrane "
          f"difference {membrane_gap:.1e}; logits differ by {np.abs(logits_ref - logits_fold).max():.1e}")
    folded32 = fold_tdbn(model)
    with no_grad(), Recorder(model) as rec32:
        model(Tensor(images))
    with no_grad(), Recorder(folded32) as rec32f:
        folded32(Tensor(images))
    flipped = sum(int((rec32.spikes[n] != rec32f.spikes[n]).sum()) for n in names)
    total = sum(rec32.spikes[n].size for n in names)
    print(f"float32: {flipped} of {total:,} spikes differ ((a W) * x rounds differently from a (W * x); a spike flips "
          "only where a membrane sits within a rounding error of V_th)")

    section("4. synaptic operations, exactly and estimated")
    layers = {name: m for name, m in folded.named_modules() if isinstance(m, (Conv2d, Linear))}
    inputs = {}
    handles = [m.register_forward_pre_hook(lambda module, args, name=name: inputs.__setitem__(name, args[0].data))
               for name, m in layers.items()]
    with no_grad(), Recorder(folded) as rec:
        folded(Tensor(x64))
    for handle in handles:
        handle.remove()
    table = {row["layer"]: row for row in rec.layer_table()}
    n_images = len(images)
    rows = []
    print(f"{'layer':<26} {'input':>7} {'exact SOPs':>12} {'MACs x rate x T':>16} {'exact / estimate':>17}")
    for name, layer in layers.items():
        row = table[name]
        if row["input_rate"] is None:
            print(f"{name:<26} {'analog':>7} {'':>12} {'':>16}   {row['snn_macs']:.3g} real MACs per image")
            continue
        exact = exact_sops(layer, inputs[name], n_images)
        rows.append((name, exact, row["sops"]))
        print(f"{name:<26} {row['input_rate']:>7.3f} {exact:>12.4g} {row['sops']:>16.4g} {exact / row['sops']:>17.3f}")
    cover = coverage(layers["layers.0.branch.0"], 8, 8)
    print(f"coverage of an 8x8 map by a 3x3 conv with padding 1 (col2im of ones):\n{cover.astype(int)}\n"
          f"mean {cover.mean():.3f} of k^2 = 9 -> a ratio of {cover.mean() / 9:.3f} for evenly spread spikes "
          f"(on the 4x4 maps of the second stage: {coverage(layers['layers.0.branch.0'], 4, 4).mean() / 9:.3f})")
    exact_total = sum(e for _, e, _ in rows)
    analog_macs = sum(r["snn_macs"] for r in table.values() if r["kind"] == "synapses")
    ann_macs = sum(r["ann_macs"] for r in table.values() if r["kind"] == "synapses")
    snn_uj = (E_AC_PJ * exact_total + E_MAC_PJ * analog_macs) * 1e-6
    ann_uj = E_MAC_PJ * ann_macs * 1e-6
    print(f"per image: {exact_total:.4g} SOPs + {analog_macs:.4g} MACs -> {snn_uj:.4f} uJ as an SNN; "
          f"{ann_macs:.4g} MACs -> {ann_uj:.4f} uJ as an ANN of the same shape")

    fig, (ax_s, ax_c) = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [2, 1]})
    positions = np.arange(len(rows))
    ax_s.bar(positions - 0.2, [e for _, e, _ in rows], width=0.4, label="exact, spike by spike")
    ax_s.bar(positions + 0.2, [s for _, _, s in rows], width=0.4, label="MACs x rate x T")
    ax_s.set_xticks(positions)
    ax_s.set_xticklabels([n for n, _, _ in rows], rotation=30, ha="right", fontsize=7)
    ax_s.set(ylabel="SOPs per image", title=f"synaptic operations per layer (T = {T})")
    ax_s.legend(fontsize=8)
    ax_c.imshow(cover, cmap="Blues")
    for (r, c), v in np.ndenumerate(cover):
        ax_c.text(c, r, f"{v:.0f}", ha="center", va="center", fontsize=7)
    ax_c.set(title="coverage: outputs that read each pixel", xticks=[], yticks=[])
    save_figure(fig, "19_sops.png")

    return finish({"fold_by_hand_gap": by_hand_gap, "fold_pair_gap": pair_gap, "stem_spikes_equal": spikes_equal,
                   "float64_spikes_identical": identical, "float64_membrane_gap": membrane_gap,
                   "float32_flipped_share": flipped / total, "norms_left": sum(isinstance(m, BatchNorm)
                                                                              for _, m in folded.named_modules()),
                   "exact_over_estimate": [e / s for _, e, s in rows], "energy_uj": [snn_uj, ann_uj]},
                  "lesson 20 -- exporting the folded network to NIR and reading it back.")


if __name__ == "__main__":
    main()
