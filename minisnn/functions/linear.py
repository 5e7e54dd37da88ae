"""Fully connected layer on [B, in] arrays, with a hand-written backward pass.

In a spiking net B is the folded batch T*N: every timestep of every sample goes through one GEMM.
"""
from ..core import Function
from ..fast import version_of


class Linear(Function):
    """y = x W^T + b for x [B, in], W [out, in], b [out].

        y[n, o] = b[o] + sum_k x[n, k] W[o, k]

    Backward, given gy = dL/dy [B, out]:

        dL/dx = gy W            dL/dx[n, k] = sum_o gy[n, o] W[o, k]
        dL/dW = gy^T x          dL/dW[o, k] = sum_n gy[n, o] x[n, k]
        dL/db = sum_n gy[n, :]
    """

    def forward(self, x, W, b=None):
        if x.ndim != 2 or W.ndim != 2 or x.shape[1] != W.shape[1]:
            raise ValueError(f"linear: expected x [B, in] and W [out, in] with the same 'in', "
                             f"got x {tuple(x.shape)} and W {tuple(W.shape)}")
        if b is not None and b.shape != (W.shape[0],):
            raise ValueError(f"linear: bias shape {tuple(b.shape)} != ({W.shape[0]},)")
        arrays = [a for a in (x, W, b) if a is not None]
        if len({a.dtype for a in arrays}) != 1 or x.dtype.kind != "f":
            raise TypeError(f"linear: inputs must share one floating dtype, got {[str(a.dtype) for a in arrays]}")
        self.x, self.W = x, W
        y = x @ W.T
        if b is not None:
            y += b
        return y

    def backward(self, gy):
        gx = gy @ self.W if self.needs_input_grad[0] else None
        gW = gy.T @ self.x if self.needs_input_grad[1] else None
        if len(self.needs_input_grad) == 2:
            return gx, gW
        gb = gy.sum(axis=0) if self.needs_input_grad[2] else None
        return gx, gW, gb


def linear(x, W, b=None):
    """y = x W^T + b for x [B, in], W [out, in], b [out] or None. Returns [B, out].

    Runs the version of ``Linear`` for x's device (``minisnn.fast.version_of``; on the CPU
    ``fast/linear.py``: the same products, on one BLAS thread while minisnn's workers split the work)."""
    inputs = (x, W) if b is None else (x, W, b)
    return version_of(Linear, x)()(*inputs)
