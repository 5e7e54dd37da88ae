"""The float32 matrix products of a ResNet-19 step, one thread: NumPy's BLAS beside PyTorch's.

    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 python benchmarks/gemm_shapes.py

minisnn's convolutions are im2col matrix products run by the BLAS that NumPy was built with (OpenBLAS in
the wheels from PyPI); PyTorch's CPU build runs its own (MKL / oneDNN). This prints GFLOP/s for the
product shapes of minisnn's convolutions at T=2, batch 8 (M x K x N: [M, K] times [K, N]; "nt": the
right factor is a transposed view, as in dW = cols X^T), so that the part of the gap to PyTorch that
is the library's, not minisnn's, can be read off. Needs PyTorch (the benchmark's peer).
"""
import time

import numpy as np
import torch

SHAPES = [  # (M, K, N, layout, what)
    (2048, 2048, 2048, "nn", "the machine's reference product"),
    (128, 1152, 1024, "nn", "forward, 128 channels, 32x32, one image"),
    (256, 2304, 512, "nn", "forward, 256 channels, 16x16, two images"),
    (512, 4608, 512, "nn", "forward, 512 channels, 8x8, eight images"),
    (1152, 1024, 128, "nt", "dW, 128 channels, 32x32, one image"),
    (2304, 512, 256, "nt", "dW, 256 channels, 16x16, two images"),
    (4608, 512, 512, "nt", "dW, 512 channels, 8x8, eight images"),
]


def gflops(product, M, K, N, seconds=0.5):
    """GFLOP/s of ``product()`` (2 M K N flops), repeated for about ``seconds`` after one warm-up call."""
    product()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        product()
        calls += 1
    return 2 * M * K * N * calls / (time.perf_counter() - start) / 1e9


def main():
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    print("| M x K x N | layout | what | NumPy GFLOP/s | PyTorch GFLOP/s | NumPy / PyTorch |")
    print("|---|---|---|---|---|---|")
    for M, K, N, layout, what in SHAPES:
        A = rng.random((M, K), dtype=np.float32)
        B = rng.random((K, N), dtype=np.float32) if layout == "nn" else rng.random((N, K), dtype=np.float32).T
        out = np.empty((M, N), np.float32)
        ours = gflops(lambda: np.matmul(A, B, out=out), M, K, N)
        At, Bt = torch.from_numpy(A), torch.from_numpy(B)
        theirs = gflops(lambda: torch.mm(At, Bt), M, K, N)
        print(f"| {M} x {K} x {N} | {layout} | {what} | {ours:.0f} | {theirs:.0f} | {ours / theirs:.2f} |")


if __name__ == "__main__":
    main()
