"""minisnn: a small NumPy/CuPy engine for directly training deep spiking neural networks with STBP-tdBN."""
from .backend import DeviceError, as_cupy, as_numpy, get_array_module, get_device, to_device, xp_for
from .core import Config, Function, Tensor, as_tensor, no_grad

__version__ = "0.1.0"
