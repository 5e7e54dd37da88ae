"""Lesson 09 -- threshold-dependent batch norm (tdBN) by hand: forward, backward, running statistics.

What you will learn: the normalisation the paper is named after. tdBN takes the input currents x of a
spiking layer, [T, N, C, H, W], and for every channel c uses all T N H W of its values at once:

    mu_c   = mean of x[:, :, c]                     var_c = mean of (x[:, :, c] - mu_c)^2
    x_hat  = (x - mu_c) / sqrt(var_c + eps)
    y      = lambda_c * alpha * V_th * x_hat + beta_c          (lambda = 1, beta = 0 at the start)

so that the neurons after it see currents on the scale of their threshold V_th (alpha = 1, or
1/sqrt(2) before a residual addition: lesson 10). Plain batch norm is the same with alpha V_th
replaced by 1 and, in a spiking net, statistics taken at every timestep on its own.

The backward, derived once. With s = alpha V_th, n = T N H W values per channel, r = 1/sqrt(var + eps)
and g_hat = dL/dy * lambda * s: x_hat_i = (x_i - mu) r depends on every x_j through mu and var,

    d x_hat_i / d x_j = r (delta_ij - 1/n) - r x_hat_i x_hat_j / n,

and summing over i gives

    dL/dx      = r * (g_hat - mean(g_hat) - x_hat * mean(g_hat * x_hat))      (means per channel)
    dL/dlambda = sum(dL/dy * s * x_hat),       dL/dbeta = sum(dL/dy).

Running statistics, for evaluation (where a batch's own statistics would make a prediction depend on
the other images of the batch): after every training step

    running_mean = (1 - m) running_mean + m mu,    running_var = (1 - m) running_var + m var n / (n - 1)

(m = 0.1; the unbiased variance, as PyTorch), and eval mode uses them in place of mu and var.

What you will see:

1. The forward by hand equals ``nn.TdBN`` and ``functions.norm.tdbn``.
2. The backward by hand equals the engine's, for x, lambda and beta, and both pass ``gradcheck``.
3. Why alpha V_th: after tdBN the currents are N(0, V_th^2), and 16 % of them reach V_th
   (P(z >= 1)); after plain batch norm they are N(0, 1) and 31 % do (P(z >= V_th)). tdBN also puts
   more of them where the surrogate gradient is non-zero, |x - V_th| < 1/2 (``09_tdbn_scale.png``, left).
4. Why statistics over T: for a sequence whose statistics change with t, per-timestep batch norm
   normalises each step by itself in training but has only one set of running statistics for
   evaluation, so its outputs in the two modes disagree; tdBN's agree (``09_tdbn_scale.png``, right).
5. The running mean approaching the data's mean as 1 - (1 - m)^k after k steps (``09_running_stats.png``).

Run:  python lessons/09_tdbn_by_hand.py      (add --fast or MINISNN_FAST=1 for the test mode)
"""
import math

import numpy as np

from _common import FAST, finish, plt, save_figure, section, title
from minisnn import Function, Tensor, no_grad
from minisnn.functions.norm import BatchNormFunction, batch_norm, tdbn
from minisnn.gradcheck import gradcheck
from minisnn.nn import LIF, BatchNorm, TdBN
from minisnn.paper import SURROGATE_WIDTH, V_TH

INTRODUCES = ("minisnn.nn.TdBN", "minisnn.nn.BatchNorm", "minisnn.functions.norm.tdbn",
              "minisnn.functions.norm.batch_norm", "minisnn.functions.norm.BatchNormFunction")

AXES = (0, 1, 3, 4)          # the statistics of channel c run over t, n, h, w of x [T, N, C, H, W]


class TdBNByHand(Function):
    """tdBN of x [T, N, C, H, W] in training mode, with the backward derived in the docstring above."""

    def __init__(self, alpha=1.0, v_th=V_TH, eps=1e-5):
        self.s, self.eps = alpha * v_th, eps

    def forward(self, x, lam, beta):
        per_channel = (1, 1, -1, 1, 1)
        mu = x.mean(axis=AXES, keepdims=True)
        var = ((x - mu) ** 2).mean(axis=AXES, keepdims=True)
        self.r = 1 / np.sqrt(var + self.eps)
        self.x_hat = (x - mu) * self.r
        self.lam = lam.reshape(per_channel)
        return self.lam * self.s * self.x_hat + beta.reshape(per_channel)

    def backward(self, gy):
        g_hat = gy * self.lam * self.s
        gx = self.r * (g_hat - g_hat.mean(axis=AXES, keepdims=True)
                       - self.x_hat * (g_hat * self.x_hat).mean(axis=AXES, keepdims=True))
        return gx, (gy * self.s * self.x_hat).sum(axis=AXES), gy.sum(axis=AXES)


def normal_tail(z):
    """P(Z >= z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2))


def main(argv=None):
    title("Lesson 09: tdBN by hand -- forward, backward, running statistics")
    rng = np.random.default_rng(0)
    T, N, C, H = (2, 4, 3, 4) if FAST else (4, 16, 8, 8)

    section("1. the forward by hand and the engine's")
    x = (rng.standard_normal((T, N, C, H, H)) * 3 + 2).astype(np.float32)    # currents far from V_th's scale
    lam = rng.uniform(0.5, 1.5, C).astype(np.float32)
    beta = rng.normal(0, 0.2, C).astype(np.float32)
    layer = TdBN(C)
    layer.weight.data, layer.bias.data = lam.copy(), beta.copy()
    with no_grad():
        y_layer = layer(Tensor(x)).data
        y_function = tdbn(Tensor(x), Tensor(lam), Tensor(beta), None, None, training=True).data
        y_hand = TdBNByHand()(Tensor(x), Tensor(lam), Tensor(beta)).data
    forward_gap = float(max(np.abs(y_hand - y_layer).max(), np.abs(y_hand - y_function).max()))
    print(f"{layer}: input mean {x.mean():.2f}, std {x.std():.2f} -> output per channel: mean - beta "
          f"{(y_layer - beta.reshape(1, 1, -1, 1, 1)).mean(axis=AXES).round(4).tolist()}")
    print(f"  std / lambda {(y_layer.std(axis=AXES) / lam).round(4).tolist()}  (= alpha V_th = {V_TH})")
    print(f"max |by hand - nn.TdBN|, |by hand - functions.norm.tdbn| = {forward_gap:.1e}  (float32)")

    section("2. the backward by hand, the engine's, and finite differences")
    x64, lam64, beta64 = x.astype(np.float64), lam.astype(np.float64), beta.astype(np.float64)
    gy = rng.standard_normal(x.shape)
    grads = {}
    for name, fn in (("by hand", lambda a, l, b: TdBNByHand()(a, l, b)),
                     ("engine", lambda a, l, b: tdbn(a, l, b, None, None, training=True))):
        inputs = [Tensor(a.copy(), requires_grad=True) for a in (x64, lam64, beta64)]
        fn(*inputs).backward(gy)
        grads[name] = [t.grad for t in inputs]
    backward_gap = max(float(np.abs(a - b).max() / np.abs(b).max()) for a, b in zip(grads["by hand"], grads["engine"]))
    print(f"largest |by hand - engine| over dL/dx, dL/dlambda, dL/dbeta, relative to their scale: {backward_gap:.1e}")
    small = [a[:2, :2, :, :3, :3].copy() for a in (x64,)] + [lam64, beta64]
    check_hand = gradcheck(lambda a, l, b: TdBNByHand()(a, l, b), *small)
    check_engine = gradcheck(lambda a, l, b: tdbn(a, l, b, None, None, training=True), *small)
    print(f"gradcheck (float64): by hand {check_hand:.1e}, engine {check_engine:.1e}")
    with no_grad():
        via_batch_norm = batch_norm(Tensor(x), Tensor(lam), Tensor(beta), None, None, True, scale=1.0 * V_TH).data
        folded = Tensor(x.reshape((T * N,) + x.shape[2:]))          # time folded into the batch
        via_function = BatchNormFunction(None, None, True, scale=V_TH)(folded, Tensor(lam), Tensor(beta)).data
    engine_layers_gap = float(max(np.abs(via_batch_norm - y_function).max(),
                                  np.abs(via_function.reshape(x.shape) - y_function).max()))
    print(f"tdbn = batch_norm(scale = alpha V_th) = BatchNormFunction on the [T*N, C, H, W] batch: max difference "
          f"{engine_layers_gap:.1e}\n(BatchNormFunction's backward is the three lines derived above)")
    print(f"dL/dx sums to zero over each channel (a shift of x changes nothing): "
          f"{np.abs(grads['engine'][0].sum(axis=AXES)).max():.1e}")

    section("3. why alpha * V_th: the currents the neurons see")
    x = rng.standard_normal((T, 64 if FAST else 256, C, H, H)).astype(np.float32) * 5 + 1
    with no_grad():
        currents = {"tdBN": TdBN(C)(Tensor(x)).data, "plain BN": BatchNorm(C, per_timestep=True)(Tensor(x)).data}
    width = SURROGATE_WIDTH
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    share, window, rates = {}, {}, {}
    for k, (name, y) in enumerate(currents.items()):
        with no_grad():
            rates[name] = float(LIF()(Tensor(y)).data.mean())
        share[name] = float((y >= V_TH).mean())
        window[name] = float((np.abs(y - V_TH) < width / 2).mean())
        axes[k].hist(y.ravel(), bins=np.linspace(-4, 4, 81), density=True, color=f"C{k}")
        axes[k].axvline(V_TH, color="k", ls="--", lw=1)
        axes[k].axvspan(V_TH - width / 2, V_TH + width / 2, color="gray", alpha=0.2)
        axes[k].set(xlabel="current x into the LIF", title=f"{name}: std {y.std():.2f}, {share[name]:.0%} >= V_th")
    expected = {"tdBN": normal_tail(1.0), "plain BN": normal_tail(V_TH)}
    for name in currents:
        print(f"{name:>8}: {share[name]:.1%} of the currents >= V_th (normal theory {expected[name]:.1%}); "
              f"{window[name]:.1%} inside the surrogate window; LIF firing rate {rates[name]:.3f}")

    section("4. why the statistics run over T: train and eval modes")
    steps = 30 if FAST else 200
    drift = np.arange(T, dtype=np.float32).reshape(T, 1, 1, 1, 1)
    make = lambda: (rng.standard_normal((T, 32, C, H, H)) * (1 + drift / 2) + drift).astype(np.float32)  # noqa: E731
    norms = {"tdBN": TdBN(C), "per-timestep BN": BatchNorm(C, per_timestep=True)}
    history = []
    for step in range(steps):
        batch = make()
        with no_grad():
            for layer in norms.values():
                layer(Tensor(batch))
        history.append(norms["tdBN"].running_mean.copy())
    probe = make()
    gaps = {}
    for name, layer in norms.items():
        with no_grad():
            train_out = layer(Tensor(probe)).data
            layer.eval()
            eval_out = layer(Tensor(probe)).data
            layer.train()
        gaps[name] = np.abs(train_out - eval_out).mean(axis=(1, 2, 3, 4))          # per timestep
        print(f"{name:>16}: mean |train-mode output - eval-mode output| at t = 0..{T - 1}: "
              + " ".join(f"{g:.3f}" for g in gaps[name]))
    print("x[t] ~ N(t, (1 + t/2)^2): per-timestep BN trains on each step's own statistics but evaluates every step\n"
          "with their running average, so what it learned in training is not what runs in evaluation.")
    axes[2].plot(range(T), gaps["tdBN"], "o-", label="tdBN")
    axes[2].plot(range(T), gaps["per-timestep BN"], "s-", label="per-timestep BN")
    axes[2].set(xlabel="timestep t", ylabel="mean |train - eval output|", title="the same input in both modes")
    axes[2].legend()
    save_figure(fig, "09_tdbn_scale.png")

    section("5. running statistics")
    true_mean = float(probe.mean())
    history = np.array(history).mean(axis=1)                    # mean over channels, per step
    k = np.arange(1, steps + 1)
    theory = (1 - (1 - 0.1) ** k) * true_mean
    print(f"data mean {true_mean:.3f}; running mean after 10, 30 steps: {history[9]:.3f}, {history[29]:.3f} "
          f"(theory (1 - 0.9^k) mean: {theory[9]:.3f}, {theory[29]:.3f})")
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(k, history, label="running_mean (mean over channels)")
    ax.plot(k, theory, "k--", lw=0.8, label="(1 - (1 - m)^k) x data mean")
    ax.set(xlabel="training step k", ylabel="running mean", title="tdBN's running mean, m = 0.1")
    ax.legend()
    save_figure(fig, "09_running_stats.png")

    return finish({"forward_gap": forward_gap, "backward_gap": backward_gap,
                   "gradcheck_error": max(check_hand, check_engine),
                   "share_at_threshold": [share["tdBN"], share["plain BN"]],
                   "share_at_threshold_theory": [expected["tdBN"], expected["plain BN"]],
                   "share_in_surrogate_window": [window["tdBN"], window["plain BN"]],
                   "train_eval_gap": [float(gaps["tdBN"].max()), float(gaps["per-timestep BN"].max())],
                   "running_mean_after_30": [float(history[29]), float(theory[29])],
                   "engine_layers_agree": engine_layers_gap},
                  "lesson 10 -- residual blocks, and why alpha = 1/sqrt(2) where two branches meet.")


if __name__ == "__main__":
    main()
