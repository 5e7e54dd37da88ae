"""The fast Linear on the CPU: the reference's products, with BLAS held at one thread while minisnn's workers split.

With more than one worker (``parallel.workers() > 1``) the cores are busy with minisnn's own chunks,
and BLAS runs at one thread inside them. A Linear layer of a spiking net is a small product (ResNet-19's
two: [T*N, 512] x [512, 256] and [T*N, 256] x [256, 10]) that ran on BLAS's own threads all the same,
since it is no batch-chunked job; OpenBLAS's threads then spin for a while, waiting for more work, on
the cores that the workers need next. Measured on the 2-core Intel machine of benchmarks/RESULTS.md
(ResNet-19, T=2, batch 8, 2 workers): the spinning BLAS thread took 0.05 CPU seconds per step, and
holding these products at one thread made the step 0.07-0.09 s (4-5 %) shorter. With one worker
(``MINISNN_THREADS=1``) BLAS's threads are the parallelism, and the products keep them.

The arithmetic is the reference's (``functions/linear.py``), line for line.
"""
from ..functions.linear import Linear
from . import register
from .parallel import blas_one_thread, workers


class CPULinear(Linear):
    """``Linear`` whose products run on one BLAS thread when minisnn's workers split the work (see above)."""

    def forward(self, x, W, b=None):
        if workers() == 1:
            return super().forward(x, W, b)
        with blas_one_thread():
            return super().forward(x, W, b)

    def backward(self, gy):
        if workers() == 1:
            return super().backward(gy)
        with blas_one_thread():
            return super().backward(gy)


register(Linear, cpu=CPULinear)
