"""Lesson 06 -- convolution as im2col + one matrix product (GEMM), forward and backward.

A 3x3 convolution looks at every 3x3 patch of the input. im2col copies each patch into one column:

    cols[(c, p, q), (n, i, j)] = x_pad[n, c, i*s + p, j*s + q]          shape [C*kh*kw, B*Ho*Wo]

and then the whole convolution is a single GEMM with the weights seen as a [Cout, C*kh*kw] matrix:

    Y = W cols  (+ b),          and backward:   dW = gY cols^T,   dx = col2im(W^T gY)

col2im is the adjoint of im2col: it adds every column entry back onto the pixel it was read from.
In a spiking net the batch is T*N -- every timestep of every sample goes through the same GEMM.

What you will see:

1. im2col of a 4x4 image: each column is one receptive field (``06_im2col.png``).
2. Y = W cols equals a plain six-loop convolution.
3. col2im is the adjoint of im2col (<im2col(x), c> = <x, col2im(c)>), and col2im(ones) counts how many
   patches read each pixel -- corners fewer than the middle.
4. The backward as two GEMMs equals what ``conv2d``'s hand-written backward returns; and with stride
   1, dx is a convolution too: of gy with the kernel turned by 180 degrees and in/out channels swapped.
5. Speed: the six-loop convolution against im2col + GEMM.

Run:  python lessons/06_convolution_im2col.py      (add --fast or MINISNN_FAST=1 for the test mode)
"""
import numpy as np

from _common import FAST, Timer, plt, save_figure, section, title
from minisnn import Tensor
from minisnn.functions.conv import col2im, conv2d, im2col


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


def main():
    title("Lesson 06: convolution = im2col + GEMM")
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
    B, C, H, Cout = (2, 3, 5, 4) if FAST else (4, 3, 8, 4)
    xb, Wb = rng.standard_normal((B, C, H, H)), rng.standard_normal((Cout, C, 3, 3))
    for stride, padding in ((1, 1), (2, 1), (1, 0)):
        diff = np.abs(conv2d(Tensor(xb), Tensor(Wb), stride=stride, padding=padding).data
                      - conv_loops(xb, Wb, stride, padding)).max()
        print(f"conv2d vs six loops, stride {stride} padding {padding}: max difference {diff:.1e}")

    section("3. col2im is the adjoint of im2col")
    c = rng.standard_normal(im2col(xb, 3, 3, 1, 1).shape)
    lhs = float((im2col(xb, 3, 3, 1, 1) * c).sum())
    rhs = float((xb * col2im(c, xb.shape, 3, 3, 1, 1)).sum())
    print(f"<im2col(x), c> = {lhs:.10f}\n<x, col2im(c)> = {rhs:.10f}")
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
    save_figure(fig, "06_im2col.png")
    print("\nNext: lesson 07 -- tdBN, plain BN and no normalisation in a deep spiking net.")


if __name__ == "__main__":
    main()
