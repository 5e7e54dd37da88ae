"""``minisnn doctor``: what minisnn finds on this machine, and whether the GPU really runs.

It prints the versions (minisnn, Python, NumPy, CuPy), NumPy's BLAS and its threads, minisnn's CPU
workers (``MINISNN_THREADS``), device (``MINISNN_DEVICE``), data folder (``MINISNN_DATA``), GPU chunk
size (``MINISNN_GPU_CHUNK_MB``) and collective deadline (``MINISNN_DIST_TIMEOUT``) -- a bad value of any
of them is reported, not refused, since the doctor is where one looks for it -- then what CuPy reports
about CUDA (runtime and driver versions, ``CUDA_PATH``, each GPU's name and memory), and the result of
running a small elementwise kernel and a matrix product on each GPU -- the step that fails when CuPy
cannot compile its kernels (no CUDA headers, no NVRTC) -- with the fix when it does.
"""
import os
import platform

import numpy as np

from . import __version__
from .backend import ENV_VAR as DEVICE_ENV_VAR
from .backend import DeviceError, cupy, get_device, xp_for
from .data.cifar10 import CACHE_ENV_VAR, default_data_dir
from .dist.group import TIMEOUT_ENV_VAR, DistError, timeout_from_env
from .fast import parallel


def _blas():
    from threadpoolctl import threadpool_info
    libraries = [f"{i.get('internal_api')} {i.get('version')} ({i.get('num_threads')} threads)"
                 for i in threadpool_info() if i.get("user_api") == "blas"]
    return ", ".join(libraries) or "none found"


def _setting(var):
    return f"${var}={os.environ.get(var, 'unset')}"


def report():
    """(lines of text, True if every setting is valid and every device asked for works)."""
    lines = [f"minisnn {__version__}, Python {platform.python_version()} ({platform.platform()})",
             f"NumPy {np.__version__}; BLAS: {_blas()}"]
    ok = True
    blas_threads = ", ".join(_setting(var) for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"))
    try:
        parallel.check_settings()
        lines.append(f"CPU workers: {parallel.workers()} ({_setting(parallel.ENV_VAR)}); {blas_threads}; "
                     f"GPU chunks: {_setting(parallel.GPU_CHUNK_ENV_VAR)}")
    except ValueError as err:
        lines.append(f"CPU workers: BAD SETTING: {err}; {blas_threads}")
        ok = False
    try:
        lines.append(f"data-parallel deadline: {timeout_from_env():g} s ({_setting(TIMEOUT_ENV_VAR)})")
    except DistError as err:
        lines.append(f"data-parallel deadline: BAD SETTING: {err}")
        ok = False
    lines.append(f"data folder: {default_data_dir()} ({_setting(CACHE_ENV_VAR)})")
    try:
        device = get_device()
        lines.append(f"default device: {device} (${DEVICE_ENV_VAR}={os.environ.get(DEVICE_ENV_VAR, 'unset')})")
    except DeviceError as err:
        lines.append(f"default device: {err}")
        ok, device = False, "cpu"
    try:
        cp = cupy()
    except DeviceError as err:
        lines.append(f"CuPy: {err}")
        return lines, ok and device == "cpu"
    runtime = cp.cuda.runtime
    lines.append(f"CuPy {cp.__version__}; CUDA runtime {runtime.runtimeGetVersion()}, driver "
                 f"{runtime.driverGetVersion()}; CUDA_PATH={os.environ.get('CUDA_PATH', 'unset')}")
    for index in range(runtime.getDeviceCount()):
        properties = runtime.getDeviceProperties(index)
        name = properties["name"].decode() if isinstance(properties["name"], bytes) else properties["name"]
        try:
            xp_for(f"cuda:{index}")
            state = "a kernel and a matrix product ran"
        except DeviceError as err:
            state, ok = f"FAILED: {err}", False
        lines.append(f"cuda:{index}: {name}, {properties['totalGlobalMem'] / 2 ** 30:.1f} GiB: {state}")
    return lines, ok
