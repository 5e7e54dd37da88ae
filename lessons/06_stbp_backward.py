"""Lesson 06 -- STBP: the hand-written backward through time next to the unrolled autograd.

What you will learn: how the error of a spiking layer flows back through space (to the input current
of the same step) and through time (to earlier steps, through the membrane), the equations the
engine's LIF backward implements, and how to check them -- by finite differences (lesson 02) and
against autograd on the same neuron written with basic operations.

The LIF neuron over T steps is a small recurrent network. There are two ways to get its gradient:

* Unroll it into basic Tensor operations (one multiply, add and spike per step) and let autograd
  walk the graph (``minisnn.functions.neuron.lif_unrolled``, printed in section 1) -- 5 T nodes per layer, each saving its inputs.
* Derive the backward by hand once (spatio-temporal backpropagation, STBP) and run it as one loop
  from t = T-1 down to 0. ``minisnn.functions.neuron.LIF`` does this:

      dL/do[t] = gy[t] - tau_decay * u[t] * dL/du[t+1]                            (spike -> reset of u[t+1])
      dL/du[t] = dL/do[t] * h'(u[t] - V_th) + tau_decay * dL/du[t+1] * (1 - o[t])  (spike path + leak path)
      dL/dx[t] = dL/du[t],      dL/du[T] = 0

What you will see:

0. ``gradcheck`` on the engine's LIF Function. The real spike is a step, so finite differences see
   a zero derivative almost everywhere; with the ``smooth_sigmoid`` spike (lesson 05) the forward
   is smooth and its exact derivative is used in the backward, so the STBP equations above are
   checked exactly. With ``detach_reset`` the check fails, as it must: that option drops a path of
   the true derivative on purpose.
1. In float64 both give the same dL/dx (the same operations in the same order: bit for bit), with and
   without ``detach_reset`` (which drops the reset path: dL/do[t] = gy[t]).
2. Where the gradient goes in time (``06_stbp.png``, left): a loss on the last spike reaches earlier
   steps only through u[t+1], i.e. through the leak (factor tau_decay (1 - o[t])) and the reset
   (factor -tau_decay u[t] h'): for a silent neuron near threshold tau_decay (1 - u[t]) = 0.15, so it
   shrinks about 7x per step -- with tau_decay = 0.25 the temporal path matters much less than the
   spatial one. Crosses: the unrolled autograd, on the same points.
3. Speed (``06_stbp.png``, right; the best of five runs each): the hand-written loop builds one graph
   node instead of 5 T, and pulls ahead as T grows (how far depends on the machine and its load).

Run:  python lessons/06_stbp_backward.py      (add --fast or MINISNN_FAST=1 for the test mode)
"""
import inspect

import numpy as np

from _common import FAST, Timer, finish, plt, save_figure, section, title
from minisnn import Tensor
from minisnn.functions.neuron import LIF, lif, lif_unrolled
from minisnn.gradcheck import GradientCheckError, gradcheck
from minisnn.paper import TAU_DECAY as TAU, V_TH

INTRODUCES = ("minisnn.functions.neuron.LIF", "minisnn.functions.neuron.lif_unrolled")


def grad_wrt_input(fn, x, weight):
    """dL/dx for L = sum(weight * fn(x))."""
    xt = Tensor(x.copy(), requires_grad=True)
    fn(xt).backward(weight)
    return xt.grad


def main(argv=None):
    title("Lesson 06: STBP -- hand-written backward through time vs unrolled autograd")
    rng = np.random.default_rng(0)
    T, N = (6, 50) if FAST else (8, 2000)

    section("0. gradcheck of the LIF Function (float64, smooth spike)")
    currents = rng.standard_normal((4, 2, 3)) * 0.6 + 0.4   # [T, N, neurons]
    check = gradcheck(lambda x: LIF(V_TH, TAU, surrogate="smooth_sigmoid")(x), currents)
    print(f"the reference Function minisnn.functions.neuron.LIF: largest |STBP backward - finite difference| = {check:.1e}")
    check_fast = gradcheck(lambda x: lif(x, surrogate="smooth_sigmoid"), currents)
    print(f"lif(x), which runs its fast version (lesson 07 shows the idea on the convolution):        {check_fast:.1e}")
    check = max(check, check_fast)
    try:
        gradcheck(lambda x: LIF(V_TH, TAU, surrogate="smooth_sigmoid", detach_reset=True)(x), currents)
        detach_is_exact = True
    except GradientCheckError as err:
        detach_is_exact = False
        print("with detach_reset=True gradcheck fails, as it must:", str(err).split(";")[0])
        print("  detach_reset drops the reset path on purpose (fzenke/spytorch#2: the reset's gradient makes the\n"
              "  threshold repel), so its backward is no longer the derivative of the forward pass.")

    section("1. the same gradient, two ways (float64)")
    print("the unrolled neuron, from minisnn/functions/neuron.py -- autograd differentiates each of its ops:\n")
    print(inspect.getsource(lif_unrolled))
    x = rng.standard_normal((T, N)) * 0.4 + 0.3
    weight = rng.standard_normal((T, N))
    differences = {}
    for detach in (False, True):
        g_hand = grad_wrt_input(lambda t: lif(t, V_TH, TAU, detach_reset=detach), x, weight)
        g_auto = grad_wrt_input(lambda t: lif_unrolled(t, detach_reset=detach), x, weight)
        differences[detach] = float(np.abs(g_hand - g_auto).max())
        print(f"detach_reset={detach!s:<5}: max |STBP - unrolled autograd| = {np.abs(g_hand - g_auto).max():.1e}"
              f"   (gradient scale {np.abs(g_hand).mean():.2f})")

    section("2. how a loss on the last step reaches earlier steps")
    x1 = np.full((T, 3), 0.45)                    # three neurons, constant drive
    x1[:, 1] = 0.3                                # this one never fires: pure leak path
    x1[:, 2] = 0.55                               # this one fires every step
    only_last = np.zeros_like(x1)
    only_last[-1] = 1.0                           # L = sum of the spikes at t = T-1
    fig, (ax_g, ax_t) = plt.subplots(1, 2, figsize=(11, 3.8))
    for k, label in enumerate(["x = 0.45 (fires every other step)", "x = 0.30 (silent)", "x = 0.55 (always fires)"]):
        g_hand = grad_wrt_input(lambda t: lif(t, V_TH, TAU), x1, only_last)[:, k]
        g_auto = grad_wrt_input(lambda t: lif_unrolled(t), x1, only_last)[:, k]
        line, = ax_g.plot(g_hand, marker="o", label=label)
        ax_g.plot(g_auto, "x", color="k", markersize=8)
        print(f"{label:<34} dL/dx[t], t = 0..{T - 1}: " + " ".join(f"{v:+.3f}" for v in g_hand))
        if k == 1:
            silent = g_hand
    ax_g.plot([], [], "x", color="k", label="unrolled autograd")
    ax_g.set(xlabel="timestep t", ylabel="dL/dx[t]", title="L = o[T-1]: gradient back through time")
    ax_g.legend(fontsize=7)

    section("3. speed: forward + backward, float32")
    Ts = [2, 4] if FAST else [2, 4, 8, 16]
    width = 256 if FAST else 16384
    times = {"STBP (hand-written)": [], "unrolled autograd": []}
    for steps in Ts:
        xs = rng.standard_normal((steps, width)).astype(np.float32)
        w = np.ones_like(xs)
        for name, fn in (("STBP (hand-written)", lambda t: lif(t)), ("unrolled autograd", lif_unrolled)):
            runs = []
            for _ in range(5):                   # the best of five: the machine may be busy with other work
                with Timer() as timer:
                    grad_wrt_input(fn, xs, w)
                runs.append(timer.seconds)
            times[name].append(min(runs) * 1e3)
        print(f"T = {steps:2d}, {width} neurons: STBP {times['STBP (hand-written)'][-1]:6.2f} ms, "
              f"unrolled {times['unrolled autograd'][-1]:6.2f} ms "
              f"({times['unrolled autograd'][-1] / times['STBP (hand-written)'][-1]:.1f}x)")
    for name, ms in times.items():
        ax_t.plot(Ts, ms, marker="o", label=name)
    ax_t.set(xlabel="timesteps T", ylabel="ms per forward + backward", title=f"{width} neurons",
             xscale="log", yscale="log")
    ax_t.set_xticks(Ts, [str(t) for t in Ts])
    ax_t.minorticks_off()
    ax_t.legend(fontsize=8)
    save_figure(fig, "06_stbp.png")
    leak = silent[-2] / silent[-1]
    u = 0.3 * (1 - TAU ** (T - 1)) / (1 - TAU)            # the silent neuron's membrane at t = T-2
    predicted = TAU * (1 - u * 1.0)                        # leak tau (1 - o) plus reset -tau u h', h' = 1 here
    print(f"the silent neuron, one step back: dL/dx[T-2] / dL/dx[T-1] = {leak:.4f}; by the equations\n"
          f"  tau_decay (1 - o) - tau_decay u h' = {TAU} (1 - 0) - {TAU} * {u:.4f} * 1 = {predicted:.4f}")
    speedup = [u / h for u, h in zip(times["unrolled autograd"], times["STBP (hand-written)"])]
    return finish({"gradcheck_error": check, "detach_reset_is_exact_derivative": detach_is_exact, "stbp_minus_unrolled": max(differences.values()),
                   "silent_neuron_step_ratio": [float(leak), float(predicted)], "speedup_by_T": speedup},
                  "lesson 07 -- the convolution that feeds the neurons.")


if __name__ == "__main__":
    main()
