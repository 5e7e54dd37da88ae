"""Module and Parameter: containers that own parameters, buffers and sub-modules.

A ``Module`` registers whatever is assigned to it: a ``Parameter`` (a Tensor that requires a
gradient), a sub-``Module``, or a buffer (a raw array such as tdBN's running mean, registered with
``register_buffer``). Names follow attribute paths, e.g. ``layer1.0.bn1.weight``, so ``state_dict``
is a flat ``{name: array}`` dict that saves to ``.npz`` without pickle.

Calling a module runs its forward between its hooks: ``register_forward_pre_hook(fn)`` and
``register_forward_hook(fn)`` let a monitor look at (or replace) what goes in and comes out without
touching the module's code; both return a handle whose ``remove()`` takes the hook away again.
"""
import itertools

import numpy as np  # dtype objects only

from ..backend import as_numpy, get_array_module, to_device
from ..core import Tensor


class Parameter(Tensor):
    """A Tensor that is learned: requires_grad is always True."""

    def __init__(self, data, name=None):
        super().__init__(data, requires_grad=True, name=name)


class HookHandle:
    """Returned by ``register_forward_hook`` / ``register_forward_pre_hook``: ``remove()`` unregisters
    the hook (a second call does nothing). Also a context manager that removes it on exit."""
    _ids = itertools.count()

    def __init__(self, hooks, hook):
        self.hooks, self.id = hooks, next(HookHandle._ids)
        hooks[self.id] = hook

    def remove(self):
        self.hooks.pop(self.id, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()
        return False


class Module:
    """Base class of layers and models. Subclasses define ``forward``; call the module itself."""

    def __init__(self):
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "_forward_pre_hooks", {})
        object.__setattr__(self, "_forward_hooks", {})
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}: call super().__init__() before assigning attributes")
        if name in self._buffers and not isinstance(value, (Parameter, Module)):
            object.__setattr__(self, name, value)  # updating a buffer keeps it registered
            return
        for table in (self._parameters, self._modules, self._buffers):
            table.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def register_buffer(self, name, array):
        """Keep a raw array (not learned) in the state: running statistics, counters."""
        setattr(self, name, array)
        self._buffers[name] = True

    def forward(self, *inputs):
        raise NotImplementedError

    def __call__(self, *inputs):
        """forward(*inputs), with the pre-hooks run before it and the hooks after it, in the order
        they were registered."""
        for hook in list(self._forward_pre_hooks.values()):
            replaced = hook(self, inputs)
            if replaced is not None:
                inputs = replaced if isinstance(replaced, tuple) else (replaced,)
        output = self.forward(*inputs)
        for hook in list(self._forward_hooks.values()):
            replaced = hook(self, inputs, output)
            if replaced is not None:
                output = replaced
        return output

    def register_forward_pre_hook(self, hook):
        """Call ``hook(module, inputs)`` before every forward; a non-None result replaces the inputs
        (a tuple, or a single input). Returns a handle whose ``remove()`` unregisters it."""
        return HookHandle(self._forward_pre_hooks, hook)

    def register_forward_hook(self, hook):
        """Call ``hook(module, inputs, output)`` after every forward; a non-None result replaces the
        output. Returns a handle whose ``remove()`` unregisters it."""
        return HookHandle(self._forward_hooks, hook)

    # -- traversal ------------------------------------------------------------------------------
    def named_modules(self, prefix=""):
        yield prefix, self
        for name, module in self._modules.items():
            yield from module.named_modules(f"{prefix}.{name}" if prefix else name)

    def children(self):
        return iter(self._modules.values())

    def named_parameters(self):
        for prefix, module in self.named_modules():
            for name, p in module._parameters.items():
                yield (f"{prefix}.{name}" if prefix else name), p

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def named_buffers(self):
        for prefix, module in self.named_modules():
            for name in module._buffers:
                yield (f"{prefix}.{name}" if prefix else name), module, name

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    # -- modes ----------------------------------------------------------------------------------
    def train(self, mode=True):
        for _, module in self.named_modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self):
        return self.train(False)

    # -- state ----------------------------------------------------------------------------------
    def state_dict(self):
        """{name: NumPy array} of every parameter and buffer (copied to the host)."""
        state = {name: as_numpy(p.data).copy() for name, p in self.named_parameters()}
        for name, module, attr in self.named_buffers():
            state[name] = as_numpy(getattr(module, attr)).copy()
        return state

    def load_state_dict(self, state):
        """Load arrays by name; every name must match and every shape must agree."""
        own = dict(self.named_parameters())
        buffers = {name: (module, attr) for name, module, attr in self.named_buffers()}
        missing = sorted((set(own) | set(buffers)) - set(state))
        unexpected = sorted(set(state) - set(own) - set(buffers))
        if missing or unexpected:
            raise KeyError(f"state does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
        for name, p in own.items():
            value = state[name]
            if tuple(value.shape) != p.shape:
                raise ValueError(f"{name}: saved shape {tuple(value.shape)} != model shape {p.shape}")
            p.data = get_array_module(p.data).asarray(value, dtype=p.dtype)
        for name, (module, attr) in buffers.items():
            current = getattr(module, attr)
            value = state[name]
            if tuple(value.shape) != current.shape:
                raise ValueError(f"{name}: saved shape {tuple(value.shape)} != model shape {current.shape}")
            object.__setattr__(module, attr, get_array_module(current).asarray(value, dtype=current.dtype))

    def to(self, device):
        """Move every parameter and buffer to 'cpu' or 'cuda[:N]'."""
        for _, p in self.named_parameters():
            p.data = to_device(p.data, device)
            if p.grad is not None:
                p.grad = to_device(p.grad, device)
        for _, module, attr in self.named_buffers():
            object.__setattr__(module, attr, to_device(getattr(module, attr), device))
        return self

    def astype(self, dtype):
        """Cast every floating parameter and buffer to ``dtype`` in place (e.g. float64 for exact
        checks); gradients are dropped. Returns the module."""
        dtype = np.dtype(dtype)
        if dtype.kind != "f":
            raise TypeError(f"astype: dtype must be a floating type, got {dtype}")
        for _, p in self.named_parameters():
            p.data = p.data.astype(dtype)
            p.grad = None
        for _, module, attr in self.named_buffers():
            value = getattr(module, attr)
            if value.dtype.kind == "f":
                object.__setattr__(module, attr, value.astype(dtype))
        return self

    def num_parameters(self):
        return sum(p.size for p in self.parameters())

    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, module in self._modules.items():
            child = repr(module).replace("\n", "\n  ")
            lines.append(f"  ({name}): {child}")
        return "\n".join(lines) + ("\n)" if len(lines) > 1 else ")")


class Sequential(Module):
    """Apply sub-modules in order: y = f_n(...f_2(f_1(x)))."""

    def __init__(self, *modules):
        super().__init__()
        for i, module in enumerate(modules):
            setattr(self, str(i), module)

    def __iter__(self):
        return iter(self._modules.values())

    def __len__(self):
        return len(self._modules)

    def __getitem__(self, i):
        return list(self._modules.values())[i]

    def forward(self, x):
        for module in self._modules.values():
            x = module(x)
        return x
