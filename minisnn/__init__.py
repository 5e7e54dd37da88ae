"""minisnn: a small NumPy/CuPy engine for directly training deep spiking neural networks with STBP-tdBN."""
from .backend import DeviceError, as_cupy, as_numpy, get_array_module, get_device, to_device, xp_for
from .core import Config, Function, Tensor, as_tensor, no_grad
from .functions import basic as _attaches_tensor_operators  # noqa: F401  (+, *, @, reshape, ... on Tensor)
from .fast import conv as _conv, linear as _linear, neuron as _neuron, norm as _norm  # noqa: F401  (register)
from .fast import optim as _optim  # noqa: F401  (registers the fast optimizers)

__version__ = "0.1.0"
