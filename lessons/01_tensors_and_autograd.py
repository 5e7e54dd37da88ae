"""Lesson 01 -- tensors and reverse-mode autograd.

What you will learn: how an array that remembers where it came from lets one backward pass give the
derivative of a result with respect to every input -- the machinery every later lesson trains with.
For y = f(g(x)) the chain rule dL/dx = dL/dy * f'(g(x)) * g'(x) is applied one Function at a time,
from the loss back to the leaves.

What you will see:

1. A ``Tensor`` is a NumPy array plus three things: ``grad`` (dL/d(data), filled in by backward),
   ``creator`` (the ``Function`` that produced it) and ``requires_grad``.
2. Every operation on Tensors is a ``Function`` that works on raw arrays: ``forward`` computes the
   result and saves what ``backward`` will need; ``backward`` maps dL/dy to dL/dx (the chain rule, one
   step). Calling ``y.backward()`` walks the graph from y back to the leaves in reverse order.
3. For f(x) = x^3 - 2x the gradient from backward equals the hand-derived f'(x) = 3x^2 - 2, for a whole
   array of x at once (the figure ``01_autograd.png``).
4. Broadcasting has a gradient too: if b of shape [3] was broadcast against a [2, 3] array, dL/db is
   dL/dy summed over the broadcast axis.
5. Writing your own Function: a ``Square`` with its backward 2 x gy, used exactly like the built-ins.
6. ``no_grad()`` runs without building a graph (evaluation, parameter updates).

Run:  python lessons/01_tensors_and_autograd.py      (add --fast or MINISNN_FAST=1 for the test mode)
"""
import numpy as np

from _common import FAST, finish, plt, save_figure, section, title
from minisnn import Function, Tensor, no_grad

# The engine's names this lesson introduces (tests/test_lessons.py checks that no lesson uses a name
# before the lesson that introduces it).
INTRODUCES = ("minisnn.Tensor", "minisnn.Function", "minisnn.no_grad", "minisnn.Tensor.backward")


class Square(Function):
    """y = x^2;  dL/dx = 2 x * dL/dy."""

    def forward(self, x):
        self.x = x                  # save what backward needs
        return x * x

    def backward(self, gy):
        return 2 * self.x * gy


def square(x):
    return Square()(x)


def main(argv=None):
    title("Lesson 01: tensors and reverse-mode autograd")

    section("1. a Tensor wraps an array")
    x = Tensor(np.array(3.0), requires_grad=True, name="x")
    print("x =", x)
    print("x.data =", x.data, "| x.grad =", x.grad, "| x.creator =", x.creator)

    section("2. the graph of y = x * x + 2 * x, and backward")
    a = x * x
    y = a + 2 * x
    print("y =", y.data, " created by", type(y.creator).__name__, "whose inputs are",
          [type(t.creator).__name__ if t.creator else "a leaf" for t in y.creator.inputs])
    print("generation of each node (backward visits the highest first):",
          {"x": x.generation, "x*x": a.generation, "y": y.generation})
    y.backward()
    print(f"dy/dx from backward = {x.grad}   (by hand: 2x + 2 = {2 * 3.0 + 2})")
    dy_dx = float(x.grad)

    section("3. a whole array at once: f(x) = x^3 - 2x,  f'(x) = 3x^2 - 2")
    n = 41 if FAST else 401
    xs = Tensor(np.linspace(-2, 2, n), requires_grad=True)
    f = xs ** 3 - 2 * xs
    f.sum().backward()   # d(sum_i f(x_i))/dx_j = f'(x_j): one backward gives every derivative
    by_hand = 3 * xs.data ** 2 - 2
    err = np.abs(xs.grad - by_hand).max()
    print(f"max |autograd - by hand| over {n} points: {err:.2e}")

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(xs.data, f.data, label="f(x) = x^3 - 2x")
    ax.plot(xs.data, xs.grad, label="df/dx from backward")
    ax.plot(xs.data[::n // 20], by_hand[::n // 20], "o", mfc="none", label="3x^2 - 2 by hand")
    ax.axhline(0, color="gray", lw=0.5)
    ax.set(xlabel="x", title="reverse-mode autograd: one backward, every derivative")
    ax.legend()
    save_figure(fig, "01_autograd.png")

    section("4. broadcasting: the gradient is summed back to the input's shape")
    A = Tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    b = Tensor(np.array([10.0, 20.0, 30.0]), requires_grad=True)
    (A * b).sum().backward()
    broadcast_ok = bool(np.array_equal(b.grad, A.data.sum(axis=0)))
    print("y = A * b with A [2, 3], b [3]")
    print("dL/dA = b broadcast:\n", A.grad)
    print("dL/db = sum over rows of A:", b.grad, " (A's column sums:", A.data.sum(axis=0), ")")

    section("5. your own Function")
    x = Tensor(np.array([1.0, -2.0, 0.5]), requires_grad=True)
    square(x).sum().backward()
    print(f"Square: x = {x.data}, dL/dx = {x.grad}  (= 2x)")
    square_ok = bool(np.allclose(x.grad, 2 * x.data))

    section("6. no_grad: no graph, no gradient")
    with no_grad():
        z = x * x
    print("inside no_grad: z.creator =", z.creator, "| z.requires_grad =", z.requires_grad)
    return finish({"dy_dx_at_3": dy_dx, "max_error_vs_by_hand": float(err), "broadcast_grad_is_column_sum":
                   broadcast_ok, "own_function_grad_is_2x": square_ok, "no_grad_builds_no_graph": z.creator is None},
                  "lesson 02 checks a hand-written backward against finite differences.")


if __name__ == "__main__":
    main()
