"""The paper's constants, in one place (Zheng et al., "Going Deeper With Directly-Trained Larger Spiking
Neural Networks", AAAI 2021, arXiv:2011.05280).

Every layer, tdBN, plot and exporter takes its defaults from here, or reads the value from the layer
that was built with it (``LIF.v_th``, ``TdBN.alpha``) -- never from a literal of its own.

    V_TH             firing threshold:                o[t] = H(u[t] - V_TH)
    TAU_DECAY        membrane decay per timestep:     u[t] = TAU_DECAY * u[t-1] * (1 - o[t-1]) + x[t]
    SURROGATE_WIDTH  width a of the rectangular surrogate:  do/du = (1/a) * 1{|u - V_TH| < a/2}
    RESIDUAL_ALPHA   tdBN's alpha on both branches that meet at a residual addition:
                     x_hat = alpha * V_TH * (x - E[x]) / sqrt(Var[x] + eps); alpha = 1 elsewhere.

Why 1/sqrt(2) at a residual join: two branches, each normalised to variance (alpha V_th)^2 and roughly
independent, add up to variance 2 (alpha V_th)^2; alpha = 1/sqrt(2) brings the sum back to V_th^2, the
scale a single normalised branch gives the neuron after it.

Where these values come from: they are the defaults the project took as the paper's (the iterative
LIF of STBP with tdBN). The text of the paper was not available to this project when this module was
written, so no section number is cited here; the equations above are the ones minisnn implements.
"""
import math

V_TH = 0.5
TAU_DECAY = 0.25
SURROGATE_WIDTH = 1.0
RESIDUAL_ALPHA = 1 / math.sqrt(2)
