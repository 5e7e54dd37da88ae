"""Lesson 02 -- checking a gradient by finite differences.

Every hand-written backward in minisnn is checked against the central difference

    dL/dx[j]  ~=  (L(x + eps e_j) - L(x - eps e_j)) / (2 eps),

whose error is O(eps^2) from truncation plus O(rounding / eps) from subtracting two nearly equal
numbers.

What you will learn: how to test a hand-written backward pass, why the test runs in float64, and
what a failing check looks like. Every later lesson that writes a backward (the LIF neuron in 06, the
convolution in 07, tdBN in 09) checks it this way.

What you will see:

1. The error of the difference quotient against eps, in float64 and float32 (``02_eps_sweep.png``):
   a V shape. Too large an eps: truncation; too small: rounding. float64 with eps ~ 1e-5 is accurate to
   ~1e-10; float32 never gets much below ~1e-5, which is why gradient checks run in float64.
2. ``minisnn.gradcheck.gradcheck`` on the engine's ``exp``, on a Softplus Function written here and on
   a small composite of Tensor operations (x @ W, then exp, then a product).
3. A Function with a deliberate bug in its backward, and the error message gradcheck gives: which
   input, which element, both values.

Run:  python lessons/02_gradient_check.py      (add --fast or MINISNN_FAST=1 for the test mode)
"""
import numpy as np

from _common import FAST, finish, plt, save_figure, section, title
from minisnn import Function
from minisnn.functions.basic import exp
from minisnn.gradcheck import GradientCheckError, gradcheck

INTRODUCES = ("minisnn.functions.basic.exp", "minisnn.gradcheck.gradcheck", "minisnn.gradcheck.GradientCheckError")


class Softplus(Function):
    """y = log(1 + exp(x));  dL/dx = sigmoid(x) * dL/dy = dL/dy / (1 + exp(-x))."""

    def forward(self, x):
        self.x = x
        return np.log1p(np.exp(x))

    def backward(self, gy):
        return gy / (1 + np.exp(-self.x))


class BuggySoftplus(Function):
    """y = log(1 + exp(x)); the correct backward is sigmoid(x) * gy. This one forgets a minus sign."""

    def forward(self, x):
        self.x = x
        return np.log1p(np.exp(x))

    def backward(self, gy):
        return gy / (1 + np.exp(self.x))      # bug: should be 1 + exp(-x)


def main(argv=None):
    title("Lesson 02: checking a gradient by finite differences")
    rng = np.random.default_rng(0)

    section("1. the error of a central difference against eps (f = exp, f' = exp)")
    points = np.linspace(0.0, 1.0, 101)      # the worst case over many x, so luck cannot hide the trend
    eps_values = np.logspace(-12, -1, 12 if FAST else 45)
    errors, best_error = {}, {}
    for dtype in (np.float64, np.float32):
        x = points.astype(dtype)
        errs = []
        for eps in eps_values:
            e = dtype(eps)
            numeric = (np.exp(x + e) - np.exp(x - e)) / (2 * e)
            errs.append(np.abs(numeric.astype(np.float64) - np.exp(points)).max())
        errors[dtype.__name__] = np.maximum(errs, 1e-17)
        best = int(np.argmin(errors[dtype.__name__]))
        best_error[dtype.__name__] = float(errors[dtype.__name__][best])
        print(f"{dtype.__name__}: best eps ~ {eps_values[best]:.0e}, error {errors[dtype.__name__][best]:.1e}")

    fig, ax = plt.subplots(figsize=(6, 3.8))
    for name, errs in errors.items():
        ax.loglog(eps_values, errs, marker=".", label=name)
    ax.loglog(eps_values, eps_values ** 2 * np.e / 6, "k--", lw=0.8, label="truncation ~ eps^2 f'''/6")
    ax.set(xlabel="eps", ylabel="max |numeric - exact| on [0, 1]", ylim=(1e-13, 1e1),
           title="central difference of exp: truncation vs rounding")
    ax.legend(fontsize=8)
    save_figure(fig, "02_eps_sweep.png")

    section("2. gradcheck on Functions (float64)")
    worst = {"exp": gradcheck(lambda t: exp(t), rng.standard_normal((3, 4))),
             "Softplus": gradcheck(lambda t: Softplus()(t), rng.standard_normal(5) * 3),
             "exp(x @ W) * x": gradcheck(lambda x, W: exp(x @ W) * x, rng.standard_normal((4, 3)),
                                         rng.standard_normal((3, 3)) * 0.5)}
    for name, error in worst.items():
        print(f"{name:<16} largest |backward - finite difference| = {error:.1e}")
    print("(gradcheck draws a random cotangent w and compares dL/dx of L = sum(w * f(x)) element by element;\n"
          " it checks every input: x and W above)")

    section("3. gradcheck catches a wrong backward")
    try:
        gradcheck(lambda t: BuggySoftplus()(t), rng.standard_normal(5))
        caught = False
    except GradientCheckError as err:
        print("GradientCheckError:", err)
        caught = True
    return finish({"best_error_float64": best_error["float64"], "best_error_float32": best_error["float32"],
                   "worst_gradcheck_error": max(worst.values()), "bug_caught": caught},
                  "lesson 03 builds layers that own their parameters: Module and Parameter.")


if __name__ == "__main__":
    main()
