"""The fused CUDA LIF kernels' source, compiled as C++ on the CPU and compared with the NumPy path.

Without a GPU the CuPy tests in test_neuron.py skip. This test still checks the kernels' logic: the
exact loop bodies that ``ElementwiseKernel`` compiles (``_FORWARD_SOURCE``, ``_BACKWARD_SOURCE`` and each
surrogate's ``cuda_grad``) are wrapped in a plain C++ loop over the neurons i, built with the system's
C++ compiler (contraction off, like the kernels' --fmad=false) and run through ctypes. What it cannot
check is nvcc, CuPy's argument passing and the device itself -- those need test_neuron.py on a GPU.
"""
import ctypes
import shutil
import subprocess

import numpy as np
import pytest

from minisnn import Tensor
from minisnn.fast import neuron
from minisnn.functions.neuron import LIF
from minisnn.functions.surrogate import SURROGATES, get_surrogate

COMPILER = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
FUSED = [name for name in SURROGATES if get_surrogate(name).cuda_grad() is not None]
C_TYPES = {np.float32: "float", np.float64: "double"}

HARNESS = """
#include <cmath>
#include <cstddef>
using std::fabs; using std::fmax; using std::tanh;
#define __device__ static inline
typedef {ctype} F;
{surrogate}
extern "C" void lif_forward(const F* x, long long steps, long long neurons, F v_th, F tau,
                            F* u, unsigned char* o, F* spikes) {{
    for (ptrdiff_t i = 0; i < neurons; ++i) {{ {forward} }}
}}
extern "C" void lif_backward(const F* gy, const F* u, const unsigned char* o, long long steps,
                             long long neurons, F v_th, F tau, bool detach_reset, F* gx) {{
    for (ptrdiff_t i = 0; i < neurons; ++i) {{ {backward} }}
}}
"""


def build(tmp_path, surrogate, dtype):
    source = HARNESS.format(ctype=C_TYPES[dtype], surrogate=surrogate.cuda_grad(),
                            forward=neuron._FORWARD_SOURCE, backward=neuron._BACKWARD_SOURCE)
    (tmp_path / "lif.cpp").write_text(source)
    library = tmp_path / "lif.so"
    subprocess.run([COMPILER, "-O1", "-ffp-contract=off", "-shared", "-fPIC", "-o", str(library),
                    str(tmp_path / "lif.cpp")], check=True, capture_output=True, text=True)
    return ctypes.CDLL(str(library))


def pointer(a):
    return a.ctypes.data_as(ctypes.c_void_p)


@pytest.mark.skipif(COMPILER is None, reason="no C++ compiler on this machine")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("detach_reset", [False, True])
@pytest.mark.parametrize("name", FUSED)
def test_kernel_source_matches_numpy_path(tmp_path, name, detach_reset, dtype):
    surrogate = get_surrogate(name)
    lib = build(tmp_path, surrogate, dtype)
    scalar = ctypes.c_float if dtype == np.float32 else ctypes.c_double
    rng = np.random.default_rng(5)
    x = rng.normal(0.4, 0.6, size=(6, 7, 3, 5)).astype(dtype)
    gy = rng.standard_normal(x.shape).astype(dtype)
    v_th, tau = 0.5, 0.3

    t = Tensor(x, requires_grad=True)
    fn = LIF(v_th, tau, surrogate, detach_reset)
    spikes = fn(t)
    saved_u, saved_o = fn.u, fn.o                     # released by backward
    spikes.backward(gy)

    steps, neurons = x.shape[0], x[0].size
    u, o, out = np.empty_like(x), np.empty(x.shape, np.uint8), np.empty_like(x)
    lib.lif_forward(pointer(x), ctypes.c_longlong(steps), ctypes.c_longlong(neurons), scalar(v_th), scalar(tau),
                    pointer(u), pointer(o), pointer(out))
    gx = np.empty_like(x)
    lib.lif_backward(pointer(gy), pointer(u), pointer(o), ctypes.c_longlong(steps), ctypes.c_longlong(neurons),
                     scalar(v_th), scalar(tau), ctypes.c_bool(detach_reset), pointer(gx))

    assert 0 < o.mean() < 1, "the test input should make some neurons fire and others not"
    np.testing.assert_array_equal(out, spikes.data)
    np.testing.assert_array_equal(o, saved_o)
    np.testing.assert_array_equal(u, saved_u)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(gx, t.grad, rtol=tol, atol=tol)
