"""The fast tdBN / batch norm: the same equations as ``functions/norm.py``, arranged for speed and accuracy.

* Statistics: mean = sum(x) / n with the sum accumulated in float64, then var = mean((x - mean)^2)
  from the centred x that y is built from anyway (two passes: no cancellation), so no array beyond y
  is made.
* Memory: only x is kept for backward -- it is alive anyway as this Function's input -- and x - mean is
  rebuilt from it there, so no normalised copy waits in memory between forward and backward. It is
  rebuilt once, straight into the array that the last pass turns into dx.
* The per-channel means in dx reuse the parameter gradients: mean(g_hat) = lambda * s * dbeta / n and
  mean(g_hat * xn) = lambda * dlambda / n, so backward makes only two reductions, and dx is built in
  place.
* On the CPU every pass -- the sums, centring, scaling, and dx -- runs on batch chunks across the cores
  (``parallel.map_chunks``); per-channel sums add the chunks' partial sums.

On the GPU (``FusedBatchNorm``) each pass is a few fused kernels instead of a dozen array operations:
the mean and the variance are one reduction each (accumulated in float64 inside the kernel, so no
float64 array is made), the per-channel coefficients one small kernel, y one elementwise kernel; the
backward two reductions, one small kernel and one elementwise kernel for dx. Nine launches per layer
and step in all.
"""
import functools

from ..backend import get_array_module
from ..functions.norm import BatchNormFunction
from . import register
from .parallel import map_chunks
from .phases import timed


class ChunkedBatchNorm(BatchNormFunction):
    """``BatchNormFunction`` with float64 sums, in-place passes on batch chunks across the CPU cores."""

    @timed("tdBN")
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

    @timed("tdBN")
    def backward(self, gy):
        xp = get_array_module(gy)
        x3, mean, istd = self.x3, self.mean, self.istd
        gy3 = gy.reshape(x3.shape)
        n = gy3.shape[0] * gy3.shape[2]
        # x - mean, needed by both sweeps below, is written once: into gx, which the second sweep then
        # turns into dx in place (or into a throwaway array when x needs no gradient)
        centred = xp.empty_like(x3)

        def sums(b):                                                 # sum(gy), sum(gy (x - mean))
            xp.subtract(x3[b], mean, out=centred[b])
            return xp.stack([gy3[b].sum(axis=(0, 2)), xp.einsum("bcs,bcs->c", gy3[b], centred[b])])

        total = self._sum(sums, x3)
        sum_gy, sum_gy_xn = total[0], total[1] * istd[:, 0]        # = dbeta and dlambda / s
        gx = None
        if self.needs_input_grad[0]:
            gain = self.weight[:, None] * (self.scale * istd)        # dy/dx with the statistics held fixed
            gx = centred

            def input_grad(b):                                       # gain (gy - sum_gy/n - xn sum_gy_xn/n)
                g = gx[b]                                            # x - mean; xn = (x - mean) istd
                if not self.training:
                    xp.multiply(gy3[b], gain, out=g)
                    return
                g *= istd * (-sum_gy_xn[:, None] / n)
                g += gy3[b]
                g -= sum_gy[:, None] / n
                g *= gain

            map_chunks(input_grad, len(gx), xp, gx.nbytes)
            gx = gx.reshape(gy.shape)
        return gx, sum_gy_xn * self.scale, sum_gy



# ------------------------------------------------------------------------------ CUDA kernels
@functools.lru_cache(maxsize=None)
def _kernels(cp):
    """The fused kernels, one set per array module. x is [B, C, S]; per-channel arrays are [1, C, 1]."""
    reduce = dict(reduce_type="float64", identity="0")
    return {
        # mean_c = sum(x) / n, var_c = sum((x - mean_c)^2) / n: sums in double inside the kernel
        "mean": cp.ReductionKernel("T x, float64 n", "T mean", "x", "a + b", "mean = (T)(a / n)",
                                   name="minisnn_bn_mean", **reduce),
        "var": cp.ReductionKernel("T x, T mean, float64 n", "T var", "((double)x - mean) * ((double)x - mean)",
                                  "a + b", "var = (T)(a / n)", name="minisnn_bn_var", **reduce),
        # running = (1 - m) running + m batch, the variance unbiased by n / (n - 1)
        "running": cp.ElementwiseKernel(
            "T mean, T var, float64 m, float64 unbias", "T running_mean, T running_var",
            "running_mean = (T)((1 - m) * running_mean + m * mean);"
            "running_var = (T)((1 - m) * running_var + m * var * unbias);", "minisnn_bn_running"),
        # istd = 1 / sqrt(var + eps), gain = lambda s istd
        "coefficients": cp.ElementwiseKernel(
            "T var, T weight, float64 scale, float64 eps", "T istd, T gain",
            "istd = (T)(1 / sqrt((double)var + eps)); gain = weight * (T)scale * istd;", "minisnn_bn_coefficients"),
        # y = lambda s (x - mean) istd + beta
        "y": cp.ElementwiseKernel("T x, T mean, T gain, T bias", "T y", "y = (x - mean) * gain + bias",
                                  "minisnn_bn_y"),
        # sum(gy) and sum(gy (x - mean)) per channel
        "sum": cp.ReductionKernel("T gy", "T total", "gy", "a + b", "total = (T)a", name="minisnn_bn_sum", **reduce),
        "sum_centred": cp.ReductionKernel("T gy, T x, T mean", "T total", "(double)gy * ((double)x - mean)",
                                          "a + b", "total = (T)a", name="minisnn_bn_sum_centred", **reduce),
        # dlambda = s istd sum(gy (x - mean)), dbeta = sum(gy); dx = gain gy - k_mean - (x - mean) k_centred
        "backward_coefficients": cp.ElementwiseKernel(
            "T sum_gy, T sum_gy_xc, T istd, T gain, float64 scale, float64 n, bool training",
            "T dweight, T k_mean, T k_centred",
            "dweight = sum_gy_xc * istd * (T)scale;"
            "k_mean = training ? (T)(gain * sum_gy / n) : (T)0;"
            "k_centred = training ? (T)(gain * istd * istd * sum_gy_xc / n) : (T)0;", "minisnn_bn_backward_coefficients"),
        "dx": cp.ElementwiseKernel("T gy, T x, T mean, T gain, T k_mean, T k_centred", "T dx",
                                   "dx = gain * gy - k_mean - (x - mean) * k_centred", "minisnn_bn_dx"),
    }


class FusedBatchNorm(BatchNormFunction):
    """``BatchNormFunction`` on the GPU as nine fused kernels per layer and step (see the module docstring)."""

    def forward(self, x, weight, bias):
        cp = get_array_module(x)
        k = _kernels(cp)
        x3 = cp.ascontiguousarray(x).reshape(x.shape[0], x.shape[1], -1)     # [B, C, S]
        n = x3.shape[0] * x3.shape[2]
        per_channel = (1, x3.shape[1], 1)
        if self.training:
            mean = k["mean"](x3, float(n), axis=(0, 2))
            var = k["var"](x3, mean.reshape(per_channel), float(n), axis=(0, 2))
            if self.running_mean is not None:
                k["running"](mean, var, float(self.momentum), n / (n - 1), self.running_mean, self.running_var)
        else:
            mean, var = self.running_mean.astype(x.dtype, copy=False), self.running_var.astype(x.dtype, copy=False)
        istd, gain = k["coefficients"](var, weight, float(self.scale), float(self.eps))
        self.x3, self.weight, self.mean, self.istd, self.gain = x3, weight, mean, istd, gain
        y = k["y"](x3, mean.reshape(per_channel), gain.reshape(per_channel), bias.reshape(per_channel))
        return y.reshape(x.shape)

    def backward(self, gy):
        cp = get_array_module(gy)
        k = _kernels(cp)
        x3 = self.x3
        n = x3.shape[0] * x3.shape[2]
        per_channel = (1, x3.shape[1], 1)
        gy3 = cp.ascontiguousarray(gy).reshape(x3.shape)
        mean = self.mean.reshape(per_channel)
        sum_gy = k["sum"](gy3, axis=(0, 2))
        sum_gy_xc = k["sum_centred"](gy3, x3, mean, axis=(0, 2))
        dweight, k_mean, k_centred = k["backward_coefficients"](sum_gy, sum_gy_xc, self.istd, self.gain,
                                                                float(self.scale), float(n), bool(self.training))
        gx = None
        if self.needs_input_grad[0]:
            gx = k["dx"](gy3, x3, mean, self.gain.reshape(per_channel), k_mean.reshape(per_channel),
                         k_centred.reshape(per_channel)).reshape(gy.shape)
        return gx, dweight, sum_gy


register(BatchNormFunction, cpu=ChunkedBatchNorm, cuda=FusedBatchNorm)
