"""Lesson 12 -- looking inside a network with forward hooks, and finding dead layers.

What you will learn: how to watch every layer of a network without touching its code, and how to
diagnose the most common failure of deep spiking nets -- layers that stop firing ("the output neurons
did not fire any spikes", snntorch#219). A forward hook is a function the module calls after its
forward pass, ``hook(module, inputs, output)``; ``register_forward_hook`` returns a handle whose
``remove()`` takes it away again (a pre-hook, ``hook(module, inputs)``, runs before).

Why a silent layer is fatal: once a layer receives no spikes at all, its currents are exactly 0 (the
convs have no bias), so its membranes sit at u = 0 = V_th - a/2, on the open edge of the window where
the surrogate gradient h'(u - V_th) = (1/a) 1{|u - V_th| < a/2} is zero (lesson 05). So by STBP (lesson 06)

    dL/dx[t] = dL/do[t] h'(u[t] - V_th) + ...  = 0     for every neuron of the layer,

no gradient passes it: every layer *below* it stops learning too, and the layers above get no input.
The cure the paper proposes is tdBN (lesson 09): it rescales every layer's currents to V_th,
whatever the weights' scale.

What you will see:

1. Hooks by hand: a firing-rate hook on every LIF of a small 8-layer conv net, a pre-hook that looks
   at the currents going in, and the handles removed again.
2. The same net initialised with weights half the Kaiming scale and no normalisation: the firing rate
   falls from layer to layer to zero; a dead-layer check (rate below 0.1 %) names the dead layers,
   and the gradient of every conv is exactly zero (``12_dead_layers.png``).
3. The same weights with tdBN after every conv: every layer fires at about 15 %, and every conv gets a
   gradient.
4. The engine's monitors, built on the same hooks: ``FiringRates`` (what the Trainer shows in its
   progress bar) gives the rates above, and ``Recorder`` keeps each layer's spikes and membrane
   potential (``LIF.membrane``, lesson 04) for a raster plot and membrane traces (``12_raster.png``,
   ``12_membrane.png``).

Run:  python lessons/12_monitoring_and_dead_layers.py      (add --fast or MINISNN_FAST=1 for the test mode)
"""
import numpy as np

from _common import FAST, finish, output_dir, plt, save_figure, section, title
from minisnn import Tensor, no_grad
from minisnn.data import get_dataset
from minisnn.functions.basic import repeat_over_time
from minisnn.functions.loss import mean_over_time, softmax_cross_entropy
from minisnn.monitor import FiringRates, Recorder, plot_membrane, plot_raster
from minisnn.nn import LIF, Conv2d, GlobalAvgPool2d, Linear, Sequential, TdBN

INTRODUCES = ("minisnn.nn.Module.register_forward_hook", "minisnn.nn.Module.register_forward_pre_hook",
              "minisnn.monitor.FiringRates", "minisnn.monitor.Recorder", "minisnn.monitor.plot_raster",
              "minisnn.monitor.plot_membrane")

DEPTH, WIDTH, T = 8, 16, 4
DEAD, SATURATED = 1e-3, 0.95          # a layer is dead below this firing rate, saturated above that one


def conv_net(gain, tdbn, seed=0):
    """DEPTH x [conv3x3 -> (tdBN) -> LIF], global average pooling, a linear read-out. ``gain`` scales the
    Kaiming-initialised weights (0.5: a too-small initialisation)."""
    rng = np.random.default_rng(seed)
    layers, cin = [], 1
    for _ in range(DEPTH):
        conv = Conv2d(cin, WIDTH, 3, padding=1, seed=rng)
        conv.weight.data *= gain
        layers += [conv, TdBN(WIDTH), LIF()] if tdbn else [conv, LIF()]
        cin = WIDTH
    return Sequential(*layers, GlobalAvgPool2d(), Linear(WIDTH, 10, seed=rng))


def lifs(net):
    return [m for m in net if isinstance(m, LIF)]


def convs(net):
    return [m for m in net if isinstance(m, Conv2d)]


def diagnose(net, images, labels):
    """One forward and backward pass with a rate hook on every LIF; returns (rates, conv gradient norms)."""
    rates = []
    handles = [layer.register_forward_hook(lambda module, inputs, output: rates.append(float(output.data.mean())))
               for layer in lifs(net)]
    loss = softmax_cross_entropy(mean_over_time(net(repeat_over_time(Tensor(images), T))), labels)
    loss.backward()
    for handle in handles:
        handle.remove()
    grads = [float(np.linalg.norm(c.weight.grad)) for c in convs(net)]
    return np.array(rates), np.array(grads)


def report(name, rates, grads):
    dead = [k + 1 for k, r in enumerate(rates) if r < DEAD]
    saturated = [k + 1 for k, r in enumerate(rates) if r > SATURATED]
    print(f"{name}:")
    print("  firing rate per layer  " + " ".join(f"{r:.3f}" for r in rates))
    print("  ||dL/dW|| per conv     " + " ".join(f"{g:.0e}" if g else "0" for g in grads))
    print(f"  dead layers (rate < {DEAD}): {dead or 'none'};  saturated (rate > {SATURATED}): {saturated or 'none'}")
    return dead


def main(argv=None):
    title("Lesson 12: forward hooks, firing rates and dead layers")
    data = get_dataset("digits")
    images, labels = next(data.loader("train", 32 if FAST else 128, seed=0).batches())

    section("1. hooks by hand")
    net = conv_net(gain=1.0, tdbn=False)
    seen = []
    first = lifs(net)[0]
    with first.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].data)), \
            first.register_forward_hook(lambda module, inputs, output: seen.append(output.data)):
        with no_grad():
            net(repeat_over_time(Tensor(images), T))
    currents, spikes = seen
    print(f"the first LIF got currents {currents.shape} (mean {currents.mean():+.3f}, std {currents.std():.3f}) and "
          f"sent spikes {spikes.shape}, rate {spikes.mean():.3f}")
    with no_grad():
        net(repeat_over_time(Tensor(images), T))
    print(f"after the with-block the handles have removed the hooks: another pass records nothing ({len(seen)} arrays)")

    section("2. a net that does not learn: weights at half the Kaiming scale, no normalisation")
    rates_bad, grads_bad = diagnose(conv_net(gain=0.5, tdbn=False), images, labels)
    dead = report("gain 0.5, no norm", rates_bad, grads_bad)
    rates_ok, grads_ok = diagnose(conv_net(gain=1.0, tdbn=False), images, labels)
    report("gain 1.0 (Kaiming), no norm", rates_ok, grads_ok)
    print("With gain 0.5 every layer's currents are half as wide, fewer neurons reach V_th, and the next layer gets\n"
          "fewer spikes still: the rate collapses geometrically until a layer is silent. From then on no gradient\n"
          "passes, so not even the layers before it -- which still fire -- can learn.")

    section("3. the same weights with tdBN after every conv")
    rates_fix, grads_fix = diagnose(conv_net(gain=0.5, tdbn=True), images, labels)
    dead_fixed = report("gain 0.5, tdBN", rates_fix, grads_fix)
    print(f"tdBN divides by the currents' own standard deviation, so the weights' scale no longer matters: "
          f"about P(z >= 1) = 16 % fire in every layer.")

    fig, (ax_r, ax_g) = plt.subplots(1, 2, figsize=(11, 3.8))
    depth = np.arange(1, DEPTH + 1)
    for (r, g), label in (((rates_ok, grads_ok), "Kaiming, no norm"), ((rates_bad, grads_bad), "gain 0.5, no norm"),
                          ((rates_fix, grads_fix), "gain 0.5, tdBN")):
        ax_r.plot(depth, r, "o-", label=label)
        ax_g.plot(depth, np.maximum(g, 1e-12), "o-", label=label)
    ax_r.axhline(DEAD, color="gray", ls=":", lw=1)
    ax_r.set(xlabel="layer", ylabel="firing rate", yscale="symlog", title="firing rate per LIF layer (dotted: 'dead')")
    ax_g.set(xlabel="layer", ylabel="||dL/dW|| (1e-12 = zero)", yscale="log", title="gradient per conv layer")
    ax_r.legend(fontsize=8)
    save_figure(fig, "12_dead_layers.png")

    section("4. the engine's monitors: FiringRates and Recorder")
    net = conv_net(gain=0.5, tdbn=True)
    x = repeat_over_time(Tensor(images), T)
    with no_grad(), FiringRates(net) as monitor:
        net(x)
    engine_rates = np.array([float(r) for r in monitor.layers.values()])
    monitor_gap = float(np.abs(engine_rates - rates_fix).max())
    print(f"FiringRates: {len(monitor.layers)} LIF layers, mean rate {float(monitor.mean()):.3f}; "
          f"max |difference to the hand-made hook| = {monitor_gap:.1e}")
    with no_grad(), Recorder(net) as recorder:
        net(x)
    name = recorder.order_of_lif()[0]
    print(f"Recorder kept, for every LIF, spikes {recorder.spikes[name].shape} and membrane "
          f"{recorder.membrane[name].shape}; layer names {recorder.order_of_lif()[:3]} ...")
    plot_raster(recorder, output_dir() / "12_raster.png", title="spikes of every LIF layer, one digit")
    plot_membrane(recorder, net, output_dir() / "12_membrane.png", title="membrane of neurons that fire, one digit")
    print(f"[figure] {output_dir() / '12_raster.png'}\n[figure] {output_dir() / '12_membrane.png'}")

    return finish({"dead_layers": dead, "dead_layers_with_tdbn": dead_fixed,
                   "conv_grads_without_norm": grads_bad.tolist(), "conv_grads_with_tdbn": grads_fix.tolist(),
                   "rates_with_tdbn": rates_fix.tolist(), "monitor_gap": monitor_gap},
                  "lesson 13 -- gradient norms through depth: how tdBN keeps the backward signal level.")


if __name__ == "__main__":
    main()
