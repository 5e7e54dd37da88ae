"""Speed-ups, kept beside the reference code they must equal.

The Functions in ``minisnn/functions/`` are the reference: a forward and a backward that read like
the equations in their docstrings. What makes them fast lives here, one module per Function:

    fast/conv.py      Conv2d: the batch split into chunks run on all CPU cores; with stride 1, dx as a
                      convolution of gy with the flipped kernel; im2col copying straight from the
                      unpadded input
    fast/neuron.py    LIF: the loop over T on chunks of neurons across the CPU cores; on CUDA one fused
                      kernel per pass, its source mirroring the NumPy loop line by line
    fast/norm.py      tdBN / batch norm: per-channel sums accumulated in float64, every pass on batch
                      chunks across the CPU cores, dx built in place
    fast/linear.py    Linear: its small products on one BLAS thread while the workers split the work,
                      so that BLAS's threads do not spin on the cores the workers need
    fast/parallel.py  the thread pool that runs the chunks (``MINISNN_THREADS``)
    fast/phases.py    where the time goes: the parts above marked by phase (im2col, GEMM, LIF, ...) and
                      timed when asked (``minisnn bench --phases``)

Each fast Function is a subclass of its reference and is tested equal to it (tests/test_fast_paths.py,
Hypothesis drawing every path). Which class runs is decided in one spot, ``version_of`` below: the
public functions (``conv2d``, ``linear``, ``lif``, ``batch_norm``) ask it for the version of their reference
Function that fits the input's device. Inside ``with reference_only():`` every call runs the
reference instead, to compare or to step through it in a debugger.

The fast modules register their classes when they are imported, which ``minisnn/__init__.py`` does
once for the whole package.
"""
import contextlib

from ..backend import is_gpu_array
from ..core import Tensor

_versions = {}  # reference Function class -> {"cpu": fast class, "cuda": fast class}
_reference_only = False


def register(reference, cpu=None, cuda=None):
    """Declare the fast versions of ``reference`` (subclasses of it) for CPU and CUDA arrays."""
    for version in (cpu, cuda):
        if version is not None and not issubclass(version, reference):
            raise TypeError(f"register: {version.__name__} must subclass {reference.__name__}")
    _versions[reference] = {"cpu": cpu, "cuda": cuda}


def version_of(reference, x):
    """The Function class to run for input x (an array or Tensor): the registered fast version of ``reference`` for x's
    device, or ``reference`` itself (when none is registered, or inside ``reference_only()``)."""
    if _reference_only:
        return reference
    device = "cuda" if is_gpu_array(x.data if isinstance(x, Tensor) else x) else "cpu"
    return _versions.get(reference, {}).get(device) or reference


@contextlib.contextmanager
def reference_only(enabled=True):
    """Run the reference Functions (no speed-ups) inside the ``with`` block."""
    global _reference_only
    previous, _reference_only = _reference_only, enabled
    try:
        yield
    finally:
        _reference_only = previous
