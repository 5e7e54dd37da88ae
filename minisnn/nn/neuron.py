"""The LIF layer: spiking neurons over a whole sequence [T, N, ...] (see ``functions/neuron.py``)."""
from ..functions import neuron as F
from ..functions.surrogate import get_surrogate
from .module import Module


class LIF(Module):
    """o = LIF(x):  u[t] = tau_decay * u[t-1] * (1 - o[t-1]) + x[t],  o[t] = H(u[t] - V_th).

    Takes input currents x [T, N, ...] and returns spikes [T, N, ...] in x's dtype. No state is
    kept between calls: every call starts from u[-1] = o[-1] = 0, so there is no reset to forget.

    surrogate: a name ('rectangular', 'sigmoid', 'atan', 'triangle', 'smooth_sigmoid') or a Surrogate;
    its parameters come as keywords, e.g. ``LIF(surrogate="sigmoid", k=10)``.
    detach_reset: treat the reset factor (1 - o[t-1]) as a constant in the backward pass.

    For monitors: set ``record = True`` and each forward keeps its raw arrays in ``last_spikes``
    (o, x's dtype) and ``last_membrane`` (u); they are left at None while ``record`` is False.
    ``last_rate`` always holds the mean firing rate of the last forward (a 0-d array on x's device,
    so reading it is the only host round trip).
    """

    def __init__(self, v_th=0.5, tau_decay=0.25, surrogate="rectangular", detach_reset=False,
                 **surrogate_params):
        super().__init__()
        self.v_th = v_th
        self.tau_decay = tau_decay
        self.surrogate = get_surrogate(surrogate, **surrogate_params)
        self.detach_reset = detach_reset
        self.record = False
        self.last_spikes = None
        self.last_membrane = None
        self.last_rate = None
        F.LIF(v_th, tau_decay, self.surrogate, detach_reset)  # check the settings now, not at first call

    def forward(self, x):
        fn = F.LIF(self.v_th, self.tau_decay, self.surrogate, self.detach_reset)
        spikes = fn(x)
        self.last_rate = spikes.data.mean()
        if self.record:
            self.last_spikes, self.last_membrane = spikes.data, fn.u
        return spikes

    def extra_repr(self):
        reset = ", detach_reset=True" if self.detach_reset else ""
        return f"v_th={self.v_th}, tau_decay={self.tau_decay}, surrogate={self.surrogate!r}{reset}"
