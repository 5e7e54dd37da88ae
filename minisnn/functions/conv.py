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


def _tap_range(offset, pad, stride, size, out_size):
    """Output positions i whose input position i*stride + offset - pad lies inside [0, size).

    Returns (i0, i1, first): the valid i form the range [i0, i1) (empty when i1 <= i0) and the input
    position of i0 is ``first``. The other outputs of this kernel offset read the zero padding.
    """
    i0 = max(0, -((offset - pad) // stride))
    i1 = min(out_size, (size - 1 + pad - offset) // stride + 1)
    return i0, max(i0, i1), i0 * stride + offset - pad


def _taps(x_shape, kh, kw, stride, padding):
    """For every kernel offset (p, q): (p, q, output rows, output cols, input rows, input cols) as slices.

    out[..., rows, cols] of the output grid pairs with x[..., in_rows, in_cols] of the unpadded input;
    every other output position of this offset falls on the padding.
    """
    (sh, sw), (ph, pw), (Ho, Wo) = _geometry(x_shape, kh, kw, stride, padding)
    H, W = x_shape[2], x_shape[3]
    for p in range(kh):
        i0, i1, h0 = _tap_range(p, ph, sh, H, Ho)
        for q in range(kw):
            j0, j1, w0 = _tap_range(q, pw, sw, W, Wo)
            yield (p, q, slice(i0, i1), slice(j0, j1),
                   slice(h0, h0 + sh * (i1 - i0), sh), slice(w0, w0 + sw * (j1 - j0), sw))


def im2col(x, kh, kw, stride=1, padding=0):
    """[B, C, H, W] -> cols [C*kh*kw, B*Ho*Wo] with cols[(c,p,q), (n,i,j)] = x_pad[n, c, i*s_h+p, j*s_w+q].

    For each kernel offset (p, q) the rows (c, p, q) are the input shifted by (p, q): one slice copy
    per offset straight from the unpadded input into zeros (where the shifted window reads the padding).
    """
    xp = get_array_module(x)
    _check_4d(x, "im2col")
    _, _, (Ho, Wo) = _geometry(x.shape, kh, kw, stride, padding)
    B, C = x.shape[:2]
    padded = any(as_pair(padding, "padding"))
    cols = (xp.zeros if padded else xp.empty)((C, kh, kw, B, Ho, Wo), dtype=x.dtype)
    channel_major = x.transpose(1, 0, 2, 3)
    for p, q, rows, columns, in_rows, in_columns in _taps(x.shape, kh, kw, stride, padding):
        cols[:, p, q, :, rows, columns] = channel_major[:, :, in_rows, in_columns]
    return cols.reshape(C * kh * kw, B * Ho * Wo)


def col2im(cols, x_shape, kh, kw, stride=1, padding=0, out=None):
    """The adjoint of im2col: [C*kh*kw, B*Ho*Wo] -> [B, C, H, W] (written into `out` if given).

    gx[n, c, h, w] = sum over (p, q, i, j) with i*s_h + p - pad_h = h and j*s_w + q - pad_w = w
                     of cols[(c, p, q), (n, i, j)].

    One slice addition per kernel offset (p, q) -- kh*kw of them -- of the rows (c, p, q) onto the
    input pixels they were read from; what was read from the padding is dropped.
    """
    xp = get_array_module(cols)
    B, C, H, W = x_shape
    _, _, (Ho, Wo) = _geometry(x_shape, kh, kw, stride, padding)
    if cols.shape != (C * kh * kw, B * Ho * Wo):
        raise ValueError(f"col2im: cols shape {tuple(cols.shape)} does not match x_shape {tuple(x_shape)} "
                         f"with kernel {(kh, kw)}: expected {(C * kh * kw, B * Ho * Wo)}")
    patches = cols.reshape(C, kh, kw, B, Ho, Wo)
    gx = xp.empty(x_shape, dtype=cols.dtype) if out is None else out
    gx[...] = 0
    channel_major = gx.transpose(1, 0, 2, 3)
    for p, q, rows, columns, in_rows, in_columns in _taps(x_shape, kh, kw, stride, padding):
        channel_major[:, :, in_rows, in_columns] += patches[:, p, q, :, rows, columns]
    return gx


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

    where gY is gy laid out as [Cout, B*Ho*Wo]. With stride 1, dx is itself a convolution: of gy
    zero-padded by (kh-1-pad_h, kw-1-pad_w), with the kernel turned by 180 degrees and its in and out
    channels swapped (Wf[c, o, p, q] = W[o, c, kh-1-p, kw-1-q]):

        dx = conv(gy, Wf, padding=(kh-1-pad_h, kw-1-pad_w))    = Wf im2col(gy)

    so it is computed that way: im2col's plain copies are 20-45% faster than col2im's kh*kw scattered
    additions. Strided convolutions (and padding >= kernel) use col2im.

    cols is rebuilt from x in backward rather than kept:
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
        Cout, C, kh, kw = W.shape
        H, W_in = x.shape[2:]
        W_matrix = W.reshape(Cout, -1)
        need_gx, need_gW = self.needs_input_grad[:2]
        gx = xp.empty_like(x) if need_gx else None
        (sh, sw), (ph, pw), _ = _geometry(x.shape, kh, kw, self.stride, self.padding)
        as_convolution = (sh, sw) == (1, 1) and ph < kh and pw < kw
        if as_convolution:
            # [C, Cout*kh*kw]: in and out channels swapped, the kernel turned by 180 degrees
            W_flipped = W[:, :, ::-1, ::-1].transpose(1, 0, 2, 3).reshape(C, -1)

        def chunk_backward(rows):
            gY = gy[rows].transpose(1, 0, 2, 3).reshape(Cout, -1)  # [Cout, b*Ho*Wo]
            if need_gx and as_convolution:
                gx_chunk = W_flipped @ im2col(gy[rows], kh, kw, 1, (kh - 1 - ph, kw - 1 - pw))  # [C, b*H*W]
                gx[rows] = gx_chunk.reshape(C, -1, H, W_in).transpose(1, 0, 2, 3)
            elif need_gx:
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
