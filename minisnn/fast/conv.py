"""The fast Conv2d: the same equations as ``functions/conv.py``, arranged for speed.

``ChunkedConv2d`` runs on the CPU (and is what CuPy would get without ``CUDAConv2d``); ``CUDAConv2d``
runs on the GPU. On the CPU three changes, each measured in benchmarks/RESULTS.md:

* **Batch chunks across the CPU cores.** The batch is split into chunks of about CHUNK_BYTES of
  im2col columns each, at least one per core (``parallel.map_chunks``); every chunk builds its own
  columns and runs its own GEMMs, and dW adds the chunks' partial products. The columns of a chunk
  stay in cache, and the copies -- which NumPy runs on one core -- run on all of them.
* **im2col straight from the unpadded input.** For each kernel offset (p, q) only the output positions
  whose window lies inside the image are copied (``taps``); the rest of the columns stay zero. No
  padded copy of the input is made.
* **With stride 1, dx as a convolution.** dx = col2im(W^T gY) is then itself a convolution: of gy
  zero-padded by (kh-1-pad_h, kw-1-pad_w), with the kernel turned by 180 degrees and its in and out
  channels swapped (Wf[c, o, p, q] = W[o, c, kh-1-p, kw-1-q]):

      dx = conv(gy, Wf, padding=(kh-1-pad_h, kw-1-pad_w)) = Wf im2col(gy)

  im2col's plain copies are 20-45 % faster than col2im's kh*kw scattered additions. Strided
  convolutions (and padding >= kernel) keep col2im.

On the GPU (``CUDAConv2d``) im2col and col2im are one kernel each instead of a slice copy per kernel
offset (kh*kw launches): each column entry, or each input pixel, is one thread doing the index
arithmetic of the reference. col2im gathers -- every pixel adds up, in the reference's (p, q) order,
the column entries that were read from it -- so no two threads write to one address, and the result
is bit for bit the reference's. The batch is cut into chunks whose columns fit
``parallel.gpu_chunk_bytes`` of device memory.
"""
import functools

from ..backend import get_array_module
from ..functions.conv import Conv2d, _check_4d, _check_conv_inputs, _geometry, as_pair
from . import register
from .parallel import gpu_chunks, map_chunks
from .phases import timed


def _tap_range(offset, pad, stride, size, out_size):
    """Output positions i whose input position i*stride + offset - pad lies inside [0, size).

    Returns (i0, i1, first): the valid i form the range [i0, i1) (empty when i1 <= i0) and the input
    position of i0 is ``first``. The other outputs of this kernel offset read the zero padding.
    """
    i0 = max(0, -((offset - pad) // stride))
    i1 = min(out_size, (size - 1 + pad - offset) // stride + 1)
    return i0, max(i0, i1), i0 * stride + offset - pad


def taps(x_shape, kh, kw, stride, padding):
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


def im2col_unpadded(x, kh, kw, stride=1, padding=0):
    """``functions.conv.im2col`` without a padded copy: each offset's valid window is copied straight
    from x into columns that start at zero (or uninitialised, when there is no padding)."""
    xp = get_array_module(x)
    _check_4d(x, "im2col")
    _, _, (Ho, Wo) = _geometry(x.shape, kh, kw, stride, padding)
    B, C = x.shape[:2]
    padded = any(as_pair(padding, "padding"))
    with timed("allocation"):
        cols = (xp.zeros if padded else xp.empty)((C, kh, kw, B, Ho, Wo), dtype=x.dtype)
    channel_major = x.transpose(1, 0, 2, 3)
    for p, q, rows, columns, in_rows, in_columns in taps(x.shape, kh, kw, stride, padding):
        cols[:, p, q, :, rows, columns] = channel_major[:, :, in_rows, in_columns]
    return cols.reshape(C * kh * kw, B * Ho * Wo)


def col2im_unpadded(cols, x_shape, kh, kw, stride, padding, out):
    """``functions.conv.col2im`` written into ``out`` [B, C, H, W]: each offset's rows are added
    straight onto the pixels they were read from; what was read from the padding is dropped."""
    C = x_shape[1]
    _, _, (Ho, Wo) = _geometry(x_shape, kh, kw, stride, padding)
    patches = cols.reshape(C, kh, kw, x_shape[0], Ho, Wo)
    out[...] = 0
    channel_major = out.transpose(1, 0, 2, 3)
    for p, q, rows, columns, in_rows, in_columns in taps(x_shape, kh, kw, stride, padding):
        channel_major[:, :, in_rows, in_columns] += patches[:, p, q, :, rows, columns]
    return out


class ChunkedConv2d(Conv2d):
    """``Conv2d`` on batch chunks across the CPU cores, im2col without padding copies, and with stride 1
    dx as a flipped-kernel convolution (see the module docstring). On CuPy it runs one chunk."""

    @staticmethod
    def _cols_bytes(x, W, Ho, Wo):
        """The size of the whole batch's im2col matrix, which the CPU split keeps in cache-sized chunks."""
        return W[0].size * x.shape[0] * Ho * Wo * x.itemsize

    def forward(self, x, W, b=None):
        xp = get_array_module(x)
        _check_conv_inputs(x, W, b)
        Cout, _, kh, kw = W.shape
        _, _, (Ho, Wo) = _geometry(x.shape, kh, kw, self.stride, self.padding)
        self.x, self.W = x, W
        W_matrix = W.reshape(Cout, -1)
        y = xp.empty((x.shape[0], Cout, Ho, Wo), dtype=x.dtype)

        def chunk_forward(rows):
            with timed("im2col"):
                cols = im2col_unpadded(x[rows], kh, kw, self.stride, self.padding)
            with timed("GEMM"):
                y_chunk = W_matrix @ cols                                         # [Cout, b*Ho*Wo]
            with timed("layout"):
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
            with timed("layout"):
                gY = gy[rows].transpose(1, 0, 2, 3).reshape(Cout, -1)  # [Cout, b*Ho*Wo]
            if need_gx and as_convolution:
                with timed("dx columns"):
                    cols = im2col_unpadded(gy[rows], kh, kw, 1, (kh - 1 - ph, kw - 1 - pw))
                with timed("GEMM"):
                    gx_chunk = W_flipped @ cols
                with timed("layout"):
                    gx[rows] = gx_chunk.reshape(C, -1, H, W_in).transpose(1, 0, 2, 3)
            elif need_gx:
                with timed("GEMM"):
                    cols = W_matrix.T @ gY
                with timed("dx columns"):
                    col2im_unpadded(cols, x[rows].shape, kh, kw, self.stride, self.padding, out=gx[rows])
            if not need_gW:
                return None
            with timed("im2col"):
                cols = im2col_unpadded(x[rows], kh, kw, self.stride, self.padding)
            # dW = gY cols^T sums over the long b*Ho*Wo axis. Multithreaded OpenBLAS splits the rows
            # of a product among its threads; with few rows it synchronises them at every block of
            # that long sum, which on a busy machine made this product up to 30x slower. So the
            # side with more rows goes first: dW = (cols gY^T)^T unless Cout > C*kh*kw (the stem).
            with timed("GEMM"):
                return gY @ cols.T if Cout > cols.shape[0] else (cols @ gY.T).T

        partial_gWs = map_chunks(chunk_backward, x.shape[0], xp, self._cols_bytes(x, W, *gy.shape[2:]))
        with timed("layout"):
            gW = sum(partial_gWs[1:], partial_gWs[0]).reshape(W.shape) if need_gW else None
        if len(self.needs_input_grad) == 2:
            return gx, gW
        gb = gy.sum(axis=(0, 2, 3)) if self.needs_input_grad[2] else None
        return gx, gW, gb


# ------------------------------------------------------------------------------ CUDA kernels
# cols[(c, p, q), (n, r, s)] = x_pad[n, c, r*sh + p, s*sw + q]: one thread per column entry (functions.conv.im2col)
_IM2COL_SOURCE = """
const ptrdiff_t columns = (ptrdiff_t)B * Ho * Wo;
const ptrdiff_t row = i / columns, column = i % columns;
const int q = row % kw, p = (row / kw) % kh, c = row / ((ptrdiff_t)kw * kh);
const int s = column % Wo, r = (column / Wo) % Ho, n = column / ((ptrdiff_t)Wo * Ho);
const int h = r * sh + p - ph, w = s * sw + q - pw;                   // the unpadded pixel read
cols = (0 <= h && h < H && 0 <= w && w < W) ? x[(((ptrdiff_t)n * C + c) * H + h) * W + w] : (F)0;
"""

# gx[n, c, h, w] = sum over (p, q) in order of cols[(c, p, q), (n, r, s)] with r*sh + p - ph = h and
# s*sw + q - pw = w: one thread per input pixel (functions.conv.col2im)
_COL2IM_SOURCE = """
const int w = i % W, h = (i / W) % H;
const int c = (i / ((ptrdiff_t)W * H)) % C, n = i / ((ptrdiff_t)W * H * C);
const ptrdiff_t columns = (ptrdiff_t)B * Ho * Wo;
F total = 0;
for (int p = 0; p < kh; ++p) {
    const int hp = h + ph - p;                                          // = r * sh for the output row r
    if (hp < 0 || hp % sh != 0 || hp / sh >= Ho) continue;
    for (int q = 0; q < kw; ++q) {
        const int wq = w + pw - q;                                      // = s * sw for the output column s
        if (wq < 0 || wq % sw != 0 || wq / sw >= Wo) continue;
        total += cols[(((ptrdiff_t)c * kh + p) * kw + q) * columns + ((ptrdiff_t)n * Ho + hp / sh) * Wo + wq / sw];
    }
}
gx = total;
"""
_GEOMETRY = "int32 B, int32 C, int32 H, int32 W, int32 kh, int32 kw, int32 sh, int32 sw, int32 ph, int32 pw, " \
            "int32 Ho, int32 Wo"


@functools.lru_cache(maxsize=None)
def _kernel(cp, which):
    if which == "im2col":
        return cp.ElementwiseKernel(f"raw F x, {_GEOMETRY}", "F cols", _IM2COL_SOURCE, "minisnn_im2col")
    return cp.ElementwiseKernel(f"raw F cols, {_GEOMETRY}", "F gx", _COL2IM_SOURCE, "minisnn_col2im")


def im2col_cuda(x, kh, kw, stride, padding):
    """``functions.conv.im2col`` as one CUDA kernel: [B, C, H, W] -> [C*kh*kw, B*Ho*Wo]."""
    cp = get_array_module(x)
    (sh, sw), (ph, pw), (Ho, Wo) = _geometry(x.shape, kh, kw, stride, padding)
    B, C, H, W = x.shape
    cols = cp.empty((C * kh * kw, B * Ho * Wo), dtype=x.dtype)
    _kernel(cp, "im2col")(cp.ascontiguousarray(x), B, C, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo, cols)
    return cols


def col2im_cuda(cols, x_shape, kh, kw, stride, padding, out):
    """``functions.conv.col2im`` as one CUDA kernel, written into ``out`` [B, C, H, W] (C-contiguous)."""
    cp = get_array_module(cols)
    (sh, sw), (ph, pw), (Ho, Wo) = _geometry(x_shape, kh, kw, stride, padding)
    B, C, H, W = x_shape
    _kernel(cp, "col2im")(cp.ascontiguousarray(cols), B, C, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo, out)
    return out


class CUDAConv2d(Conv2d):
    """``Conv2d`` on the GPU: im2col and col2im as one kernel each, the batch in chunks that fit memory."""

    def forward(self, x, W, b=None):
        cp = get_array_module(x)
        _check_conv_inputs(x, W, b)
        Cout, _, kh, kw = W.shape
        _, _, (Ho, Wo) = _geometry(x.shape, kh, kw, self.stride, self.padding)
        self.x, self.W = x, W
        W_matrix = W.reshape(Cout, -1)
        y = cp.empty((x.shape[0], Cout, Ho, Wo), dtype=x.dtype)
        for rows in gpu_chunks(x.shape[0], ChunkedConv2d._cols_bytes(x, W, Ho, Wo), cp):
            Y = W_matrix @ im2col_cuda(x[rows], kh, kw, self.stride, self.padding)     # [Cout, b*Ho*Wo]
            if b is not None:
                Y += b[:, None]
            y[rows] = Y.reshape(Cout, -1, Ho, Wo).transpose(1, 0, 2, 3)
        return y

    def backward(self, gy):
        cp = get_array_module(gy)
        x, W = self.x, self.W
        Cout, _, kh, kw = W.shape
        W_matrix = W.reshape(Cout, -1)
        need_gx, need_gW = self.needs_input_grad[:2]
        gx = cp.empty_like(x) if need_gx else None
        gW = None
        for rows in gpu_chunks(x.shape[0], ChunkedConv2d._cols_bytes(x, W, *gy.shape[2:]), cp):
            gY = gy[rows].transpose(1, 0, 2, 3).reshape(Cout, -1)                       # [Cout, b*Ho*Wo]
            if need_gx:
                col2im_cuda(W_matrix.T @ gY, x[rows].shape, kh, kw, self.stride, self.padding, out=gx[rows])
            if need_gW:
                part = gY @ im2col_cuda(x[rows], kh, kw, self.stride, self.padding).T
                gW = part if gW is None else cp.add(gW, part, out=gW)
        gW = gW.reshape(W.shape) if need_gW else None
        if len(self.needs_input_grad) == 2:
            return gx, gW
        gb = gy.sum(axis=(0, 2, 3)) if self.needs_input_grad[2] else None
        return gx, gW, gb


register(Conv2d, cpu=ChunkedConv2d, cuda=CUDAConv2d)
