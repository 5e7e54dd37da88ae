"""Looking inside a spiking network: firing rates, spike rasters, membrane traces, synaptic operations.

Three monitors, each a context manager that puts forward hooks (``Module.register_forward_hook``) on
the layers it watches and removes them on exit, so they nest and never change a layer's code:

* ``FiringRates(model)``: every LIF layer's mean firing rate in the last pass, kept on the device;
* ``count_macs(model)``: the multiply-accumulates of every Conv2d and Linear layer that runs;
* ``Recorder(model)``: for one or more forward passes, what each layer saw: the spikes and membrane
  potential of every LIF layer and the input of every Conv2d / Linear layer.

From the Recorder's record:

* firing rate of a LIF layer = mean of its spikes over (T, N, neurons);
* synaptic operations of a Conv2d/Linear layer. An ANN layer costs MACs = (outputs) x (fan-in) per
  image. In an SNN a synapse only works when a spike arrives, and then it is an accumulate, not a
  multiply-accumulate, so SOPs = MACs x r_in x T, with r_in the firing rate of the layer's input
  (Merolla et al. 2014; the "SOP = FLOP x rate x T" of spikingjelly#258). A layer whose input is not
  spikes costs MACs x T_in, T_in the number of timesteps it runs on: 1 for the first conv under
  direct encoding (it sees the analog image once), T for a layer after average pooling.
* energy: E = E_MAC x MACs + E_AC x SOPs with the 45 nm CMOS figures of Horowitz (ISSCC 2014,
  "Computing's energy problem"): 32-bit float E_MAC = 4.6 pJ, E_AC = 0.9 pJ. Pass others if your
  hardware differs.
"""
import json

import numpy as np

from .backend import as_numpy, get_array_module
from .checkpoint import atomic_write
from .core import Tensor
from .nn.layers import Conv2d, Linear
from .nn.neuron import LIF

E_MAC_PJ = 4.6
E_AC_PJ = 0.9


def lif_layers(model):
    return [(name, m) for name, m in model.named_modules() if isinstance(m, LIF)]


def synapse_macs(layer, output):
    """Multiply-accumulates of a Conv2d or Linear layer per image and timestep: outputs x fan-in,
    fan-in = C_in kh kw (or in_features). ``output`` is the layer's output [T, N, ...]."""
    fan_in = layer.weight.size // layer.weight.shape[0]
    return output.data[0, 0].size * fan_in


class _Hooks:
    """Base of the monitors below: a forward hook on every layer ``wants(module)`` accepts, removed on exit.
    Monitors nest: each holds its own hooks and removes only those."""

    def __init__(self, model):
        self.model = model
        self.handles = []

    def wants(self, module):
        raise NotImplementedError

    def hook(self, name, module, inputs, output):
        raise NotImplementedError

    def __enter__(self):
        for name, module in self.model.named_modules():
            if self.wants(module):
                self.handles.append(module.register_forward_hook(
                    lambda module, inputs, output, name=name: self.hook(name, module, inputs, output)))
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()
        self.handles = []
        return False


class FiringRates(_Hooks):
    """Inside ``with FiringRates(model) as rates:``, ``rates.layers[name]`` holds the mean firing rate of
    every LIF layer in the last forward pass, as a 0-d array on the model's device (reading it is a
    host synchronisation, so read it when you need the number, not after every step).
    ``rates.mean()`` is the mean over layers, still on the device."""

    def __init__(self, model):
        super().__init__(model)
        self.layers = {}

    def wants(self, module):
        return isinstance(module, LIF)

    def hook(self, name, module, inputs, output):
        self.layers[name] = output.data.mean()

    def mean(self):
        """Mean firing rate over the LIF layers of the last pass, a 0-d device array (0 if none ran)."""
        if not self.layers:
            return np.zeros(())
        return sum(self.layers.values()) / len(self.layers)


class count_macs(_Hooks):
    """Count, inside ``with count_macs(model) as macs:``, the multiply-accumulates of every Conv2d and
    Linear layer that runs (``synapse_macs`` of each call, times the images and timesteps it saw);
    ``macs.total`` holds the running total."""

    def __init__(self, model):
        super().__init__(model)
        self.total = 0

    def wants(self, module):
        return isinstance(module, (Conv2d, Linear))

    def hook(self, name, module, inputs, output):
        T, N = output.shape[:2]
        self.total += synapse_macs(module, output) * T * N


class Recorder(_Hooks):
    """Record, during forward passes inside ``with Recorder(model) as rec:``, each layer's activity.

    rec.spikes[name]   host array [T, N, ...] of a LIF layer's spikes (last pass)
    rec.membrane[name] host array [T, N, ...] of its membrane potential u (last pass)
    rec.inputs[name]   (input rate, is_spike_input, T, MACs per image per timestep) of a Conv2d/Linear
    """

    def __init__(self, model):
        super().__init__(model)
        self.spikes, self.membrane, self.inputs, self.order = {}, {}, {}, []

    def wants(self, module):
        return isinstance(module, (LIF, Conv2d, Linear))

    def hook(self, name, module, inputs, output):
        if name not in self.order:
            self.order.append(name)
        x = inputs[0].data if isinstance(inputs[0], Tensor) else inputs[0]
        if isinstance(module, LIF):
            self.spikes[name] = as_numpy(output.data)
            self.membrane[name] = as_numpy(module.membrane(x))
            return
        xp = get_array_module(x)
        is_spikes = bool(xp.all((x == 0) | (x == 1)))
        self.inputs[name] = (float(x.mean()), is_spikes, x.shape[0], synapse_macs(module, output))

    # -- summaries ------------------------------------------------------------------------------
    def order_of_lif(self):
        """LIF layer names in forward order."""
        return [name for name in self.order if name in self.spikes]

    def firing_rates(self):
        """{LIF layer name: mean firing rate} of the last pass."""
        return {name: float(np.mean(s)) for name, s in self.spikes.items()}

    def layer_table(self, e_mac=E_MAC_PJ, e_ac=E_AC_PJ):
        """One row per layer, in forward order: firing rate (LIF) or MACs, SOPs and energy (synapses)."""
        rows = []
        for name in self.order:
            if name in self.spikes:
                rows.append({"layer": name, "kind": "LIF", "firing_rate": float(np.mean(self.spikes[name]))})
            else:
                rate, is_spikes, T, macs = self.inputs[name]
                sops = macs * rate * T if is_spikes else 0.0
                ann_macs = macs
                snn_macs = 0 if is_spikes else macs * T
                rows.append({"layer": name, "kind": "synapses", "input_rate": rate if is_spikes else None,
                             "ann_macs": ann_macs, "snn_macs": snn_macs, "sops": sops,
                             "ann_energy_uj": ann_macs * e_mac * 1e-6,
                             "snn_energy_uj": (snn_macs * e_mac + sops * e_ac) * 1e-6})
        return rows

    def totals(self, e_mac=E_MAC_PJ, e_ac=E_AC_PJ):
        syn = [r for r in self.layer_table(e_mac, e_ac) if r["kind"] == "synapses"]
        return {key: sum(r[key] for r in syn) for key in ("ann_macs", "snn_macs", "sops", "ann_energy_uj",
                                                          "snn_energy_uj")}


def format_table(rows):
    """The per-layer table as aligned text."""
    lines = [f"{'layer':<34} {'rate':>7} {'ANN MACs':>12} {'SOPs':>12} {'E_ANN uJ':>9} {'E_SNN uJ':>9}"]
    for r in rows:
        if r["kind"] == "LIF":
            lines.append(f"{r['layer']:<34} {r['firing_rate']:>7.3f}")
        else:
            rate = "analog" if r["input_rate"] is None else f"{r['input_rate']:.3f}"
            lines.append(f"{r['layer']:<34} {rate:>7} {r['ann_macs']:>12.3g} {r['sops']:>12.3g} "
                         f"{r['ann_energy_uj']:>9.3f} {r['snn_energy_uj']:>9.3f}")
    return "\n".join(lines)


def save_json(rows, path):
    atomic_write(path, lambda f: f.write(json.dumps(rows, indent=1).encode()))


# ---------------------------------------------------------------------------------------- pictures
# Drawn on matplotlib.figure.Figure, never through pyplot, so they work headless and leave a notebook's
# backend alone; each is written atomically as a PNG.
def _save(fig, path):
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))


def _integer_time_axis(ax, T):
    """x axis of timesteps 0 .. T-1, one tick per integer step (at most about a dozen ticks)."""
    from matplotlib.ticker import MaxNLocator
    ax.set_xlim(-0.5, T - 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=min(T, 12)))
    ax.set_xlabel("timestep t")


def plot_raster(rec, path, neurons_per_layer=32, sample=0, seed=0, title="spike raster"):
    """Raster of one input across every spiking layer: a black cell at (t, neuron) for every spike.

    From each LIF layer of the recorder (in forward order, first at the top) ``neurons_per_layer``
    neurons are drawn at random (seeded, so an unbiased sample of the layer) for input ``sample``;
    each layer's rows are labelled with its name and its firing rate over the whole batch.
    """
    from matplotlib.figure import Figure

    layers = rec.order_of_lif()
    rates = rec.firing_rates()
    rng = np.random.default_rng(seed)
    T = rec.spikes[layers[0]].shape[0]
    rows, ticks, starts = [], [], []
    for name in layers:
        s = np.asarray(rec.spikes[name])[:, sample].reshape(T, -1)
        chosen = np.sort(rng.choice(s.shape[1], size=min(neurons_per_layer, s.shape[1]), replace=False))
        starts.append(len(rows))
        ticks.append((len(rows) + (len(chosen) - 1) / 2, f"{name}  ({rates[name]:.3f})"))
        rows.extend(s[:, chosen].T)
    fig = Figure(figsize=(4.5 + 0.25 * min(T, 20), 1.2 + 0.45 * len(layers)))
    ax = fig.subplots()
    ax.imshow(np.array(rows) > 0, aspect="auto", cmap="Greys", vmin=0, vmax=1, interpolation="nearest",
              extent=(-0.5, T - 0.5, len(rows) - 0.5, -0.5))
    for first_row in starts[1:]:
        ax.axhline(first_row - 0.5, color="tab:red", linewidth=0.6)
    ax.set_yticks([y for y, _ in ticks], [label for _, label in ticks], fontsize=7)
    _integer_time_axis(ax, T)
    ax.set_ylabel(f"{neurons_per_layer} sampled neurons per layer (firing rate)", fontsize=8)
    ax.set_title(title, fontsize=9)
    _save(fig, path)


def plot_firing_rates(rec, path, title="firing rate of each spiking layer"):
    """Horizontal bars: the firing rate (spikes per neuron per timestep) of every LIF layer, in forward
    order from the top, with the mean over layers as a dashed line."""
    from matplotlib.figure import Figure

    layers = rec.order_of_lif()
    rates = [rec.firing_rates()[name] for name in layers]
    fig = Figure(figsize=(6.5, 1.0 + 0.28 * len(layers)))
    ax = fig.subplots()
    y = np.arange(len(layers))
    ax.barh(y, rates, color="tab:blue")
    for k, rate in enumerate(rates):
        ax.text(rate, k, f" {rate:.3f}", va="center", fontsize=7)
    ax.axvline(float(np.mean(rates)), color="gray", linestyle="--", linewidth=1, label="mean over layers")
    ax.set_yticks(y, layers, fontsize=7)
    ax.set_ylim(len(layers) - 0.5, -0.5)
    ax.set_xlim(0, max(max(rates) * 1.25, 1e-3))
    ax.set(xlabel="firing rate (spikes per neuron per timestep)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    _save(fig, path)


def plot_membrane(rec, model, path, layers=3, neurons=3, sample=0, title="membrane potential"):
    """Membrane traces u[t] of neurons that fire, in up to ``layers`` LIF layers spread over the depth.

    In each chosen layer the ``neurons`` neurons of input ``sample`` that spike most often are drawn
    (if none fires, those that come closest, and the panel says so), with their spikes marked and the
    layer's own threshold ``v_th`` (read from the model's LIF module) as a dashed line.
    """
    from matplotlib.figure import Figure

    modules = dict(model.named_modules())
    names = rec.order_of_lif()
    picks = sorted(set(np.linspace(0, len(names) - 1, min(layers, len(names))).round().astype(int)))
    T = rec.spikes[names[0]].shape[0]
    fig = Figure(figsize=(7, 0.6 + 1.8 * len(picks)))
    axes = fig.subplots(len(picks), 1, squeeze=False)[:, 0]
    for ax, index in zip(axes, picks):
        name = names[index]
        u = np.asarray(rec.membrane[name])[:, sample].reshape(T, -1)
        o = np.asarray(rec.spikes[name])[:, sample].reshape(T, -1)
        counts = o.sum(axis=0)
        fired = counts.max() > 0
        order = np.argsort(-counts if fired else -u.max(axis=0), kind="stable")[:neurons]
        for k in order:
            line, = ax.plot(np.arange(T), u[:, k], marker="o", markersize=3, label=f"neuron {k}")
            spikes = np.nonzero(o[:, k])[0]
            ax.plot(spikes, u[spikes, k], "x", color=line.get_color(), markersize=9)
        v_th = modules[name].v_th
        ax.axhline(v_th, color="gray", linestyle="--", linewidth=1, label=f"V_th = {v_th:g}")
        ax.set_ylabel("u[t]")
        ax.set_title(f"{name}" + ("" if fired else ": no neuron fired; the closest shown") +
                     " (x: spike)", fontsize=8)
        ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
        _integer_time_axis(ax, T)
    fig.suptitle(title, fontsize=9)
    _save(fig, path)
