"""Export a minisnn network to NIR (the Neuromorphic Intermediate Representation) and import it back.

Needs the optional ``nir`` and ``h5py`` packages: ``pip install -e '.[nir]'``.

``to_nir(model, input_shape)`` folds tdBN into the convolutions (``fold.fold_tdbn``; NIR has no
batch-norm node) and writes the network as a graph of NIR nodes, named after the minisnn modules
they come from (``stem.0``, ``layers.3.shortcut``, ``layers.3.lif``, ...):

    minisnn                        NIR node
    Conv2d (folded tdBN as bias)   Conv2d(input_shape=(H, W), weight, stride, padding, dilation=1, groups=1, bias)
    Linear                         Affine(weight, bias), or Linear(weight) without bias
    AvgPool2d                      AvgPool2d(kernel_size, stride, padding)
    GlobalAvgPool2d                AvgPool2d(kernel_size=(H, W), stride=(H, W)) + Flatten(start_dim=0)
    Flatten                        Flatten(start_dim=0, end_dim=-1)   (NIR shapes have no batch axis)
    residual sum (BasicBlock)      two edges into the block's LIF node: NIR sums a node's inputs
    LIF                            LIF(tau, r, v_leak, v_threshold, v_reset), full-shape arrays over (C, H, W)

The LIF mapping. minisnn's neuron (STBP-tdBN) is discrete:

    u[t] = k * u[t-1] * (1 - o[t-1]) + x[t],    o[t] = H(u[t] - V_th),    k = tau_decay.

NIR's LIF is continuous, tau dv/dt = (v_leak - v) + r I, with v -> v_reset right after a spike.
Forward Euler with step dt gives v[t] = (1 - dt/tau) v[t-1] + (dt/tau) (v_leak + r I[t]); matching
the two term by term:

    tau = dt / (1 - k),   r = tau / dt = 1 / (1 - k),   v_leak = 0,   v_threshold = V_th,   v_reset = 0.

For the paper's k = 0.25, V_th = 0.5: tau = 4/3 dt, r = 4/3. The multiplicative reset (1 - o[t-1])
is NIR's hard reset to v_reset = 0. This is what snnTorch writes (dt = 1e-4, the default here).
NIR does not fix a discretisation, so dt, the scheme and k are also written into the graph's
metadata (which NIR says no reader may rely on). A neuron without leak (k = 1) has no LIF
equivalent and is refused.

Spike rule: NIR fires on v > v_threshold; minisnn on u >= V_th (``functions/surrogate.py``). They
differ only for a membrane exactly at threshold. ``from_nir`` builds minisnn LIF layers, i.e. uses
minisnn's rule, so a round trip reproduces minisnn's spikes exactly; another simulator reading the
file may fire one step later on such ties.

Runtime behaviour that is not part of the graph (recorded in the metadata): direct encoding -- the
static image is the input current at every one of the T timesteps -- and the readout, the mean over T
of the output node.

``from_nir(graph)`` turns a NIR graph (or ``.nir`` file) back into a minisnn Module, ``NIRNetwork``,
which runs the nodes in topological order as minisnn layers over whole sequences [T, N, ...]. Every
node except the LIF is stateless, and the LIF loops over T inside, so running node after node over
the whole sequence equals stepping the graph one timestep at a time. Nodes minisnn cannot run
(CubaLIF, IF, LI, Scale, SumPool2d, Delay, nested graphs, per-neuron LIF parameters, ...) raise
NotImplementedError, and so does any minisnn module the exporter does not know.
"""
import io
from collections import deque

import numpy as np

from . import __version__
from .backend import as_numpy
from .checkpoint import atomic_write, load_checkpoint
from .core import as_tensor
from .fold import fold_tdbn
from .functions.basic import broadcast_to, mean
from .models.plain import PlainSpikingNet
from .models.resnet import BasicBlock, SpikingResNet
from .nn import LIF, AvgPool2d, Conv2d, Flatten, GlobalAvgPool2d, Linear, Module, Sequential
from .experiment import load_data, model_for

DEFAULT_DT = 1e-4

# How the input reaches the graph: runtime behaviour, written into the metadata.
ENCODINGS = {
    "direct": "direct: the static input [C, H, W] is the input current at every one of the T timesteps",
    "frames": "frames: one input frame [C, H, W] per timestep (event data), T frames per sample",
}

# The order in which each model's forward applies its parts (see models/resnet.py, models/plain.py).
CHAINS = {SpikingResNet: ("stem", "layers", "pool", "head"), PlainSpikingNet: ("features", "pool", "fc")}


def import_nir():
    """The ``nir`` package, or an ImportError saying how to install it."""
    try:
        import nir
    except ImportError as err:
        raise ImportError("NIR export/import needs the optional packages nir and h5py: "
                          "pip install -e '.[nir]'") from err
    return nir


def lif_to_nir_parameters(tau_decay, v_th, dt=DEFAULT_DT):
    """(tau, r, v_leak, v_threshold, v_reset) of the NIR LIF equal to minisnn's LIF(v_th, tau_decay):
    tau = dt / (1 - k), r = tau / dt, v_leak = 0, v_threshold = V_th, v_reset = 0."""
    if not 0 <= tau_decay < 1:
        raise ValueError(f"NIR LIF: tau_decay must be in [0, 1) (k = 1 is a neuron without leak), got {tau_decay}")
    tau = dt / (1 - tau_decay)
    return tau, tau / dt, 0.0, v_th, 0.0


# ------------------------------------------------------------------------------------------ export
def to_nir(model, input_shape, dt=DEFAULT_DT, encoding="direct"):
    """The NIR graph of ``model`` (tdBN folded) for one input frame of shape ``input_shape`` = (C, H, W).

    dt: the time step of the LIF mapping. encoding: "direct" or "frames" (see ``ENCODINGS``), for the
    metadata only.
    """
    nir = import_nir()
    if dt <= 0:
        raise ValueError(f"to_nir: dt must be positive, got {dt}")
    if encoding not in ENCODINGS:
        raise ValueError(f"to_nir: encoding must be one of {sorted(ENCODINGS)}, got {encoding!r}")
    input_shape = tuple(int(n) for n in input_shape)
    if len(input_shape) != 3:
        raise ValueError(f"to_nir: input_shape must be (C, H, W), got {input_shape}")
    folded = fold_tdbn(model)
    builder = _GraphBuilder(nir, dt)
    builder.add("input", nir.Input(input_type={"input": np.array(input_shape)}), [])
    last, shape = builder.emit(folded, "", "input", input_shape)
    builder.add("output", nir.Output(output_type={"output": np.array(shape)}), [last])
    ks = sorted({m.tau_decay for _, m in folded.named_modules() if isinstance(m, LIF)})
    metadata = {
        "exporter": f"minisnn {__version__}",
        "dt": float(dt),
        "discretisation": "forward Euler: v[t] = (1 - dt/tau) v[t-1] + (dt/tau) (v_leak + r I[t]); "
                          "minisnn: u[t] = tau_decay u[t-1] (1 - o[t-1]) + x[t], tau = dt/(1 - tau_decay), "
                          "r = tau/dt",
        "tau_decay": ", ".join(f"{k!r}" for k in ks),
        "spike_rule": "minisnn fires on v >= v_threshold (NIR specifies v > v_threshold)",
        "reset": "hard reset to v_reset = 0 right after a spike",
        "normalisation": "tdBN folded into conv weights and biases",
        "encoding": ENCODINGS[encoding],
        "readout": "mean over T of the output node",
        "T": int(getattr(model, "T", 0)),
    }
    return nir.NIRGraph(nodes=builder.nodes, edges=builder.edges, metadata=metadata)


def export_nir(model, input_shape, path, dt=DEFAULT_DT, encoding="direct"):
    """Write ``to_nir(model, input_shape, dt, encoding)`` to ``path`` (HDF5, atomically); return the graph."""
    nir = import_nir()
    graph = to_nir(model, input_shape, dt, encoding)
    buffer = io.BytesIO()
    nir.write(buffer, graph)
    atomic_write(path, lambda f: f.write(buffer.getvalue()))
    return graph


class _GraphBuilder:
    """Collects NIR nodes and edges while walking a folded minisnn model in forward order."""

    def __init__(self, nir, dt):
        self.nir, self.dt = nir, dt
        self.nodes, self.edges = {}, []

    def add(self, name, node, sources):
        if name in self.nodes:
            raise ValueError(f"NIR export: duplicate node name {name!r}")
        self.nodes[name] = node
        self.edges += [(source, name) for source in sources]
        return name

    def emit(self, module, name, source, shape):
        """Add the nodes of ``module`` fed by node ``source`` of shape ``shape`` (no batch axis).
        Returns (name of the node holding the module's output, its shape)."""
        nir = self.nir
        if isinstance(module, tuple(CHAINS)):
            return self.chain([(part, getattr(module, part)) for part in CHAINS[type(module)]], name, source, shape)
        if isinstance(module, Sequential):
            return self.chain(module._modules.items(), name, source, shape)
        if isinstance(module, BasicBlock):  # o = LIF(branch(x) + shortcut(x)): two edges into the LIF
            branch, branch_shape = self.emit(module.branch, f"{name}.branch", source, shape)
            skip, skip_shape = source, shape
            if module.shortcut is not None:
                skip, skip_shape = self.emit(module.shortcut, f"{name}.shortcut", source, shape)
            if branch_shape != skip_shape:
                raise ValueError(f"NIR export: {name}: branch shape {branch_shape} != shortcut shape {skip_shape}")
            return self.lif(module.lif, f"{name}.lif", [branch, skip], branch_shape), branch_shape
        if isinstance(module, LIF):
            return self.lif(module, name, [source], shape), shape
        if isinstance(module, Conv2d):
            if shape[0] != module.in_channels:
                raise ValueError(f"NIR export: {name} expects {module.in_channels} channels, gets shape {shape}")
            w = as_numpy(module.weight.data)
            bias = as_numpy(module.bias.data) if module.bias is not None else np.zeros(w.shape[0], w.dtype)
            node = nir.Conv2d(input_shape=shape[1:], weight=w, stride=module.stride, padding=module.padding,
                              dilation=1, groups=1, bias=bias)
            return self.add(name, node, [source]), tuple(int(n) for n in node.output_type["output"])
        if isinstance(module, Linear):
            w = as_numpy(module.weight.data)
            node = (nir.Affine(weight=w, bias=as_numpy(module.bias.data)) if module.bias is not None
                    else nir.Linear(weight=w))
            return self.add(name, node, [source]), (module.out_features,)
        if isinstance(module, AvgPool2d):
            return self.pool(name, source, shape, module.kernel_size, module.stride, module.padding)
        if isinstance(module, GlobalAvgPool2d):  # the mean over (H, W) = one window covering the map
            pooled, pooled_shape = self.pool(name, source, shape, shape[1:], shape[1:], (0, 0))
            return self.flatten(f"{name}.flatten", pooled, pooled_shape)
        if isinstance(module, Flatten):
            return self.flatten(name, source, shape)
        raise NotImplementedError(f"NIR export: module {name or 'model'!r} of type {type(module).__name__} is not "
                                  "supported (Conv2d, Linear, LIF, pooling, Flatten, Sequential, BasicBlock, "
                                  f"{', '.join(c.__name__ for c in CHAINS)})")

    def chain(self, parts, name, source, shape):
        for part, module in parts:
            source, shape = self.emit(module, f"{name}.{part}" if name else part, source, shape)
        return source, shape

    def lif(self, module, name, sources, shape):
        tau, r, v_leak, v_threshold, v_reset = (np.full(shape, value, dtype=np.float64) for value in
                                                lif_to_nir_parameters(module.tau_decay, module.v_th, self.dt))
        node = self.nir.LIF(tau=tau, r=r, v_leak=v_leak, v_threshold=v_threshold, v_reset=v_reset)
        return self.add(name, node, sources)

    def pool(self, name, source, shape, kernel, stride, padding):
        (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
        node = self.nir.AvgPool2d(kernel_size=np.array(kernel), stride=np.array(stride), padding=np.array(padding))
        out = (shape[0], (shape[1] + 2 * ph - kh) // sh + 1, (shape[2] + 2 * pw - kw) // sw + 1)
        return self.add(name, node, [source]), out

    def flatten(self, name, source, shape):
        node = self.nir.Flatten(input_type={"input": np.array(shape)}, start_dim=0, end_dim=-1)
        return self.add(name, node, [source]), (int(np.prod(shape)),)


# ------------------------------------------------------------------------------------------ import
def from_nir(graph, dt=DEFAULT_DT, T=None, readout="mean"):
    """A minisnn ``NIRNetwork`` running ``graph`` (a ``nir.NIRGraph`` or the path of a ``.nir`` file).

    dt: the step the graph's LIF time constants are read with (k = 1 - dt/tau); use the exporter's.
    T: timesteps for static input (default: the graph's metadata ``T`` when present).
    readout: "mean" returns the mean over T of the output node (as minisnn models do), None the
    whole output sequence [T, N, ...].
    """
    nir = import_nir()
    if not isinstance(graph, nir.NIRGraph):
        graph = nir.read(graph)
    return NIRNetwork(graph, dt, T, readout)


class NIRNetwork(Module):
    """A NIR graph as a minisnn Module: each node a minisnn layer over [T, N, ...], run in topological
    order; a node with several incoming edges receives their sum. Layers are registered under the
    NIR node names, so a graph exported from a minisnn model has that model's layer names."""

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
        for name in self.order:
            layer = _import_node(nir, name, graph.nodes[name], dt)
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
            x = broadcast_to(x.reshape((1,) + x.shape), (self.T,) + x.shape)
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


def _import_node(nir, name, node, dt):
    """The minisnn layer computing NIR ``node`` over [T, N, ...] (None for Input / Output)."""
    if isinstance(node, (nir.Input, nir.Output)):
        return None
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
        return layer
    if isinstance(node, (nir.Affine, nir.Linear)):
        w = np.asarray(node.weight)
        if w.ndim != 2:
            raise NotImplementedError(f"NIR import: node {name!r}: weight must be 2-D, got shape {w.shape}")
        has_bias = isinstance(node, nir.Affine)
        layer = Linear(w.shape[1], w.shape[0], bias=has_bias)
        layer.weight.data = w
        if has_bias:
            layer.bias.data = np.asarray(node.bias, dtype=w.dtype)
        return layer
    if isinstance(node, nir.LIF):
        tau, r = _uniform(node.tau, "tau", name), _uniform(node.r, "r", name)
        v_leak, v_reset = _uniform(node.v_leak, "v_leak", name), _uniform(node.v_reset, "v_reset", name)
        if v_leak != 0 or v_reset != 0:
            raise NotImplementedError(f"NIR import: node {name!r}: minisnn's LIF needs v_leak = v_reset = 0, got "
                                      f"{v_leak} and {v_reset}")
        if not np.isclose(r * dt / tau, 1, rtol=1e-9, atol=0):
            raise NotImplementedError(f"NIR import: node {name!r}: input gain r dt / tau = {r * dt / tau} != 1 "
                                      f"(with dt = {dt}); minisnn's LIF integrates x[t] with gain 1")
        return LIF(v_th=_uniform(node.v_threshold, "v_threshold", name), tau_decay=1 - dt / tau)
    if isinstance(node, nir.AvgPool2d):
        return AvgPool2d(_pair(node.kernel_size, "kernel_size", name), _pair(node.stride, "stride", name),
                         _pair(node.padding, "padding", name))
    if isinstance(node, nir.Flatten):
        rank = len(node.input_type["input"])
        if int(node.start_dim) != 0 or int(node.end_dim) not in (-1, rank - 1):
            raise NotImplementedError(f"NIR import: node {name!r}: only Flatten of all dimensions "
                                      "(start_dim=0, end_dim=-1) is supported")
        return Flatten()
    raise NotImplementedError(f"NIR import: node {name!r} of type {type(node).__name__} is not supported "
                              "(Conv2d, Affine, Linear, LIF, AvgPool2d, Flatten, Input, Output)")


# -------------------------------------------------------------------------------- command line
def export_checkpoint(checkpoint, out, dt=DEFAULT_DT, data_dir=None):
    """``minisnn export CHECKPOINT OUT``: the checkpoint's network, tdBN folded, written to ``out`` as NIR.

    The data set named in the checkpoint gives the input shape (C, H, W) and the encoding (direct for
    images, frames for event data). Returns the graph.
    """
    nir = import_nir()
    state = load_checkpoint(checkpoint)
    config = dict(state["meta"]["config"], device="cpu")
    config.update(data_dir=data_dir or config["data_dir"], download=False, limit_train=0, limit_test=0)
    data = load_data(config)
    model = model_for(config, data)
    model.load_state_dict(state["model"])
    encoding = "frames" if data.train_x.ndim == 5 else "direct"
    graph = export_nir(model, (data.in_channels, *data.image_size), out, dt, encoding)
    lifs = sum(isinstance(node, nir.LIF) for node in graph.nodes.values())
    print(f"{out}: {len(graph.nodes)} NIR nodes ({lifs} LIF), {len(graph.edges)} edges; dt = {dt}, "
          f"T = {config['T']} ({encoding} encoding, mean-over-T readout: see the graph's metadata)")
    return graph
