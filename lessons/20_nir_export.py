"""Lesson 20 -- exporting a network to NIR, and reading it back with identical spikes.

What you will learn: how a minisnn network leaves minisnn. NIR (the Neuromorphic Intermediate
Representation) is a file format that snnTorch, Norse, Sinabs, Lava and several chips read: a graph of
nodes (Conv2d, Affine, AvgPool2d, Flatten, LIF, ...) and edges, with the parameters as arrays. It has
no batch norm, so tdBN is folded into the convolutions first (lesson 19), and its LIF is a
continuous-time equation,

    tau dv/dt = (v_leak - v) + r I,       a spike when v > v_threshold, then v = v_reset,

so our discrete neuron u[t] = k u[t-1] (1 - o[t-1]) + x[t] (k = tau_decay, lesson 04) has to be
matched to it. Forward Euler with step dt turns NIR's equation into

    v[t] = (1 - dt/tau) v[t-1] + (dt/tau) (v_leak + r I[t]),

which is ours term by term when  tau = dt / (1 - k),  r = tau / dt,  v_leak = 0,  v_reset = 0
(k = 0.25: tau = 4/3 dt, r = 4/3). The threshold needs one more thought: we fire on u >= V_th, NIR on
v > v_threshold, so the exporter writes v_threshold as the largest float32 below V_th; on float32
membranes v > that number exactly when v >= V_th. Two things stay outside the graph and go into
its metadata: the discretisation (another reader may use exp(-dt/tau) instead of 1 - dt/tau: a
different neuron), and how the input is presented (direct encoding, readout = mean over T).

What you will see:

1. NIR's neuron simulated by hand with forward Euler in float32 next to ``nn.LIF``: with v_threshold =
   V_th the spikes differ only where a membrane sits exactly on V_th; with the exported threshold (the
   float32 just below V_th) every spike is the same; and the exp(-dt/tau) reading of the same file is
   another neuron (``20_nir_neuron.png``).
2. ``to_nir`` on a small trained spiking ResNet: its nodes and edges -- the residual sum is two edges
   into one LIF node -- and one LIF node's parameters.
3. ``export_nir`` to a file and ``from_nir`` back into a minisnn network: every LIF layer emits the
   same spikes as the folded original, at every timestep, and the logits agree.

NIR is optional (``pip install -e ".[nir]"``: nir and h5py). Without it, parts 2 and 3 are skipped
with a message saying so; part 1 and its figure need nothing.

Run:  python lessons/20_nir_export.py      (add --fast or MINISNN_FAST=1 for the test mode)
"""
import numpy as np

from _common import FAST, finish, output_dir, plt, save_figure, section, title
from minisnn import Tensor, no_grad
from minisnn.data import get_dataset
from minisnn.fold import fold_tdbn
from minisnn.functions.loss import softmax_cross_entropy
from minisnn.models import resnet_small
from minisnn.monitor import Recorder
from minisnn.nir_export import export_nir, from_nir, import_nir, lif_to_nir_parameters, to_nir
from minisnn.nn import LIF
from minisnn.optim import Adam
from minisnn.paper import TAU_DECAY, V_TH

INTRODUCES = ("minisnn.nir_export.to_nir", "minisnn.nir_export.export_nir", "minisnn.nir_export.from_nir",
              "minisnn.nir_export.import_nir", "minisnn.nir_export.lif_to_nir_parameters")

DT = 1e-4


def nir_lif_euler(current, tau, r, v_threshold, dt=DT, decay=None):
    """NIR's LIF by forward Euler (or with the factor ``decay`` in place of 1 - dt/tau); v_leak = v_reset = 0.
    Computed in the current's dtype, as a float32 simulator would."""
    real = current.dtype.type
    keep, gain = real(1 - dt / tau if decay is None else decay), real(dt / tau * r)
    v, out, trace = np.zeros(current.shape[1:], current.dtype), [], []
    for I in current:
        v = keep * v + gain * I
        spike = v > v_threshold
        trace.append(v.copy())
        out.append(spike.astype(current.dtype))
        v = np.where(spike, 0.0, v)                    # reset right after the spike
    return np.array(out), np.array(trace)


def trained_resnet(data, steps):
    model = resnet_small(num_classes=10, in_channels=1, T=4, width=8, blocks=(1, 1), seed=0)
    optimizer = Adam(model.parameters(), lr=0.005)
    batches = (b for epoch in range(10) for b in data.loader("train", 32, seed=0).batches(epoch))
    for _, (images, labels) in zip(range(steps), batches):
        loss = softmax_cross_entropy(model(Tensor(images)), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def main(argv=None):
    title("Lesson 20: NIR export and import")
    rng = np.random.default_rng(0)

    section("1. NIR's LIF by hand, against ours")
    tau, r, v_leak, v_threshold, v_reset = lif_to_nir_parameters(TAU_DECAY, V_TH, DT)
    print(f"k = tau_decay = {TAU_DECAY}, V_th = {V_TH}, dt = {DT}: tau = dt / (1 - k) = {tau:.6g} s, r = tau / dt = {r:.6g}, "
          f"v_leak = {v_leak}, v_threshold = {v_threshold}, v_reset = {v_reset}")
    T = 20
    current = rng.uniform(0, 0.6, (T, 200 if FAST else 2000)).astype(np.float32)
    current[0, 0] = V_TH                               # a membrane exactly on the threshold at t = 0
    with no_grad():
        ours = LIF()(Tensor(current)).data
    naive, _ = nir_lif_euler(current, tau, r, V_TH)    # v_threshold = V_th itself
    theirs, trace = nir_lif_euler(current, tau, r, v_threshold)
    other, _ = nir_lif_euler(current, tau, r, v_threshold, decay=np.exp(-DT / tau))
    differ = np.argwhere(ours != naive)
    print(f"{ours.size:,} neuron-steps. With v_threshold = V_th, forward Euler differs from nn.LIF in {len(differ)} "
          f"(at {[tuple(int(i) for i in d) for d in differ[:3]]}: the membrane exactly at V_th -- ours fires, NIR's '>' "
          f"does not); with the exported v_threshold = {v_threshold!r}, in {int((ours != theirs).sum())}")
    print(f"read with exp(-dt/tau) = {np.exp(-DT / tau):.3f} in place of 1 - dt/tau = {1 - DT / tau:.3f}, the same "
          f"parameters give another neuron: {int((ours != other).sum())} spikes differ")
    u = LIF().membrane(current)
    fig, ax = plt.subplots(figsize=(7, 3.4))
    ax.plot(u[:, 1], "o-", label="nn.LIF: u[t]")
    ax.plot(trace[:, 1], "x--", label="NIR LIF, forward Euler: v[t] before the reset")
    ax.axhline(V_TH, color="gray", ls=":", label="V_th")
    ax.set(xlabel="timestep t", title="one neuron, two descriptions of it")
    ax.legend(fontsize=8)
    save_figure(fig, "20_nir_neuron.png")
    neuron_result = {"euler_differs_only_at_ties": len(differ) == 1 and tuple(differ[0]) == (0, 0),
                     "exported_threshold_identical": bool((ours == theirs).all()),
                     "exp_reading_differs": int((ours != other).sum())}

    try:
        nir = import_nir()
    except ImportError as err:
        print(f"\nParts 2 and 3 skipped: {err}")
        return finish(dict(neuron_result, nir_available=False),
                      "lesson 21 -- the same code on a GPU with CuPy.")

    section("2. to_nir: the graph of a small trained spiking ResNet")
    data = get_dataset("digits")
    model = trained_resnet(data, steps=3 if FAST else 30)
    graph = to_nir(model, input_shape=(1, 8, 8), dt=DT)
    kinds = {}
    for name, node in graph.nodes.items():
        kinds.setdefault(type(node).__name__, []).append(name)
    for kind, names in kinds.items():
        print(f"{kind:<10} {len(names):>2}: {', '.join(names)}")
    joins = [target for target in graph.nodes if sum(1 for _, t in graph.edges if t == target) > 1]
    print("nodes with two incoming edges (the residual sums): "
          + "; ".join(f"{j} <- {[s for s, t in graph.edges if t == j]}" for j in joins))
    lif_node = graph.nodes[joins[0]]
    print(f"LIF node {joins[0]!r}: tau {float(lif_node.tau.flat[0]):.6g}, r {float(lif_node.r.flat[0]):.6g}, "
          f"v_threshold {float(lif_node.v_threshold.flat[0])}, arrays of shape {lif_node.tau.shape} (C, H, W)")
    print("metadata:", {k: graph.metadata[k] for k in ("dt", "encoding", "readout", "T")})

    section("3. to a file and back")
    path = output_dir() / "20_resnet.nir"
    export_nir(model, (1, 8, 8), path, dt=DT)
    net = from_nir(path, dt=DT)
    print(f"{path.name}: {path.stat().st_size:,} bytes; read back as {type(net).__name__} with "
          f"{sum(isinstance(m, LIF) for _, m in net.named_modules())} LIF layers, T = {net.T}")
    folded = fold_tdbn(model)
    images = next(data.loader("test", 64).batches())[0]
    with no_grad(), Recorder(folded) as rec_ref:
        logits_ref = folded(Tensor(images)).data
    with no_grad(), Recorder(net) as rec_nir:
        logits_nir = net(Tensor(images)).data
    names = rec_ref.order_of_lif()
    same_names = rec_nir.order_of_lif() == names
    identical = same_names and all(np.array_equal(rec_ref.spikes[n], rec_nir.spikes[n]) for n in names)
    spikes = sum(int(rec_ref.spikes[n].sum()) for n in names)
    logit_gap = float(np.abs(logits_ref - logits_nir).max())
    print(f"the LIF layers carry the same names ({names[:3]} ...): {same_names}")
    print(f"every spike of every LIF layer at every step equal ({spikes:,} spikes): {identical}; "
          f"largest logit difference {logit_gap:.1e}")
    with no_grad():
        agree = float((model(Tensor(images)).data.argmax(axis=1) == logits_nir.argmax(axis=1)).mean())
    print(f"the NIR network's answers agree with the original (unfolded) network's on {agree:.0%} of 64 test digits")
    return finish(dict(neuron_result, nir_available=True, nir_version=getattr(nir, "__version__", "?"),
                       residual_joins=len(joins), spikes_identical=identical, logit_gap=logit_gap,
                       answers_agree=agree),
                  "lesson 21 -- the same code on a GPU with CuPy.")


if __name__ == "__main__":
    main()
