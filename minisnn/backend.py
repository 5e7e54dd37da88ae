"""The array-module switch: the one place that knows about CuPy.

Every piece of array code in minisnn starts with ``xp = get_array_module(x)`` and then calls ``xp.*``,
so the same code runs on NumPy (CPU) and CuPy (GPU). Only this module imports cupy, and only this
module decides the device:

* ``get_device(name=None)`` reads the argument, else the ``MINISNN_DEVICE`` environment variable,
  else ``"cpu"``. Accepted names: ``cpu``, ``cuda``, ``cuda:N``, ``gpu``.
* ``xp_for(device)`` returns ``numpy`` or ``cupy`` for that device (and selects GPU N).
* ``as_numpy(x)`` / ``as_cupy(x)`` / ``to_device(x, device)`` move arrays.
* ``nccl()`` returns CuPy's NCCL bindings, which data-parallel training (``minisnn/dist``) sums GPU
  arrays with.

Asking for CUDA where CuPy or a GPU is missing raises ``DeviceError`` with the real reason and how to
fix it -- never a silent fall-back to the CPU. The first time a GPU is chosen, a tiny elementwise kernel
and a matrix product run on it (``smoke_test``): CuPy compiles its kernels at run time (NVRTC, CUDA
headers), and a missing piece is reported then, as a DeviceError naming the fix, not as a traceback in
the middle of the first forward pass.
"""
import os

import numpy as np

ENV_VAR = "MINISNN_DEVICE"
FIX = ("Install CuPy with the CUDA pieces it compiles kernels with:  pip install -e '.[gpu]'  (CUDA 12; it "
       "installs cupy-cuda12x[ctk]) or  pip install 'cupy-cuda13x[ctk]'  (CUDA 13), or set CUDA_PATH to a CUDA "
       "toolkit; run  minisnn doctor  to see what is found. Or use --device cpu.")
_smoke_tested = set()


class DeviceError(RuntimeError):
    """CuPy or a GPU was asked for but cannot be used."""


def _is_cupy_array(x):
    return type(x).__module__.split(".")[0] == "cupy"


def cupy():
    """Import and return the cupy module, or raise DeviceError saying exactly why it failed."""
    try:
        import cupy as cp
    except Exception as err:  # report the real import error (a missing CUDA library, say)
        raise DeviceError(f"CuPy is needed for the GPU but could not be imported: {type(err).__name__}: {err}. "
                          + FIX) from err
    try:
        count = cp.cuda.runtime.getDeviceCount()
    except Exception as err:
        raise DeviceError(f"CuPy is installed but no CUDA device is usable: {type(err).__name__}: {err}. Check "
                          "the NVIDIA driver with nvidia-smi (it must support the CUDA version of your CuPy "
                          "package), or use --device cpu.") from err
    if count == 0:
        raise DeviceError("CuPy is installed but this machine has no CUDA device; use --device cpu.")
    return cp


def nccl():
    """CuPy's NCCL bindings (``cupy.cuda.nccl``) for summing arrays across GPUs, or DeviceError saying why not."""
    cupy()
    try:
        from cupy.cuda import nccl as module
    except Exception as err:
        raise DeviceError(f"CuPy's NCCL bindings could not be imported: {type(err).__name__}: {err}\n"
                          "Data-parallel training on GPUs needs a CuPy build with NCCL (the cupy-cuda12x wheel "
                          "loads it from the nvidia-nccl-cu12 package: pip install nvidia-nccl-cu12).") from err
    return module


def get_device(name=None):
    """Normalise a device name: the argument, else $MINISNN_DEVICE, else 'cpu'.

    Returns ``"cpu"`` or ``"cuda:N"``.
    """
    raw = name if name is not None else os.environ.get(ENV_VAR, "cpu")
    text = str(raw).strip().lower()
    if text in ("cpu", "numpy", ""):
        return "cpu"
    if text in ("cuda", "gpu", "cupy"):
        return "cuda:0"
    if text.startswith("cuda:") and text[5:].isdigit():
        return text
    source = "argument" if name is not None else f"${ENV_VAR}"
    raise DeviceError(f"unknown device {raw!r} (from the {source}); use 'cpu', 'cuda' or 'cuda:N'")


def xp_for(device=None):
    """The array module (numpy or cupy) for a device name; for CUDA also makes GPU N current."""
    device = get_device(device)
    if device == "cpu":
        return np
    cp = cupy()
    index = int(device.split(":")[1])
    if index >= cp.cuda.runtime.getDeviceCount():
        raise DeviceError(f"device {device} asked for, but only {cp.cuda.runtime.getDeviceCount()} GPU(s) exist")
    cp.cuda.Device(index).use()
    smoke_test(cp, index)
    return cp


def smoke_test(cp, index):
    """Run an elementwise kernel and a matrix product once on GPU ``index``; DeviceError if either fails."""
    if (id(cp), index) in _smoke_tested:
        return
    try:
        a = cp.arange(16, dtype=cp.float32).reshape(4, 4)
        float((a * 2 + 1).sum() + (a @ a).sum())
    except Exception as err:  # NVRTC, missing headers, cuBLAS, no kernel image for this GPU ...
        raise DeviceError(f"CuPy cannot run a kernel on cuda:{index}: {type(err).__name__}: "
                          f"{str(err).strip().splitlines()[0] if str(err).strip() else ''}. {FIX}") from err
    _smoke_tested.add((id(cp), index))


def get_array_module(*arrays):
    """``cupy`` if any argument is a CuPy array, else ``numpy`` (never imports cupy for CPU data)."""
    for x in arrays:
        if _is_cupy_array(x):
            import cupy as cp
            return cp
    return np


def is_gpu_array(x):
    return _is_cupy_array(x)


def as_numpy(x):
    """Return x as a NumPy array (copied from the GPU if it lives there)."""
    if _is_cupy_array(x):
        return x.get()
    return np.asarray(x)


def as_cupy(x):
    """Return x as a CuPy array on the current GPU (copied there from the host or from another GPU)."""
    cp = cupy()
    if _is_cupy_array(x) and x.device.id == cp.cuda.Device().id:
        return x
    return cp.array(x, copy=True) if _is_cupy_array(x) else cp.asarray(x)


def to_device(x, device):
    """Move an array to ``device`` ('cpu' or 'cuda[:N]')."""
    if get_device(device) == "cpu":
        return as_numpy(x)
    xp_for(device)  # selects the GPU
    return as_cupy(x)


def device_of(x):
    """'cpu' or 'cuda:N' for an array."""
    if _is_cupy_array(x):
        return f"cuda:{x.device.id}"
    return "cpu"
