"""The fast tdBN / batch norm: the same equations as ``functions/norm.py``, arranged for speed and accuracy.

* Statistics: mean = sum(x) / n with the sum accumulated in float64, then var = mean((x - mean)^2)
  from the centred x that y is built from anyway (two passes: no cancellation), so no array beyond y
  is made.
* Memory: only x is kept for backward -- it is alive anyway as this Function's input -- and x - mean is
  rebuilt from it there, so no normalised copy waits in memory between forward and backward.
* The per-channel means in dx reuse the parameter gradients: mean(g_hat) = lambda * s * dbeta / n and
  mean(g_hat * xn) = lambda * dlambda / n, so backward makes only two reductions, and dx is built in
  place.
* On the CPU every pass -- the sums, centring, scaling, and dx -- runs on batch chunks across the cores
  (``parallel.map_chunks``); per-channel sums add the chunks' partial sums.
"""
from ..backend import get_array_module
from ..functions.norm import BatchNormFunction
from . import register
from .parallel import map_chunks


class ChunkedBatchNorm(BatchNormFunction):
    """``BatchNormFunction`` with float64 sums, in-place passes on batch chunks across the CPU cores."""

    def forward(self, x, weight, bias):
        xp = get_array_module(x)
        x3 = x.reshape(x.shape[0], x.shape[1], -1)  # [B, C, S]: statistics over axes 0 and 2
        n = x3.shape[0] * x3.shape[2]
        if self.training:
            mean = self._sum(lambda b: x3[b].sum(axis=(0, 2), dtype=xp.float64), x3) / n
        else:
            mean = self.running_mean
        self.mean = mean.astype(x.dtype)[:, None]                    # per channel, broadcast over S
        y = xp.empty_like(x3)

        def centre(b):                                               # y = x - mean; its sum of squares
            xp.subtract(x3[b], self.mean, out=y[b])
            return xp.einsum("bcs,bcs->c", y[b], y[b]) if self.training else None

        squares = self._sum(centre, x3)
        if self.training:
            var = squares / n                                        # biased, two-pass: no cancellation
            self._update_running(mean, var, n)
        else:
            var = self.running_var
        self.istd = (1 / xp.sqrt(var + self.eps)).astype(x.dtype)[:, None]
        self.x3, self.weight = x3, weight
        gain, shift = self.istd * (weight[:, None] * self.scale), bias[:, None]

        def scale(b):                                                # lambda s (x - mean) istd + beta
            y[b] *= gain
            y[b] += shift

        map_chunks(scale, len(y), xp, y.nbytes)
        return y.reshape(x.shape)

    @staticmethod
    def _sum(per_chunk, x3):
        """Sum of per_chunk(b) over chunks b of the batch axis, computed across the CPU cores."""
        parts = map_chunks(per_chunk, len(x3), get_array_module(x3), x3.nbytes)
        return None if parts[0] is None else sum(parts[1:], parts[0])

    def backward(self, gy):
        xp = get_array_module(gy)
        x3, mean, istd = self.x3, self.mean, self.istd
        gy3 = gy.reshape(x3.shape)
        n = gy3.shape[0] * gy3.shape[2]
        sums = self._sum(lambda b: xp.stack([gy3[b].sum(axis=(0, 2)),
                                             xp.einsum("bcs,bcs->c", gy3[b], x3[b] - mean)]), x3)
        sum_gy, sum_gy_xn = sums[0], sums[1] * istd[:, 0]          # = dbeta and dlambda / s
        gx = None
        if self.needs_input_grad[0]:
            gain = self.weight[:, None] * (self.scale * istd)        # dy/dx with the statistics held fixed
            gx = xp.empty_like(x3)

            def input_grad(b):                                       # gain (gy - sum_gy/n - xn sum_gy_xn/n)
                g = gx[b]
                if not self.training:
                    xp.multiply(gy3[b], gain, out=g)
                    return
                xp.subtract(x3[b], mean, out=g)                      # x - mean; xn = (x - mean) istd
                g *= istd * (-sum_gy_xn[:, None] / n)
                g += gy3[b]
                g -= sum_gy[:, None] / n
                g *= gain

            map_chunks(input_grad, len(gx), xp, gx.nbytes)
            gx = gx.reshape(gy.shape)
        return gx, sum_gy_xn * self.scale, sum_gy


register(BatchNormFunction, cpu=ChunkedBatchNorm, cuda=ChunkedBatchNorm)
