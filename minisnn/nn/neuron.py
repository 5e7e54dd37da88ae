"""The LIF layer: spiking neurons over a whole sequence [T, N, ...] (see ``functions/neuron.py``)."""
from ..functions import neuron as F
from ..functions.surrogate import get_surrogate
from ..paper import TAU_DECAY, V_TH
from .module import Module


class LIF(Module):
    """o = LIF(x):  u[t] = tau_decay * u[t-1] * (1 - o[t-1]) + x[t],  o[t] = H(u[t] - V_th).

    Takes input currents x [T, N, ...] and returns spikes [T, N, ...] in x's dtype. No state is
    kept between calls: every call starts from u[-1] = o[-1] = 0, so there is no reset to forget.

    surrogate: a name ('rectangular', 'sigmoid', 'atan', 'triangle', 'smooth_sigmoid') or a Surrogate;
    its parameters come as keywords, e.g. ``LIF(surrogate="sigmoid", k=10)``.
    detach_reset: treat the reset factor (1 - o[t-1]) as a constant in the backward pass.
    To look at spikes and membranes during a forward pass, use ``monitor.Recorder`` (forward hooks).
    """

    def __init__(self, v_th=V_TH, tau_decay=TAU_DECAY, surrogate="rectangular", detach_reset=False,
                 **surrogate_params):
        super().__init__()
        self.v_th = v_th
        self.tau_decay = tau_decay
        self.surrogate = get_surrogate(surrogate, **surrogate_params)
        self.detach_reset = detach_reset
        self.function()  # check the settings now, not at the first call

    def function(self):
        """A fresh ``functions.neuron.LIF`` Function with this layer's settings."""
        return F.LIF(self.v_th, self.tau_decay, self.surrogate, self.detach_reset)

    def forward(self, x):
        return F.lif(x, self.v_th, self.tau_decay, self.surrogate, self.detach_reset)

    def membrane(self, x):
        """The membrane potential u [T, N, ...] this layer reaches for input currents x (an array),
        recomputed -- the layer keeps no state -- with the same loop its forward runs."""
        fn = self.function()
        fn.forward(x)
        return fn.u

    def extra_repr(self):
        reset = ", detach_reset=True" if self.detach_reset else ""
        return f"v_th={self.v_th}, tau_decay={self.tau_decay}, surrogate={self.surrogate!r}{reset}"
