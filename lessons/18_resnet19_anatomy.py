"""Lesson 18 -- the anatomy of ResNet-19: shapes, parameters, MACs, spikes.

What you will learn: where the size and the cost of the paper's network sit, layer by layer, and how
its spikes turn multiply-accumulates into cheaper accumulates. The paper's CIFAR-10 network
(STBP-tdBN, Zheng et al. 2021), built from the blocks of lesson 10:

    conv3x3 128 + tdBN + LIF
    3 BasicBlocks of width 128, 3 of width 256 (first with stride 2), 2 of width 512 (stride 2)
    global average pooling, FC 256 + LIF, FC 10, mean over T

    BasicBlock:  o = LIF( tdBN_a(conv3x3(LIF(tdBN(conv3x3(x))))) + shortcut(x) ),  a = 1/sqrt(2)

What you will see:

1. Every Conv2d / Linear layer in forward order with its input and output shape [T, N, C, H, W], its
   parameters and its multiply-accumulates per image and timestep:
       MACs(conv) = Cout * Ho * Wo * (Cin * kh * kw),      MACs(linear) = out * in.
   The count by hand (a forward hook on every synaptic layer, lesson 12) equals what
   ``minisnn.monitor.Recorder`` counts.
2. Where the parameters and the work are (``18_resnet19_anatomy.png``): two thirds of the parameters
   sit in the 512-wide stage, but the MACs are spread over all three stages -- a 3x3 conv of width w on
   an r x r map costs 9 w^2 r^2, and each stage doubles w while halving r.
3. Firing rates of the untrained network and the synaptic operations they imply: a spike into a
   synapse is an accumulate (SOP), not a multiply-accumulate, so SOPs = MACs * input rate * T.

Run:  python lessons/18_resnet19_anatomy.py      (add --fast or MINISNN_FAST=1 for the test mode)
"""
from collections import defaultdict

import numpy as np

from _common import FAST, Timer, finish, plt, save_figure, section, title
from minisnn import Tensor, no_grad
from minisnn.models import resnet19
from minisnn.monitor import Recorder, format_table, synapse_macs
from minisnn.nn import Conv2d, Linear

INTRODUCES = ("minisnn.models.resnet19", "minisnn.monitor.synapse_macs")


def shapes_of(model, x):
    """Run the model once; return [(name, layer, input shape, output shape, MACs per image and timestep)]
    of every Conv2d/Linear, seen by a forward hook on each (removed again afterwards)."""
    rows, handles = [], []
    for name, layer in model.named_modules():
        if isinstance(layer, (Conv2d, Linear)):
            def look(layer, inputs, output, name=name):
                rows.append((name, layer, inputs[0].shape, output.shape, synapse_macs(layer, output)))
            handles.append(layer.register_forward_hook(look))
    with no_grad():
        model(Tensor(x))
    for handle in handles:
        handle.remove()
    return rows


def stage_of(name):
    """'stem', 'head', or the stage of a block: layers.0-2 are 128 wide, 3-5 256 wide, 6-7 512 wide."""
    if not name.startswith("layers."):
        return name.split(".")[0]
    block = int(name.split(".")[1])
    return "128-wide (32x32)" if block < 3 else "256-wide (16x16)" if block < 6 else "512-wide (8x8)"


def main(argv=None):
    title("Lesson 18: the anatomy of ResNet-19")
    T, N = (1, 1) if FAST else (2, 2)
    with Timer() as build:
        model = resnet19(T=T)
    print(f"built resnet19(T={T}) in {build.seconds:.1f} s: {model.num_parameters():,} parameters "
          f"({model.num_parameters() * 4 / 2 ** 20:.1f} MiB in float32)")
    x = np.random.default_rng(0).standard_normal((N, 3, 32, 32)).astype(np.float32)

    section("1. every synaptic layer: shapes, parameters, MACs per image and timestep")
    rows = shapes_of(model, x)
    print(f"{'layer':<30} {'input [T,N,C,H,W]':<22} {'output':<22} {'params':>9} {'MACs':>12}")
    total_macs, by_stage = 0, defaultdict(lambda: [0, 0])
    for name, layer, shape_in, shape_out, macs in rows:
        total_macs += macs
        by_stage[stage_of(name)][0] += layer.weight.size
        by_stage[stage_of(name)][1] += macs
        print(f"{name:<30} {str(tuple(shape_in)):<22} {str(tuple(shape_out)):<22} {layer.weight.size:>9,} "
              f"{macs:>12,}")
    others = model.num_parameters() - sum(layer.weight.size for _, layer, *_ in rows)
    print(f"{len(rows)} synaptic layers; the other {others:,} parameters are tdBN's lambda, beta and the FC biases")
    print(f"total: {total_macs / 1e9:.3f} G MACs per image and timestep")
    print("(the stem conv runs on T = 1: with the same image at every step, conv + tdBN give the same result\n"
          " at every t, so the model computes them once and repeats the result T times)")

    section("2. the same count from the monitor, and the spikes of the untrained net")
    print("(training mode, so tdBN normalises with the batch's own statistics; in eval mode it would use the\n"
          " running statistics, which in an untrained net are still their initial mean 0 and variance 1)")
    with Timer() as fwd, no_grad(), Recorder(model) as rec:
        model(Tensor(x))
    totals = rec.totals()
    print(f"Recorder: {totals['ann_macs'] / 1e9:.3f} G MACs per image and timestep "
          f"(by hand {total_macs / 1e9:.3f}); forward of {N} image(s), T={T}: {fwd.seconds:.2f} s")
    lif_rates = rec.firing_rates()
    quiet, busy = min(lif_rates, key=lif_rates.get), max(lif_rates, key=lif_rates.get)
    print(f"{len(lif_rates)} LIF layers; firing rates at initialisation from {lif_rates[quiet]:.3f} ({quiet}) "
          f"to {lif_rates[busy]:.3f} ({busy})")
    print("first rows of the monitor's per-layer table:")
    print("\n".join(format_table(rec.layer_table()).splitlines()[:8]))
    print(f"SOPs (accumulates caused by spikes) per image: {totals['sops'] / 1e6:.1f} M over T={T} steps.\n"
          f"Layers whose input is not spikes -- the first conv (the analog image) and the FC after global\n"
          f"pooling (spike averages) -- cost {totals['snn_macs'] / 1e6:.2f} M real MACs.")
    print(f"energy estimate (45 nm, E_MAC = 4.6 pJ, E_AC = 0.9 pJ): ANN {totals['ann_energy_uj']:.0f} uJ, "
          f"SNN {totals['snn_energy_uj']:.0f} uJ per image")

    section("3. parameters and MACs by stage")
    for stage, (params, macs) in by_stage.items():
        print(f"{stage:<18} {params / 1e6:6.2f} M parameters ({100 * params / model.num_parameters():4.1f} %)   "
              f"{macs / 1e9:6.3f} G MACs ({100 * macs / total_macs:4.1f} %)")

    names = [name for name, *_ in rows]
    params = [layer.weight.size for _, layer, *_ in rows]
    macs = [row[-1] for row in rows]
    colors = [f"C{list(by_stage).index(stage_of(n))}" for n in names]
    fig, (ax_p, ax_m) = plt.subplots(2, 1, figsize=(11, 6), sharex=True)
    ax_p.bar(range(len(names)), params, color=colors)
    ax_m.bar(range(len(names)), macs, color=colors)
    ax_p.set(ylabel="weights", yscale="log", title="ResNet-19, layer by layer (colour = stage)")
    ax_m.set(ylabel="MACs per image and step", yscale="log")
    ax_m.set_xticks(range(len(names)))
    ax_m.set_xticklabels(names, rotation=90, fontsize=6)
    for stage in by_stage:
        ax_p.bar([0], [0], color=f"C{list(by_stage).index(stage)}", label=stage)
    ax_p.legend(fontsize=7, ncol=5)
    save_figure(fig, "18_resnet19_anatomy.png")
    return finish({"parameters": model.num_parameters(), "synaptic_layers": len(rows), "macs_by_hand": total_macs,
                   "macs_recorder": totals["ann_macs"], "sops_per_image": totals["sops"],
                   "energy_uj": [totals["ann_energy_uj"], totals["snn_energy_uj"]],
                   "share_by_stage": {stage: [params / model.num_parameters(), macs / total_macs]
                                      for stage, (params, macs) in by_stage.items()}},
                  "lesson 19 -- folding tdBN into the convolutions, and counting synaptic operations exactly.")


if __name__ == "__main__":
    main()
