"""Lesson 02 -- checking a gradient by finite differences.

Every hand-written backward in minisnn is checked against the central difference

    dL/dx[j]  ~=  (L(x + eps e_j) - L(x - eps e_j)) / (2 eps),

whose error is O(eps^2) from truncation plus O(rounding / eps) from subtracting two nearly equal
numbers. What you will see:

1. The error of the difference quotient against eps, in float64 and float32 (``02_eps_sweep.png``):
   a V shape. Too large an eps: truncation; too small: rounding. float64 with eps ~ 1e-5 is accurate to
   ~1e-10; float32 never gets much below ~1e-5, which is why gradient checks run in float64.
2. ``minisnn.gradcheck`` on the real layers: convolution and the LIF neuron (with the smooth spike,
   whose forward is differentiable, so its STBP backward can be checked exactly).
3. A Function with a deliberate bug in its backward, and the error message gradcheck gives: which
   input, which element, both values.

Run:  python lessons/02_gradient_check.py      (add --fast or MINISNN_FAST=1 for the test mode)
"""
import numpy as np

from _common import FAST, plt, save_figure, section, title
from minisnn import Function
from minisnn.functions.basic import exp
from minisnn.functions.conv import conv2d
from minisnn.functions.neuron import lif
from minisnn.gradcheck import GradientCheckError, gradcheck


class BuggySoftplus(Function):
    """y = log(1 + exp(x)); the correct backward is sigmoid(x) * gy. This one forgets a minus sign."""

    def forward(self, x):
        self.x = x
        return np.log1p(np.exp(x))

    def backward(self, gy):
        return gy / (1 + np.exp(self.x))      # bug: should be 1 + exp(-x)


def main():
    title("Lesson 02: checking a gradient by finite differences")
    rng = np.random.default_rng(0)

    section("1. the error of a central difference against eps (f = exp, f' = exp)")
    points = np.linspace(0.0, 1.0, 101)      # the worst case over many x, so luck cannot hide the trend
    eps_values = np.logspace(-12, -1, 12 if FAST else 45)
    errors = {}
    for dtype in (np.float64, np.float32):
        x = points.astype(dtype)
        errs = []
        for eps in eps_values:
            e = dtype(eps)
            numeric = (np.exp(x + e) - np.exp(x - e)) / (2 * e)
            errs.append(np.abs(numeric.astype(np.float64) - np.exp(points)).max())
        errors[dtype.__name__] = np.maximum(errs, 1e-17)
        best = int(np.argmin(errors[dtype.__name__]))
        print(f"{dtype.__name__}: best eps ~ {eps_values[best]:.0e}, error {errors[dtype.__name__][best]:.1e}")

    fig, ax = plt.subplots(figsize=(6, 3.8))
    for name, errs in errors.items():
        ax.loglog(eps_values, errs, marker=".", label=name)
    ax.loglog(eps_values, eps_values ** 2 * np.e / 6, "k--", lw=0.8, label="truncation ~ eps^2 f'''/6")
    ax.set(xlabel="eps", ylabel="max |numeric - exact| on [0, 1]", ylim=(1e-13, 1e1),
           title="central difference of exp: truncation vs rounding")
    ax.legend(fontsize=8)
    save_figure(fig, "02_eps_sweep.png")

    section("2. gradcheck on the real layers (float64)")
    worst = gradcheck(lambda t: exp(t), rng.standard_normal((3, 4)))
    print(f"exp:                 largest |backward - finite difference| = {worst:.1e}")
    size = 4 if FAST else 6
    x = rng.standard_normal((2, 2, size, size))
    w = rng.standard_normal((3, 2, 3, 3))
    b = rng.standard_normal(3)
    worst = gradcheck(lambda x, w, b: conv2d(x, w, b, stride=1, padding=1), x, w, b)
    print(f"conv2d (x, W, b):    largest |backward - finite difference| = {worst:.1e}")
    currents = rng.standard_normal((4, 2, 3)) * 0.6 + 0.4   # [T, N, neurons]
    worst = gradcheck(lambda x: lif(x, surrogate="smooth_sigmoid"), currents)
    print(f"LIF, smooth spike:   largest |backward - finite difference| = {worst:.1e}")
    print("(With the real Heaviside spike the forward is a step: finite differences see 0 almost everywhere,\n"
          " so the surrogate backward is checked through the smooth spike -- lesson 04 explains why.)")

    section("3. gradcheck catches a wrong backward")
    try:
        gradcheck(lambda t: BuggySoftplus()(t), rng.standard_normal(5))
    except GradientCheckError as err:
        print("GradientCheckError:", err)
    else:
        raise SystemExit("gradcheck missed the bug -- this should never happen")
    print("\nNext: lesson 03 builds the LIF neuron whose backward we just checked.")


if __name__ == "__main__":
    main()
