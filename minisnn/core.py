"""Reverse-mode automatic differentiation: ``Tensor``, ``Function`` and ``backward``.

A ``Tensor`` wraps a raw array (NumPy or CuPy) and remembers the ``Function`` that created it.
A ``Function`` works on raw arrays only::

    class Square(Function):
        def forward(self, x):          # x is an ndarray
            self.x = x                 # save only what backward needs
            return x * x
        def backward(self, gy):        # gy = dL/dy, an ndarray
            return 2 * self.x * gy     # dL/dx

Calling a Function on Tensors runs ``forward`` and, when gradients are enabled and some input requires
them, links the result into the graph. ``y.backward()`` then walks the graph in reverse topological
order -- iteratively, with a heap keyed on each function's generation, so a graph 10,000 nodes deep
needs no recursion -- and accumulates dL/dx into ``x.grad`` for every leaf that requires a gradient.
Gradients of intermediate tensors are freed as soon as they have been used, unless ``retain_grad``.
"""
import contextlib
import heapq
import itertools
import threading
import weakref

import numpy as np

from .backend import as_numpy, get_array_module


class _Switches(threading.local):
    """The engine's switches, each thread its own: ``enable_backprop`` is turned off inside ``no_grad()``."""
    enable_backprop = True


Config = _Switches()


@contextlib.contextmanager
def no_grad():
    """Run without building a graph (evaluation, parameter updates) -- in this thread only, so that one
    thread evaluating does not stop another from training."""
    old = Config.enable_backprop
    Config.enable_backprop = False
    try:
        yield
    finally:
        Config.enable_backprop = old


def _is_array(x):
    return isinstance(x, np.ndarray) or type(x).__module__.split(".")[0] == "cupy"


class Tensor:
    """An array with a gradient and a link to the Function that made it.

    data: the raw array. grad: dL/d(data) as a raw array (None until backward reaches it).
    creator: the Function that produced this tensor (None for leaves). requires_grad: whether
    backward should compute a gradient for this tensor (parameters: True; input data: False).
    """
    __array_priority__ = 200  # so that ndarray * Tensor calls Tensor.__rmul__

    def __init__(self, data, requires_grad=False, name=None):
        if isinstance(data, Tensor):
            raise TypeError("Tensor(data): data is already a Tensor; use it directly")
        if not _is_array(data):
            if isinstance(data, (int, float, bool, np.number, list, tuple)):
                data = np.asarray(data)
            else:
                raise TypeError(f"Tensor data must be a NumPy/CuPy array, got {type(data).__name__}")
        self.data = data
        self.grad = None
        self.creator = None
        self.generation = 0
        self.requires_grad = bool(requires_grad)
        self.name = name

    # -- array-like properties -----------------------------------------------------------------
    shape = property(lambda self: self.data.shape)
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: self.data.size)
    dtype = property(lambda self: self.data.dtype)

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        name = f", name={self.name!r}" if self.name else ""
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({self.data!r}{grad}{name})"

    def item(self):
        return self.data.item()

    def numpy(self):
        """The data as a NumPy array (copied from the GPU if needed)."""
        return as_numpy(self.data)

    def set_creator(self, func):
        self.creator = func
        self.generation = func.generation + 1

    def detach(self):
        """The same data, cut from the graph."""
        return Tensor(self.data)

    def zero_grad(self):
        self.grad = None

    def backward(self, grad=None, retain_grad=False):
        """Accumulate dL/dx into ``x.grad`` for every leaf x that requires a gradient.

        grad: dL/dself (default: ones, so ``loss.backward()`` for a scalar loss).
        retain_grad: keep the gradients of intermediate tensors too (useful in lessons).
        """
        if grad is None:
            xp = get_array_module(self.data)
            grad = xp.ones_like(self.data)
        elif grad.shape != self.data.shape:
            raise ValueError(f"backward: grad shape {grad.shape} != tensor shape {self.data.shape}")
        self.grad = grad if self.grad is None else self.grad + grad
        if self.creator is None:
            return

        heap, seen, counter = [], set(), itertools.count()
        alive = {}  # strong references to tensors whose gradient is waiting for their creator

        def push(func):
            if func not in seen:
                seen.add(func)
                # max-heap on generation; the counter breaks ties without comparing Functions
                heapq.heappush(heap, (-func.generation, next(counter), func))

        push(self.creator)
        while heap:
            func = heapq.heappop(heap)[2]
            if func.inputs is None:
                raise RuntimeError(f"{type(func).__name__}: this part of the graph was freed by an earlier "
                                   "backward(); run the forward pass again before calling backward() twice")
            outputs = [ref() for ref in func.outputs]
            # a Function is pushed only once one of its outputs has a gradient, and ``alive`` holds that output
            gys = [None if y is None else y.grad for y in outputs]
            if any(g is None for g in gys):  # an output that did not reach the loss
                xp = get_array_module(next(g for g in gys if g is not None))
                gys = [xp.zeros(shape, dtype) if g is None else g
                       for g, (shape, dtype) in zip(gys, func.output_meta)]
            gxs = func.backward(*gys)
            if not isinstance(gxs, tuple):
                gxs = (gxs,)
            if len(gxs) != len(func.inputs):
                raise RuntimeError(f"{type(func).__name__}.backward returned {len(gxs)} gradients "
                                   f"for {len(func.inputs)} inputs")
            for x, gx in zip(func.inputs, gxs):
                if not x.requires_grad or gx is None:
                    continue
                if gx.shape != x.data.shape:
                    raise RuntimeError(f"{type(func).__name__}.backward: gradient shape {gx.shape} "
                                       f"!= input shape {x.data.shape}")
                x.grad = gx if x.grad is None else x.grad + gx
                if x.creator is not None:
                    alive[id(x)] = x
                    push(x.creator)
            for y in outputs:
                if y is not None:
                    alive.pop(id(y), None)
                    if not retain_grad and y is not self:
                        y.grad = None
            func.release()

    # The operators (+, -, *, /, **, @, [], -x) and the methods reshape, transpose, T, sum and mean
    # are Functions from functions/basic.py, attached to Tensor there when minisnn is imported.


class Function:
    """A differentiable operation on raw arrays.

    Subclasses implement ``forward(*xs) -> y or tuple of ys`` and ``backward(*gys) -> gx or tuple``,
    where every x, y, gx, gy is a raw array. ``self.needs_input_grad[i]`` tells backward whether
    input i needs a gradient, so it may return None for the others and skip the work.
    """

    def __call__(self, *inputs):
        inputs = [as_tensor(x, like=inputs) for x in inputs]
        xs = [x.data for x in inputs]
        ys = self.forward(*xs)
        if not isinstance(ys, tuple):
            ys = (ys,)
        outputs = [Tensor(y) for y in ys]
        if Config.enable_backprop and any(x.requires_grad for x in inputs):
            self.needs_input_grad = tuple(x.requires_grad for x in inputs)
            self.generation = max(x.generation for x in inputs)
            for y in outputs:
                y.requires_grad = True
                y.set_creator(self)
            self.inputs = inputs
            self.outputs = [weakref.ref(y) for y in outputs]
            self.output_meta = [(y.shape, y.dtype) for y in ys]
        return outputs if len(outputs) > 1 else outputs[0]

    def forward(self, *xs):
        raise NotImplementedError

    def backward(self, *gys):
        raise NotImplementedError(f"{type(self).__name__} has no backward")

    def release(self):
        """Free everything forward saved, and the links into the graph, once backward has run.

        This is what keeps memory flat: a 19-layer net unrolled over T would otherwise hold every
        saved activation until the loss tensor itself is dropped.
        """
        generation, outputs = self.generation, self.outputs
        self.__dict__.clear()
        self.generation, self.outputs, self.inputs = generation, outputs, None


def as_tensor(x, like=()):
    """Wrap x as a Tensor. Python scalars take the dtype of the first Tensor in ``like`` so the
    engine never silently promotes float32 to float64."""
    if isinstance(x, Tensor):
        return x
    if _is_array(x):
        return Tensor(x)
    ref = next((t.data for t in like if isinstance(t, Tensor)), None)
    if ref is not None and isinstance(x, (int, float, bool, np.number)):
        xp = get_array_module(ref)
        return Tensor(xp.asarray(x, dtype=ref.dtype))
    return Tensor(np.asarray(x))
