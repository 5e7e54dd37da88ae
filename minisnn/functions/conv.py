"""Convolution and average pooling on [B, C, H, W] arrays, with hand-written backward passes.

In a spiking net B is the folded batch T*N: every timestep of every sample goes through one GEMM.

im2col lays every receptive field out as one column, so a convolution becomes one matrix product:

    cols[(c, p, q), (n, i, j)] = x_pad[n, c, i*s_h + p, j*s_w + q]       shape [C*kh*kw, B*Ho*Wo]
    y[o, (n, i, j)]            = sum_k W[o, k] cols[k, (n, i, j)]        (W reshaped to [Cout, C*kh*kw])

with x_pad the input zero-padded by (pad_h, pad_w), and Ho = (H + 2 pad_h - kh) // s_h + 1 (same for Wo).
Columns are ordered (n, i, j) and rows (c, p, q) so that both GEMMs of the backward pass work on the
same [C*kh*kw, B*Ho*Wo] matrix without transposing it (on a CPU this layout is as fast as a
per-sample batched one, [B, C*kh*kw, Ho*Wo], and builds 4x faster than [B*Ho*Wo, C*kh*kw]). col2im is the adjoint of im2col: it adds every
column entry back onto the input pixel it was read from.
"""
from numbers import Integral

from ..backend import get_array_module
from ..core import Function
from ..parallel import map_chunks


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

    A strided view of the padded input holds every patch without copying; one reshape then copies
    it into the GEMM layout.
    """
    xp = get_array_module(x)
    _check_4d(x, "im2col")
    (sh, sw), (ph, pw), (Ho, Wo) = _geometry(x.shape, kh, kw, stride, padding)
    B, C = x.shape[:2]
    if ph or pw:
        padded = xp.zeros((B, C, x.shape[2] + 2 * ph, x.shape[3] + 2 * pw), dtype=x.dtype)
        padded[:, :, ph:ph + x.shape[2], pw:pw + x.shape[3]] = x
        x = padded
    sB, sC, sH, sW = x.strides
    patches = xp.lib.stride_tricks.as_strided(
        x, shape=(C, kh, kw, B, Ho, Wo), strides=(sC, sH, sW, sB, sH * sh, sW * sw))
    return patches.reshape(C * kh * kw, B * Ho * Wo)


def col2im(cols, x_shape, kh, kw, stride=1, padding=0, out=None):
    """The adjoint of im2col: [C*kh*kw, B*Ho*Wo] -> [B, C, H, W] (written into `out` if given).

    gx[n, c, h, w] = sum over (p, q, i, j) with i*s_h + p - pad_h = h and j*s_w + q - pad_w = w
                     of cols[(c, p, q), (n, i, j)].

    One slice addition per kernel offset (p, q) -- kh*kw of them -- into a padded gradient that is
    channel-major [C, B, Hp, Wp] like cols, then the padding is cut off and the axes put back.
    """
    xp = get_array_module(cols)
    B, C, H, W = x_shape
    (sh, sw), (ph, pw), (Ho, Wo) = _geometry(x_shape, kh, kw, stride, padding)
    if cols.shape != (C * kh * kw, B * Ho * Wo):
        raise ValueError(f"col2im: cols shape {tuple(cols.shape)} does not match x_shape {tuple(x_shape)} "
                         f"with kernel {(kh, kw)}: expected {(C * kh * kw, B * Ho * Wo)}")
    patches = cols.reshape(C, kh, kw, B, Ho, Wo)
    gx = xp.zeros((C, B, H + 2 * ph, W + 2 * pw), dtype=cols.dtype)
    for p in range(kh):
        for q in range(kw):
            gx[:, :, p:p + sh * Ho:sh, q:q + sw * Wo:sw] += patches[:, p, q]
    gx = gx[:, :, ph:ph + H, pw:pw + W].transpose(1, 0, 2, 3)
    if out is None:
        return xp.ascontiguousarray(gx)
    out[...] = gx
    return out


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

    Backward, given gy = dL/dy:

        dL/dW[o, c, p, q] = sum_{n, i, j} gy[n, o, i, j] x[n, c, i*s_h + p - pad_h, j*s_w + q - pad_w]
                            i.e.  dW = gY cols^T
        dL/db[o]          = sum_{n, i, j} gy[n, o, i, j]
        dL/dx[n, c, h, w] = sum_{o, p, q, i, j : i*s_h + p - pad_h = h, j*s_w + q - pad_w = w}
                                W[o, c, p, q] gy[n, o, i, j]
                            i.e.  dx = col2im(W^T gY)

    where gY is gy laid out as [Cout, B*Ho*Wo]. cols is rebuilt from x in backward rather than kept:
    x is alive anyway (it is this Function's input) while cols is kh*kw times larger.
    dx is skipped when x needs no gradient (the first layer).

    On the CPU the batch is split into chunks run on all cores (``parallel.map_chunks``; about
    CHUNK_BYTES of cols each, at least one per core): each chunk builds its own cols and runs its own
    GEMMs, and dW is the sum of the chunks' partial products.
    """

    def __init__(self, stride=1, padding=0):
        self.stride, self.padding = stride, padding

    @staticmethod
    def _cols_bytes(x, W, Ho, Wo):
        """The size of the whole batch's im2col matrix, which the CPU split keeps in cache-sized chunks."""
        return W[0].size * x.shape[0] * Ho * Wo * x.itemsize

    def forward(self, x, W, b=None):
        xp = get_array_module(x)
        _check_4d(x, "conv2d")
        if W.ndim != 4 or W.shape[1] != x.shape[1]:
            raise ValueError(f"conv2d: weight shape {tuple(W.shape)} does not fit input shape {tuple(x.shape)}: "
                             f"expected [Cout, {x.shape[1]}, kh, kw]")
        if b is not None and b.shape != (W.shape[0],):
            raise ValueError(f"conv2d: bias shape {tuple(b.shape)} != ({W.shape[0]},)")
        _check_dtypes("conv2d", *(a for a in (x, W, b) if a is not None))
        Cout, _, kh, kw = W.shape
        _, _, (Ho, Wo) = _geometry(x.shape, kh, kw, self.stride, self.padding)
        self.x, self.W = x, W
        W_matrix = W.reshape(Cout, -1)
        y = xp.empty((x.shape[0], Cout, Ho, Wo), dtype=x.dtype)

        def chunk_forward(rows):
            y_chunk = W_matrix @ im2col(x[rows], kh, kw, self.stride, self.padding)  # [Cout, b*Ho*Wo]
            if b is not None:
                y_chunk += b[:, None]
            y[rows] = y_chunk.reshape(Cout, -1, Ho, Wo).transpose(1, 0, 2, 3)

        map_chunks(chunk_forward, x.shape[0], xp, self._cols_bytes(x, W, Ho, Wo))
        return y

    def backward(self, gy):
        xp = get_array_module(gy)
        x, W = self.x, self.W
        Cout, _, kh, kw = W.shape
        W_matrix = W.reshape(Cout, -1)
        need_gx, need_gW = self.needs_input_grad[:2]
        gx = xp.empty_like(x) if need_gx else None

        def chunk_backward(rows):
            gY = gy[rows].transpose(1, 0, 2, 3).reshape(Cout, -1)  # [Cout, b*Ho*Wo]
            if need_gx:
                col2im(W_matrix.T @ gY, x[rows].shape, kh, kw, self.stride, self.padding, out=gx[rows])
            if not need_gW:
                return None
            cols = im2col(x[rows], kh, kw, self.stride, self.padding)
            # dW = gY cols^T sums over the long b*Ho*Wo axis. Multithreaded OpenBLAS splits the rows
            # of a product among its threads; with few rows it synchronises them at every block of
            # that long sum, which on a busy machine made this product up to 30x slower. So the
            # side with more rows goes first: dW = (cols gY^T)^T unless Cout > C*kh*kw (the stem).
            return gY @ cols.T if Cout > cols.shape[0] else (cols @ gY.T).T

        partial_gWs = map_chunks(chunk_backward, x.shape[0], xp, self._cols_bytes(x, W, *gy.shape[2:]))
        gW = sum(partial_gWs[1:], partial_gWs[0]).reshape(W.shape) if need_gW else None
        if len(self.needs_input_grad) == 2:
            return gx, gW
        gb = gy.sum(axis=(0, 2, 3)) if self.needs_input_grad[2] else None
        return gx, gW, gb


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

    stride and padding: an int or an (h, w) pair. Returns [B, Cout, Ho, Wo].
    """
    inputs = (x, W) if b is None else (x, W, b)
    return Conv2d(stride, padding)(*inputs)


def avg_pool2d(x, kernel, stride=None, padding=0):
    """Average pooling; stride defaults to the kernel size. [B, C, H, W] -> [B, C, Ho, Wo]."""
    return AvgPool2d(kernel, stride, padding)(x)


def global_avg_pool2d(x):
    """Global average pooling: [B, C, H, W] -> [B, C]."""
    return GlobalAvgPool2d()(x)
