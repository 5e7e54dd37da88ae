"""Optimizers (SGD with momentum and weight decay, Adam) and learning-rate schedules.

Updates run in place on the raw arrays, outside the graph. Every optimizer and schedule has
``state_dict()`` / ``load_state_dict()`` returning plain arrays and numbers, so a checkpoint can be
stored in ``.npz`` without pickle and training resumes bit for bit.
"""
import math

from .backend import as_numpy, device_of, get_array_module, to_device


class Optimizer:
    """Holds the parameters and the learning rate; subclasses implement ``update(p, slot)``."""

    def __init__(self, params, lr):
        self.params = list(params)
        if not self.params:
            raise ValueError("optimizer got an empty parameter list")
        self.lr = float(lr)
        self.steps = 0

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    def step(self):
        self.steps += 1
        for i, p in enumerate(self.params):
            if p.grad is not None:
                self.follow(i, p)
                self.update(i, p)

    def update(self, i, p):
        raise NotImplementedError

    def follow(self, i, p):
        """Move parameter i's slots to the device of the parameter (after ``model.to(device)``)."""
        device = device_of(p.data)
        for name in self.slot_names():
            slots = getattr(self, name)
            if slots[i] is not None and device_of(slots[i]) != device:
                slots[i] = to_device(slots[i], device)

    def nonfinite(self):
        """A 0-d array on the parameters' device: nonzero if any parameter holds a NaN or an infinity.
        (Reading it on the host is a synchronisation: read it with the step's other figures.)"""
        xp = get_array_module(self.params[0].data)
        return xp.stack([~xp.isfinite(p.data).all() for p in self.params]).any()

    # -- state --------------------------------------------------------------------------------
    def slot_names(self):
        return ()

    def state_dict(self):
        state = {"lr": self.lr, "steps": self.steps}
        for name in self.slot_names():
            for i, array in enumerate(getattr(self, name)):
                if array is not None:
                    state[f"{name}.{i}"] = as_numpy(array).copy()
        return state

    def load_state_dict(self, state):
        self.lr = float(state["lr"])
        self.steps = int(state["steps"])
        for name in self.slot_names():
            slots = getattr(self, name)
            for i, p in enumerate(self.params):
                key = f"{name}.{i}"
                if key in state:
                    if tuple(state[key].shape) != p.shape:
                        raise ValueError(f"optimizer state {key}: shape {tuple(state[key].shape)} != {p.shape}")
                    slots[i] = get_array_module(p.data).asarray(state[key], dtype=p.dtype)
                else:
                    slots[i] = None


class SGD(Optimizer):
    """SGD with momentum and (L2) weight decay, PyTorch's convention:

        g = grad + weight_decay * p;   v = momentum * v + g;   p = p - lr * v
    """

    def __init__(self, params, lr=0.1, momentum=0.9, weight_decay=0.0):
        super().__init__(params, lr)
        self.momentum, self.weight_decay = float(momentum), float(weight_decay)
        self.velocity = [None] * len(self.params)

    def slot_names(self):
        return ("velocity",)

    def update(self, i, p):
        g = p.grad + self.weight_decay * p.data if self.weight_decay else p.grad
        if self.momentum:
            v = self.velocity[i]
            if v is None:
                v = self.velocity[i] = g.copy()
            else:
                v *= self.momentum
                v += g
            g = v
        p.data -= self.lr * g


class Adam(Optimizer):
    """Adam (Kingma & Ba) with optional L2 weight decay added to the gradient:

        m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
        p = p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr)
        self.beta1, self.beta2 = betas
        self.eps, self.weight_decay = eps, weight_decay
        self.m = [None] * len(self.params)
        self.v = [None] * len(self.params)

    def slot_names(self):
        return ("m", "v")

    def update(self, i, p):
        xp = get_array_module(p.data)
        g = p.grad + self.weight_decay * p.data if self.weight_decay else p.grad
        if self.m[i] is None:
            self.m[i] = xp.zeros_like(p.data)
            self.v[i] = xp.zeros_like(p.data)
        m, v = self.m[i], self.v[i]
        m *= self.beta1
        m += (1 - self.beta1) * g
        v *= self.beta2
        v += (1 - self.beta2) * (g * g)
        step_size = self.lr / (1 - self.beta1 ** self.steps)
        p.data -= step_size * m / (xp.sqrt(v / (1 - self.beta2 ** self.steps)) + self.eps)


class CosineSchedule:
    """Cosine annealing from ``base_lr`` to ``min_lr`` over ``total_steps``, after a linear warm-up:

        lr(s) = base_lr * (s + 1) / warmup                                      for s < warmup
        lr(s) = min_lr + (base_lr - min_lr) * (1 + cos(pi * (s - warmup) / (total - warmup))) / 2
    Call ``step()`` once per optimizer step; it sets ``optimizer.lr``.
    """

    def __init__(self, optimizer, total_steps, warmup_steps=0, min_lr=0.0):
        if total_steps <= warmup_steps:
            raise ValueError(f"total_steps ({total_steps}) must exceed warmup_steps ({warmup_steps})")
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.total_steps, self.warmup_steps, self.min_lr = total_steps, warmup_steps, min_lr
        self.position = 0
        optimizer.lr = self.lr_at(0)

    def lr_at(self, s):
        if s < self.warmup_steps:
            return self.base_lr * (s + 1) / self.warmup_steps
        progress = min(1.0, (s - self.warmup_steps) / (self.total_steps - self.warmup_steps))
        return self.min_lr + (self.base_lr - self.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))

    def step(self):
        self.position += 1
        self.optimizer.lr = self.lr_at(self.position)

    def state_dict(self):
        return {"position": self.position, "base_lr": self.base_lr}

    def load_state_dict(self, state):
        self.position = int(state["position"])
        self.base_lr = float(state["base_lr"])
        self.optimizer.lr = self.lr_at(self.position)
