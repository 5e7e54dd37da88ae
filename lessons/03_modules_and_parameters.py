"""Lesson 03 -- Module and Parameter from scratch: how a layer owns what it learns.

What you will learn: what a layer object is. A ``Parameter`` is a Tensor that is learned
(requires_grad is always True). A ``Module`` notices, when you assign an attribute, whether it is a
Parameter, another Module or a buffer, and files it in a table; walking those tables gives every
parameter of a whole network, with names that follow the attribute path (``hidden.weight``). The
same walk switches the network between training and evaluation (``train()`` / ``eval()``) and
collects its state as a flat dict {name: array} that saves to a file (``state_dict``).

The layer built here is the fully connected one, for x [B, in], W [out, in], b [out]:

    y = x W^T + b,       dL/dx = gy W,     dL/dW = gy^T x,     dL/db = sum over the batch of gy.

What you will see:

1. ``TinyParameter`` and ``TinyModule`` in about 30 lines, a ``TinyLinear`` and a two-layer
   ``TinyMLP`` built from them, and the names its ``named_parameters`` finds.
2. The same network from the engine's ``minisnn.nn`` (Module, Parameter, Linear, Sequential): the same
   number of parameters, and -- with the weights copied across through ``state_dict`` -- the same
   output and the same gradients. The engine's layers take sequences [T, N, ...] (time first, from
   lesson 04 on), so here T = 1.
3. A buffer and the two modes: ``RunningMean`` subtracts the batch's mean while training and keeps a
   running average of it, which it uses instead in eval mode (lesson 09's tdBN keeps its running
   statistics exactly this way).
4. Saving and loading: state_dict -> .npz -> load_state_dict, and the error a mismatched file gives.
5. Learning: the MLP fits y = sin(x) by plain gradient descent over ``parameters()``
   (``03_module_fit.png``).

Run:  python lessons/03_modules_and_parameters.py      (add --fast or MINISNN_FAST=1 for the test mode)
"""
import numpy as np

from _common import FAST, finish, output_dir, plt, save_figure, section, title
from minisnn import Function, Tensor, no_grad
from minisnn.functions.linear import linear
from minisnn.nn import Linear, Module, Parameter, Sequential

INTRODUCES = ("minisnn.nn.Module", "minisnn.nn.Parameter", "minisnn.nn.Sequential", "minisnn.nn.Linear",
              "minisnn.functions.linear.linear", "minisnn.nn.Module.parameters",
              "minisnn.nn.Module.named_parameters", "minisnn.nn.Module.named_modules",
              "minisnn.nn.Module.state_dict", "minisnn.nn.Module.load_state_dict",
              "minisnn.nn.Module.register_buffer", "minisnn.nn.Module.num_parameters",
              "minisnn.nn.Module.zero_grad", "minisnn.nn.Module.train", "minisnn.nn.Module.eval")


# -- 1. from scratch -------------------------------------------------------------------------------
class TinyParameter(Tensor):
    """A Tensor that is learned."""

    def __init__(self, data):
        super().__init__(data, requires_grad=True)


class TinyModule:
    """Files every Parameter and sub-module assigned to it; walks them by name; has two modes."""

    def __init__(self):
        object.__setattr__(self, "_params", {})
        object.__setattr__(self, "_children", {})
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if isinstance(value, TinyParameter):
            self._params[name] = value
        elif isinstance(value, TinyModule):
            self._children[name] = value
        object.__setattr__(self, name, value)

    def named_parameters(self, prefix=""):
        for name, p in self._params.items():
            yield prefix + name, p
        for name, child in self._children.items():
            yield from child.named_parameters(prefix + name + ".")

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def train(self, mode=True):
        object.__setattr__(self, "training", mode)
        for child in self._children.values():
            child.train(mode)
        return self

    def state_dict(self):
        return {name: p.data.copy() for name, p in self.named_parameters()}

    def __call__(self, x):
        return self.forward(x)


class TinyLinear(TinyModule):
    """y = x W^T + b, written with the Tensor operators of lesson 01 (autograd derives the backward)."""

    def __init__(self, n_in, n_out, rng):
        super().__init__()
        self.weight = TinyParameter(rng.standard_normal((n_out, n_in)) * np.sqrt(2 / n_in))
        self.bias = TinyParameter(np.zeros(n_out))

    def forward(self, x):
        return x @ self.weight.T + self.bias


class ReLU(Function):
    """y = max(x, 0);  dL/dx = dL/dy where x > 0, else 0."""

    def forward(self, x):
        self.positive = x > 0
        return x * self.positive

    def backward(self, gy):
        return gy * self.positive


class TinyMLP(TinyModule):
    def __init__(self, hidden, rng):
        super().__init__()
        self.hidden = TinyLinear(1, hidden, rng)
        self.out = TinyLinear(hidden, 1, rng)

    def forward(self, x):
        return self.out(ReLU()(self.hidden(x)))


class ReLUModule(Module):
    """The ReLU Function above as an engine Module, so that it fits in a Sequential."""

    def forward(self, x):
        return ReLU()(x)


# -- 3. a buffer and the two modes ------------------------------------------------------------------
class RunningMean(Module):
    """Training: y = x - mean(x) over the batch, and running = (1 - m) running + m mean(x).
    Eval: y = x - running. ``running`` is a buffer: state, saved with the model, but not learned."""

    def __init__(self, features, momentum=0.1):
        super().__init__()
        self.momentum = momentum
        self.register_buffer("running", np.zeros(features))

    def forward(self, x):
        if self.training:
            batch_mean = x.data.mean(axis=0)
            self.running = (1 - self.momentum) * self.running + self.momentum * batch_mean
            return x - Tensor(batch_mean)
        return x - Tensor(self.running)


def main(argv=None):
    title("Lesson 03: Module and Parameter from scratch")
    rng = np.random.default_rng(0)

    section("1. a module system in 30 lines")
    tiny = TinyMLP(hidden=16, rng=rng)
    for name, p in tiny.named_parameters():
        print(f"{name:<14} shape {p.shape}")
    n_tiny = sum(p.size for p in tiny.parameters())
    print(f"{n_tiny} parameters; tiny.training = {tiny.training}, after eval(): {tiny.train(False).training}")
    tiny.train()

    section("2. the engine's Module: same names, same output, same gradients")
    engine = Sequential(Linear(1, 16), ReLUModule(), Linear(16, 1))
    print(engine)
    print("engine names:", [name for name, _ in engine.named_parameters()],
          "| all of them nn.Parameter:", all(isinstance(p, Parameter) for p in engine.parameters()))
    print("module tree: ", [name or "(root)" for name, _ in engine.named_modules()])
    # Copy the tiny net's weights across by name: hidden.* -> 0.*, out.* -> 2.*
    renamed = {name.replace("hidden.", "0.").replace("out.", "2."): array.astype(np.float32)
               for name, array in tiny.state_dict().items()}
    engine.load_state_dict(renamed)
    x = np.linspace(-3, 3, 7)[:, None]
    y_tiny = tiny(Tensor(x))
    y_engine = engine(Tensor(x[None].astype(np.float32)))          # [T = 1, N, 1]
    same_output = float(np.abs(y_engine.data[0] - y_tiny.data).max())
    y_tiny.sum().backward()
    engine.zero_grad()                                             # p.grad = None for every parameter
    y_engine.sum().backward()
    same_grad = float(np.abs(engine[0].weight.grad - tiny.hidden.weight.grad).max())
    print(f"{engine.num_parameters()} parameters (tiny: {n_tiny}); max |output difference| {same_output:.1e}; "
          f"max |dL/dW difference| {same_grad:.1e}  (float32 engine vs float64 tiny)")
    print("nn.Linear calls functions.linear.linear, a Function with the hand-written backward above:")
    W, b = engine[2].weight, engine[2].bias
    h = Tensor(rng.standard_normal((5, 16)).astype(np.float32))
    print("  linear(h, W, b) == h @ W.T + b:", bool(np.allclose(linear(h, W, b).data, (h @ W.T + b).data)))

    section("3. a buffer, and train() / eval()")
    centre = RunningMean(2)
    batches = [rng.normal([3.0, -1.0], 1.0, size=(32, 2)) for _ in range(50)]
    for batch in batches:
        centre(Tensor(batch))
    print(f"after 50 training batches: running = {centre.running.round(3)}  (the data's mean is [3, -1])")
    print("state_dict holds the buffer too:", {k: v.round(3) for k, v in centre.state_dict().items()})
    buffer_converged = float(np.abs(centre.running - np.array([3.0, -1.0])).max())
    probe = Tensor(np.array([[3.0, -1.0], [4.0, 0.0]]))
    train_out = centre(probe).data
    print(f"the probe in training mode (batch mean removed): {train_out.round(3).tolist()};\n"
          f"  being a training batch, it also moved running to {centre.running.round(3)} (its mean is [3.5, -0.5])")
    centre.eval()
    eval_out = centre(probe).data
    print(f"the same probe in eval mode (running mean removed): {eval_out.round(3).tolist()}")

    section("4. saving and loading")
    path = output_dir() / "03_engine_mlp.npz"
    np.savez(path, **engine.state_dict())
    fresh = Sequential(Linear(1, 16, seed=1), ReLUModule(), Linear(16, 1, seed=1))
    with np.load(path) as saved:
        fresh.load_state_dict(dict(saved))
    with no_grad():
        reloaded = float(np.abs(fresh(Tensor(x[None].astype(np.float32))).data - y_engine.data).max())
    print(f"saved to {path.name}, loaded into a fresh net: max |output difference| = {reloaded}")
    try:
        Sequential(Linear(1, 8)).load_state_dict(engine.state_dict())
        mismatch_refused = False
    except KeyError as err:
        print("loading into a different net:", err)
        mismatch_refused = True

    section("5. learning: fit y = sin(x) by gradient descent over parameters()")
    steps, lr = (300, 0.05) if FAST else (3000, 0.05)
    xs = np.linspace(-3, 3, 64)[:, None]
    target = np.sin(xs)
    losses = []
    for _ in range(steps):
        loss = ((tiny(Tensor(xs)) - Tensor(target)) ** 2).mean()
        for p in tiny.parameters():
            p.grad = None
        loss.backward()
        for p in tiny.parameters():
            p.data -= lr * p.grad
        losses.append(loss.item())
    print(f"mean squared error {losses[0]:.3f} -> {losses[-1]:.4f} in {steps} steps")
    fig, (ax_fit, ax_loss) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax_fit.plot(xs, target, "k--", label="sin(x)")
    with no_grad():
        ax_fit.plot(xs, tiny(Tensor(xs)).data, label="TinyMLP after training")
    ax_fit.set(xlabel="x", title="a 1-16-1 MLP of TinyLinear layers")
    ax_fit.legend()
    ax_loss.semilogy(losses)
    ax_loss.set(xlabel="gradient step", ylabel="mean squared error", title="p.data -= lr * p.grad for p in parameters()")
    save_figure(fig, "03_module_fit.png")

    return finish({"engine_equals_tiny_output": same_output, "engine_equals_tiny_grad": same_grad,
                   "parameters": [n_tiny, engine.num_parameters()], "buffer_error": buffer_converged,
                   "eval_uses_running_mean": bool(np.abs(eval_out - (probe.data - centre.running)).max() < 1e-12),
                   "reload_difference": reloaded, "mismatch_refused": mismatch_refused,
                   "fit_loss_first_last": [losses[0], losses[-1]]},
                  "lesson 04 -- the neuron that makes a network spike: LIF, a Module with no parameters.")


if __name__ == "__main__":
    main()
