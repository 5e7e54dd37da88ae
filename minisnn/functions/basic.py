"""Basic differentiable operations: arithmetic, reductions and shape operations.

Each is a ``Function`` with a hand-written backward on raw arrays. Binary arithmetic broadcasts like
NumPy; its backward reduces the gradient back to each input's shape with ``sum_to_array``:
if y = f(a, b) with a broadcast from shape s, then dL/da = sum of dL/dy over the broadcast axes.
"""
import itertools

from ..backend import get_array_module
from ..core import Function, Tensor


def sum_to_array(g, shape):
    """Sum the array g down to ``shape`` (undoing NumPy broadcasting)."""
    if g.shape == tuple(shape):
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(i + lead for i, n in enumerate(shape) if n == 1 and g.shape[i + lead] != 1)
    g = g.sum(axis=axes, keepdims=True)
    return g.reshape(shape) if lead else g


# ---------------------------------------------------------------------------------- arithmetic
class Add(Function):
    """y = a + b;  dL/da = sum_to(gy),  dL/db = sum_to(gy)."""

    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        return a + b

    def backward(self, gy):
        return sum_to_array(gy, self.shapes[0]), sum_to_array(gy, self.shapes[1])


class Sub(Function):
    """y = a - b;  dL/da = gy,  dL/db = -gy (each summed to its input's shape)."""

    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        return a - b

    def backward(self, gy):
        return sum_to_array(gy, self.shapes[0]), sum_to_array(-gy, self.shapes[1])


class Mul(Function):
    """y = a * b;  dL/da = gy * b,  dL/db = gy * a."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, gy):
        ga = sum_to_array(gy * self.b, self.a.shape) if self.needs_input_grad[0] else None
        gb = sum_to_array(gy * self.a, self.b.shape) if self.needs_input_grad[1] else None
        return ga, gb


class Div(Function):
    """y = a / b;  dL/da = gy / b,  dL/db = -gy * a / b**2."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return a / b

    def backward(self, gy):
        ga = sum_to_array(gy / self.b, self.a.shape) if self.needs_input_grad[0] else None
        gb = sum_to_array(-gy * self.a / (self.b * self.b), self.b.shape) if self.needs_input_grad[1] else None
        return ga, gb


class Neg(Function):
    """y = -x;  dL/dx = -gy."""

    def forward(self, x):
        return -x

    def backward(self, gy):
        return -gy


class Pow(Function):
    """y = x ** c for a constant c;  dL/dx = gy * c * x ** (c - 1)."""

    def __init__(self, c):
        self.c = c

    def forward(self, x):
        self.x = x
        return x ** self.c

    def backward(self, gy):
        return gy * self.c * self.x ** (self.c - 1)


class Exp(Function):
    """y = exp(x);  dL/dx = gy * y."""

    def forward(self, x):
        xp = get_array_module(x)
        self.y = xp.exp(x)
        return self.y

    def backward(self, gy):
        return gy * self.y


class Log(Function):
    """y = log(x);  dL/dx = gy / x."""

    def forward(self, x):
        xp = get_array_module(x)
        self.x = x
        return xp.log(x)

    def backward(self, gy):
        return gy / self.x


class Clip(Function):
    """y = min(max(x, lo), hi);  dL/dx = gy where lo <= x <= hi, else 0."""

    def __init__(self, lo, hi):
        self.lo, self.hi = lo, hi

    def forward(self, x):
        xp = get_array_module(x)
        self.x = x
        return xp.clip(x, self.lo, self.hi)

    def backward(self, gy):
        mask = (self.x >= self.lo) & (self.x <= self.hi)
        return gy * mask


class MatMul(Function):
    """Y = A @ B for 2-D A, B;  dL/dA = gY @ B^T,  dL/dB = A^T @ gY."""

    def forward(self, a, b):
        if a.ndim != 2 or b.ndim != 2:
            raise ValueError(f"matmul expects 2-D arrays, got shapes {a.shape} and {b.shape}")
        self.a, self.b = a, b
        return a @ b

    def backward(self, gy):
        ga = gy @ self.b.T if self.needs_input_grad[0] else None
        gb = self.a.T @ gy if self.needs_input_grad[1] else None
        return ga, gb


# ------------------------------------------------------------------------------------- shapes
class Reshape(Function):
    """y = x reshaped;  dL/dx = gy reshaped back."""

    def __init__(self, shape):
        self.shape = shape

    def forward(self, x):
        self.x_shape = x.shape
        return x.reshape(self.shape)

    def backward(self, gy):
        return gy.reshape(self.x_shape)


class Transpose(Function):
    """y = x with axes permuted;  dL/dx = gy with the inverse permutation."""

    def __init__(self, axes=None):
        self.axes = axes

    def forward(self, x):
        return x.transpose(self.axes)

    def backward(self, gy):
        if self.axes is None:
            return gy.transpose()
        inverse = [0] * len(self.axes)
        for i, a in enumerate(self.axes):
            inverse[a % len(self.axes)] = i
        return gy.transpose(inverse)


class BroadcastTo(Function):
    """y = x broadcast to shape;  dL/dx = gy summed back to x's shape."""

    def __init__(self, shape):
        self.shape = tuple(shape)

    def forward(self, x):
        xp = get_array_module(x)
        self.x_shape = x.shape
        return xp.broadcast_to(x, self.shape)

    def backward(self, gy):
        return sum_to_array(gy, self.x_shape)


class SumTo(Function):
    """y = x summed down to shape;  dL/dx = gy broadcast back to x's shape."""

    def __init__(self, shape):
        self.shape = tuple(shape)

    def forward(self, x):
        self.x_shape = x.shape
        return sum_to_array(x, self.shape)

    def backward(self, gy):
        xp = get_array_module(gy)
        return xp.broadcast_to(gy, self.x_shape).copy()


class GetItem(Function):
    """y = x[index];  dL/dx = zeros with gy scattered (and accumulated) at index."""

    def __init__(self, index):
        self.index = index.data if isinstance(index, Tensor) else index

    def forward(self, x):
        self.x_shape, self.x_dtype = x.shape, x.dtype
        return x[self.index]

    def backward(self, gy):
        xp = get_array_module(gy)
        gx = xp.zeros(self.x_shape, self.x_dtype)
        if _is_basic_index(self.index):
            gx[self.index] = gy        # ints and slices pick each element at most once
        else:
            xp.add.at(gx, self.index, gy)  # integer arrays may repeat an index: accumulate
        return gx


def _is_basic_index(index):
    parts = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, (int, slice)) or i is None or i is Ellipsis for i in parts)


class Concatenate(Function):
    """y = concatenate(xs, axis);  dL/dx_i = the slice of gy that came from x_i."""

    def __init__(self, axis):
        self.axis = axis

    def forward(self, *xs):
        xp = get_array_module(*xs)
        self.sizes = [x.shape[self.axis] for x in xs]
        return xp.concatenate(xs, axis=self.axis)

    def backward(self, gy):
        xp = get_array_module(gy)
        cuts = list(itertools.accumulate(self.sizes))[:-1]
        return tuple(xp.split(gy, cuts, axis=self.axis))


class Stack(Function):
    """y = stack(xs, axis);  dL/dx_i = gy taken at position i along axis."""

    def __init__(self, axis):
        self.axis = axis

    def forward(self, *xs):
        xp = get_array_module(*xs)
        return xp.stack(xs, axis=self.axis)

    def backward(self, gy):
        xp = get_array_module(gy)
        return tuple(xp.take(gy, i, axis=self.axis) for i in range(gy.shape[self.axis]))


# --------------------------------------------------------------------------------- reductions
def _normalise_axis(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    axes = axis if isinstance(axis, tuple) else (axis,)
    return tuple(sorted(a % ndim for a in axes))


def _expand_reduced(g, x_shape, axes):
    """Re-insert the reduced axes (as size 1) so g broadcasts against an array of x_shape."""
    shape = [1 if i in axes else n for i, n in enumerate(x_shape)]
    return g.reshape(shape)


class Sum(Function):
    """y = sum of x over axis;  dL/dx = gy broadcast back over the summed axes."""

    def __init__(self, axis=None, keepdims=False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        self.x_shape = x.shape
        self.axes = _normalise_axis(self.axis, x.ndim)
        return x.sum(axis=self.axis, keepdims=self.keepdims)

    def backward(self, gy):
        xp = get_array_module(gy)
        return xp.broadcast_to(_expand_reduced(gy, self.x_shape, self.axes), self.x_shape).copy()


class Mean(Sum):
    """y = mean of x over axis;  dL/dx = gy / n broadcast back, n = number of averaged elements."""

    def forward(self, x):
        y = super().forward(x)
        self.count = x.size // y.size
        return y / self.count

    def backward(self, gy):
        return super().backward(gy) / self.count


class Max(Function):
    """y = max of x over axis;  dL/dx = gy at the arg-max positions (split evenly between ties)."""

    def __init__(self, axis=None, keepdims=False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        self.x = x
        self.axes = _normalise_axis(self.axis, x.ndim)
        self.y = x.max(axis=self.axis, keepdims=True)
        return self.y if self.keepdims else self.y.reshape(
            [n for i, n in enumerate(x.shape) if i not in self.axes])

    def backward(self, gy):
        mask = self.x == self.y
        count = mask.sum(axis=self.axes, keepdims=True)
        return mask * (_expand_reduced(gy, self.x.shape, self.axes) / count)


# ------------------------------------------------------------------------------- public API
def add(a, b):
    return Add()(a, b)


def sub(a, b):
    return Sub()(a, b)


def mul(a, b):
    return Mul()(a, b)


def div(a, b):
    return Div()(a, b)


def neg(x):
    return Neg()(x)


def pow(x, c):
    return Pow(c)(x)


def exp(x):
    return Exp()(x)


def log(x):
    return Log()(x)


def clip(x, lo, hi):
    return Clip(lo, hi)(x)


def matmul(a, b):
    return MatMul()(a, b)


def reshape(x, shape):
    if isinstance(x, Tensor) and x.shape == tuple(shape):
        return x
    return Reshape(tuple(shape))(x)


def transpose(x, axes=None):
    return Transpose(axes)(x)


def broadcast_to(x, shape):
    if isinstance(x, Tensor) and x.shape == tuple(shape):
        return x
    return BroadcastTo(shape)(x)


def repeat_over_time(x, T):
    """Direct encoding: an input [N, ...] presented unchanged at each of T timesteps, as [T, N, ...].

    A broadcast view, no copy; its backward sums the T gradients back onto x.
    """
    x = x if isinstance(x, Tensor) else Tensor(x)
    return broadcast_to(reshape(x, (1,) + x.shape), (T,) + x.shape)


def sum_to(x, shape):
    if isinstance(x, Tensor) and x.shape == tuple(shape):
        return x
    return SumTo(shape)(x)


def getitem(x, index):
    return GetItem(index)(x)


def concatenate(xs, axis=0):
    return Concatenate(axis)(*xs)


def stack(xs, axis=0):
    return Stack(axis)(*xs)


def sum(x, axis=None, keepdims=False):
    return Sum(axis, keepdims)(x)


def mean(x, axis=None, keepdims=False):
    return Mean(axis, keepdims)(x)


def max(x, axis=None, keepdims=False):
    return Max(axis, keepdims)(x)


def _bind_tensor_operators():
    """Give Tensor its operators and methods (x + y, x * y, x @ y, x[i], x.reshape, x.T, x.sum, ...).

    ``core.py`` defines Tensor without knowing these Functions, so that they can import it; the
    operators are attached here, once, when minisnn is imported (DeZero does the same).
    """
    def reshape_method(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = shape[0]
        return reshape(self, tuple(shape))

    def transpose_method(self, *axes):
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = axes[0]
        return transpose(self, tuple(axes) if axes else None)

    operators = {
        "__add__": add, "__radd__": lambda self, other: add(other, self),
        "__sub__": sub, "__rsub__": lambda self, other: sub(other, self),
        "__mul__": mul, "__rmul__": lambda self, other: mul(other, self),
        "__truediv__": div, "__rtruediv__": lambda self, other: div(other, self),
        "__neg__": neg, "__pow__": pow, "__matmul__": matmul, "__getitem__": getitem,
        "reshape": reshape_method, "transpose": transpose_method, "T": property(lambda self: transpose(self)),
        "sum": sum, "mean": mean,
    }
    for name, function in operators.items():
        setattr(Tensor, name, function)


_bind_tensor_operators()
