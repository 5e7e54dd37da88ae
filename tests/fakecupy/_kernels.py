"""CuPy's ElementwiseKernel and ReductionKernel, run on the CPU: the CUDA C body compiled as host C++.

An ElementwiseKernel body is wrapped in ``for (i = 0; i < n; ++i) { ... }``, with every non-raw array
parameter bound to its element i (arrays broadcast to the output's shape, as CuPy does) and every raw
one passed as a pointer to contiguous data, indexed by the body as CuPy's raw arrays are. A
ReductionKernel becomes two loops: over the output elements, and over the reduced ones in order, with
CuPy's names: ``a`` and ``b`` in ``reduce_expr``, ``a`` in ``post_map_expr``. Type placeholders (``F``,
``T``) take the dtype of the first array bound to them. ``--fmad=false`` becomes ``-ffp-contract=off``.

What this proves: the kernel source minisnn ships compiles as C++ and computes what the NumPy code
computes, with the argument order, types and shapes minisnn passes. What it cannot prove: nvcc/NVRTC
specifics (CUDA-only intrinsics), the launch configuration, races between threads (each element runs
in turn here), and the device's rounding of transcendental functions.
"""
import atexit
import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile

import numpy as np

COMPILER = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")

C_TYPES = {  # CuPy type name -> (C type, ctypes type)
    "bool": ("bool", ctypes.c_bool), "int8": ("int8_t", ctypes.c_int8), "int16": ("int16_t", ctypes.c_int16),
    "int32": ("int32_t", ctypes.c_int32), "int64": ("int64_t", ctypes.c_int64),
    "uint8": ("uint8_t", ctypes.c_uint8), "uint16": ("uint16_t", ctypes.c_uint16),
    "uint32": ("uint32_t", ctypes.c_uint32), "uint64": ("uint64_t", ctypes.c_uint64),
    "float32": ("float", ctypes.c_float), "float64": ("double", ctypes.c_double),
    "float": ("float", ctypes.c_float), "double": ("double", ctypes.c_double),
}

HEADER = """
#include <cmath>
#include <cstddef>
#include <cstdint>
using std::fabs; using std::fmax; using std::fmin; using std::tanh; using std::exp; using std::log;
using std::sqrt; using std::isfinite; using std::isnan; using std::floor; using std::ceil; using std::atan;
#define __device__ static inline
#define __forceinline__
"""

_libraries = {}
_build_dir = None


def _compile(source, options):
    """The shared library built from ``source`` (cached by its text)."""
    global _build_dir
    if COMPILER is None:
        raise RuntimeError("the CuPy stand-in needs a C++ compiler (c++, g++ or clang++) to run kernels")
    flags = ["-O1", "-std=c++17", "-shared", "-fPIC"]
    if "--fmad=false" in options:
        flags.append("-ffp-contract=off")
    key = hashlib.sha1((source + " ".join(flags)).encode()).hexdigest()
    if key not in _libraries:
        if _build_dir is None:
            _build_dir = tempfile.mkdtemp(prefix="minisnn-fakecupy-")
            atexit.register(shutil.rmtree, _build_dir, ignore_errors=True)  # loaded libraries outlive their files
        path = os.path.join(_build_dir, key)
        with open(path + ".cpp", "w") as f:
            f.write(source)
        done = subprocess.run([COMPILER, *flags, "-o", path + ".so", path + ".cpp"], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"kernel compilation failed (as host C++, standing in for NVRTC):\n{done.stderr}")
        _libraries[key] = ctypes.CDLL(path + ".so")
    return _libraries[key]


def parse_params(text):
    """'raw F x, int64 n' -> [(raw, type, name), ...]."""
    params = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        words = part.split()
        raw = words[0] == "raw"
        if raw:
            words = words[1:]
        if len(words) != 2:
            raise ValueError(f"cannot parse kernel parameter {part!r}")
        params.append((raw, words[0], words[1]))
    return params


def _resolve(params, values, cupy):
    """{placeholder: numpy dtype} from the arrays bound to placeholder-typed parameters. Like CuPy, refuse
    arrays whose dtype differs from their parameter's (a C++ pointer would silently reinterpret them)."""
    types = {}
    for (_, type_, name), value in zip(params, values):
        if type_ not in C_TYPES and isinstance(value, cupy.ndarray):
            types.setdefault(type_, value.dtype)
    for (_, type_, name), value in zip(params, values):
        if isinstance(value, cupy.ndarray):
            expected = types[type_] if type_ in types else _dtype(type_, types)
            if value.dtype != expected:
                raise TypeError(f"Type is mismatched. {name} {value.dtype} {expected}")
    return types


def _c_type(type_, types):
    if type_ in C_TYPES:
        return C_TYPES[type_][0]
    dtype = np.dtype(types[type_])
    if dtype.name not in C_TYPES:
        raise TypeError(f"the CuPy stand-in cannot run a kernel on {dtype} arrays (host C++ has no such type)")
    return C_TYPES[dtype.name][0]


def _dtype(type_, types):
    return np.dtype(types[type_]) if type_ not in C_TYPES else np.dtype(
        {"float": "float32", "double": "float64"}.get(type_, type_))


def _array_of(value, cupy):
    if isinstance(value, np.ndarray):
        raise TypeError(f"Unsupported type {type(value)}")
    if not isinstance(value, cupy.ndarray):
        raise TypeError(f"kernel argument must be a cupy.ndarray, got {type(value).__name__}")
    cupy._check_device(value)
    return value._a


def _scalar_argument(value, type_, types):
    c_type = _c_type(type_, types)
    ctype = next(ct for c, ct in C_TYPES.values() if c == c_type)
    if isinstance(value, np.ndarray):
        raise TypeError(f"Unsupported type {type(value)}")
    return ctype(value.item() if isinstance(value, np.generic) else value)


def elementwise_kernel_class(cupy):
    class ElementwiseKernel:
        """CuPy's ElementwiseKernel, run as host C++ (see the module docstring)."""

        def __init__(self, in_params, out_params, operation, name="kernel", reduce_dims=True, preamble="",
                     no_return=False, return_tuple=False, loop_prep="", after_loop="", options=()):
            self.inputs, self.outputs = parse_params(in_params), parse_params(out_params)
            self.operation, self.name, self.preamble = operation, name, preamble
            self.loop_prep, self.after_loop, self.options = loop_prep, after_loop, tuple(options)

        def __call__(self, *args, size=None, block_size=None, stream=None):
            n_in = len(self.inputs)
            if len(args) not in (n_in, n_in + len(self.outputs)):
                raise TypeError(f"{self.name}: wrong number of arguments: got {len(args)}, expected {n_in} or "
                                f"{n_in + len(self.outputs)}")
            params = self.inputs + self.outputs
            values = list(args) + [None] * (len(params) - len(args))
            types = _resolve(params, values, cupy)
            elementwise = [_array_of(v, cupy) for (raw, _, _), v in zip(params, values)
                           if not raw and isinstance(v, cupy.ndarray)]
            shape = np.broadcast_shapes(*(a.shape for a in elementwise)) if elementwise else ()
            if size is None:
                if not elementwise:
                    raise ValueError(f"{self.name}: give size= when every array parameter is raw")
                size = int(np.prod(shape))
            for k, (raw, type_, name) in enumerate(self.outputs, start=n_in):
                if values[k] is None:
                    if raw:
                        raise ValueError(f"{self.name}: raw output {name} must be passed")
                    values[k] = cupy.empty(shape, dtype=_dtype(type_, types))
            cupy._launch()
            self._run(params, values, types, shape, size)
            outs = values[n_in:]
            return outs[0] if len(outs) == 1 else tuple(outs)

        def _run(self, params, values, types, shape, size):
            decls, binds, arguments, keep = [], [], [], []
            n_in = len(self.inputs)
            for k, ((raw, type_, name), value) in enumerate(zip(params, values)):
                c_type = _c_type(type_, types) if type_ in C_TYPES or type_ in types else None
                if isinstance(value, cupy.ndarray):
                    data = _array_of(value, cupy)
                    if c_type is None:
                        c_type = _c_type(value.dtype.name, types)
                    if k >= n_in:                                    # an output: written in place
                        if not raw and data.shape != tuple(shape):
                            raise ValueError(f"{self.name}: output {name} has shape {data.shape}, "
                                             f"expected {tuple(shape)}")
                        if not data.flags.c_contiguous:
                            raise ValueError(f"{self.name}: output {name} must be C-contiguous in the stand-in")
                    else:
                        data = np.ascontiguousarray(data if raw else np.broadcast_to(data, shape))
                    keep.append(data)
                    const = "const " if k < n_in else ""
                    decls.append(f"{const}{c_type}* {name}" + ("" if raw else "_ptr"))
                    if not raw:
                        binds.append(f"{const}{c_type}& {name} = {name}_ptr[i];")
                    arguments.append(data.ctypes.data_as(ctypes.c_void_p))
                else:
                    if c_type is None:
                        raise TypeError(f"{self.name}: the type {type_} of scalar {name} is not bound to an array")
                    decls.append(f"{c_type} {name}")
                    arguments.append(_scalar_argument(value, type_, types))
            typedefs = "".join(f"typedef {_c_type(p, types)} {p};\n" for p in types)
            source = (f"{HEADER}{typedefs}{self.preamble}\n"
                      f'extern "C" void {self.name}({", ".join(decls + ["long long _n"])}) {{\n'
                      f"{self.loop_prep}\n"
                      f"for (ptrdiff_t i = 0; i < _n; ++i) {{\n{' '.join(binds)}\n{self.operation};\n}}\n"
                      f"{self.after_loop}\n}}\n")
            library = _compile(source, self.options)
            getattr(library, self.name)(*arguments, ctypes.c_longlong(size))   # outputs written in place

    return ElementwiseKernel


def reduction_kernel_class(cupy):
    class ReductionKernel:
        """CuPy's ReductionKernel, run as host C++: the reduced elements are visited in order."""

        def __init__(self, in_params, out_params, map_expr, reduce_expr, post_map_expr, identity,
                     name="reduce_kernel", reduce_type=None, reduce_dims=True, preamble="", options=()):
            self.inputs, self.outputs = parse_params(in_params), parse_params(out_params)
            if len(self.outputs) != 1:
                raise ValueError("the stand-in's ReductionKernel supports one output")
            self.map_expr, self.reduce_expr, self.post_map_expr = map_expr, reduce_expr, post_map_expr
            self.identity, self.name, self.preamble, self.options = identity, name, preamble, tuple(options)
            self.reduce_type = reduce_type

        def __call__(self, *args, out=None, axis=None, keepdims=False, stream=None):
            if len(args) != len(self.inputs):
                raise TypeError(f"{self.name}: expected {len(self.inputs)} arguments, got {len(args)}")
            types = _resolve(self.inputs + self.outputs, list(args) + [out], cupy)
            arrays = [_array_of(v, cupy) for v in args if isinstance(v, cupy.ndarray)]
            shape = np.broadcast_shapes(*(a.shape for a in arrays))
            axes = tuple(range(len(shape))) if axis is None else tuple(
                a % len(shape) for a in (axis if isinstance(axis, tuple) else (axis,)))
            kept = [d for d in range(len(shape)) if d not in axes]
            order = kept + list(axes)
            n_out = int(np.prod([shape[d] for d in kept]))
            n_red = int(np.prod([shape[d] for d in axes]))
            out_shape = tuple(1 if d in axes else shape[d] for d in range(len(shape))) if keepdims else tuple(
                shape[d] for d in kept)
            _, out_type, out_name = self.outputs[0]
            result = np.empty(out_shape, dtype=_dtype(out_type, types))
            decls, binds, arguments, keep = [], [], [], []
            for (raw, type_, name), value in zip(self.inputs, args):
                if isinstance(value, cupy.ndarray):
                    data = np.ascontiguousarray(np.broadcast_to(value._a, shape).transpose(order))
                    keep.append(data)
                    c_type = _c_type(type_ if type_ in C_TYPES or type_ in types else value.dtype.name, types)
                    decls.append(f"const {c_type}* {name}_ptr")
                    binds.append(f"const {c_type} {name} = {name}_ptr[_o * _n_red + _r];")
                    arguments.append(data.ctypes.data_as(ctypes.c_void_p))
                else:
                    decls.append(f"{_c_type(type_, types)} {name}")
                    arguments.append(_scalar_argument(value, type_, types))
            out_c = _c_type(out_type, types)
            reduce_c = _c_type(self.reduce_type or out_type, types)
            decls.append(f"{out_c}* {out_name}_ptr")
            arguments.append(result.ctypes.data_as(ctypes.c_void_p))
            typedefs = "".join(f"typedef {_c_type(p, types)} {p};\n" for p in types)
            source = (f"{HEADER}{typedefs}typedef {reduce_c} _type_reduce;\n{self.preamble}\n"
                      f'extern "C" void {self.name}({", ".join(decls + ["long long _n_out", "long long _n_red"])}) {{\n'
                      f"for (ptrdiff_t _o = 0; _o < _n_out; ++_o) {{\n"
                      f"  _type_reduce _acc = (_type_reduce)({self.identity});\n"
                      f"  for (ptrdiff_t _r = 0; _r < _n_red; ++_r) {{\n    {' '.join(binds)}\n"
                      f"    const _type_reduce b = (_type_reduce)({self.map_expr});\n"
                      f"    const _type_reduce a = _acc;\n    _acc = (_type_reduce)({self.reduce_expr});\n  }}\n"
                      f"  {{ const _type_reduce a = _acc; {out_c}& {out_name} = {out_name}_ptr[_o]; "
                      f"{self.post_map_expr}; }}\n}}\n}}\n")
            library = _compile(source, self.options)
            getattr(library, self.name)(*arguments, ctypes.c_longlong(n_out), ctypes.c_longlong(n_red))
            cupy._launch()
            if out is not None:
                out._a[...] = result
                return out
            return cupy.ndarray(result)

    return ReductionKernel
