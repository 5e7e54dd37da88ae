"""Lesson 04 -- the leaky integrate-and-fire (LIF) neuron of STBP-tdBN.

What you will learn: what a spiking neuron computes, step by step, and how its two constants -- the
threshold V_th and the decay tau_decay, both from the paper (``minisnn.paper``) -- set when it fires.

The neuron, step by step, for an input current x[t]:

    u[t] = tau_decay * u[t-1] * (1 - o[t-1]) + x[t]      leak (tau_decay), reset after a spike (1 - o)
    o[t] = H(u[t] - V_th)                                fire when u reaches the threshold V_th
    u[-1] = o[-1] = 0,   paper defaults V_th = 0.5, tau_decay = 0.25

What you will see:

1. The same loop written by hand in five lines of NumPy gives exactly what ``minisnn.nn.LIF`` gives
   (a Module, lesson 03, with no parameters: it takes [T, N, ...] currents and returns spikes, and
   ``LIF.membrane(x)`` recomputes the u it went through).
2. Membrane traces for a few constant currents (``04_lif_membrane.png``): u climbs towards its fixed
   point x / (1 - tau_decay); if that lies above V_th the neuron fires, and the factor (1 - o) resets u to
   zero, so the next step starts from x again -- a regular spike train.
3. Firing rate against input current (``04_lif_rates.png``) for several V_th and tau_decay. A constant
   current x makes the neuron fire at all (within T steps) only if x >= V_th * (1 - tau_decay) -- the
   rheobase; a higher V_th shifts the curve right, a longer memory (larger tau_decay) shifts it left.
   Above x = V_th the neuron fires at every step: rate 1, and no more information in the rate.
   That saturation is why tdBN scales pre-activations to the threshold (lesson 09).

Run:  python lessons/04_lif_neuron.py      (add --fast or MINISNN_FAST=1 for the test mode)
"""
import numpy as np

from _common import FAST, finish, plt, save_figure, section, title
from minisnn import Tensor, no_grad
from minisnn.functions.neuron import lif
from minisnn.nn import LIF
from minisnn.paper import TAU_DECAY, V_TH

INTRODUCES = ("minisnn.nn.LIF", "minisnn.functions.neuron.lif", "minisnn.paper.V_TH", "minisnn.paper.TAU_DECAY",
              "minisnn.nn.LIF.membrane")


def lif_by_hand(x, v_th=V_TH, tau_decay=TAU_DECAY):
    """The LIF loop over t in plain NumPy: returns (u, o), both [T, ...]."""
    u, o = np.zeros_like(x), np.zeros_like(x)
    u_prev, o_prev = np.zeros_like(x[0]), np.zeros_like(x[0])
    for t in range(len(x)):
        u[t] = tau_decay * u_prev * (1 - o_prev) + x[t]
        o[t] = (u[t] >= v_th).astype(x.dtype)
        u_prev, o_prev = u[t], o[t]
    return u, o


def run_lif(x, **neuron):
    """Drive nn.LIF with currents x [T, N] and return (membrane, spikes) as NumPy arrays."""
    layer = LIF(**neuron)
    with no_grad():
        spikes = layer(Tensor(x)).data
    return layer.membrane(x), spikes


def main(argv=None):
    title("Lesson 04: the LIF neuron -- membrane, spikes, reset, V_th and tau_decay")
    T = 12 if FAST else 30

    section("1. the loop by hand equals nn.LIF")
    x = np.full((T, 1), 0.3, dtype=np.float32)
    x[T // 3:] = 0.45                          # a step up in the input current
    u_hand, o_hand = lif_by_hand(x)
    u, o = run_lif(x)
    print(" t   x[t]   u[t]  o[t]      (the current steps up from 0.30 to 0.45 at t = %d)" % (T // 3))
    for t in list(range(3)) + [None] + list(range(T // 3 - 1, T // 3 + 6)):
        if t is None:
            print(f" ...  u approaches 0.30 / (1 - {TAU_DECAY}) = {0.3 / (1 - TAU_DECAY):.2f} < V_th = {V_TH}: no spike")
            continue
        print(f"{t:2d}  {x[t, 0]:.2f}  {u[t, 0]:.3f}   {int(o[t, 0])}" + ("   <- fire, then reset" if o[t, 0] else ""))
    hand_vs_engine = float(np.abs(u_hand - u).max())
    spikes_equal = bool((o_hand == o).all())
    with no_grad():
        functional = lif(Tensor(x)).data                    # the Function nn.LIF calls
    print("max |u_hand - u_engine| =", hand_vs_engine, "| spikes equal:", spikes_equal,
          "| functions.neuron.lif gives the same spikes:", bool((functional == o).all()))

    section(f"2. membrane traces for constant currents (V_th = {V_TH}, tau_decay = {TAU_DECAY})")
    currents = np.array([0.3, 0.4, 0.6, 1.0], dtype=np.float32)
    x = np.broadcast_to(currents, (T, len(currents))).copy()
    u, o = run_lif(x)
    fig, axes = plt.subplots(len(currents), 1, figsize=(7, 6.5), sharex=True)
    for k, ax in enumerate(axes):
        ax.plot(u[:, k], marker=".", label="u[t]")
        fired = np.nonzero(o[:, k])[0]
        ax.plot(fired, u[fired, k], "rx", markersize=8, label="spike")
        ax.axhline(V_TH, color="gray", ls="--", lw=0.8, label="V_th")
        ax.axhline(currents[k] / (1 - TAU_DECAY), color="green", ls=":", lw=0.8, label="x / (1 - tau)")
        ax.set_ylabel(f"x = {currents[k]:.1f}")
        print(f"x = {currents[k]:.1f}: fixed point x/(1-tau) = {currents[k] / (1 - TAU_DECAY):.3f}, "
              f"{len(fired)} spikes in {T} steps")
    axes[0].legend(fontsize=7, ncol=4, loc="upper right")
    axes[0].set_title("membrane potential u[t]: leak, fire, reset to 0")
    axes[-1].set_xlabel("timestep t")
    save_figure(fig, "04_lif_membrane.png")

    section("3. firing rate against input current, for V_th and tau_decay")
    xs = np.linspace(0, 1.2, 25 if FAST else 121, dtype=np.float32)
    x = np.broadcast_to(xs, (T, len(xs))).copy()
    fig, (ax_th, ax_tau) = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    rheobase = []        # (V_th (1 - tau), the smallest current on the grid that fires within T steps)
    for ax, v_th, tau in [(ax_th, v, TAU_DECAY) for v in (V_TH / 2, V_TH, 2 * V_TH)] + \
                         [(ax_tau, V_TH, k) for k in (0.0, TAU_DECAY, 0.5, 0.9)]:
        _, o = run_lif(x, v_th=v_th, tau_decay=tau)
        ax.plot(xs, o.mean(axis=0), label=f"V_th = {v_th}" if ax is ax_th else f"tau_decay = {tau}")
        rheobase.append((v_th * (1 - tau), float(xs[o.any(axis=0)][0])))
        print(f"V_th = {v_th:<5} tau = {tau:<5}: first current that fires = {rheobase[-1][1]:.2f}, "
              f"rheobase V_th (1 - tau) = {rheobase[-1][0]:.3f}")
    print(f"(the grid of currents has steps of {xs[1] - xs[0]:.2f}; with tau = 0.9 the membrane needs more than\n"
          f" T = {T} steps to reach its fixed point, so the first current that fires lies further above the rheobase)")
    ax_th.set(xlabel="constant input current x", ylabel=f"firing rate over T = {T}", title="threshold V_th")
    ax_tau.set(xlabel="constant input current x", title=f"membrane decay tau_decay (V_th = {V_TH})")
    ax_th.legend(fontsize=8)
    ax_tau.legend(fontsize=8)
    save_figure(fig, "04_lif_rates.png")
    return finish({"hand_equals_engine_membrane": hand_vs_engine, "hand_equals_engine_spikes": spikes_equal,
                   "rheobase_and_first_firing": rheobase, "current_step": float(xs[1] - xs[0])},
                  "lesson 05 -- H has no useful derivative, so how do we train this?")


if __name__ == "__main__":
    main()
