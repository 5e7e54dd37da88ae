"""Convolution and average pooling on [B, C, H, W] arrays, with hand-written backward passes.

In a spiking net B is the folded batch T*N: every timestep of every sample goes through one GEMM.

im2col lays every receptive field out as one column, so a convolution becomes one matrix product:

    cols[(c, p, q), (n, i, j)] = x_pad[n, c, i*s_h + p, j*s_w + q]       shape [C*kh*kw, B*Ho*Wo]
    y[o, (n, i, j)]            = sum_k W[o, k] cols[k, (n, i, j)]        (W reshaped to [Cout, C*kh*kw])

with x_pad the input zero-padded by (pad_h, pad_w), and Ho = (H + 2 pad_h - kh) // s_h + 1 (same for Wo).
Columns are ordered (n, i, j) and rows (c, p, q) so that both GEMMs of the backward pass work on the
same [C*kh*kw, B*Ho*Wo] matrix without transposing it. col2im is the adjoint of im2col: it adds every
column entry back onto the input pixel it was read from.

This file is the reference, written to be read. ``conv2d`` runs the fast version of ``Conv2d`` where
one exists (``minisnn/fast/conv.py``: batch chunks on all CPU cores, dx by a flipped-kernel
convolution), which the tests check equal to this one.
"""
from numbers import Integral

from ..backend import get_array_module
from ..core import Function
from ..fast import version_of


def as_pair(value, name):
    """An int or an (h, w) pair of ints -> (h, w)."""
    pair = (value, value) if isinstance(value, Integral) else value
    if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(isinstance(v, Integral) for v in pair)):
        raise ValueError(f"{name} must be an int or a pair of ints (h, w), got {value!r}")
    return int(pair[0]), int(pair[1])


def _geometry(x_shape, kh, kw, stride, padding):
    """Check the arguments; return (stride, padding, (Ho, Wo)) with stride and padding as pairs."""
    (sh, sw), (ph, pw) = as_pair(stride, "stride"), as_pair(padding, "padding")
    if sh < 1 or sw < 1:
        raise ValueError(f"stride must be positive, got {(sh, sw)}")
    if ph < 0 or pw < 0:
        raise ValueError(f"padding must be non-negative, got {(ph, pw)}")
    if kh < 1 or kw < 1:
        raise ValueError(f"kernel size must be positive, got {(kh, kw)}")
    H, W = x_shape[2], x_shape[3]
    if H + 2 * ph < kh or W + 2 * pw < kw:
        raise ValueError(f"kernel {(kh, kw)} is larger than the padded input {(H + 2 * ph, W + 2 * pw)}")
    return (sh, sw), (ph, pw), ((H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1)


def _check_4d(x, name):
    if x.ndim != 4:
        raise ValueError(f"{name} expects a 4-D input [B, C, H, W], got shape {tuple(x.shape)}")


def im2col(x, kh, kw, stride=1, padding=0):
    """[B, C, H, W] -> cols [C*kh*kw, B*Ho*Wo] with cols[(c,p,q), (n,i,j)] = x_pad[n, c, i*s_h+p, j*s_w+q].

    For each kernel offset (p, q) the rows (c, p, q) are the padded input shifted by (p, q) and
    sampled with the stride: one slice copy per offset.
    """
    xp = get_array_module(x)
    _check_4d(x, "im2col")
    (sh, sw), (ph, pw), (Ho, Wo) = _geometry(x.shape, kh, kw, stride, padding)
    B, C = x.shape[:2]
    x_pad = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    cols = xp.empty((C, kh, kw, B, Ho, Wo), dtype=x.dtype)
    for p in range(kh):
        for q in range(kw):
            window = x_pad[:, :, p:p + sh * Ho:sh, q:q + sw * Wo:sw]          # [B, C, Ho, Wo]
            cols[:, p, q] = window.transpose(1, 0, 2, 3)
    return cols.reshape(C * kh * kw, B * Ho * Wo)


def col2im(cols, x_shape, kh, kw, stride=1, padding=0):
    """The adjoint of im2col: [C*kh*kw, B*Ho*Wo] -> [B, C, H, W].

    gx[n, c, h, w] = sum over (p, q, i, j) with i*s_h + p - pad_h = h and j*s_w + q - pad_w = w
                     of cols[(c, p, q), (n, i, j)].

    One slice addition per kernel offset (p, q) onto the padded image; the padding is cut off at the end.
    """
    xp = get_array_module(cols)
    B, C, H, W = x_shape
    (sh, sw), (ph, pw), (Ho, Wo) = _geometry(x_shape, kh, kw, stride, padding)
    if cols.shape != (C * kh * kw, B * Ho * Wo):
        raise ValueError(f"col2im: cols shape {tuple(cols.shape)} does not match x_shape {tuple(x_shape)} "
                         f"with kernel {(kh, kw)}: expected {(C * kh * kw, B * Ho * Wo)}")
    patches = cols.reshape(C, kh, kw, B, Ho, Wo)
    gx_pad = xp.zeros((B, C, H + 2 * ph, W + 2 * pw), dtype=cols.dtype)
    for p in range(kh):
        for q in range(kw):
            gx_pad[:, :, p:p + sh * Ho:sh, q:q + sw * Wo:sw] += patches[:, p, q].transpose(1, 0, 2, 3)
    return xp.ascontiguousarray(gx_pad[:, :, ph:ph + H, pw:pw + W])


def _check_dtypes(name, *arrays):
    dtypes = {a.dtype for a in arrays}
    if len(dtypes) != 1 or arrays[0].dtype.kind != "f":
        raise TypeError(f"{name}: inputs must share one floating dtype, got {[str(a.dtype) for a in arrays]}")


class Conv2d(Function):
    """2-D convolution (cross-correlation, as in every deep-learning library).

    Forward, for x [B, C, H, W], W [Cout, C, kh, kw], b [Cout] and stride s, padding pad:

        y[n, o, i, j] = b[o] + sum_{c, p, q} W[o, c, p, q] x[n, c, i*s_h + p - pad_h, j*s_w + q - pad_w]

    (x is zero outside the image). With cols = im2col(x) and W as a [Cout, C*kh*kw] matrix this is one
    GEMM, Y = W cols + b, over the whole batch.

    Backward, given gy = dL/dy laid out as gY [Cout, B*Ho*Wo]:

        dL/dW[o, c, p, q] = sum_{n, i, j} gy[n, o, i, j] x[n, c, i*s_h + p - pad_h, j*s_w + q - pad_w]
                            i.e.  dW = gY cols^T
        dL/db[o]          = sum_{n, i, j} gy[n, o, i, j]
        dL/dx[n, c, h, w] = sum_{o, p, q, i, j : i*s_h + p - pad_h = h, j*s_w + q - pad_w = w}
                                W[o, c, p, q] gy[n, o, i, j]
                            i.e.  dx = col2im(W^T gY)

    cols is rebuilt from x in backward rather than kept: x is alive anyway (it is this Function's
    input) while cols is kh*kw times larger. dx is skipped when x needs no gradient (the first layer).
    """

    def __init__(self, stride=1, padding=0):
        self.stride, self.padding = stride, padding

    def forward(self, x, W, b=None):
        xp = get_array_module(x)
        _check_conv_inputs(x, W, b)
        Cout, _, kh, kw = W.shape
        _, _, (Ho, Wo) = _geometry(x.shape, kh, kw, self.stride, self.padding)
        self.x, self.W = x, W
        cols = im2col(x, kh, kw, self.stride, self.padding)                 # [C*kh*kw, B*Ho*Wo]
        Y = W.reshape(Cout, -1) @ cols                                       # [Cout, B*Ho*Wo]
        if b is not None:
            Y += b[:, None]
        return xp.ascontiguousarray(Y.reshape(Cout, -1, Ho, Wo).transpose(1, 0, 2, 3))

    def backward(self, gy):
        x, W = self.x, self.W
        Cout, _, kh, kw = W.shape
        gY = gy.transpose(1, 0, 2, 3).reshape(Cout, -1)                      # [Cout, B*Ho*Wo]
        gx = gW = gb = None
        if self.needs_input_grad[0]:
            gx = col2im(W.reshape(Cout, -1).T @ gY, x.shape, kh, kw, self.stride, self.padding)
        if self.needs_input_grad[1]:
            cols = im2col(x, kh, kw, self.stride, self.padding)
            gW = (gY @ cols.T).reshape(W.shape)
        if len(self.needs_input_grad) == 2:
            return gx, gW
        if self.needs_input_grad[2]:
            gb = gy.sum(axis=(0, 2, 3))
        return gx, gW, gb


def _check_conv_inputs(x, W, b):
    _check_4d(x, "conv2d")
    if W.ndim != 4 or W.shape[1] != x.shape[1]:
        raise ValueError(f"conv2d: weight shape {tuple(W.shape)} does not fit input shape {tuple(x.shape)}: "
                         f"expected [Cout, {x.shape[1]}, kh, kw]")
    if b is not None and b.shape != (W.shape[0],):
        raise ValueError(f"conv2d: bias shape {tuple(b.shape)} != ({W.shape[0]},)")
    _check_dtypes("conv2d", *(a for a in (x, W, b) if a is not None))


class AvgPool2d(Function):
    """Average pooling over kh x kw windows (padding counts as zeros, always divided by kh*kw).

        y[n, c, i, j] = 1/(kh kw) sum_{p, q} x[n, c, i*s_h + p - pad_h, j*s_w + q - pad_w]
        dL/dx[n, c, h, w] = 1/(kh kw) sum_{p, q, i, j : i*s_h + p - pad_h = h, j*s_w + q - pad_w = w} gy[n, c, i, j]

    Each channel is pooled as its own one-channel image, so forward is the mean of the im2col rows and
    backward is col2im of gy/(kh kw) copied to every row.
    """

    def __init__(self, kernel, stride=None, padding=0):
        self.kernel = as_pair(kernel, "kernel")
        self.stride = self.kernel if stride is None else as_pair(stride, "stride")
        self.padding = padding

    def forward(self, x):
        _check_4d(x, "avg_pool2d")
        (kh, kw), (B, C) = self.kernel, x.shape[:2]
        _, _, (Ho, Wo) = _geometry(x.shape, kh, kw, self.stride, self.padding)
        self.x_shape = x.shape
        cols = im2col(x.reshape(B * C, 1, *x.shape[2:]), kh, kw, self.stride, self.padding)
        return cols.mean(axis=0).reshape(B, C, Ho, Wo)

    def backward(self, gy):
        xp = get_array_module(gy)
        (kh, kw), (B, C, H, W) = self.kernel, self.x_shape
        cols = xp.broadcast_to(gy.reshape(1, -1) / (kh * kw), (kh * kw, gy.size))
        return col2im(cols, (B * C, 1, H, W), kh, kw, self.stride, self.padding).reshape(self.x_shape)


class GlobalAvgPool2d(Function):
    """Mean over the whole feature map: [B, C, H, W] -> [B, C].

        y[n, c] = 1/(H W) sum_{h, w} x[n, c, h, w]        dL/dx[n, c, h, w] = gy[n, c] / (H W)
    """

    def forward(self, x):
        _check_4d(x, "global_avg_pool2d")
        self.x_shape = x.shape
        return x.mean(axis=(2, 3))

    def backward(self, gy):
        xp = get_array_module(gy)
        H, W = self.x_shape[2:]
        return xp.broadcast_to((gy / (H * W))[:, :, None, None], self.x_shape).copy()


def conv2d(x, W, b=None, stride=1, padding=0):
    """y = conv(x, W) + b for x [B, C, H, W], W [Cout, C, kh, kw], b [Cout] or None.

    stride and padding: an int or an (h, w) pair. Returns [B, Cout, Ho, Wo]. Runs the fast version
    of ``Conv2d`` for x's device (``minisnn.fast.version_of``).
    """
    inputs = (x, W) if b is None else (x, W, b)
    return version_of(Conv2d, x)(stride, padding)(*inputs)


def avg_pool2d(x, kernel, stride=None, padding=0):
    """Average pooling; stride defaults to the kernel size. [B, C, H, W] -> [B, C, Ho, Wo]."""
    return AvgPool2d(kernel, stride, padding)(x)


def global_avg_pool2d(x):
    """Global average pooling: [B, C, H, W] -> [B, C]."""
    return GlobalAvgPool2d()(x)
