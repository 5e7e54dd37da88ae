"""Lesson 05 -- why the spike needs a surrogate gradient, and what each surrogate looks like.

What you will learn: why plain backpropagation cannot train a spiking network, and the trick STBP
uses instead -- keep the step in the forward pass, use a smooth stand-in for its derivative in the
backward pass. The paper's stand-in is the rectangle of width a = ``minisnn.paper.SURROGATE_WIDTH``.

A neuron fires o = H(v), v = u - V_th, with H the Heaviside step. Its true derivative is 0 for every
v != 0 (and undefined at 0), so by the chain rule every gradient that passes through a spike is zero:
backpropagation alone cannot train a spiking network. STBP keeps H in the forward pass and replaces
dH/dv in the backward pass by a surrogate h'(v), the derivative of a smooth step h.

What you will see:

1. Finite differences through a spike: the firing rate as a function of the input weight is a
   staircase, flat almost everywhere -- its true gradient is 0 -- while the surrogate gradient is not.
2. The four surrogates of ``minisnn.functions.surrogate`` and the smooth steps they come from
   (``05_surrogates.png``), with their peak h'(0) and their area: 1 over the whole line for all of them,
   like the Dirac delta that dH/dv really is (atan has heavy tails: 10% of its area lies outside [-2, 2]).
3. Training one layer of LIF neurons to fire at target rates with each surrogate, and with the true
   derivative (a surrogate that returns 0): the true derivative never moves; every surrogate learns
   (``05_surrogate_training.png``).

Run:  python lessons/05_surrogates.py      (add --fast or MINISNN_FAST=1 for the test mode)
"""
import numpy as np

from _common import FAST, finish, plt, save_figure, section, title
from minisnn import Tensor, no_grad
from minisnn.functions.linear import linear
from minisnn.functions.neuron import lif
from minisnn.functions.surrogate import SURROGATES, Surrogate, get_surrogate
from minisnn.paper import SURROGATE_WIDTH

INTRODUCES = ("minisnn.functions.surrogate.SURROGATES", "minisnn.functions.surrogate.Surrogate",
              "minisnn.functions.surrogate.get_surrogate", "minisnn.paper.SURROGATE_WIDTH")

NAMES = ("rectangular", "triangle", "sigmoid", "atan")


class TrueDerivative(Surrogate):
    """dH/dv = 0 for every v != 0: what plain backpropagation through a spike would use."""

    def grad(self, v):
        return v * 0


def rates_of(W, spikes_in, surrogate):
    """Firing rate of each output neuron: x = spikes_in W^T, o = LIF(x), rate = mean over T and N."""
    T, N, n_in = spikes_in.shape
    x = linear(Tensor(spikes_in.reshape(T * N, n_in)), W).reshape(T, N, -1)
    return lif(x, surrogate=surrogate).mean(axis=(0, 1))


def main(argv=None):
    title("Lesson 05: the spike has no useful derivative -- surrogates")
    rng = np.random.default_rng(0)
    T, N, n_in, n_out = (8, 4, 10, 3) if FAST else (20, 16, 20, 5)
    spikes_in = (rng.random((T, N, n_in)) < 0.3).astype(np.float64)   # random input spike trains

    section("1. the rate as a function of one weight: a staircase")
    W0 = rng.standard_normal((n_out, n_in)) * 0.3
    ws = np.linspace(-1, 2, 61 if FAST else 301)
    curve = []
    for w in ws:
        W = W0.copy()
        W[0, 0] = w
        with no_grad():
            curve.append(float(rates_of(Tensor(W), spikes_in, "rectangular").data[0]))
    curve = np.array(curve)
    steps = np.diff(curve)
    flat_share = float(np.mean(steps == 0))
    print(f"rate of neuron 0 over {len(ws)} values of W[0, 0]: it changes on {np.count_nonzero(steps)} "
          f"intervals and is flat on {np.sum(steps == 0)} -- the true derivative is 0 there")
    slope = {}
    for name in ("rectangular", "true derivative"):
        W = Tensor(W0.copy(), requires_grad=True)
        surrogate = TrueDerivative() if name == "true derivative" else name
        rates_of(W, spikes_in, surrogate)[0].backward()
        slope[name] = float(W.grad[0, 0])
        print(f"d rate_0 / d W[0, 0] with {name:<16}: {W.grad[0, 0]: .4f}")

    section("2. the surrogates h'(v) and the smooth steps h(v) they are derivatives of")
    v = np.linspace(-2, 2, 401 if FAST else 4001)
    dv = v[1] - v[0]
    fig, (ax_h, ax_g) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax_h.step(v, (v >= 0).astype(float), "k", where="post", lw=2, label="H(v): the real spike")
    peak, area = "peak h'(0)", "area in [-2, 2]"
    print(f"{'surrogate':<12} {'parameters':<14} {peak:>10} {area:>16}")
    areas = {}
    for name in NAMES:
        s = get_surrogate(name)
        g = s.grad(v)
        h = np.cumsum(g) * dv                                   # integrate h' to get the smooth step
        params = ", ".join(f"{k}={val:g}" for k, val in vars(s).items())
        areas[name] = float(g.sum() * dv)
        print(f"{name:<12} {params:<14} {float(s.grad(np.zeros(1))[0]):>10.3f} {areas[name]:>16.3f}")
        ax_h.plot(v, h, label=name)
        ax_g.plot(v, g, label=name)
    ax_h.set(xlabel="v = u - V_th", title="forward: H(v) and the smooth steps h(v)")
    ax_g.set(xlabel="v = u - V_th", title="backward: surrogate h'(v) instead of dH/dv")
    ax_h.legend(fontsize=8)
    ax_g.legend(fontsize=8)
    save_figure(fig, "05_surrogates.png")
    print(f"(the paper's is the rectangle, a = SURROGATE_WIDTH = {SURROGATE_WIDTH}; all surrogates: "
          f"{sorted(set(SURROGATES) - {'smooth_sigmoid'})};\n 'smooth_sigmoid' is not a surrogate but a checking "
          "device: lesson 06 uses it to gradcheck the neuron)")

    section("3. learning target firing rates with each surrogate")
    target = np.linspace(0.1, 0.6, n_out)
    steps, lr = (30, 2.0) if FAST else (150, 2.0)
    fig, ax = plt.subplots(figsize=(6, 3.8))
    final_loss = {}
    W_start = rng.standard_normal((n_out, n_in)) * 0.1          # every surrogate starts from the same weights
    for name in NAMES + ("true derivative",):
        W = Tensor(W_start.copy(), requires_grad=True)
        surrogate = TrueDerivative() if name == "true derivative" else name
        losses = []
        for _ in range(steps):
            loss = ((rates_of(W, spikes_in, surrogate) - target) ** 2).mean()
            W.grad = None
            loss.backward()
            W.data -= lr * W.grad
            losses.append(loss.item())
        ax.semilogy(losses, label=name)
        final_loss[name] = (losses[0], losses[-1])
        print(f"{name:<16} loss {losses[0]:.4f} -> {losses[-1]:.5f}")
    ax.set(xlabel="gradient step", ylabel="mean squared rate error",
           title="training LIF neurons to target rates")
    ax.legend(fontsize=8)
    save_figure(fig, "05_surrogate_training.png")
    return finish({"flat_share_of_rate_curve": flat_share, "slope_true_derivative": slope["true derivative"],
                   "slope_rectangular": slope["rectangular"], "surrogate_areas": areas,
                   "loss_first_last": final_loss},
                  "lesson 06 -- how the surrogate travels back through time (STBP).")


if __name__ == "__main__":
    main()
