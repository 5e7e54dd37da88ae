"""The fast Conv2d: the same equations as ``functions/conv.py``, arranged for speed.

``ChunkedConv2d`` runs on the CPU (NumPy arrays); ``CUDAConv2d`` runs on the GPU. On the CPU, each
change measured in benchmarks/RESULTS.md:

* **Batch chunks across the CPU cores.** The batch is split into chunks of about CHUNK_BYTES of
  im2col columns each (``parallel.map_chunks``); every chunk builds its own columns and runs its own
  GEMMs, and dW adds the chunks' partial products in chunk order. The columns of a chunk stay in
  cache, and the copies -- which NumPy runs on one core -- run on all of them. A chunk holds at least
  MIN_COLUMNS output positions, so that small maps still give BLAS products wide enough to run near
  its best rate, and dW few partial products to add.
* **im2col straight from the unpadded input, into a buffer that keeps its zeros.** For each kernel
  offset (p, q) only the output positions whose window lies inside the image are copied
  (``Geometry.taps``);
  the other entries of the columns are the zero padding. Each thread keeps its column buffers
  (``_Buffers``): a buffer is zeroed once, when it is made, and every later im2col of the same geometry
  writes exactly the same entries, so the padding stays zero and no call fills its columns with zeros
  again -- or asks the allocator for fresh memory, whose pages the kernel would zero on first touch.
* **Products written where they belong.** W cols is [Cout, b*Ho*Wo] with the chunk's images side by
  side, while y is [b, Cout, Ho, Wo]. For maps of at least PER_IMAGE_GEMM positions each image's
  product goes straight into y (``_products_into``); for smaller ones a single product over the chunk
  is faster, and one transposing copy puts it in place.
* **With stride 1, dx as a convolution.** dx = col2im(W^T gY) is then itself a convolution: of gy
  zero-padded by (kh-1-pad_h, kw-1-pad_w), with the kernel turned by 180 degrees and its in and out
  channels swapped (Wf[c, o, p, q] = W[o, c, kh-1-p, kw-1-q]):

      dx = conv(gy, Wf, padding=(kh-1-pad_h, kw-1-pad_w)) = Wf im2col(gy)

  im2col's plain copies are 20-45 % faster than col2im's kh*kw scattered additions. Strided
  convolutions (and padding >= kernel) keep col2im.
* **dW from the columns dx already built.** With x [C, pixels] as a matrix (a view for one image),
  dW[o, c, p, q] = sum_pixels x[c] gy_pad[o, pixel + (kh-1-p, kw-1-q)]: the rows of im2col(gy)
  that dx uses, taken in flipped order. So one product, Wf^T = im2col(gy) x^T ([(o, p', q'), c], the
  flipped kernel's layout), gives dW after a weight-sized reshuffle, and backward needs no im2col of x
  at all. Where dx is not a convolution (strided layers) or not needed (the first layer, whose gy has
  far more channels than its image), dW = gY im2col(x)^T as in the reference.
* **Weight-sized transpositions in tiles, on all cores.** The chunks' partial dW are added in chunk
  order (so the result does not depend on which thread ran which chunk) and turned into W's layout a
  tile at a time (``_sum_flipped``, ``_sum_transposed``); Wf is built in blocks of output channels
  (``_flipped``). A transposed copy of a large matrix in one go reads memory with a large stride;
  in tiles that stay in cache it runs several times faster.

What it does not do: keep forward's columns. They are kh*kw times the layer's input -- for ResNet-19
at T=2, batch 8 about 730 MB over all layers, more than the whole step needs now -- and the dW trick
above leaves only the strided layers to rebuild them.

On the GPU (``CUDAConv2d``) im2col and col2im are one kernel each instead of a slice copy per kernel
offset (kh*kw launches): each column entry, or each input pixel, is one thread doing the index
arithmetic of the reference. col2im gathers -- every pixel adds up, in the reference's (p, q) order,
the column entries that were read from it -- so no two threads write to one address, and the result
is bit for bit the reference's. The batch is cut into chunks whose columns fit
``parallel.gpu_chunk_bytes`` of device memory.
"""
import collections
import functools
import threading

import numpy as np

from ..backend import get_array_module
from ..functions.conv import Conv2d, _check_4d, _check_conv_inputs, _geometry
from . import register
from .parallel import gpu_chunks, map_chunks
from .phases import timed

MIN_COLUMNS = 512        # output positions per chunk at least (small maps: several images per chunk)
PER_IMAGE_GEMM = 1024    # maps of at least this many positions get one product per image, written in place
TILE = 128               # rows of dW^T summed and transposed at a time
TILE_O = 32              # output channels of the weights flipped at a time


def _tap_range(offset, pad, stride, size, out_size):
    """Output positions i whose input position i*stride + offset - pad lies inside [0, size).

    Returns (i0, i1, first): the valid i form the range [i0, i1) (empty when i1 <= i0) and the input
    position of i0 is ``first``. The other outputs of this kernel offset read the zero padding.
    """
    i0 = max(0, -((offset - pad) // stride))
    i1 = min(out_size, (size - 1 + pad - offset) // stride + 1)
    return i0, max(i0, i1), i0 * stride + offset - pad


Geometry = collections.namedtuple("Geometry", "H W kh kw stride padding Ho Wo taps")
Geometry.__doc__ = """A convolution's shapes, worked out once per call: input H x W, kernel kh x kw, stride and
padding as (h, w) pairs, output Ho x Wo, and ``taps``: for every kernel offset (p, q), (p, q, output
rows, output cols, input rows, input cols) as slices -- out[..., rows, cols] of the output grid pairs
with x[..., in_rows, in_cols] of the unpadded input, and every other output position of this offset
falls on the padding."""


def geometry(x_shape, kh, kw, stride, padding):
    """The ``Geometry`` of a convolution of x [B, C, H, W] (arguments checked as the reference does)."""
    (sh, sw), (ph, pw), _ = _geometry(x_shape, kh, kw, stride, padding)
    return _geometry_of(x_shape[2], x_shape[3], kh, kw, (sh, sw), (ph, pw))


@functools.lru_cache(maxsize=256)
def _geometry_of(H, W, kh, kw, stride, padding):
    (sh, sw), (ph, pw) = stride, padding
    Ho, Wo = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
    taps = []
    for p in range(kh):
        i0, i1, h0 = _tap_range(p, ph, sh, H, Ho)
        for q in range(kw):
            j0, j1, w0 = _tap_range(q, pw, sw, W, Wo)
            taps.append((p, q, slice(i0, i1), slice(j0, j1),
                         slice(h0, h0 + sh * (i1 - i0), sh), slice(w0, w0 + sw * (j1 - j0), sw)))
    return Geometry(H, W, kh, kw, stride, padding, Ho, Wo, tuple(taps))


def im2col_into(x, g, out):
    """``functions.conv.im2col`` of x [B, C, H, W] with geometry g, written into out [C, kh, kw, B, Ho, Wo]:
    each offset's valid window is copied straight from x. The entries that read the padding are not
    written: out must hold zeros there (as a zeroed buffer does after any number of calls of g)."""
    channel_major = x.transpose(1, 0, 2, 3)
    for p, q, rows, columns, in_rows, in_columns in g.taps:
        out[:, p, q, :, rows, columns] = channel_major[:, :, in_rows, in_columns]
    return out


def col2im_into(cols, g, out):
    """``functions.conv.col2im`` of cols [C*kh*kw, B*Ho*Wo] with geometry g, written into out [B, C, H, W]:
    each offset's rows are added straight onto the pixels they were read from; what was read from the
    padding is dropped."""
    B, C = out.shape[:2]
    patches = cols.reshape(C, g.kh, g.kw, B, g.Ho, g.Wo)
    out[...] = 0
    channel_major = out.transpose(1, 0, 2, 3)
    for p, q, rows, columns, in_rows, in_columns in g.taps:
        channel_major[:, :, in_rows, in_columns] += patches[:, p, q, :, rows, columns]
    return out


def im2col_unpadded(x, kh, kw, stride=1, padding=0):
    """``functions.conv.im2col`` without a padded copy of x, into a new array [C*kh*kw, B*Ho*Wo]."""
    _check_4d(x, "im2col")
    g = geometry(x.shape, kh, kw, stride, padding)
    out = get_array_module(x).zeros((x.shape[1], kh, kw, x.shape[0], g.Ho, g.Wo), x.dtype)
    return im2col_into(x, g, out).reshape(x.shape[1] * kh * kw, -1)


def col2im_unpadded(cols, x_shape, kh, kw, stride, padding, out):
    """``functions.conv.col2im`` written into ``out`` [B, C, H, W], without a padded array."""
    return col2im_into(cols, geometry(x_shape, kh, kw, stride, padding), out)


# ----------------------------------------------------------------------------- CPU: buffers
class _Buffers(threading.local):
    """Each thread's reusable arrays (its own, so that workers never share one).

    scratch: one flat array per role ("product", "dW tile", ...), grown when a larger one is needed;
    a call gets a view of its first elements, holding whatever was last written there.
    columns: im2col buffers [C, kh, kw, b, Ho, Wo] of padded geometries, zeroed when made, at most
    COLUMN_BUFFERS of them (the least recently used is dropped). An im2col of b' <= b images writes
    the first b' image slots, always the same entries of each slot, so the padding stays zero.
    """

    def __init__(self):
        self.scratch, self.columns = {}, {}


_buffers = _Buffers()
COLUMN_BUFFERS = 8


def _scratch(role, shape, dtype):
    """This thread's scratch array for ``role`` with the given shape (see ``_Buffers``)."""
    size = int(np.prod(shape))
    flat = _buffers.scratch.get(role)
    if flat is None or flat.size < size or flat.dtype != dtype:
        with timed("allocation"):
            flat = _buffers.scratch[role] = np.empty(size, dtype)
    return flat[:size].reshape(shape)


def _columns(x, g):
    """im2col of x [b, C, H, W] with geometry g into this thread's buffer for g: [C*kh*kw, b*Ho*Wo]."""
    b, C = x.shape[:2]
    if not any(g.padding):                             # every entry is written: any scratch will do
        out = _scratch("columns", (C, g.kh, g.kw, b, g.Ho, g.Wo), x.dtype)
        return im2col_into(x, g, out).reshape(C * g.kh * g.kw, -1)
    key = (C, g[:-1], x.dtype)                         # the geometry but its taps (slices do not hash)
    kept = _buffers.columns
    buffer = kept.pop(key, None)
    if buffer is None or buffer.shape[3] < b:
        if buffer is None and len(kept) >= COLUMN_BUFFERS:
            del kept[next(iter(kept))]
        with timed("allocation"):
            buffer = np.zeros((C, g.kh, g.kw, b, g.Ho, g.Wo), x.dtype)
    kept[key] = buffer                                 # the most recently used last
    im2col_into(x, g, buffer[:, :, :, :b])
    return buffer.reshape(C * g.kh * g.kw, -1)[:, :b * g.Ho * g.Wo]


def _products_into(A, cols, out):
    """out[n] = A cols_n for every image n of a chunk: A [M, K], cols [K, b*S] (the images' columns
    side by side), out [b, M, ...] with S positions per image (C-contiguous)."""
    b, M = out.shape[:2]
    out = out.reshape(b, M, -1)
    S = out.shape[2]
    if b == 1 or S >= PER_IMAGE_GEMM:
        with timed("GEMM"):
            for n in range(b):
                np.matmul(A, cols[:, n * S:(n + 1) * S], out=out[n])
        return
    product = _scratch("product", (M, b * S), out.dtype)
    with timed("GEMM"):
        np.matmul(A, cols, out=product)
    with timed("layout"):
        out[...] = product.reshape(M, b, S).transpose(1, 0, 2)


def _channel_major(y):
    """y [b, C, Ho, Wo] as the matrix [C, b*Ho*Wo] (a view for one image, else a copy into a buffer)."""
    b, C = y.shape[:2]
    if b == 1:
        return y.reshape(C, -1)
    out = _scratch("channel-major", (C, b, y[0, 0].size), y.dtype)
    with timed("layout"):
        out[...] = y.reshape(b, C, -1).transpose(1, 0, 2)
    return out.reshape(C, -1)


@timed("layout")
def _flipped(W):
    """Wf [C, Cout*kh*kw], Wf[c, (o, p, q)] = W[o, c, kh-1-p, kw-1-q]: in and out channels swapped, the
    kernel turned by 180 degrees. A transposition of a weight-sized array, done in blocks of TILE_O output
    channels (each block's reads and writes stay in cache: 3x faster than one strided copy for a
    512-channel layer) on all cores."""
    Cout, C, kh, kw = W.shape
    out = np.empty((C, Cout, kh, kw), W.dtype)

    def block(rows):
        for o in range(rows.start, rows.stop, TILE_O):
            out[:, o:min(o + TILE_O, rows.stop)] = W[o:min(o + TILE_O, rows.stop), :, ::-1, ::-1].transpose(1, 0, 2, 3)

    map_chunks(block, Cout, np, nbytes=2 * W.nbytes, min_chunk=TILE_O)
    return out.reshape(C, -1)


@timed("layout")
def _sum_transposed(parts, out):
    """out [M, K] = the sum of the chunks' parts^T (each [K, M]), added in chunk order (so the result does
    not depend on how the chunks ran): tile by tile of TILE rows of the parts, the tile of every part is
    added where it lies (contiguous) and only the sum is copied transposed, a small tile at a time so
    that the transposed reads stay in cache. Ranges of rows run on all cores (``map_chunks``)."""
    rows_total, M = parts[0].shape

    def sum_rows(rows):
        tile = _scratch("sum tile", (TILE, M), out.dtype)
        for k in range(rows.start, rows.stop, TILE):
            block = slice(k, min(k + TILE, rows.stop))
            total = tile[:block.stop - block.start]
            total[...] = parts[0][block]
            for part in parts[1:]:
                total += part[block]
            out[:, block] = total.T

    map_chunks(sum_rows, rows_total, np, nbytes=(len(parts) + 1) * out.nbytes, min_chunk=TILE)


@timed("layout")
def _sum_flipped(parts, out):
    """dW [Cout, C, kh, kw] from the chunks' parts of Wf^T [(o, p', q'), c]: their sum in chunk order,
    written as dW[o, c, p, q] = Wf^T[(o, kh-1-p, kw-1-q), c]. TILE_O output channels at a time (the
    rows of every part added where they lie, then turned and transposed while in cache), on all cores."""
    Cout, C, kh, kw = out.shape
    taps = kh * kw

    def sum_channels(channels):
        tile = _scratch("sum tile", (TILE_O * taps, C), out.dtype)
        for o in range(channels.start, channels.stop, TILE_O):
            o_end = min(o + TILE_O, channels.stop)
            rows = slice(o * taps, o_end * taps)
            total = tile[:rows.stop - rows.start]
            total[...] = parts[0][rows]
            for part in parts[1:]:
                total += part[rows]
            out[o:o_end] = total.reshape(o_end - o, kh, kw, C)[:, ::-1, ::-1].transpose(0, 3, 1, 2)

    map_chunks(sum_channels, Cout, np, nbytes=(len(parts) + 1) * out.nbytes, min_chunk=TILE_O)


class ChunkedConv2d(Conv2d):
    """``Conv2d`` on batch chunks across the CPU cores, im2col without padding copies into buffers that
    keep their zeros, products written in place, and with stride 1 dx as a flipped-kernel convolution
    (see the module docstring). NumPy arrays only."""

    @staticmethod
    def _cols_bytes(x, W, Ho, Wo):
        """The size of the whole batch's im2col matrix, which the CPU split keeps in cache-sized chunks."""
        return W[0].size * x.shape[0] * Ho * Wo * x.itemsize

    def _map(self, fn, x, W, g):
        """map_chunks over the batch: chunks of about CHUNK_BYTES of columns, at least MIN_COLUMNS wide."""
        return map_chunks(fn, x.shape[0], np, self._cols_bytes(x, W, g.Ho, g.Wo),
                          min_chunk=-(-MIN_COLUMNS // (g.Ho * g.Wo)))

    def forward(self, x, W, b=None):
        _check_conv_inputs(x, W, b)
        Cout = W.shape[0]
        g = geometry(x.shape, *W.shape[2:], self.stride, self.padding)
        self.x, self.W = x, W
        W_matrix = W.reshape(Cout, -1)
        y = np.empty((x.shape[0], Cout, g.Ho, g.Wo), dtype=x.dtype)

        def chunk_forward(rows):
            with timed("im2col"):
                cols = _columns(x[rows], g)                                            # [C*kh*kw, b*Ho*Wo]
            _products_into(W_matrix, cols, y[rows])
            if b is not None:
                y[rows] += b[:, None, None]

        self._map(chunk_forward, x, W, g)
        return y

    def backward(self, gy):
        x, W = self.x, self.W
        Cout, C, kh, kw = W.shape
        W_matrix = W.reshape(Cout, -1)
        need_gx, need_gW = self.needs_input_grad[:2]
        gx = np.empty_like(x) if need_gx else None
        g = geometry(x.shape, kh, kw, self.stride, self.padding)
        (ph, pw) = g.padding
        as_convolution = g.stride == (1, 1) and ph < kh and pw < kw
        if as_convolution:
            W_flipped = _flipped(W)                                                  # [C, Cout*kh*kw]
            g_flipped = geometry(gy.shape, kh, kw, 1, (kh - 1 - ph, kw - 1 - pw))     # the conv giving dx

        def chunk_backward(rows):
            gY = None
            if need_gx and as_convolution:
                with timed("dx columns"):
                    cols = _columns(gy[rows], g_flipped)                               # [Cout*kh*kw, b*H*W]
                _products_into(W_flipped, cols, gx[rows])
                if not need_gW:
                    return None
                # dW from the same columns: dW[o, c, p, q] = sum over pixels of x[c] cols[(o, kh-1-p, kw-1-q)]
                # (see the module docstring), so this chunk's part of Wf^T is cols X^T, [Cout*kh*kw, C]
                X = _channel_major(x[rows])                                            # [C, b*H*W]
                with timed("GEMM"):
                    return cols @ X.T
            if need_gx:
                gY = _channel_major(gy[rows])                                          # [Cout, b*Ho*Wo]
                cols = _scratch("col2im", (W_matrix.shape[1], gY.shape[1]), gY.dtype)
                with timed("GEMM"):
                    np.matmul(W_matrix.T, gY, out=cols)
                with timed("dx columns"):
                    col2im_into(cols, g, out=gx[rows])
            if not need_gW:
                return None
            with timed("im2col"):
                cols = _columns(x[rows], g)
            if gY is None:
                gY = _channel_major(gy[rows])
            # dW = gY cols^T sums over the long b*Ho*Wo axis. Multithreaded OpenBLAS splits the rows
            # of a product among its threads; with few rows it synchronises them at every block of
            # that long sum, which on a busy machine made this product up to 30x slower (and on one
            # thread it is no faster). So the side with more rows goes first: this chunk's part of
            # dW^T = cols gY^T, [C*kh*kw, Cout]. (Above, likewise Wf^T rather than Wf.)
            with timed("GEMM"):
                return cols @ gY.T

        parts = self._map(chunk_backward, x, W, g)
        gW = None
        if need_gW and need_gx and as_convolution:                   # parts of Wf^T [(o, p', q'), c]
            gW = np.empty(W.shape, dtype=x.dtype)
            _sum_flipped(parts, gW)
        elif need_gW:                                                # parts of dW^T [(c, p, q), o]
            gW = np.empty((Cout, C * kh * kw), dtype=x.dtype)
            _sum_transposed(parts, gW)
            gW = gW.reshape(W.shape)
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
