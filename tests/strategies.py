"""Hypothesis strategies shared by the tests: seeds and random cases for conv, LIF and batch norm.

Each case draws its arrays from a NumPy generator seeded by Hypothesis, in float64, so that a failing
example is reproduced exactly.
"""
import numpy as np
from hypothesis import strategies as st

seeds = st.integers(0, 2**32 - 1)


def as_hw(v):
    """An int or an (h, w) pair -> (h, w)."""
    return (v, v) if isinstance(v, int) else v


def pair_or_int(draw, lo, hi):
    """An (h, w) pair, given as a plain int half of the time when h == w."""
    h, w = draw(st.integers(lo, hi)), draw(st.integers(lo, hi))
    return h if h == w and draw(st.booleans()) else (h, w)


@st.composite
def conv_cases(draw, max_side=6, max_batch=2):
    """Random small conv geometry: (x, W, b, stride, padding) in float64."""
    n, cin, cout = draw(st.integers(1, max_batch)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride, padding = pair_or_int(draw, 1, 3), pair_or_int(draw, 0, 2)
    (ph, pw) = as_hw(padding)
    h = draw(st.integers(max(1, kh - 2 * ph), max_side))
    w = draw(st.integers(max(1, kw - 2 * pw), max_side))
    rng = np.random.default_rng(draw(seeds))
    x = rng.standard_normal((n, cin, h, w))
    W = rng.standard_normal((cout, cin, kh, kw))
    b = rng.standard_normal(cout)
    return x, W, b, stride, padding


@st.composite
def lif_cases(draw):
    """Random T in 1..8, batch and feature shapes, V_th, tau_decay, and input currents (x, v_th, tau)."""
    T = draw(st.integers(1, 8))
    shape = (T, draw(st.integers(1, 3))) + tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    v_th = draw(st.floats(0.1, 1.5))
    tau = draw(st.floats(0.05, 1.0))
    rng = np.random.default_rng(draw(seeds))
    x = rng.normal(0.6 * v_th, v_th, size=shape)  # currents around threshold: some steps fire
    return x, v_th, tau


@st.composite
def norm_cases(draw, per_timestep=False):
    """A random [T, N, C, H, W] or [T, N, C] input, lambda, beta (float64), with >= 2 values per channel
    (per timestep when per_timestep), and the generator for anything else: (x, weight, bias, rng)."""
    T, N, C = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    spatial = draw(st.sampled_from([(), (1, 2), (2, 2), (3, 2), (2, 1)]))
    per_channel = N * int(np.prod(spatial)) * (1 if per_timestep else T)
    if per_channel < 2:
        N += 1
    rng = np.random.default_rng(draw(seeds))
    x = rng.normal(rng.uniform(-3, 3), rng.uniform(0.5, 2), size=(T, N, C) + spatial)
    return x, rng.standard_normal(C), rng.standard_normal(C), rng
