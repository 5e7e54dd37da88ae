"""Naive, obviously-correct implementations that the engine's Functions are checked against.

Loops over single elements, written for clarity and nothing else: a convolution and its gradients,
average pooling, the LIF neuron, and batch norm's forward.
"""
import numpy as np

from strategies import as_hw


def naive_conv(x, W, b, stride, padding):
    """y[n,o,i,j] = b[o] + sum_{c,p,q} W[o,c,p,q] x_pad[n,c,i*sh+p,j*sw+q], one output at a time."""
    (sh, sw), (ph, pw) = as_hw(stride), as_hw(padding)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    cout, _, kh, kw = W.shape
    ho, wo = (xp.shape[2] - kh) // sh + 1, (xp.shape[3] - kw) // sw + 1
    y = np.zeros((x.shape[0], cout, ho, wo))
    for n in range(x.shape[0]):
        for o in range(cout):
            for i in range(ho):
                for j in range(wo):
                    y[n, o, i, j] = b[o] + np.sum(W[o] * xp[n, :, i * sh:i * sh + kh, j * sw:j * sw + kw])
    return y


def naive_conv_grads(x, W, gy, stride, padding):
    """Scatter each output's gradient back onto its window: returns (dx, dW, db)."""
    (sh, sw), (ph, pw) = as_hw(stride), as_hw(padding)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    gxp, gW = np.zeros_like(xp), np.zeros_like(W)
    _, _, kh, kw = W.shape
    for n, o, i, j in np.ndindex(*gy.shape):
        window = (n, slice(None), slice(i * sh, i * sh + kh), slice(j * sw, j * sw + kw))
        gxp[window] += gy[n, o, i, j] * W[o]
        gW[o] += gy[n, o, i, j] * xp[window]
    gx = gxp[:, :, ph:ph + x.shape[2], pw:pw + x.shape[3]]
    return gx, gW, gy.sum(axis=(0, 2, 3))


def naive_avg_pool(x, kernel, stride, padding):
    (kh, kw), (ph, pw) = kernel, padding
    sh, sw = kernel if stride is None else stride
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    ho, wo = (xp.shape[2] - kh) // sh + 1, (xp.shape[3] - kw) // sw + 1
    y = np.zeros(x.shape[:2] + (ho, wo))
    for i in range(ho):
        for j in range(wo):
            y[:, :, i, j] = xp[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw].mean(axis=(2, 3))
    return y


def reference_lif(x, v_th, tau, spike=lambda v: float(v >= 0), reset=None):
    """Plain per-timestep, per-neuron Python loop over floats: returns (u, o).

    reset: optional array of o values to use, frozen, in the reset factor (1 - o[t-1]).
    """
    T = x.shape[0]
    flat = x.reshape(T, -1)
    u, o = np.zeros_like(flat), np.zeros_like(flat)
    for i in range(flat.shape[1]):
        u_prev = o_prev = 0.0
        for t in range(T):
            if reset is not None:
                o_prev = reset.reshape(T, -1)[t - 1, i] if t > 0 else 0.0
            u[t, i] = tau * u_prev * (1 - o_prev) + float(flat[t, i])
            o[t, i] = spike(u[t, i] - v_th)
            u_prev, o_prev = u[t, i], o[t, i]
    return u.reshape(x.shape), o.reshape(x.shape)


def reference_batch_norm(x, weight, bias, scale, axes, mean=None, var=None, eps=1e-5):
    """NumPy y = lambda * scale * (x - mean) / sqrt(var + eps) + beta; batch statistics over ``axes``
    unless mean and var (per channel, channel axis 2) are given."""
    shape = [1] * x.ndim
    shape[2] = -1
    if mean is None:
        mean, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
    else:
        mean, var = mean.reshape(shape), var.reshape(shape)
    return weight.reshape(shape) * scale * (x - mean) / np.sqrt(var + eps) + bias.reshape(shape)
