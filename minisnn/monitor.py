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


def plot_raster(spikes, path, max_neurons=200, title="spike raster"):
    """Raster of one sample: a dot for every spike of up to ``max_neurons`` neurons over T.

    spikes: host array [T, N, ...]; the first sample is shown.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = np.asarray(spikes)[:, 0].reshape(spikes.shape[0], -1)[:, :max_neurons]
    t, neuron = np.nonzero(s)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.scatter(t, neuron, s=4, marker="|", color="k")
    ax.set(xlabel="timestep t", ylabel="neuron", title=title, xlim=(-0.5, s.shape[0] - 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_membrane(membrane, spikes, path, v_th=0.5, neurons=4, title="membrane potential"):
    """Membrane traces u[t] of a few neurons of the first sample, with V_th and the spike times."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    u = np.asarray(membrane)[:, 0].reshape(membrane.shape[0], -1)[:, :neurons]
    o = np.asarray(spikes)[:, 0].reshape(spikes.shape[0], -1)[:, :neurons]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for k in range(u.shape[1]):
        line, = ax.plot(u[:, k], marker="o", label=f"neuron {k}")
        fired = np.nonzero(o[:, k])[0]
        ax.plot(fired, u[fired, k], "x", color=line.get_color(), markersize=10)
    ax.axhline(v_th, color="gray", linestyle="--", label="V_th")
    ax.set(xlabel="timestep t", ylabel="u[t]", title=title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
