"""Lesson 21 -- switching to the GPU with CuPy (and what happens on a machine without one).

What you will learn: how one code base runs on CPU and GPU, and how to move a model and its data --
what the paper's ResNet-19 run on full CIFAR-10 needs.

minisnn's array code never says ``numpy``: every function starts with ``xp = get_array_module(x)``
and then calls ``xp.*``, so the same line runs on NumPy arrays (CPU) and CuPy arrays (GPU). Only
``minisnn/backend.py`` imports CuPy, and only it decides the device:

    get_device(name)   the argument, else $MINISNN_DEVICE, else 'cpu'  ->  'cpu' or 'cuda:N'
    xp_for(device)     numpy or cupy for that device (raises DeviceError if CuPy or a GPU is missing)
    model.to(device)   moves every parameter and buffer;  Tensor(xp.asarray(images)) moves the data

On a GPU the LIF neuron also runs as one fused CUDA kernel per pass (``minisnn/fast/neuron.py``).
The switch is never silent: asking for CUDA without CuPy or a GPU raises ``DeviceError`` with the real
reason. This lesson catches that error, says so, and carries on with the CPU.

What you will see:

1. The device names and where they come from.
2. One function written once with ``xp``, run on NumPy.
3. The attempt to use the GPU: on a machine without CuPy or a GPU, the DeviceError's message.
4. A small spiking ResNet forward and backward on the CPU, and -- only where a GPU works -- on the GPU,
   with the largest difference between the two results and the time of each (``21_devices.png``).

To use a GPU:  pip install -e ".[gpu]"   then   MINISNN_DEVICE=cuda python lessons/21_cupy.py
               (or minisnn train ... --device cuda)

Run:  python lessons/21_cupy.py      (add --fast or MINISNN_FAST=1 for the test mode)
"""
import os

import numpy as np

from _common import FAST, Timer, finish, plt, save_figure, section, title
from minisnn import DeviceError, Tensor, as_numpy, get_array_module, get_device, xp_for
from minisnn.backend import ENV_VAR
from minisnn.functions.loss import softmax_cross_entropy
from minisnn.models import resnet_small

INTRODUCES = ("minisnn.DeviceError", "minisnn.as_numpy", "minisnn.get_array_module", "minisnn.get_device",
              "minisnn.xp_for", "minisnn.backend.ENV_VAR", "minisnn.nn.Module.to")


def standardise(x, eps=1e-5):
    """(x - mean) / sqrt(var + eps), written once for NumPy and CuPy alike."""
    xp = get_array_module(x)
    return (x - x.mean()) / xp.sqrt(x.var() + eps)


def step_on(device, images, labels):
    """Forward + backward of a fixed small ResNet on ``device``; returns (logits, first grad, seconds)."""
    xp = xp_for(device)
    model = resnet_small(num_classes=10, in_channels=3, T=2, width=8, blocks=(1, 1), seed=0).to(device)
    x, y = Tensor(xp.asarray(images)), xp.asarray(labels)
    for _ in range(2):                  # the first pass compiles the GPU kernels; time the second
        model.zero_grad()
        with Timer() as timer:
            logits = model(x)
            softmax_cross_entropy(logits, y).backward()
            grad = model.stem[0].conv.weight.grad
            logits, grad = as_numpy(logits.data), as_numpy(grad)   # waits for the GPU to finish
    return logits, grad, timer.seconds


def main(argv=None):
    title("Lesson 21: NumPy or CuPy -- one code base, two devices")

    section("1. device names")
    print(f"${ENV_VAR} = {os.environ.get(ENV_VAR)!r}  ->  get_device() = {get_device()!r}")
    for name in ("cpu", "cuda", "gpu", "cuda:1"):
        print(f"get_device({name!r:8}) = {get_device(name)!r}")
    try:
        get_device("tpu")
    except DeviceError as err:
        print("get_device('tpu')      -> DeviceError:", err)

    section("2. one function, any array module")
    x = np.arange(6, dtype=np.float32)
    print(f"standardise(numpy array) = {standardise(x).round(3)}   (xp was {get_array_module(x).__name__})")

    section("3. can this machine use the GPU?")
    try:
        cp = xp_for("cuda")
        gpu, no_gpu_reason = "cuda:0", None
        print(f"yes: CuPy {cp.__version__}, {cp.cuda.runtime.getDeviceCount()} GPU(s)")
        print(f"standardise(cupy array)  = {as_numpy(standardise(cp.asarray(x))).round(3)}")
    except DeviceError as err:
        gpu, no_gpu_reason = None, str(err)
        print("NO GPU: CuPy or a CUDA device was not found, so this lesson runs on the CPU only.")
        print("The error minisnn raised (it never falls back silently):\n  " + str(err).replace("\n", "\n  "))

    section("4. the same model step on each device")
    n = 2 if FAST else 16
    rng = np.random.default_rng(0)
    images = rng.standard_normal((n, 3, 32, 32)).astype(np.float32)
    labels = rng.integers(0, 10, n)
    devices = ["cpu"] + ([gpu] if gpu else [])
    results = {device: step_on(device, images, labels) for device in devices}
    for device, (logits, grad, seconds) in results.items():
        print(f"{device:7}: forward + backward of {n} images, T=2: {seconds * 1e3:8.1f} ms")
    gaps = None
    if gpu:
        (l_cpu, g_cpu, _), (l_gpu, g_gpu, _) = results["cpu"], results[gpu]
        gaps = [float(np.abs(l_cpu - l_gpu).max()), float(np.abs(g_cpu - g_gpu).max() / np.abs(g_cpu).max())]
        print(f"largest |cpu - gpu|: logits {gaps[0]:.1e}, stem weight gradient {gaps[1]:.1e} of its scale "
              "(float32 rounding order differs)")

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.bar(devices, [results[d][2] * 1e3 for d in devices], color=["C0", "C2"][:len(devices)])
    ax.set(ylabel="ms per forward + backward", title=f"resnet_small, {n} images of 32x32, T=2")
    if not gpu:
        ax.text(0.5, 0.5, "no GPU / CuPy found:\nCPU only", transform=ax.transAxes, ha="center", color="C3")
    save_figure(fig, "21_devices.png")
    return finish({"gpu": gpu, "no_gpu_reason": no_gpu_reason, "cpu_minus_gpu": gaps,
                   "standardise_mean": float(standardise(x).mean())},
                  next_lesson="lesson 22 -- data parallelism: K ranks, one batch, and what it does to tdBN")


if __name__ == "__main__":
    main()
