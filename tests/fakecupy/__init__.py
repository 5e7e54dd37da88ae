"""A strict stand-in for CuPy, so that minisnn's GPU path runs -- and is checked -- on a CPU.

It is installed as the ``cupy`` module by the ``gpu`` fixture (tests/conftest.py) wherever CuPy with a
working GPU is absent; with a real GPU the same tests run on real CuPy. It behaves like CuPy where bugs
hide:

* Its ``ndarray`` is not a ``numpy.ndarray`` (nor a subclass). ``numpy.asarray(x)`` / ``__array__`` and
  mixing a NumPy array into an operation, a ufunc, an assignment or a kernel raise CuPy's ``TypeError``;
  NumPy functions called on it dispatch to the stand-in's own (``__array_function__``,
  ``__array_ufunc__``), as CuPy's arrays do.
* Reading a value on the host -- ``float()``, ``int()``, ``bool()``, ``.item()``, ``.tolist()``,
  ``.get()``, ``asnumpy``, printing -- is a device synchronisation. Each one is counted (with where it
  happened); inside ``strict()`` it raises ``SyncError``.
* Only names that CuPy 14 has exist; any other attribute raises AttributeError.
* ``ElementwiseKernel`` and ``ReductionKernel`` bodies are compiled as host C++ with the system compiler
  (``_kernels.py``) and run through ctypes, so the CUDA source minisnn ships is really executed.
* Kernel launches (one per elementwise operation, reduction, matrix product, copy, kernel call -- views
  are free), host-to-device copies, live and peak device bytes, and the dtypes of the arrays created are
  counted in ``counters``.

Two devices exist, so that code which leaves an array on the wrong GPU fails as on a real machine:
operating on an array of another device than the current one raises ValueError, as CuPy does.
"""
import builtins
import contextlib
import sys
import traceback
import types
import weakref

import numpy as np

from . import _kernels

__version__ = "14.2.0"
DEVICE_COUNT = 2
DEVICE_MEMORY = 16 << 30


class SyncError(RuntimeError):
    """A host synchronisation inside ``strict()``."""


class Counters:
    """What the stand-in has seen since the last ``reset()``."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.launches = 0
        self.syncs = []            # one "file:line" per synchronisation
        self.host_to_device = 0    # explicit copies from the host (cupy.asarray of host data)
        self.dtypes = set()        # dtypes of the device arrays created
        self.live_bytes = 0 if not hasattr(self, "live_bytes") else self.live_bytes
        self.peak_bytes = self.live_bytes


counters = Counters()
_state = types.SimpleNamespace(strict=False, device=0)


def reset_counters():
    counters.reset()


@contextlib.contextmanager
def strict(enabled=True):
    """Inside the block every host synchronisation raises SyncError."""
    previous, _state.strict = _state.strict, enabled
    try:
        yield
    finally:
        _state.strict = previous


def _where():
    """The first stack frame outside the stand-in and NumPy: where the code asked for the value."""
    for frame in reversed(traceback.extract_stack()[:-2]):
        if "fakecupy" not in frame.filename and "/numpy/" not in frame.filename:
            return f"{frame.filename}:{frame.lineno}"
    return "?"


def _sync(what):
    place = _where()
    counters.syncs.append(f"{what} at {place}")
    if _state.strict:
        raise SyncError(f"host synchronisation ({what}) at {place}")


def _launch(n=1):
    counters.launches += n


def _release(nbytes):
    counters.live_bytes -= nbytes


def _unsupported(value):
    return TypeError(f"Unsupported type {type(value)}")


# ------------------------------------------------------------------------------------- ndarray
class ndarray:
    """A device array: a NumPy array that only the stand-in's own functions may read."""
    __array_priority__ = 100

    def __init__(self, array, device=None):
        self._a = array
        self._device = _state.device if device is None else device
        counters.dtypes.add(array.dtype)
        if array.base is None and array.nbytes:        # a new buffer, not a view
            counters.live_bytes += array.nbytes
            counters.peak_bytes = builtins.max(counters.peak_bytes, counters.live_bytes)
            weakref.finalize(array, _release, array.nbytes)

    # -- what CuPy refuses -----------------------------------------------------------------------
    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use `.get()` to "
                        "construct a NumPy array explicitly.")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if method != "__call__":
            return NotImplemented
        return _ufunc(ufunc, *inputs, **kwargs)

    def __array_function__(self, func, types_, args, kwargs):
        ours = globals().get(func.__name__)
        if ours is None or not callable(ours):
            raise TypeError(f"the CuPy stand-in has no {func.__name__}()")
        return ours(*args, **kwargs)

    # -- host reads: synchronisations ------------------------------------------------------------
    def get(self, stream=None, order="C", out=None):
        _sync("get()")
        return self._a.copy()

    def item(self):
        _sync("item()")
        return self._a.item()

    def tolist(self):
        _sync("tolist()")
        return self._a.tolist()

    def __float__(self):
        _sync("float()")
        return float(self._a)

    def __int__(self):
        _sync("int()")
        return int(self._a)

    def __index__(self):
        _sync("index")
        return self._a.__index__()

    def __bool__(self):
        _sync("bool()")
        return bool(self._a)

    def __repr__(self):
        _sync("repr()")
        return "array(" + repr(self._a)[6:]

    __str__ = __repr__

    def __format__(self, spec):
        _sync("format()")
        return format(self._a, spec)

    # -- attributes ------------------------------------------------------------------------------
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: _view(self._a.T, self))
    device = property(lambda self: cuda.Device(self._device))

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        for k in range(len(self)):
            yield self[k]

    # -- views (no launch) and copies ------------------------------------------------------------
    def reshape(self, *shape, order="C"):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return reshape(self, shape)

    def transpose(self, *axes):
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return _view(self._a.transpose(*axes), self)

    def ravel(self):
        return reshape(self, (-1,))

    def squeeze(self, axis=None):
        return _view(self._a.squeeze(axis), self)

    def swapaxes(self, a, b):
        return _view(self._a.swapaxes(a, b), self)

    def view(self, dtype=None):
        return _view(self._a.view(dtype) if dtype is not None else self._a.view(), self)

    def copy(self, order="C"):
        _check_device(self)
        _launch()
        return ndarray(self._a.copy())

    def astype(self, dtype, copy=True, order="K"):
        _check_device(self)
        if not copy and np.dtype(dtype) == self.dtype:
            return self
        _launch()
        return ndarray(self._a.astype(dtype))

    def fill(self, value):
        _check_device(self)
        _launch()
        self._a.fill(_scalar(value))

    def __getitem__(self, index):
        _check_device(self)
        index = _index(index)
        if _is_basic(index):                          # a view, never a launch (a 0-d view for one element)
            parts = index if isinstance(index, tuple) else (index,)
            if Ellipsis not in parts:
                parts = parts + (Ellipsis,)
            return _view(self._a[parts], self)
        _launch()
        return ndarray(np.array(self._a[index]))

    def __setitem__(self, index, value):
        _check_device(self)
        _launch()
        self._a[_index(index)] = _operand(value)

    # -- reductions and methods ------------------------------------------------------------------
    def sum(self, axis=None, dtype=None, out=None, keepdims=False):
        return sum(self, axis=axis, dtype=dtype, out=out, keepdims=keepdims)

    def mean(self, axis=None, dtype=None, out=None, keepdims=False):
        return mean(self, axis=axis, dtype=dtype, out=out, keepdims=keepdims)

    def var(self, axis=None, dtype=None, out=None, ddof=0, keepdims=False):
        return var(self, axis=axis, dtype=dtype, out=out, ddof=ddof, keepdims=keepdims)

    def max(self, axis=None, out=None, keepdims=False):
        return max(self, axis=axis, out=out, keepdims=keepdims)

    def min(self, axis=None, out=None, keepdims=False):
        return min(self, axis=axis, out=out, keepdims=keepdims)

    def argmax(self, axis=None, out=None):
        return argmax(self, axis=axis, out=out)

    def all(self, axis=None, out=None, keepdims=False):
        return all(self, axis=axis, out=out, keepdims=keepdims)

    def any(self, axis=None, out=None, keepdims=False):
        return any(self, axis=axis, out=out, keepdims=keepdims)

    def clip(self, a_min=None, a_max=None, out=None):
        return clip(self, a_min, a_max, out=out)

    def dot(self, other):
        return matmul(self, other)


def _view(array, of):
    return ndarray(array, device=of._device)


def _ops(name):
    ufunc = getattr(np, name)

    def forward(self, other):
        if not _acceptable(other):
            return NotImplemented
        return _ufunc(ufunc, self, other)

    def reflected(self, other):
        if not _acceptable(other):
            return NotImplemented
        return _ufunc(ufunc, other, self)

    def inplace(self, other):
        if not _acceptable(other):
            return NotImplemented
        return _ufunc(ufunc, self, other, out=self)

    return forward, reflected, inplace


for _dunder, _name in (("add", "add"), ("sub", "subtract"), ("mul", "multiply"), ("truediv", "true_divide"),
                       ("floordiv", "floor_divide"), ("mod", "remainder"), ("pow", "power"),
                       ("and", "bitwise_and"), ("or", "bitwise_or"), ("xor", "bitwise_xor")):
    _f, _r, _i = _ops(_name)
    setattr(ndarray, f"__{_dunder}__", _f)
    setattr(ndarray, f"__r{_dunder}__", _r)
    setattr(ndarray, f"__i{_dunder}__", _i)
for _dunder, _name in (("eq", "equal"), ("ne", "not_equal"), ("lt", "less"), ("le", "less_equal"),
                       ("gt", "greater"), ("ge", "greater_equal")):
    setattr(ndarray, f"__{_dunder}__", _ops(_name)[0])
ndarray.__neg__ = lambda self: _ufunc(np.negative, self)
ndarray.__abs__ = lambda self: _ufunc(np.absolute, self)
ndarray.__invert__ = lambda self: _ufunc(np.invert, self)
ndarray.__matmul__ = lambda self, other: matmul(self, other) if _acceptable(other) else NotImplemented
ndarray.__rmatmul__ = lambda self, other: matmul(other, self) if _acceptable(other) else NotImplemented
ndarray.__hash__ = None
ndarray.__module__ = "cupy"


# ------------------------------------------------------------------------------------- helpers
def _acceptable(value):
    """What CuPy takes beside its own arrays: Python and NumPy scalars (NumPy arrays raise TypeError)."""
    if isinstance(value, np.ndarray):
        raise _unsupported(value)
    return isinstance(value, (ndarray, int, float, bool, complex, np.generic))


def _check_device(*arrays):
    for a in arrays:
        if isinstance(a, ndarray) and a._device != _state.device:
            raise ValueError(f"The device where the array resides ({a._device}) is different from the current "
                             f"device ({_state.device}).")


def _operand(value):
    """The NumPy value behind an argument: a device array's data, a scalar, or TypeError for host arrays."""
    if isinstance(value, ndarray):
        _check_device(value)
        return value._a
    if isinstance(value, (list, tuple)):
        return type(value)(_operand(v) for v in value)
    if isinstance(value, np.ndarray):
        raise _unsupported(value)
    return value


def _scalar(value):
    if isinstance(value, np.ndarray):
        raise _unsupported(value)
    return value


def _index(index):
    if isinstance(index, tuple):
        return tuple(_index(i) for i in index)
    if isinstance(index, ndarray):
        _check_device(index)
        return index._a
    if isinstance(index, np.ndarray):
        raise _unsupported(index)
    if isinstance(index, list) and builtins.any(isinstance(i, np.ndarray) for i in index):
        raise _unsupported(index)
    return index


def _is_basic(index):
    parts = index if isinstance(index, tuple) else (index,)
    return builtins.all(isinstance(p, (int, np.integer, slice, type(None), type(Ellipsis))) for p in parts)


def _wrap(result):
    if isinstance(result, np.ndarray):
        return ndarray(result)
    if isinstance(result, np.generic):              # CuPy returns 0-d arrays, never host scalars
        return ndarray(np.asarray(result))
    return result


def _ufunc(ufunc, *inputs, out=None, **kwargs):
    for value in inputs:
        _acceptable(value)
    args = [_operand(v) for v in inputs]
    _launch()
    if out is not None:
        outs = out if isinstance(out, tuple) else (out,)
        for o in outs:
            if not isinstance(o, ndarray):
                raise _unsupported(o)
            _check_device(o)
        ufunc(*args, out=outs[0]._a if len(outs) == 1 else tuple(o._a for o in outs), **kwargs)
        return out
    return _wrap(ufunc(*args, **kwargs))


def _make_ufunc(name):
    ufunc = getattr(np, name)

    def function(*inputs, out=None, **kwargs):
        return _ufunc(ufunc, *inputs, out=out, **kwargs)

    function.__name__ = name
    return function


_UFUNCS = ("add", "subtract", "multiply", "divide", "true_divide", "floor_divide", "negative", "power",
           "remainder", "absolute", "abs", "sqrt", "exp", "log", "log1p", "expm1", "tanh", "sin", "cos", "arctan",
           "sign", "floor", "ceil", "maximum", "minimum", "fmax", "fmin", "equal", "not_equal", "less",
           "less_equal", "greater", "greater_equal", "logical_and", "logical_or", "logical_not", "isfinite",
           "isnan", "isinf", "square", "reciprocal", "invert", "bitwise_and", "bitwise_or", "bitwise_xor")
for _name in _UFUNCS:
    globals()[_name] = _make_ufunc(_name)


def _reduction(name):
    reduce = getattr(np, name)

    def function(a, axis=None, dtype=None, out=None, keepdims=False, **kwargs):
        _check_device(a)
        if not isinstance(a, ndarray):
            raise _unsupported(a)
        _launch()
        options = dict(axis=axis, keepdims=keepdims, **kwargs)
        if dtype is not None:
            options["dtype"] = dtype
        result = reduce(a._a, **options)
        if out is not None:
            out._a[...] = result
            return out
        return ndarray(np.asarray(result))

    function.__name__ = name
    return function


sum, mean, var, std, prod = (_reduction(n) for n in ("sum", "mean", "var", "std", "prod"))
max, min, all, any = (_reduction(n) for n in ("max", "min", "all", "any"))
amax, amin = max, min


def argmax(a, axis=None, out=None):
    _check_device(a)
    _launch()
    return ndarray(np.asarray(np.argmax(a._a, axis=axis)))


def argmin(a, axis=None, out=None):
    _check_device(a)
    _launch()
    return ndarray(np.asarray(np.argmin(a._a, axis=axis)))


# ------------------------------------------------------------------------------------ creation
float16, float32, float64 = np.float16, np.float32, np.float64
int8, int16, int32, int64 = np.int8, np.int16, np.int32, np.int64
uint8, uint16, uint32, uint64 = np.uint8, np.uint16, np.uint32, np.uint64
bool_, intp, dtype, newaxis, pi, inf, nan, e = np.bool_, np.intp, np.dtype, None, np.pi, np.inf, np.nan, np.e


def array(obj, dtype=None, copy=True, order="K", ndmin=0):
    if isinstance(obj, ndarray):
        if obj._device != _state.device:            # a copy from another GPU onto the current one
            _launch()
            return ndarray(obj._a.astype(dtype or obj.dtype, copy=True))
        if not copy and (dtype is None or np.dtype(dtype) == obj.dtype):
            return obj
        _launch()
        return ndarray(obj._a.astype(dtype or obj.dtype, copy=True))
    counters.host_to_device += 1
    return ndarray(np.array(obj, dtype=dtype, copy=True, ndmin=ndmin))


def asarray(obj, dtype=None, order=None):
    return array(obj, dtype=dtype, copy=False)


def ascontiguousarray(a, dtype=None):
    if isinstance(a, ndarray) and a.flags.c_contiguous and (dtype is None or np.dtype(dtype) == a.dtype) \
            and a._device == _state.device:
        return a
    if isinstance(a, ndarray):
        _check_device(a)
        _launch()
        return ndarray(np.ascontiguousarray(a._a, dtype=dtype))
    return array(a, dtype=dtype)


def asnumpy(a, stream=None, order="C", out=None):
    if isinstance(a, ndarray):
        return a.get()
    return np.asarray(a)


def _creation(name, launches):
    make = getattr(np, name)

    def function(*args, **kwargs):
        _launch(launches)
        return ndarray(make(*args, **kwargs))

    function.__name__ = name
    return function


empty = _creation("empty", 0)
zeros = _creation("zeros", 1)
ones = _creation("ones", 1)
full = _creation("full", 1)
arange = _creation("arange", 1)
linspace = _creation("linspace", 1)
eye = _creation("eye", 1)


def _like(name, launches):
    make = getattr(np, name)

    def function(a, *args, **kwargs):
        _check_device(a)
        _launch(launches)
        return ndarray(make(a._a, *args, **kwargs))

    function.__name__ = name
    return function


empty_like = _like("empty_like", 0)
zeros_like = _like("zeros_like", 1)
ones_like = _like("ones_like", 1)
full_like = _like("full_like", 1)


# ---------------------------------------------------------------------------- shapes and copies
def reshape(a, shape, order="C"):
    _check_device(a)
    result = a._a.reshape(shape)
    if not result.size or np.may_share_memory(result, a._a):
        return _view(result, a)
    _launch()
    return ndarray(result.copy())


def transpose(a, axes=None):
    return a.transpose(*(axes or ()))


def broadcast_to(a, shape):
    _check_device(a)
    return _view(np.broadcast_to(a._a, shape), a)


def expand_dims(a, axis):
    return _view(np.expand_dims(a._a, axis), a)


def squeeze(a, axis=None):
    return a.squeeze(axis)


def moveaxis(a, source, destination):
    return _view(np.moveaxis(a._a, source, destination), a)


def _join(name):
    join = getattr(np, name)

    def function(arrays, axis=0, out=None, **kwargs):
        arrays = list(arrays)
        for a in arrays:
            if not isinstance(a, ndarray):
                raise _unsupported(a)
        _check_device(*arrays)
        _launch()
        return ndarray(join([a._a for a in arrays], axis=axis, **kwargs))

    function.__name__ = name
    return function


stack = _join("stack")
concatenate = _join("concatenate")


def split(a, indices_or_sections, axis=0):
    _check_device(a)
    return [_view(part, a) for part in np.split(a._a, indices_or_sections, axis=axis)]


def pad(a, pad_width, mode="constant", **kwargs):
    _check_device(a)
    _launch(2)                                       # fill, then copy the interior
    return ndarray(np.pad(a._a, pad_width, mode=mode, **kwargs))


def where(condition, x=None, y=None):
    _launch()
    if x is None:
        return tuple(ndarray(i) for i in np.where(_operand(condition)))
    return ndarray(np.where(_operand(condition), _operand(x), _operand(y)))


def clip(a, a_min, a_max, out=None):
    return _ufunc(np.clip, a, a_min, a_max, out=out)


def take(a, indices, axis=None):
    _check_device(a)
    _launch()
    return ndarray(np.take(a._a, _operand(indices), axis=axis))


def matmul(a, b, out=None):
    for value in (a, b):
        if not isinstance(value, ndarray):
            raise _unsupported(value)
    _check_device(a, b)
    _launch()
    return ndarray(np.matmul(a._a, b._a))


dot = matmul


def einsum(subscripts, *operands, **kwargs):
    for value in operands:
        if not isinstance(value, ndarray):
            raise _unsupported(value)
    _check_device(*operands)
    _launch()
    return _wrap(np.einsum(subscripts, *(o._a for o in operands), **kwargs))


def get_array_module(*args):
    return sys.modules[__name__] if builtins.any(isinstance(a, ndarray) for a in args) else np


def show_config():
    print(f"CuPy Version : {__version__} (minisnn's CPU stand-in, tests/fakecupy)")


# --------------------------------------------------------------------------------- the device
class _MemoryPool:
    def used_bytes(self):
        return counters.live_bytes

    def total_bytes(self):
        return counters.peak_bytes

    def free_bytes(self):
        return counters.peak_bytes - counters.live_bytes

    def free_all_blocks(self):
        counters.peak_bytes = counters.live_bytes


_pool = _MemoryPool()


def get_default_memory_pool():
    return _pool


class _Stream:
    def synchronize(self):
        _sync("stream.synchronize()")


class _Device:
    def __init__(self, device=None):
        self.id = _state.device if device is None else int(device)
        if not 0 <= self.id < DEVICE_COUNT:
            raise RuntimeError(f"cudaErrorInvalidDevice: invalid device ordinal {self.id}")

    def use(self):
        _state.device = self.id

    def synchronize(self):
        _sync("device.synchronize()")

    def __enter__(self):
        self._previous = _state.device
        self.use()
        return self

    def __exit__(self, *exc):
        _state.device = self._previous
        return False

    def __eq__(self, other):
        return isinstance(other, _Device) and other.id == self.id

    def __hash__(self):
        return self.id


def _device_properties(device):
    return {"name": b"minisnn CPU stand-in for CuPy", "totalGlobalMem": DEVICE_MEMORY, "major": 9, "minor": 0}


cuda = types.SimpleNamespace(
    Device=_Device,
    get_current_stream=lambda: _Stream(),
    runtime=types.SimpleNamespace(
        getDeviceCount=lambda: DEVICE_COUNT,
        memGetInfo=lambda: (DEVICE_MEMORY - counters.live_bytes, DEVICE_MEMORY),
        getDeviceProperties=_device_properties,
        runtimeGetVersion=lambda: 12090,
        driverGetVersion=lambda: 12090,
    ),
)

ElementwiseKernel = _kernels.elementwise_kernel_class(sys.modules[__name__])
ReductionKernel = _kernels.reduction_kernel_class(sys.modules[__name__])


def __getattr__(name):
    raise AttributeError(f"module 'cupy' has no attribute {name!r} (the CPU stand-in has only names CuPy has, "
                         "and only those minisnn's tests need)")
