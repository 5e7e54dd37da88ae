"""On paper: a data-parallel ResNet-19 step (CIFAR-10, T = 2) on 1 to 8 GPUs -- bytes allreduced, ring
allreduce time over NVLink and over a 100 Gb/s network, against the step's compute time.

The model's numbers (parameters, MACs, tdBN layers) are counted from minisnn's ResNet-19; everything
about the hardware is an assumption, printed with the table (ASSUMED below). Nothing here was run on a
GPU.

    python benchmarks/dist_scaling.py            # prints the Markdown table
"""
import numpy as np

from minisnn.core import Tensor, no_grad
from minisnn.models import resnet19
from minisnn.monitor import count_macs
from minisnn.nn import BatchNorm

ASSUMED = {
    "nvlink_GBps": 240.0,      # allreduce bus bandwidth per GPU over NVLink (NVLink 3 is 300 GB/s per direction)
    "nvlink_latency_us": 5.0,  # per ring step
    "net_GBps": 11.25,         # 100 Gb/s = 12.5 GB/s per direction, 90 % of it
    "net_latency_us": 15.0,    # per ring step, one NIC per GPU
    "achieved_TFLOPs": 10.0,   # what a float32 CuPy step of im2col GEMMs + LIF + tdBN kernels reaches per GPU
    "T": 2,
    "global_batch": 64,        # the README's ResNet-19 command
}


def count(model, T):
    """(parameters, forward MACs per image and timestep, [channels of every tdBN layer])."""
    model.eval()
    with no_grad(), count_macs(model) as macs:
        model(Tensor(np.zeros((1, 3, 32, 32), np.float32)))
    channels = [m.num_channels for _, m in model.named_modules() if isinstance(m, BatchNorm)]
    return model.num_parameters(), macs.total / T, channels


def ring_seconds(nbytes, K, GBps, latency_us):
    """Ring allreduce: each GPU sends (and receives) 2 (K-1)/K of the buffer in 2 (K-1) steps."""
    if K == 1:
        return 0.0
    return 2 * (K - 1) / K * nbytes / (GBps * 1e9) + 2 * (K - 1) * latency_us * 1e-6


def table(K_values=(1, 2, 4, 8)):
    a = ASSUMED
    params, macs, channels = count(resnet19(T=a["T"]), a["T"])
    bucket = 4 * (params + 3)  # float32 gradients + loss sum, rows, stop
    sync_calls = 2 * len(channels)  # sync-norm: one allreduce per tdBN layer in forward, one in backward
    sync_bytes = 8 * sum(2 * c + 1 + 2 * c for c in channels)
    lines = [
        f"ResNet-19: {params:,} parameters -> {bucket / 1e6:.1f} MB allreduced per step (float32, one bucket); "
        f"{macs / 1e9:.2f} GMAC forward per image and timestep; {len(channels)} tdBN layers -> sync-norm adds "
        f"{sync_calls} small allreduces ({sync_bytes / 1e3:.0f} kB in all) per step.",
        f"Compute per step = 3 x forward (forward + backward) x 2 FLOP/MAC x T={a['T']} x images per GPU, at "
        f"{a['achieved_TFLOPs']:g} TFLOP/s per GPU.",
        "",
        "| GPUs | images per GPU | compute ms | bytes sent per GPU | ring ms NVLink | ring ms 100 Gb/s "
        "| step efficiency NVLink | step efficiency 100 Gb/s | sync-norm ms NVLink / 100 Gb/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for scaling, per_gpu in (("strong", lambda K: a["global_batch"] / K), ("weak", lambda K: a["global_batch"])):
        for K in K_values:
            images = per_gpu(K)
            compute = 3 * macs * 2 * a["T"] * images / (a["achieved_TFLOPs"] * 1e12)
            nv = ring_seconds(bucket, K, a["nvlink_GBps"], a["nvlink_latency_us"])
            net = ring_seconds(bucket, K, a["net_GBps"], a["net_latency_us"])
            sync_nv, sync_net = (sum(ring_seconds(8 * (2 * c + 1), K, GBps, us) + ring_seconds(8 * 2 * c, K, GBps, us)
                                     for c in channels)
                                 for GBps, us in ((a["nvlink_GBps"], a["nvlink_latency_us"]),
                                                  (a["net_GBps"], a["net_latency_us"])))
            sent = 2 * (K - 1) / K * bucket
            lines.append(f"| {K} ({scaling}) | {images:g} | {compute * 1e3:.0f} | {sent / 1e6:.1f} MB | {nv * 1e3:.2f} "
                         f"| {net * 1e3:.1f} | {compute / (compute + nv):.0%} | {compute / (compute + net):.0%} "
                         f"| {sync_nv * 1e3:.2f} / {sync_net * 1e3:.2f} |")
    lines.append("")
    lines.append("Assumed: " + ", ".join(f"{k} = {v:g}" for k, v in a.items()) + ".")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
