"""The benchmark's peer: minisnn's spiking ResNets rebuilt in plain PyTorch, with the same equations.

    python benchmarks/peer_torch.py --model resnet19 -T 2 --batch 8 --steps 3 --threads 2

Only the benchmark uses this file; PyTorch is never a dependency of minisnn. Equations (as in
minisnn/models/resnet.py, functions/neuron.py, functions/norm.py):

* conv (no bias) -> tdBN: per channel over (T, N, H, W), y = lambda * alpha * V_th * (x - mean) /
  sqrt(var + eps) + beta (alpha = 1/sqrt(2) on both branches of a residual join);
* LIF, looped over T: u[t] = tau_decay * u[t-1] * (1 - o[t-1]) + x[t], o[t] = H(u[t] - V_th), with
  the rectangular surrogate dH/du = 1{|u - V_th| < 1/2} in a torch.autograd.Function;
* BasicBlock o = LIF(tdBN_a(conv(LIF(tdBN(conv(x))))) + shortcut(x)); direct encoding (stem
  conv + tdBN computed once, broadcast over T); global average pooling; [FC 256 + LIF]; FC 10; mean
  over T; cross-entropy; SGD with momentum 0.9 and weight decay 5e-4.

Prints one JSON line: median step seconds, images/s and the process's peak RSS. With ``--profile``,
the timed steps run under torch.profiler instead, and the line gives the seconds per step of each phase
(convolution, tdBN, LIF, optimizer, other): the forward ops run inside named ``record_function`` scopes,
and each backward node counts where the forward op it differentiates ran (they share a sequence number).
"""
import argparse
import contextlib
import json
import math
import resource
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import ProfilerActivity, profile, record_function

V_TH, TAU, ALPHA_RES = 0.5, 0.25, 1 / math.sqrt(2)


class SpikeFn(torch.autograd.Function):
    """o = H(u - V_th);  do/du = 1{|u - V_th| < 1/2} (rectangular surrogate, width 1)."""

    @staticmethod
    def forward(ctx, u):
        ctx.save_for_backward(u)
        return (u >= V_TH).to(u.dtype)

    @staticmethod
    def backward(ctx, g):
        (u,) = ctx.saved_tensors
        return g * ((u - V_TH).abs() < 0.5).to(g.dtype)


def lif(x):
    """x [T, N, ...] -> spikes [T, N, ...]; u[t] = tau u[t-1] (1 - o[t-1]) + x[t], o[t] = H(u[t] - V_th)."""
    with record_function("LIF"):
        u = x[0]                                   # u[-1] = o[-1] = 0
        o = SpikeFn.apply(u)
        out = [o]
        for t in range(1, x.shape[0]):
            u = TAU * u * (1 - o) + x[t]
            o = SpikeFn.apply(u)
            out.append(o)
        return torch.stack(out)


class ConvBN(nn.Module):
    """conv (no bias) + tdBN on [T, N, C, H, W], both on the folded [T*N, C, H, W] batch."""

    def __init__(self, cin, cout, k, stride=1, alpha=1.0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, bias=False)
        nn.init.kaiming_normal_(self.conv.weight)
        self.weight = nn.Parameter(torch.ones(cout))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.register_buffer("running_mean", torch.zeros(cout))
        self.register_buffer("running_var", torch.ones(cout))
        self.scale = alpha * V_TH

    def forward(self, x):
        T, N = x.shape[:2]
        with record_function("convolution"):
            y = self.conv(x.flatten(0, 1))
        with record_function("tdBN"):
            y = F.batch_norm(y, self.running_mean, self.running_var, self.weight * self.scale, self.bias,
                             training=True, momentum=0.1, eps=1e-5)
        return y.unflatten(0, (T, N))


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = ConvBN(cin, cout, 3, stride)
        self.conv2 = ConvBN(cout, cout, 3, 1, alpha=ALPHA_RES)
        self.shortcut = ConvBN(cin, cout, 1, stride, alpha=ALPHA_RES) if stride != 1 or cin != cout else None

    def forward(self, x):
        skip = x if self.shortcut is None else self.shortcut(x)
        return lif(self.conv2(lif(self.conv1(x))) + skip)


class SpikingResNet(nn.Module):
    def __init__(self, stages, stem, T, fc_hidden=256, num_classes=10, in_channels=3):
        super().__init__()
        self.T = T
        self.stem = ConvBN(in_channels, stem, 3)
        blocks, cin = [], stem
        for width, n, stride in stages:
            for i in range(n):
                blocks.append(BasicBlock(cin, width, stride if i == 0 else 1))
                cin = width
        self.blocks = nn.Sequential(*blocks)
        self.fc1 = nn.Linear(cin, fc_hidden) if fc_hidden else None
        self.fc2 = nn.Linear(fc_hidden or cin, num_classes)

    def forward(self, x):
        h = self.stem(x[None])                          # direct encoding: once, then repeated over T
        h = lif(h.expand(self.T, *h.shape[1:]))
        h = self.blocks(h).mean(dim=(3, 4))             # global average pooling -> [T, N, C]
        if self.fc1 is not None:
            h = lif(self.fc1(h))
        return self.fc2(h).mean(dim=0)


def build(model, T, width=32, blocks=(1, 1, 1), strides=None):
    if model == "resnet19":
        return SpikingResNet([(128, 3, 1), (256, 3, 2), (512, 2, 2)], 128, T)
    if model == "resnet_small":
        strides = strides or (1,) + (2,) * (len(blocks) - 1)
        stages = [(width * 2 ** i, n, stride) for i, (n, stride) in enumerate(zip(blocks, strides))]
        return SpikingResNet(stages, width, T, fc_hidden=0)
    raise ValueError(f"peer_torch: unknown model {model!r}")


def current_rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


SCOPES = ("convolution", "tdBN", "LIF")


def phases(events, steps):
    """Seconds per step of each phase in a torch.profiler trace of ``steps`` steps.

    Every top-level event counts whole: a forward scope of SCOPES under its name, the optimizer's step as
    "optimizer", a backward node ("autograd::engine::evaluate_function: XBackward0") in the scope of the
    forward op with its sequence number, anything else as "other"."""
    scope_of = {}
    for e in events:
        parent = e
        while parent is not None and parent.name not in SCOPES:
            parent = parent.cpu_parent
        if parent is not None and e.sequence_nr >= 0 and "evaluate_function" not in e.name:
            scope_of[e.sequence_nr] = parent.name
    seconds = {}
    for e in events:
        if e.cpu_parent is not None:
            continue
        if e.name in SCOPES:
            phase = e.name
        elif e.name.startswith("Optimizer.step"):
            phase = "optimizer"
        elif "evaluate_function" in e.name:
            phase = scope_of.get(e.sequence_nr, "other")
        else:
            phase = "other"
        seconds[phase] = seconds.get(phase, 0.0) + e.cpu_time_total / 1e6 / steps
    return seconds


def run(model="resnet19", T=2, batch=8, steps=3, warmup=1, threads=2, width=32, blocks=(1, 1, 1), seed=0,
        device="cpu", profiled=False, strides=None):
    """Time ``steps`` training steps after ``warmup`` ones on ``device`` ('cpu' or 'cuda'). Returns a dict.
    profiled: run the timed steps under torch.profiler and add ``phases`` (see ``phases``)."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    device = torch.device("cuda" if device.startswith("cuda") else "cpu")
    net = build(model, T, width, blocks, strides).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, 32, 32, generator=gen).to(device)
    y = torch.randint(0, 10, (batch,), generator=gen).to(device)
    base_rss = current_rss_mb()

    def step():
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return loss

    for _ in range(warmup):
        step()
    times = []
    with profile(activities=[ProfilerActivity.CPU]) if profiled else contextlib.nullcontext() as trace:
        cpu_start = time.process_time()
        for _ in range(steps):
            start = time.perf_counter()
            loss = step()
            times.append(time.perf_counter() - start)
        cpu = (time.process_time() - cpu_start) / steps
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    median = statistics.median(times)
    row = {"framework": "torch", "torch": torch.__version__, "model": model, "T": T, "batch": batch,
           "threads": threads, "step_s": median, "step_s_all": times, "images_per_s": batch / median,
           "peak_rss_mb": peak, "base_rss_mb": base_rss, "step_rss_mb": peak - base_rss, "step_cpu_s": cpu,
           "loss": loss.item(), "device": str(device),
           "device_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None}
    if profiled:
        row["phases"] = phases(trace.events(), steps)
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet19", choices=["resnet19", "resnet_small"])
    p.add_argument("-T", type=int, default=2)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--blocks", type=int, nargs="+", default=[1, 1, 1])
    p.add_argument("--strides", type=int, nargs="+", help="stride of each stage's first block (default 1 2 2 ...)")
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.add_argument("--profile", action="store_true", help="time each phase with torch.profiler")
    a = p.parse_args(argv)
    print(json.dumps(run(a.model, a.T, a.batch, a.steps, a.warmup, a.threads, a.width, tuple(a.blocks),
                         device=a.device, profiled=a.profile, strides=a.strides and tuple(a.strides))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
