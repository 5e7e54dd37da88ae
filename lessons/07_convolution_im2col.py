"""Lesson 07 -- convolution as im2col + one matrix product (GEMM), forward and backward; pooling.

What you will learn: how a convolution becomes one matrix product, how its backward becomes two more,
how a spiking layer runs every timestep through the same product (the nn layers fold T into the
batch), and how the engine keeps a readable reference beside its fast code.

A 3x3 convolution looks at every 3x3 patch of the input. im2col copies each patch into one column:

    cols[(c, p, q), (n, i, j)] = x_pad[n, c, i*s + p, j*s + q]          shape [C*kh*kw, B*Ho*Wo]

and then the whole convolution is a single GEMM with the weights seen as a [Cout, C*kh*kw] matrix:

    Y = W cols  (+ b),          and backward:   dW = gY cols^T,   dx = col2im(W^T gY)

col2im is the adjoint of im2col: it adds every column entry back onto the pixel it was read from.
In a spiking net the batch is T*N -- every timestep of every sample goes through the same GEMM.

What you will see:

1. im2col of a 4x4 image: each column is one receptive field (``07_im2col.png``).
2. Y = W cols equals a plain six-loop convolution.
3. col2im is the adjoint of im2col (<im2col(x), c> = <x, col2im(c)>), and col2im(ones) counts how many
   patches read each pixel -- corners fewer than the middle.
4. The backward as two GEMMs equals what ``conv2d``'s hand-written backward returns; and with stride
   1, dx is a convolution too: of gy with the kernel turned by 180 degrees and in/out channels swapped.
5. Speed: the six-loop convolution against im2col + GEMM.
6. ``gradcheck`` (lesson 02) on ``conv2d`` with respect to x, W and b, and on average pooling
   (y = mean of each k x k window; backward: gy / k^2 to every pixel of the window, via col2im) and
   global average pooling (the mean over H, W; it ends every spiking ResNet).
7. ``nn.Conv2d`` (a Module, lesson 03) over a sequence [T, N, C, H, W]: it folds time into the batch,
   [T*N, C, H, W], runs one conv2d, and unfolds the result -- the same numbers as a conv2d per step.
8. The reference and the fast path: ``conv2d`` runs the fast version from ``minisnn/fast/conv.py``
   (the batch in chunks on all CPU cores, ``MINISNN_THREADS``; ``minisnn.fast.parallel``), which the
   tests check equal to the reference in ``minisnn/functions/conv.py``; ``with reference_only():``
   runs the reference.

Run:  python lessons/07_convolution_im2col.py      (add --fast or MINISNN_FAST=1 for the test mode)
"""
import numpy as np

from _common import FAST, Timer, finish, plt, save_figure, section, title
from minisnn import Tensor, no_grad
from minisnn.fast import parallel, reference_only
from minisnn.functions.conv import avg_pool2d, col2im, conv2d, global_avg_pool2d, im2col
from minisnn.gradcheck import gradcheck
from minisnn.nn import AvgPool2d, Conv2d, GlobalAvgPool2d

INTRODUCES = ("minisnn.functions.conv.im2col", "minisnn.functions.conv.col2im", "minisnn.functions.conv.conv2d",
              "minisnn.functions.conv.avg_pool2d", "minisnn.functions.conv.global_avg_pool2d", "minisnn.nn.Conv2d",
              "minisnn.nn.AvgPool2d", "minisnn.nn.GlobalAvgPool2d", "minisnn.fast.reference_only",
              "minisnn.fast.parallel")


def conv_loops(x, W, stride=1, padding=0):
    """The definition, loop by loop: y[n,o,i,j] = sum_{c,p,q} W[o,c,p,q] x_pad[n,c,i*s+p,j*s+q]."""
    B, C, H, Wd = x.shape
    Cout, _, kh, kw = W.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    Ho, Wo = (H + 2 * padding - kh) // stride + 1, (Wd + 2 * padding - kw) // stride + 1
    y = np.zeros((B, Cout, Ho, Wo), dtype=x.dtype)
    for n in range(B):
        for o in range(Cout):
            for i in range(Ho):
                for j in range(Wo):
                    for c in range(C):
                        for p in range(kh):
                            for q in range(kw):
                                y[n, o, i, j] += W[o, c, p, q] * xp[n, c, i * stride + p, j * stride + q]
    return y


def show_matrix(ax, m, name, fmt="{:.0f}"):
    ax.imshow(m, cmap="Blues")
    for (r, c), v in np.ndenumerate(m):
        ax.text(c, r, fmt.format(v), ha="center", va="center", fontsize=7)
    ax.set_title(name, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def main(argv=None):
    title("Lesson 07: convolution = im2col + GEMM")
    rng = np.random.default_rng(0)

    section("1. im2col of one 4x4 image, 3x3 kernel, no padding")
    x = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)
    cols = im2col(x, 3, 3)
    print("x =\n", x[0, 0])
    print(f"cols (shape {cols.shape}: 9 kernel positions x 4 output positions) =\n", cols)
    print("column 0 is the top-left 3x3 patch:", x[0, 0, :3, :3].ravel())

    section("2. the convolution is one matrix product")
    W = rng.standard_normal((2, 1, 3, 3))
    y_gemm = (W.reshape(2, -1) @ cols).reshape(2, 1, 2, 2).transpose(1, 0, 2, 3)
    print("max |W cols - six loops| =", np.abs(y_gemm - conv_loops(x, W)).max())
    worst_forward = 0.0
    B, C, H, Cout = (2, 3, 5, 4) if FAST else (4, 3, 8, 4)
    xb, Wb = rng.standard_normal((B, C, H, H)), rng.standard_normal((Cout, C, 3, 3))
    for stride, padding in ((1, 1), (2, 1), (1, 0)):
        diff = np.abs(conv2d(Tensor(xb), Tensor(Wb), stride=stride, padding=padding).data
                      - conv_loops(xb, Wb, stride, padding)).max()
        worst_forward = max(worst_forward, float(diff))
        print(f"conv2d vs six loops, stride {stride} padding {padding}: max difference {diff:.1e}")

    section("3. col2im is the adjoint of im2col")
    c = rng.standard_normal(im2col(xb, 3, 3, 1, 1).shape)
    lhs = float((im2col(xb, 3, 3, 1, 1) * c).sum())
    rhs = float((xb * col2im(c, xb.shape, 3, 3, 1, 1)).sum())
    print(f"<im2col(x), c> = {lhs:.10f}\n<x, col2im(c)> = {rhs:.10f}")
    adjoint_gap = abs(lhs - rhs) / abs(lhs)
    counts = col2im(np.ones(im2col(np.zeros((1, 1, 6, 6)), 3, 3, 1, 1).shape), (1, 1, 6, 6), 3, 3, 1, 1)[0, 0]
    print("col2im(ones) on a 6x6 image, padding 1: how many patches read each pixel\n", counts)

    section("4. the backward is two more GEMMs")
    xt, Wt = Tensor(xb.copy(), requires_grad=True), Tensor(Wb.copy(), requires_grad=True)
    y = conv2d(xt, Wt, stride=1, padding=1)
    gy = rng.standard_normal(y.shape)
    y.backward(gy)
    gY = gy.transpose(1, 0, 2, 3).reshape(Cout, -1)              # [Cout, B*Ho*Wo]
    cols_b = im2col(xb, 3, 3, 1, 1)
    dW = (gY @ cols_b.T).reshape(Wb.shape)
    dx = col2im(Wb.reshape(Cout, -1).T @ gY, xb.shape, 3, 3, 1, 1)
    print(f"dW = gY cols^T:        max difference to conv2d's backward {np.abs(dW - Wt.grad).max():.1e}")
    print(f"dx = col2im(W^T gY):   max difference to conv2d's backward {np.abs(dx - xt.grad).max():.1e}")
    # With stride 1, dx is itself a convolution: of gy, padded by k-1-pad, with the kernel turned by
    # 180 degrees and its in/out channels swapped. conv2d's backward computes it this way (plain copies
    # in im2col instead of col2im's scattered additions).
    W_flipped = Wb[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)        # [C, Cout, 3, 3]
    dx_conv = conv2d(Tensor(gy), Tensor(np.ascontiguousarray(W_flipped)), padding=3 - 1 - 1).data
    print(f"dx = conv(gy, W turned 180 degrees, in/out swapped): max difference to col2im's dx "
          f"{np.abs(dx_conv - dx).max():.1e}")
    worst_backward = float(max(np.abs(dW - Wt.grad).max(), np.abs(dx - xt.grad).max(), np.abs(dx_conv - dx).max()))

    section("5. speed: six loops against im2col + GEMM (float32)")
    B, C, H, Cout = (1, 2, 6, 2) if FAST else (2, 8, 12, 8)
    xs = rng.standard_normal((B, C, H, H)).astype(np.float32)
    Ws = rng.standard_normal((Cout, C, 3, 3)).astype(np.float32)
    with Timer() as loops:
        conv_loops(xs, Ws, 1, 1)
    with Timer() as gemm:
        for _ in range(10):
            conv2d(Tensor(xs), Tensor(Ws), padding=1)
    print(f"x {xs.shape}, W {Ws.shape}: six loops {loops.seconds * 1e3:.1f} ms, "
          f"im2col + GEMM {gemm.seconds / 10 * 1e3:.3f} ms  ({loops.seconds / (gemm.seconds / 10):.0f}x faster)")

    fig, axes = plt.subplots(1, 3, figsize=(11, 3.6), gridspec_kw={"width_ratios": [1, 0.8, 1]})
    show_matrix(axes[0], x[0, 0], "x: a 4x4 image")
    show_matrix(axes[1], cols, "im2col(x, 3x3): one patch per column")
    show_matrix(axes[2], counts, "col2im(ones), 6x6, padding 1:\npatches that read each pixel")
    save_figure(fig, "07_im2col.png")

    section("6. gradcheck on conv2d and on pooling (float64)")
    xg, Wg, bg = rng.standard_normal((2, 2, 4, 4)), rng.standard_normal((3, 2, 3, 3)), rng.standard_normal(3)
    checks = {
        "conv2d, stride 1, padding 1": gradcheck(lambda x, w, b: conv2d(x, w, b, stride=1, padding=1), xg, Wg, bg),
        "conv2d, stride 2, padding 1": gradcheck(lambda x, w, b: conv2d(x, w, b, stride=2, padding=1), xg, Wg, bg),
        "avg_pool2d, 2x2": gradcheck(lambda x: avg_pool2d(x, 2), xg),
        "global_avg_pool2d": gradcheck(global_avg_pool2d, xg),
    }
    for name, error in checks.items():
        print(f"{name:<28} largest |backward - finite difference| = {error:.1e}")

    section("7. nn.Conv2d over a sequence [T, N, C, H, W]")
    T, N = 3, 2
    seq = rng.standard_normal((T, N, 3, 8, 8)).astype(np.float32)
    layer = Conv2d(3, 4, 3, padding=1, seed=0)
    with no_grad():
        y_seq = layer(Tensor(seq)).data
        per_step = np.stack([conv2d(Tensor(seq[t]), layer.weight, padding=1).data for t in range(T)])
        pooled = GlobalAvgPool2d()(AvgPool2d(2)(Tensor(y_seq))).data
    per_step_gap = float(np.abs(y_seq - per_step).max())
    print(f"{layer}: input {seq.shape} -> output {y_seq.shape}; max |one folded conv - a conv per step| "
          f"= {per_step_gap:.1e}")
    print(f"then AvgPool2d(2) -> [T, N, 4, 4, 4] and GlobalAvgPool2d -> {pooled.shape}")

    section("8. the reference and the fast path")
    xr = rng.standard_normal((16, 8, 16, 16)).astype(np.float32)
    Wr = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
    gyr = rng.standard_normal((16, 8, 16, 16)).astype(np.float32)

    def forward_and_dx():
        xt = Tensor(xr.copy(), requires_grad=True)
        y = conv2d(xt, Tensor(Wr), padding=1)
        y.backward(gyr)
        return y.data, xt.grad

    y_fast, dx_fast = forward_and_dx()
    with reference_only():
        y_ref, dx_ref = forward_and_dx()
    fast_gap = float(max(np.abs(y_fast - y_ref).max() / np.abs(y_ref).max(),
                         np.abs(dx_fast - dx_ref).max() / np.abs(dx_ref).max()))
    print(f"conv2d runs on {parallel.workers()} worker thread(s) here (MINISNN_THREADS sets it).")
    print(f"fast vs reference, float32: output max difference {np.abs(y_fast - y_ref).max():.1e}, dx max difference "
          f"{np.abs(dx_fast - dx_ref).max():.1e}\n(the fast dx is the flipped-kernel convolution of section 4, "
          f"which adds the same products in another order)")
    return finish({"conv_vs_loops": worst_forward, "adjoint_relative_gap": adjoint_gap,
                   "backward_as_gemms_vs_engine": worst_backward, "gradcheck_error": max(checks.values()),
                   "folded_vs_per_step": per_step_gap, "fast_vs_reference": fast_gap},
                  "lesson 08 -- what goes into the first layer: encoding an input over time, and the data pipeline.")


if __name__ == "__main__":
    main()
