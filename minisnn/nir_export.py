"""Export a minisnn network to NIR (the Neuromorphic Intermediate Representation) and import it back.

Needs the optional ``nir`` and ``h5py`` packages: ``pip install -e '.[nir]'``.

``to_nir(model, input_shape)`` folds tdBN into the convolutions (``fold.fold_tdbn``; NIR has no
batch-norm node) and writes the network as a graph of NIR nodes. It walks the model in forward order
(``fold.forward_order``: a Sequential's children, or the ``forward_order()`` a model or block gives),
so any model built from the layers below exports, and every node is named after the minisnn layer
it computes (``stem.0``, ``layers.3.shortcut``, ``layers.3.lif``, ``features.2``, ...):

    minisnn                        NIR node
    Conv2d (folded tdBN as bias)   Conv2d(input_shape=(H, W), weight, stride, padding, dilation=1, groups=1, bias)
    Linear                         Affine(weight, bias), or Linear(weight) without bias
    AvgPool2d                      AvgPool2d(kernel_size, stride, padding)
    GlobalAvgPool2d                SumPool2d(kernel_size=(H, W), stride=(H, W)) + Flatten, the 1/(H W) of the
                                   mean folded into the weights of the next Conv2d or Linear
    Flatten                        Flatten(start_dim=-rank, end_dim=-1): the same type without a batch
                                   axis, and right in importers that pass the dims to torch with one
    residual sum (Residual)        two edges into the node after the sum (the block's LIF): NIR sums a
                                   node's inputs
    LIF                            LIF(tau, r, v_leak, v_threshold, v_reset), full-shape arrays over (C, H, W)

The LIF mapping. minisnn's neuron (STBP-tdBN) is discrete:

    u[t] = k * u[t-1] * (1 - o[t-1]) + x[t],    o[t] = H(u[t] - V_th),    k = tau_decay.

NIR's LIF is continuous, tau dv/dt = (v_leak - v) + r I, with v -> v_reset right after a spike.
Forward Euler with step dt gives v[t] = (1 - dt/tau) v[t-1] + (dt/tau) (v_leak + r I[t]); matching
the two term by term:

    tau = dt / (1 - k),   r = tau / dt = 1 / (1 - k),   v_leak = 0,   v_reset = 0.

For the paper's k = 0.25: tau = 4/3 dt, r = 4/3. The multiplicative reset (1 - o[t-1]) is NIR's hard
reset to v_reset = 0. This is what snnTorch writes and reads (dt = 1e-4, the default here, and the dt
snnTorch's importer assumes). NIR does not fix a discretisation, so dt, the scheme and k are also
written into the graph's metadata (which NIR says no reader may rely on). A neuron without leak
(k = 1) has no LIF equivalent and is refused.

``input_gain="weights"`` writes r = 1 instead and puts the input gain 1 / (1 - k) into the weights
(and bias) of the Conv2d or Linear feeding each LIF; an identity shortcut then becomes an explicit
1x1 convolution carrying the gain. The spikes are the same up to float rounding of the scaled
weights. For readers that ignore r (Norse); snnTorch's importer reads the default ("r") exactly.

Spike rule: NIR fires on v > v_threshold, minisnn on u >= V_th (``functions/neuron.py``). On float32
membranes the two agree when v_threshold is the largest float32 below V_th, which is what is written
(``nir_threshold``); ``from_nir`` reads V_th back as the smallest float32 above v_threshold
(``minisnn_threshold``), which gives V_th exactly when V_th is a float32 number (0.5, 0.25, 1, ...), and
otherwise V_th rounded to float32, with the same spikes on float32 membranes.

Runtime behaviour that is not part of the graph (recorded in the metadata): direct encoding -- the
static image is the input current at every one of the T timesteps -- and the readout, the mean over T
of the output node.

``from_nir(graph)`` turns a NIR graph (or ``.nir`` file) back into a minisnn Module, ``NIRNetwork``,
which runs the nodes in topological order as minisnn layers over whole sequences [T, N, ...]. Every
node except the LIF is stateless, and the LIF loops over T inside, so running node after node over
the whole sequence equals stepping the graph one timestep at a time. Nodes minisnn cannot run
(CubaLIF, IF, LI, Scale, Delay, nested graphs, per-neuron LIF parameters, ...) raise
NotImplementedError, and so does any minisnn module the exporter does not know.
"""
import io
from collections import deque
from pathlib import Path
from typing import NamedTuple

import numpy as np

from . import __version__
from .backend import as_numpy
from .checkpoint import CheckpointError, atomic_write, load_checkpoint
from .core import as_tensor
from .experiment import ConfigError, load_data, model_for, saved_config
from .fold import fold_tdbn, forward_order
from .functions.basic import mean, repeat_over_time
from .models.resnet import Residual
from .nn import LIF, AvgPool2d, Conv2d, Flatten, GlobalAvgPool2d, Linear, Module

DEFAULT_DT = 1e-4
INPUT_GAINS = ("r", "weights")

# How the input reaches the graph: runtime behaviour, written into the metadata.
ENCODINGS = {
    "direct": "direct: the static input [C, H, W] is the input current at every one of the T timesteps",
    "frames": "frames: one input frame [C, H, W] per timestep (event data), T frames per sample",
}


def import_nir():
    """The ``nir`` package, or an ImportError saying how to install it."""
    try:
        import nir
    except ImportError as err:
        raise ImportError("NIR export/import needs the optional packages nir and h5py: "
                          "pip install -e '.[nir]'") from err
    return nir


def nir_threshold(v_th):
    """The largest float32 below V_th: on float32 membranes, v > it exactly when v >= V_th, the way
    minisnn's LIF compares them (V_th taken as a float32, as NumPy does for a float32 array)."""
    return float(np.nextafter(np.float32(v_th), np.float32(-np.inf)))


def minisnn_threshold(v_threshold):
    """The smallest float32 above ``v_threshold`` (taken as a float32, as float32 simulators hold it):
    on float32 membranes, u >= it exactly when u > v_threshold. Undoes ``nir_threshold`` for a float32 V_th."""
    return float(np.nextafter(np.float32(v_threshold), np.float32(np.inf)))


def lif_to_nir_parameters(tau_decay, v_th, dt=DEFAULT_DT, input_gain="r"):
    """(tau, r, v_leak, v_threshold, v_reset) of the NIR LIF that fires like minisnn's LIF(v_th, tau_decay):
    tau = dt / (1 - k), r = tau / dt (input_gain "r") or 1 ("weights": the gain 1 / (1 - k) is then in
    the weights feeding the LIF), v_leak = 0, v_threshold = the largest float32 below V_th, v_reset = 0."""
    if not 0 <= tau_decay < 1:
        raise ValueError(f"NIR LIF: tau_decay must be in [0, 1) (k = 1 is a neuron without leak), got {tau_decay}")
    if input_gain not in INPUT_GAINS:
        raise ValueError(f"NIR LIF: input_gain must be one of {INPUT_GAINS}, got {input_gain!r}")
    tau = dt / (1 - tau_decay)
    return tau, tau / dt if input_gain == "r" else 1.0, 0.0, nir_threshold(v_th), 0.0


# ------------------------------------------------------------------------------------------ export
def to_nir(model, input_shape, dt=DEFAULT_DT, encoding="direct", input_gain="r"):
    """The NIR graph of ``model`` (tdBN folded) for one input frame of shape ``input_shape`` = (C, H, W).

    dt: the time step of the LIF mapping. encoding: "direct" or "frames" (see ``ENCODINGS``), for the
    metadata only. input_gain: "r" (the LIF's r carries the gain 1 / (1 - k)) or "weights" (r = 1, the
    gain folded into the weights feeding each LIF; see the module docstring).
    """
    nir = import_nir()
    if dt <= 0:
        raise ValueError(f"to_nir: dt must be positive, got {dt}")
    if encoding not in ENCODINGS:
        raise ValueError(f"to_nir: encoding must be one of {sorted(ENCODINGS)}, got {encoding!r}")
    if input_gain not in INPUT_GAINS:
        raise ValueError(f"to_nir: input_gain must be one of {INPUT_GAINS}, got {input_gain!r}")
    input_shape = tuple(int(n) for n in input_shape)
    if len(input_shape) != 3:
        raise ValueError(f"to_nir: input_shape must be (C, H, W), got {input_shape}")
    params = model.parameters()
    dtype = params[0].dtype if params else np.dtype(np.float32)
    folded = fold_tdbn(model, dtype=np.float64)  # every weight scaling below in float64, rounded once at the end
    builder = _GraphBuilder(nir, dt, input_gain)
    builder.add("input", nir.Input(input_type={"input": np.array(input_shape)}), [])
    flow = builder.emit(folded, "", _Flow(["input"], input_shape))
    builder.require_no_scale(flow, "the output")
    builder.add("output", nir.Output(output_type={"output": np.array(flow.shape)}), flow.sources)
    builder.finish(dtype)
    ks = sorted({m.tau_decay for _, m in folded.named_modules() if isinstance(m, LIF)})
    metadata = {
        "exporter": f"minisnn {__version__}",
        "dt": float(dt),
        "discretisation": "forward Euler: v[t] = (1 - dt/tau) v[t-1] + (dt/tau) (v_leak + r I[t]); "
                          "minisnn: u[t] = tau_decay u[t-1] (1 - o[t-1]) + x[t], tau = dt/(1 - tau_decay), "
                          + ("r = tau/dt" if input_gain == "r" else
                             "r = 1 with the gain 1/(1 - tau_decay) in the weights feeding each LIF"),
        "tau_decay": ", ".join(f"{k!r}" for k in ks),
        "spike_rule": "minisnn fires on u >= V_th; v_threshold is the largest float32 below V_th, so NIR's "
                      "v > v_threshold fires alike on float32 membranes",
        "reset": "hard reset to v_reset = 0 right after a spike",
        "normalisation": "tdBN folded into conv weights and biases",
        "pooling": "global average pooling as SumPool2d, its 1/(H W) folded into the next layer's weights",
        "encoding": ENCODINGS[encoding],
        "readout": "mean over T of the output node",
        "T": int(getattr(model, "T", 0)),
    }
    return nir.NIRGraph(nodes=builder.nodes, edges=builder.edges, metadata=metadata)


def export_nir(model, input_shape, path, dt=DEFAULT_DT, encoding="direct", input_gain="r"):
    """Write ``to_nir(model, input_shape, dt, encoding, input_gain)`` to ``path`` (HDF5, atomically);
    return the graph."""
    nir = import_nir()
    graph = to_nir(model, input_shape, dt, encoding, input_gain)
    buffer = io.BytesIO()
    nir.write(buffer, graph)
    atomic_write(path, lambda f: f.write(buffer.getvalue()))
    return graph


class _Flow(NamedTuple):
    """What a point of the forward pass holds: the sum of the outputs of nodes ``sources``, of shape
    ``shape`` (no batch axis), times ``scale``; a scale other than 1 (the 1/(H W) a SumPool2d owes)
    is folded into the weights of the next Conv2d or Linear."""
    sources: list
    shape: tuple
    scale: float = 1.0


class _GraphBuilder:
    """Collects NIR nodes and edges while walking a folded float64 minisnn model in forward order."""

    def __init__(self, nir, dt, input_gain):
        self.nir, self.dt, self.input_gain = nir, dt, input_gain
        self.nodes, self.edges = {}, []
        self.lif_gains = {}  # LIF node -> input gain for the weights feeding it (input_gain "weights")

    def add(self, name, node, sources):
        if name in self.nodes:
            raise ValueError(f"NIR export: duplicate node name {name!r}")
        self.nodes[name] = node
        self.edges += [(source, name) for source in sources]
        return name

    def require_no_scale(self, flow, what):
        if flow.scale != 1:
            raise NotImplementedError(f"NIR export: {what} follows a global average pool with no Conv2d or "
                                      "Linear between them to take its 1/(H W)")

    def emit(self, module, name, flow):
        """Add the nodes of ``module`` (named ``name``) fed by ``flow``; return the flow after it."""
        nir = self.nir
        order = forward_order(module)
        if order is not None:
            for part, child in order:
                if isinstance(child, Residual):
                    flow = self.residual(child, name, flow)
                else:
                    flow = self.emit(child, f"{name}.{part}" if name else part, flow)
            return flow
        if isinstance(module, LIF):
            self.require_no_scale(flow, f"LIF {name!r}")
            tau, r, v_leak, v_threshold, v_reset = (
                np.full(flow.shape, value, dtype=np.float64)
                for value in lif_to_nir_parameters(module.tau_decay, module.v_th, self.dt, self.input_gain))
            node = nir.LIF(tau=tau, r=r, v_leak=v_leak, v_threshold=v_threshold, v_reset=v_reset)
            if self.input_gain == "weights":
                self.lif_gains[name] = 1 / (1 - module.tau_decay)
            return _Flow([self.add(name, node, flow.sources)], flow.shape)
        if isinstance(module, Conv2d):
            if flow.shape[0] != module.in_channels:
                raise ValueError(f"NIR export: {name} expects {module.in_channels} channels, gets shape {flow.shape}")
            w = as_numpy(module.weight.data) * flow.scale
            bias = as_numpy(module.bias.data) if module.bias is not None else np.zeros(w.shape[0])
            node = nir.Conv2d(input_shape=flow.shape[1:], weight=w, stride=module.stride, padding=module.padding,
                              dilation=1, groups=1, bias=bias)
            return _Flow([self.add(name, node, flow.sources)], tuple(int(n) for n in node.output_type["output"]))
        if isinstance(module, Linear):
            w = as_numpy(module.weight.data) * flow.scale
            node = (nir.Affine(weight=w, bias=as_numpy(module.bias.data)) if module.bias is not None
                    else nir.Linear(weight=w))
            return _Flow([self.add(name, node, flow.sources)], (module.out_features,))
        if isinstance(module, AvgPool2d):
            return self.pool(nir.AvgPool2d, name, flow, module.kernel_size, module.stride, module.padding)
        if isinstance(module, GlobalAvgPool2d):  # mean over (H, W) = 1/(H W) times one window's sum
            pooled = self.pool(nir.SumPool2d, name, flow, flow.shape[1:], flow.shape[1:], (0, 0))
            pooled = pooled._replace(scale=pooled.scale / (flow.shape[1] * flow.shape[2]))
            return self.flatten(f"{name}.flatten", pooled)
        if isinstance(module, Flatten):
            return self.flatten(name, flow)
        raise NotImplementedError(f"NIR export: module {name or 'model'!r} of type {type(module).__name__} is not "
                                  "supported (Conv2d, Linear, LIF, pooling, Flatten, Sequential, or a module "
                                  "with a forward_order() of these)")

    def residual(self, residual, name, flow):
        """The paths of a residual sum, each fed by ``flow``: their outputs all feed the next node."""
        self.require_no_scale(flow, f"the residual sum in {name!r}")
        outputs = []
        for part, path in residual.paths:
            path_name = f"{name}.{part}" if name else part
            if path is not None:
                outputs.append(self.emit(path, path_name, flow))
            elif self.input_gain == "weights":  # an explicit identity that can carry the LIF's gain
                outputs.append(self.identity(path_name, flow))
            else:
                outputs.append(flow)
        shapes = {out.shape for out in outputs}
        if len(shapes) != 1:
            raise ValueError(f"NIR export: {name}: the paths of the residual sum have shapes {sorted(shapes)}")
        return _Flow([source for out in outputs for source in out.sources], outputs[0].shape)

    def identity(self, name, flow):
        """A 1x1 Conv2d (or an Affine for a vector) that passes its input through unchanged."""
        eye = np.eye(flow.shape[0])
        if len(flow.shape) == 3:
            node = self.nir.Conv2d(input_shape=flow.shape[1:], weight=eye[:, :, None, None], stride=1, padding=0,
                                   dilation=1, groups=1, bias=np.zeros(flow.shape[0]))
        else:
            node = self.nir.Affine(weight=eye, bias=np.zeros(flow.shape[0]))
        return _Flow([self.add(name, node, flow.sources)], flow.shape)

    def pool(self, node_type, name, flow, kernel, stride, padding):
        (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
        node = node_type(kernel_size=np.array(kernel), stride=np.array(stride), padding=np.array(padding))
        shape = flow.shape
        out = (shape[0], (shape[1] + 2 * ph - kh) // sh + 1, (shape[2] + 2 * pw - kw) // sw + 1)
        return _Flow([self.add(name, node, flow.sources)], out, flow.scale)

    def flatten(self, name, flow):
        rank = len(flow.shape)
        node = self.nir.Flatten(input_type={"input": np.array(flow.shape)}, start_dim=-rank, end_dim=-1)
        return _Flow([self.add(name, node, flow.sources)], (int(np.prod(flow.shape)),), flow.scale)

    def finish(self, dtype):
        """Fold each LIF's input gain into the weights feeding it (input_gain "weights"), then round the
        float64 weights and biases to the model's dtype."""
        weighted = (self.nir.Conv2d, self.nir.Affine, self.nir.Linear)
        for lif, gain in self.lif_gains.items():
            for source in [src for src, dst in self.edges if dst == lif]:
                node = self.nodes[source]
                consumers = [dst for src, dst in self.edges if src == source]
                if not isinstance(node, weighted) or consumers != [lif]:
                    raise NotImplementedError(
                        f"NIR export with input_gain='weights': LIF {lif!r} is fed by {source!r} "
                        f"({type(node).__name__}, feeding {consumers}), which cannot carry its input gain; "
                        "only a Conv2d or Linear that feeds just this LIF can")
                node.weight = node.weight * gain
                if not isinstance(node, self.nir.Linear):
                    node.bias = node.bias * gain
        for node in self.nodes.values():
            if isinstance(node, weighted):
                node.weight = node.weight.astype(dtype)
                if not isinstance(node, self.nir.Linear):
                    node.bias = node.bias.astype(dtype)


# ------------------------------------------------------------------------------------------ import
def from_nir(graph, dt=None, T=None, readout="mean"):
    """A minisnn ``NIRNetwork`` running ``graph`` (a ``nir.NIRGraph`` or the path of a ``.nir`` file).

    dt: the step the graph's LIF time constants are read with (k = 1 - dt/tau); default: the dt in
    the graph's metadata (minisnn writes it), else ``DEFAULT_DT``.
    T: timesteps for static input (default: the graph's metadata ``T`` when present).
    readout: "mean" returns the mean over T of the output node (as minisnn models do), None the
    whole output sequence [T, N, ...].
    """
    nir = import_nir()
    if not isinstance(graph, nir.NIRGraph):
        graph = nir.read(graph)
    if dt is None:
        dt = float((graph.metadata or {}).get("dt", DEFAULT_DT))
    return NIRNetwork(graph, dt, T, readout)


class NIRNetwork(Module):
    """A NIR graph as a minisnn Module: each node a minisnn layer over [T, N, ...], run in topological
    order; a node with several incoming edges receives their sum. Layers are registered under the
    NIR node names, so a graph exported from a minisnn model has that model's layer names.

    A LIF node whose input gain g = r dt / tau is not 1 (a file written with r = 1) gets its summed
    input multiplied by g before minisnn's LIF, which integrates x[t] with gain 1."""

    def __init__(self, graph, dt=DEFAULT_DT, T=None, readout="mean"):
        super().__init__()
        nir = import_nir()
        if readout not in ("mean", None):
            raise ValueError(f"NIRNetwork: readout must be 'mean' or None, got {readout!r}")
        inputs = [n for n, node in graph.nodes.items() if isinstance(node, nir.Input)]
        outputs = [n for n, node in graph.nodes.items() if isinstance(node, nir.Output)]
        if len(inputs) != 1 or len(outputs) != 1:
            raise NotImplementedError(f"NIR import: need exactly one Input and one Output node, got inputs "
                                      f"{inputs} and outputs {outputs}")
        self.input_name, self.output_name = inputs[0], outputs[0]
        self.input_shape = tuple(int(n) for n in graph.nodes[self.input_name].input_type["input"])
        self.sources = {name: [] for name in graph.nodes}
        for source, target in graph.edges:
            self.sources[target].append(source)
        self.order = _topological_order(graph.nodes, graph.edges)
        self.last_use = {source: i for i, name in enumerate(self.order) for source in self.sources[name]}
        self.input_gains = {}
        for name in self.order:
            layer, gain = _import_node(nir, name, graph.nodes[name], dt)
            if gain != 1:
                self.input_gains[name] = gain
            if layer is not None:
                if hasattr(self, name):
                    raise ValueError(f"NIR import: node name {name!r} clashes with a NIRNetwork attribute")
                setattr(self, name, layer)
        meta_T = (graph.metadata or {}).get("T")
        self.T = T if T is not None else (int(meta_T) if meta_T else None)
        self.readout = readout

    def forward(self, x):
        """x: [N, *input_shape] (the same frame at every one of T timesteps) or [T, N, *input_shape]."""
        x = as_tensor(x)
        rank = len(self.input_shape)
        if x.ndim == rank + 1:
            if not self.T:
                raise ValueError("NIRNetwork: static input [N, ...] needs T (from_nir(..., T=...))")
            x = repeat_over_time(x, self.T)
        if x.ndim != rank + 2 or tuple(x.shape[2:]) != self.input_shape:
            raise ValueError(f"NIRNetwork: expected input [N, {self.input_shape}] or [T, N, {self.input_shape}], "
                             f"got shape {x.shape}")
        values = {self.input_name: x}
        for i, name in enumerate(self.order):
            if name == self.input_name:
                continue
            h = None
            for source in self.sources[name]:
                h = values[source] if h is None else h + values[source]
                if self.last_use[source] == i:
                    del values[source]  # free what no later node reads
            if name in self.input_gains:
                h = h * self.input_gains[name]
            layer = self._modules.get(name)
            values[name] = layer(h) if layer is not None else h
        y = values[self.output_name]
        return mean(y, axis=0) if self.readout == "mean" else y

    def extra_repr(self):
        return f"input_shape={self.input_shape}, T={self.T}, readout={self.readout!r}"


def _topological_order(nodes, edges):
    """Node names so that every edge goes forward (Kahn's algorithm); raises on a cycle."""
    indegree = {name: 0 for name in nodes}
    targets = {name: [] for name in nodes}
    for source, target in edges:
        indegree[target] += 1
        targets[source].append(target)
    ready = deque(name for name in nodes if indegree[name] == 0)
    order = []
    while ready:
        name = ready.popleft()
        order.append(name)
        for target in targets[name]:
            indegree[target] -= 1
            if indegree[target] == 0:
                ready.append(target)
    if len(order) != len(nodes):
        raise NotImplementedError("NIR import: the graph has a cycle (recurrent connections are not supported)")
    return order


def _pair(value, what, name):
    pair = np.broadcast_to(np.asarray(value).reshape(-1), (2,))
    if not np.all(pair == pair.astype(int)):
        raise ValueError(f"NIR import: node {name!r}: {what} must be integers, got {value!r}")
    return int(pair[0]), int(pair[1])


def _uniform(value, what, name):
    """The one value of a per-neuron parameter array (minisnn's LIF has scalar parameters)."""
    value = np.asarray(value, dtype=np.float64)
    if value.size == 0 or not np.all(value == value.flat[0]):
        raise NotImplementedError(f"NIR import: node {name!r}: per-neuron {what} values are not supported")
    return float(value.flat[0])


class SumPool2d(AvgPool2d):
    """NIR's SumPool2d: the sum over each kh x kw window (padding counts as zeros), computed as
    kh * kw times minisnn's average pool (exact for spikes and a power-of-two window)."""

    def forward(self, x):
        kh, kw = self.kernel_size
        return super().forward(x) * float(kh * kw)


def _import_node(nir, name, node, dt):
    """(the minisnn layer computing NIR ``node`` over [T, N, ...] or None for Input / Output, the gain
    its summed input is multiplied by first)."""
    if isinstance(node, (nir.Input, nir.Output)):
        return None, 1.0
    if isinstance(node, nir.LIF):
        return _import_lif(name, node, dt)
    if isinstance(node, nir.Conv2d):
        if int(node.groups) != 1 or _pair(node.dilation, "dilation", name) != (1, 1):
            raise NotImplementedError(f"NIR import: node {name!r}: groups and dilation must be 1")
        w = np.asarray(node.weight)
        kh, kw = w.shape[2:]
        stride = _pair(node.stride, "stride", name)
        padding = node.padding
        if isinstance(padding, str):
            if padding == "valid":
                padding = (0, 0)
            elif stride == (1, 1) and kh % 2 and kw % 2:  # 'same' with odd kernels
                padding = (kh // 2, kw // 2)
            else:
                raise NotImplementedError(f"NIR import: node {name!r}: padding 'same' needs stride 1 and odd kernels")
        layer = Conv2d(w.shape[1], w.shape[0], (kh, kw), stride, _pair(padding, "padding", name), bias=True)
        layer.weight.data, layer.bias.data = w, np.asarray(node.bias, dtype=w.dtype)
        return layer, 1.0
    if isinstance(node, (nir.Affine, nir.Linear)):
        w = np.asarray(node.weight)
        if w.ndim != 2:
            raise NotImplementedError(f"NIR import: node {name!r}: weight must be 2-D, got shape {w.shape}")
        has_bias = isinstance(node, nir.Affine)
        layer = Linear(w.shape[1], w.shape[0], bias=has_bias)
        layer.weight.data = w
        if has_bias:
            layer.bias.data = np.asarray(node.bias, dtype=w.dtype)
        return layer, 1.0
    if isinstance(node, (nir.AvgPool2d, nir.SumPool2d)):
        pool = AvgPool2d if isinstance(node, nir.AvgPool2d) else SumPool2d
        return pool(_pair(node.kernel_size, "kernel_size", name), _pair(node.stride, "stride", name),
                    _pair(node.padding, "padding", name)), 1.0
    if isinstance(node, nir.Flatten):
        rank = len(node.input_type["input"])
        if int(node.start_dim) not in (0, -rank) or int(node.end_dim) not in (-1, rank - 1):
            raise NotImplementedError(f"NIR import: node {name!r}: only Flatten of all dimensions "
                                      f"(start_dim 0 or {-rank}, end_dim -1) is supported")
        return Flatten(), 1.0
    raise NotImplementedError(f"NIR import: node {name!r} of type {type(node).__name__} is not supported "
                              "(Conv2d, Affine, Linear, LIF, AvgPool2d, SumPool2d, Flatten, Input, Output)")


def _import_lif(name, node, dt):
    """minisnn's LIF for NIR LIF ``node`` read with step dt: tau_decay = 1 - dt/tau, V_th = the smallest
    float32 above v_threshold (NIR fires on v > v_threshold); and the input gain r dt / tau."""
    tau, r = _uniform(node.tau, "tau", name), _uniform(node.r, "r", name)
    v_leak, v_reset = _uniform(node.v_leak, "v_leak", name), _uniform(node.v_reset, "v_reset", name)
    if v_leak != 0 or v_reset != 0:
        raise NotImplementedError(f"NIR import: node {name!r}: minisnn's LIF needs v_leak = v_reset = 0, got "
                                  f"{v_leak} and {v_reset}")
    gain = r * dt / tau
    layer = LIF(v_th=minisnn_threshold(_uniform(node.v_threshold, "v_threshold", name)), tau_decay=1 - dt / tau)
    return layer, 1.0 if np.isclose(gain, 1, rtol=1e-9, atol=0) else gain


# -------------------------------------------------------------------------------- command line
def is_hdf5(path):
    """Whether the file at ``path`` starts as an HDF5 file (what NIR writes) does."""
    with open(path, "rb") as f:
        return f.read(8) == b"\x89HDF\r\n\x1a\n"


def export_checkpoint(checkpoint, out, dt=DEFAULT_DT, data_dir=None, input_gain="r"):
    """``minisnn export CHECKPOINT OUT``: the checkpoint's network, tdBN folded, written to ``out`` as NIR
    (input_gain: see ``to_nir``).

    The data set named in the checkpoint gives the input shape (C, H, W) and the encoding (direct for
    images, frames for event data). Returns the graph.
    """
    nir = import_nir()
    out = Path(out)
    if out.is_dir():
        raise ConfigError(f"{out} is a folder; give the name of the .nir file to write")
    if out.exists() and not is_hdf5(out):  # export replaces an earlier export, never a checkpoint or other file
        raise ConfigError(f"{out} is not a NIR file (export writes over an earlier export only); give another name")
    state = load_checkpoint(checkpoint)
    try:
        config = saved_config(state["meta"]["config"])
    except ConfigError as err:
        raise CheckpointError(f"{checkpoint}: its config is not valid today: {err}") from None
    config.update(device="cpu", data_dir=data_dir or config["data_dir"], download=False, limit_train=0,
                  limit_test=0)
    data = load_data(config)
    model = model_for(config, data)
    try:
        model.load_state_dict(state["model"])
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"{checkpoint} does not fit the model its config describes: {err}") from err
    encoding = "frames" if data.train_x.ndim == 5 else "direct"
    graph = export_nir(model, (data.in_channels, *data.image_size), out, dt, encoding, input_gain)
    lifs = sum(isinstance(node, nir.LIF) for node in graph.nodes.values())
    print(f"{out}: {len(graph.nodes)} NIR nodes ({lifs} LIF), {len(graph.edges)} edges; dt = {dt}, r = "
          f"{'1/(1 - tau_decay)' if input_gain == 'r' else '1 (the gain in the weights)'}, "
          f"T = {config['T']} ({encoding} encoding, mean-over-T readout: see the graph's metadata)")
    return graph
