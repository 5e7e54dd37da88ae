"""NIR export and import: the graph's nodes and LIF mapping, a file round trip that gives the same spikes,
and (where snnTorch or Norse is installed) the same file run unchanged in those libraries."""
import importlib.util
import sys
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minisnn import Tensor, cli, no_grad
from minisnn.checkpoint import save_checkpoint
from minisnn.data import get_dataset
from minisnn.fold import fold_tdbn
from minisnn.functions.loss import softmax_cross_entropy
from minisnn.models import PlainSpikingNet, SpikingResNet, resnet_small
from minisnn.models.resnet import Residual
from minisnn.monitor import Recorder
from minisnn.nn import (LIF, AvgPool2d, BatchNorm, Conv2d, Flatten, GlobalAvgPool2d, Linear, Module, Sequential,
                        TdBN)
from minisnn.optim import Adam
from minisnn.train import make_config, model_for

nir = pytest.importorskip("nir", reason="the nir extra is not installed: pip install -e '.[nir]'")
from minisnn import nir_export  # noqa: E402  (needs nir only when called, but pointless without it)
from minisnn.nir_export import (export_nir, from_nir, minisnn_threshold, nir_threshold,  # noqa: E402
                                to_nir)

DT = 1e-4
BELOW_HALF = float(np.nextafter(np.float32(0.5), np.float32(0)))  # the largest float32 below 0.5


def folded_resnet(seed=0, T=3):
    """A ResNet-19-layout net at width 4 with non-trivial tdBN, folded, in float64."""
    rng = np.random.default_rng(seed)
    model = SpikingResNet([(4, 3, 1), (8, 3, 2), (16, 2, 2)], stem=4, fc_hidden=8, num_classes=5, T=T, seed=seed)
    for _, m in model.named_modules():
        if isinstance(m, BatchNorm):
            m.weight.data = rng.uniform(0.5, 1.5, m.num_channels).astype(np.float32)
            m.bias.data = rng.normal(0, 0.2, m.num_channels).astype(np.float32)
    with no_grad():
        for _ in range(5):  # move the running statistics
            model(Tensor(rng.standard_normal((8, 3, 8, 8)).astype(np.float32)))
    return fold_tdbn(model, dtype=np.float64)


def record(model, x):
    with no_grad(), Recorder(model) as rec:
        out = model(Tensor(x))
    return rec, out.data


def assert_round_trip(model, input_shape, path, x, input_gain="r"):
    """Export to a file and import it; every LIF layer, under the same name, fires the same spikes."""
    export_nir(model, input_shape, path, dt=DT, input_gain=input_gain)
    net = from_nir(path)
    ref, ref_out = record(model, x)
    got, got_out = record(net, x)
    names = ref.order_of_lif()
    assert names and got.order_of_lif() == names  # the NIR nodes carry the minisnn layer names
    for name in names:
        assert np.array_equal(ref.spikes[name], got.spikes[name]), name
        np.testing.assert_allclose(got.membrane[name], ref.membrane[name], rtol=0, atol=1e-12)
    assert all(0 < ref.spikes[name].mean() < 1 for name in names)
    np.testing.assert_allclose(got_out, ref_out, rtol=1e-12, atol=1e-12)
    return net


def into(graph, name):
    return sorted(src for src, dst in graph.edges if dst == name)


def test_resnet_round_trip_through_a_file_gives_identical_spikes(tmp_path):
    model = folded_resnet()
    rng = np.random.default_rng(1)
    net = assert_round_trip(model, (3, 8, 8), tmp_path / "net.nir", rng.standard_normal((4, 3, 8, 8)))
    assert net.T == model.T  # from the metadata
    frames = rng.standard_normal((model.T, 2, 3, 8, 8))
    with no_grad():
        np.testing.assert_allclose(net(Tensor(frames)).data, model(Tensor(frames)).data, rtol=1e-12, atol=1e-12)


def test_written_file_is_valid_nir_with_residual_sums_as_fan_in_edges(tmp_path):
    export_nir(folded_resnet(), (3, 8, 8), tmp_path / "net.nir", dt=DT)
    graph = nir.read(tmp_path / "net.nir")  # type_check=True: infers and checks every edge's types
    graph.validate_structure()
    assert graph.check_types()
    assert into(graph, "layers.0.lif") == ["layers.0.branch.2", "stem.1"]             # identity shortcut
    assert into(graph, "layers.3.lif") == ["layers.3.branch.2", "layers.3.shortcut"]  # conv1x1 shortcut


def test_plain_net_round_trip_folds_tdbn_itself_and_keeps_layer_names(tmp_path):
    rng = np.random.default_rng(2)
    model = PlainSpikingNet(depth=3, width=5, norm="tdbn", in_channels=2, num_classes=4, T=2,
                            seed=4).astype(np.float64).eval()
    for _, m in model.named_modules():
        if isinstance(m, BatchNorm):
            m.running_mean, m.running_var = rng.normal(0, 0.3, 5), rng.uniform(0.5, 2, 5)
    graph = to_nir(model, (2, 6, 6), dt=DT)  # unfolded model in: to_nir folds it
    assert sorted({type(node).__name__ for node in graph.nodes.values()}) == [
        "Affine", "Conv2d", "Flatten", "Input", "LIF", "Output", "SumPool2d"]
    # conv + tdBN + LIF per layer: the folded conv keeps the conv's name, the LIF its own (no renumbering)
    names = dict(model.named_modules())
    assert [n for n, node in graph.nodes.items() if isinstance(node, nir.Conv2d)] == ["features.0", "features.3",
                                                                                      "features.6"]
    lifs = [n for n, node in graph.nodes.items() if isinstance(node, nir.LIF)]
    assert lifs == ["features.2", "features.5", "features.8"] and all(isinstance(names[n], LIF) for n in lifs)
    x = rng.standard_normal((3, 2, 6, 6))
    net = from_nir(graph)
    with no_grad():
        np.testing.assert_allclose(net(Tensor(x)).data, model(Tensor(x)).data, rtol=1e-12, atol=1e-12)


def test_graph_nodes_edges_and_lif_mapping():
    model = folded_resnet()
    graph = to_nir(model, (3, 8, 8), dt=DT)
    nodes = graph.nodes
    # no batch norm anywhere: conv nodes carry the folded tdBN as bias
    assert isinstance(nodes["stem.0"], nir.Conv2d) and nodes["stem.0"].bias.shape == (4,)
    np.testing.assert_array_equal(nodes["stem.0"].weight, model.stem[0].weight.data)
    np.testing.assert_array_equal(nodes["stem.0"].bias, model.stem[0].bias.data)
    # global average pooling over the 2x2 map: a SumPool2d, its 1/4 in the next layer's weights (not its bias)
    pool, flatten = nodes["pool"], nodes["pool.flatten"]
    assert isinstance(pool, nir.SumPool2d) and pool.kernel_size.tolist() == [2, 2] and pool.stride.tolist() == [2, 2]
    assert (flatten.start_dim, flatten.end_dim) == (-3, -1)  # right with or without a batch axis
    assert flatten.output_type["output"].tolist() == [16]
    assert isinstance(nodes["head.0"], nir.Affine)
    np.testing.assert_array_equal(nodes["head.0"].weight, model.head[0].weight.data / 4)
    np.testing.assert_array_equal(nodes["head.0"].bias, model.head[0].bias.data)
    # the LIF: u[t] = k u[t-1](1 - o[t-1]) + x[t] is forward Euler of tau dv/dt = -v + r I with
    # 1 - dt/tau = k and (dt/tau) r = 1, so tau = dt/(1 - k) = 4/3 dt and r = 4/3 for k = 0.25
    lif = nodes["layers.3.branch.1"]
    assert isinstance(lif, nir.LIF) and lif.tau.shape == (8, 4, 4)
    np.testing.assert_allclose(lif.tau, 4 / 3 * DT, rtol=1e-15)
    np.testing.assert_allclose(lif.r, 4 / 3, rtol=1e-15)
    np.testing.assert_allclose(1 - DT / lif.tau, 0.25, rtol=1e-15)
    np.testing.assert_array_equal(lif.v_threshold, BELOW_HALF)  # NIR's v > it is minisnn's u >= 0.5 on float32
    np.testing.assert_array_equal(lif.v_leak, 0)
    np.testing.assert_array_equal(lif.v_reset, 0)
    assert nodes["head.1"].tau.shape == (8,)
    meta = graph.metadata
    assert meta["dt"] == DT and meta["T"] == 3 and meta["tau_decay"] == "0.25"
    assert meta["encoding"].startswith("direct") and "mean over T" in meta["readout"] and ">=" in meta["spike_rule"]


def test_other_time_step_and_leak_map_consistently():
    model = Sequential(LIF(v_th=0.25, tau_decay=0.5))
    graph = to_nir(model, (1, 2, 2), dt=1e-3)
    lif = graph.nodes["0"]
    np.testing.assert_allclose(lif.tau, 2e-3)
    np.testing.assert_allclose(lif.r, 2.0)
    net = from_nir(graph, readout=None)  # dt from the metadata
    assert net._modules["0"].tau_decay == 0.5 and net._modules["0"].v_th == 0.25 and not net.input_gains
    other = from_nir(graph, dt=1e-4, readout=None)  # read with another dt: another neuron, and a gain != 1
    assert other._modules["0"].tau_decay == pytest.approx(0.95) and other.input_gains["0"] == pytest.approx(0.1)


def test_threshold_makes_the_strict_rule_fire_at_v_th_and_reads_back():
    """u = V_th exactly: minisnn fires (H(0) = 1). NIR fires on v > v_threshold, so the file holds the
    largest float32 below V_th: a float32 membrane at V_th fires, the one just below does not."""
    t = float(to_nir(Sequential(LIF(v_th=0.5)), (1, 1, 1), dt=DT).nodes["0"].v_threshold.flat[0])
    assert t == BELOW_HALF and np.float32(0.5) > t and not np.float32(BELOW_HALF) > t
    net = from_nir(to_nir(Sequential(LIF(v_th=0.5)), (1, 1, 1), dt=DT), readout=None)
    assert net._modules["0"].v_th == 0.5  # read back exactly: the round trip keeps minisnn's V_th
    x = np.array([0.5, BELOW_HALF], dtype=np.float32).reshape(1, 2, 1, 1, 1)
    with no_grad():
        assert net(Tensor(x)).data.ravel().tolist() == [1.0, 0.0]


@given(v_th=st.floats(1e-3, 10), u=st.floats(-10, 10, width=32))
def test_strict_rule_on_the_written_threshold_fires_like_minisnn_on_float32(v_th, u):
    """minisnn's LIF at t = 0 (u = x) against NIR's rule v > v_threshold as a float32 simulator runs it,
    on the threshold the file holds; and the LIF that ``from_nir`` builds from that threshold."""
    x = Tensor(np.full((1, 1), u, dtype=np.float32))
    t = nir_threshold(v_th)
    with no_grad():
        fired = LIF(v_th=v_th)(x).data.item() == 1
        assert fired == bool(np.float32(u) > np.float32(t))
        assert fired == (LIF(v_th=minisnn_threshold(t))(x).data.item() == 1)
    v32 = float(np.float32(v_th))
    assert minisnn_threshold(nir_threshold(v32)) == v32  # a float32 V_th comes back exactly


def test_input_gain_in_the_weights_round_trip(tmp_path):
    """r = 1, the gain 1/(1 - k) = 4/3 in the weights and biases feeding each LIF; identity shortcuts
    become explicit 1x1 convolutions carrying it."""
    model = folded_resnet()
    rng = np.random.default_rng(5)
    net = assert_round_trip(model, (3, 8, 8), tmp_path / "net.nir", rng.standard_normal((4, 3, 8, 8)),
                            input_gain="weights")
    assert len(net.input_gains) == 18 and np.allclose(list(net.input_gains.values()), 0.75, rtol=1e-15, atol=0)
    graph = nir.read(tmp_path / "net.nir")
    nodes = graph.nodes
    assert all(np.all(node.r == 1) for node in nodes.values() if isinstance(node, nir.LIF))
    np.testing.assert_allclose(nodes["stem.0"].weight, model.stem[0].weight.data * 4 / 3, rtol=1e-15)
    np.testing.assert_allclose(nodes["stem.0"].bias, model.stem[0].bias.data * 4 / 3, rtol=1e-15)
    identity = nodes["layers.0.shortcut"]
    assert isinstance(identity, nir.Conv2d) and identity.weight.shape == (4, 4, 1, 1)
    np.testing.assert_allclose(identity.weight[:, :, 0, 0], np.eye(4) * 4 / 3, rtol=1e-15)
    assert into(graph, "layers.0.lif") == ["layers.0.branch.2", "layers.0.shortcut"]
    assert into(graph, "layers.0.shortcut") == ["stem.1"]
    np.testing.assert_array_equal(nodes["head.2"].weight, model.head[2].weight.data)  # feeds no LIF


def test_input_gain_in_the_weights_needs_a_weight_layer_before_each_lif():
    with pytest.raises(NotImplementedError, match="cannot carry its input gain"):
        to_nir(Sequential(LIF()), (1, 2, 2), input_gain="weights")
    with pytest.raises(ValueError, match="input_gain"):
        to_nir(Sequential(LIF()), (1, 2, 2), input_gain="scale")


class ResidualNet(Module):
    """Neither a SpikingResNet nor a PlainSpikingNet: o = LIF(tdBN(conv(x)) + x), pool, fc."""

    def __init__(self):
        super().__init__()
        self.body = Sequential(Conv2d(2, 2, 3, padding=1, seed=0), TdBN(2))
        self.lif = LIF()
        self.pool = GlobalAvgPool2d()
        self.fc = Linear(2, 3, seed=1)

    def forward(self, x):
        return self.fc(self.pool(self.lif(self.body(x) + x)))

    def forward_order(self):
        return [(None, Residual(("body", self.body), ("skip", None))), ("lif", self.lif), ("pool", self.pool),
                ("fc", self.fc)]


def test_any_model_with_a_forward_order_exports(tmp_path):
    """Export walks ``forward_order``: no table of known models."""
    model = ResidualNet().astype(np.float64).eval()
    bn = model.body[1]
    bn.running_mean, bn.running_var = np.array([0.1, -0.2]), np.array([0.5, 2.0])
    graph = to_nir(model, (2, 5, 5), dt=DT)
    assert into(graph, "lif") == ["body.0", "input"] and into(graph, "fc") == ["pool.flatten"]
    x = np.random.default_rng(0).standard_normal((3, 4, 2, 5, 5))
    ref, ref_out = record(model, x)
    got, got_out = record(from_nir(graph, readout=None), x)
    assert np.array_equal(got.spikes["lif"], ref.spikes["lif"]) and 0 < ref.spikes["lif"].mean() < 1
    np.testing.assert_allclose(got_out, ref_out, rtol=1e-12, atol=1e-12)


def test_a_padded_average_pool_exports_with_its_padding_and_the_shapes_after_it(tmp_path):
    """AvgPool2d(3, stride 2, padding 1) on 6 x 6: a 3 x 3 output whose border windows count the padding as
    zeros (divided by 9, as NIR readers' torch AvgPool2d does by default)."""
    model = Sequential(Conv2d(2, 3, 3, padding=1, seed=0), LIF(), AvgPool2d(3, stride=2, padding=1),
                       Conv2d(3, 4, 3, padding=1, seed=1), LIF(), Flatten(), Linear(36, 3, seed=2)).astype(np.float64)
    export_nir(model, (2, 6, 6), tmp_path / "pool.nir", dt=DT)
    graph = nir.read(tmp_path / "pool.nir")  # type_check=True: NIR's own shape inference must agree
    assert graph.check_types()
    pool = graph.nodes["2"]
    assert isinstance(pool, nir.AvgPool2d)
    assert [list(pool.kernel_size), list(pool.stride), list(pool.padding)] == [[3, 3], [2, 2], [1, 1]]
    assert list(graph.nodes["3"].input_shape) == [3, 3]
    x = np.random.default_rng(3).standard_normal((3, 4, 2, 6, 6)) * 2
    ref, ref_out = record(model, x)
    got, got_out = record(from_nir(graph, readout=None), x)
    for name in ("1", "4"):
        assert np.array_equal(got.spikes[name], ref.spikes[name]) and 0 < ref.spikes[name].mean() < 1, name
    np.testing.assert_allclose(got_out, ref_out, rtol=1e-12, atol=1e-12)


def test_unsupported_modules_and_nodes_fail_loudly():
    class Custom(Module):
        def forward(self, x):
            return x

    with pytest.raises(NotImplementedError, match="Custom"):
        to_nir(Sequential(Custom()), (1, 2, 2))
    with pytest.raises(ValueError, match="tau_decay"):
        to_nir(Sequential(LIF(tau_decay=1.0)), (1, 2, 2))
    with pytest.raises(NotImplementedError, match="global average pool"):
        to_nir(Sequential(GlobalAvgPool2d(), LIF()), (1, 2, 2))  # the 1/(H W) has no weights to go into
    shape = np.array([3])
    cuba = nir.CubaLIF(tau_syn=np.ones(3), tau_mem=np.ones(3), r=np.ones(3), v_leak=np.zeros(3),
                       v_threshold=np.ones(3))
    graph = nir.NIRGraph(nodes={"in": nir.Input(input_type={"input": shape}), "cuba": cuba,
                                "out": nir.Output(output_type={"output": shape})},
                         edges=[("in", "cuba"), ("cuba", "out")], metadata={})
    with pytest.raises(NotImplementedError, match="CubaLIF"):
        from_nir(graph)
    varied = nir.LIF(tau=np.array([1.0, 2.0]) * DT, r=np.array([1.0, 2.0]), v_leak=np.zeros(2),
                     v_threshold=np.ones(2), v_reset=np.zeros(2))
    graph = nir.NIRGraph(nodes={"in": nir.Input(input_type={"input": np.array([2])}), "lif": varied,
                                "out": nir.Output(output_type={"output": np.array([2])})},
                         edges=[("in", "lif"), ("lif", "out")], metadata={})
    with pytest.raises(NotImplementedError, match="per-neuron"):
        from_nir(graph)


def test_missing_nir_package_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "nir", None)  # import nir now raises ImportError
    with pytest.raises(ImportError, match=r"pip install -e '\.\[nir\]'"):
        nir_export.to_nir(Sequential(LIF()), (1, 2, 2))


def test_cli_export_writes_a_readable_folded_graph(cifar_sample, tmp_path, capsys):
    config = make_config(model="resnet_small", model_args={"width": 4, "blocks": (1, 1)}, dataset="cifar10",
                         data_dir=str(cifar_sample), T=2, out=str(tmp_path), progress=False)
    model = model_for(config, get_dataset("cifar10", data_dir=cifar_sample))
    save_checkpoint(tmp_path / "last.npz", {"config": config}, model=model.state_dict())
    assert cli.main(["export", str(tmp_path / "last.npz"), str(tmp_path / "net.nir")]) == 0
    assert "NIR nodes" in capsys.readouterr().out
    graph = nir.read(tmp_path / "net.nir")
    assert graph.nodes["input"].input_type["input"].tolist() == [3, 32, 32]
    assert graph.metadata["T"] == 2 and graph.nodes["stem.0"].weight.dtype == np.float32
    # the file holds the float32 folded weights: run both nets on those values in float64
    folded = fold_tdbn(model).astype(np.float64)
    net = from_nir(graph).astype(np.float64)
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32))
    ref, ref_out = record(folded, x)
    got, got_out = record(net, x)
    assert ref.order_of_lif() == got.order_of_lif()
    assert all(np.array_equal(ref.spikes[name], got.spikes[name]) for name in ref.order_of_lif())
    np.testing.assert_allclose(got_out, ref_out, rtol=1e-12, atol=1e-12)
    assert cli.main(["export", str(tmp_path / "last.npz"), str(tmp_path / "r1.nir"), "--input-gain", "weights"]) == 0
    assert all(np.all(node.r == 1) for node in nir.read(tmp_path / "r1.nir").nodes.values()
               if isinstance(node, nir.LIF))


def test_cli_export_without_nir_says_how_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "nir", None)
    assert cli.main(["export", str(tmp_path / "missing.npz"), str(tmp_path / "net.nir")]) == 2
    assert "pip install -e '.[nir]'" in capsys.readouterr().err


# ------------------------------------------------------------------ other libraries running the file
def missing(*packages):
    """skipif mark for tests needing ``packages``, decided before any fixture trains a net."""
    absent = [name for name in packages if importlib.util.find_spec(name) is None]
    return pytest.mark.skipif(bool(absent), reason=f"{' and '.join(absent)} not installed: pip install -e "
                                                   "'.[interop]' (with the torch you have pinned)")


needs_snntorch, needs_norse = missing("torch", "snntorch"), missing("torch", "norse")


def train_briefly(model, data, steps, seed=0):
    """A few Adam steps on the digits: trained-looking weights and tdBN statistics, in seconds."""
    rng = np.random.default_rng(seed)
    optimizer = Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        batch = rng.integers(0, len(data.train_y), 32)
        loss = softmax_cross_entropy(model(Tensor(data.train_x[batch])), data.train_y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def digits_nets():
    """(digits data, {name: briefly trained float32 net}): a ResNet with an identity and a conv1x1
    shortcut and a hidden FC + LIF, and a plain net."""
    pytest.importorskip("sklearn", reason="the digits need scikit-learn: pip install -e '.[digits]'")
    data = get_dataset("digits")
    nets = {"resnet": resnet_small(num_classes=10, in_channels=1, T=4, width=8, blocks=(1, 1), fc_hidden=16),
            "plain": PlainSpikingNet(depth=4, width=8, in_channels=1, num_classes=10, T=4)}
    return data, {name: train_briefly(net, data, steps=30) for name, net in nets.items()}


def run_in_torch(net, neuron_type, x, T, stateful):
    """Run an imported torch net T steps on the static batch x: (mean output over T, {LIF node: spikes
    [T, N, ...]}), the spikes caught by forward hooks on the library's neuron modules."""
    import torch
    spikes = {}

    def keep(name):
        def hook(module, inputs, output):
            spikes.setdefault(name, []).append((output[0] if stateful else output).numpy().copy())
        return hook

    for name, module in net.named_modules():
        if isinstance(module, neuron_type):
            module.register_forward_hook(keep(name))
    outputs, state = [], None
    with torch.no_grad():
        x = torch.from_numpy(x)
        for _ in range(T):
            out, state = net(x, state)
            outputs.append(out.numpy())
    return np.mean(outputs, axis=0), {name: np.stack(s) for name, s in spikes.items()}


def assert_same_run(model, x, out, spikes):
    """The torch run fired exactly as minisnn: same predictions, same spikes in every LIF layer."""
    ref, ref_out = record(model, x)
    names = ref.order_of_lif()
    assert sorted(spikes) == sorted(name.replace(".", "_") for name in names)  # torch names: '.' -> '_'
    assert (out.argmax(axis=1) == ref_out.argmax(axis=1)).sum() == len(x)
    for name in names:
        assert spikes[name.replace(".", "_")].shape == ref.spikes[name].shape, name
        differing = int((spikes[name.replace(".", "_")] != ref.spikes[name]).sum())
        assert differing == 0, f"{name}: {differing} spike entries differ"
        assert 0 < ref.spikes[name].mean() < 1, name  # a layer that fires, and not everywhere


@needs_snntorch
@pytest.mark.parametrize("kind", ["resnet", "plain"])
def test_snntorch_runs_the_file_with_identical_spikes(digits_nets, kind, tmp_path):
    """The 360 digits test images as one batch through snnTorch's import of the file."""
    import snntorch
    from snntorch.import_nir import import_from_nir
    data, nets = digits_nets
    export_nir(nets[kind], (1, 8, 8), tmp_path / "net.nir")
    net = import_from_nir(nir.read(tmp_path / "net.nir"))
    out, spikes = run_in_torch(net, snntorch.Leaky, data.test_x, nets[kind].T, stateful=False)
    assert len(data.test_x) == 360
    assert_same_run(nets[kind], data.test_x, out, spikes)


@needs_snntorch
def test_snntorch_fires_at_exactly_v_th(tmp_path):
    """A membrane of exactly V_th fires in minisnn; snnTorch's strict rule must fire on the file too."""
    import snntorch
    from snntorch.import_nir import import_from_nir
    model = Sequential(Conv2d(2, 2, 1, bias=True), LIF(v_th=0.5))
    model[0].weight.data = np.eye(2, dtype=np.float32).reshape(2, 2, 1, 1)  # u[0] = x
    x = np.array([0.5, BELOW_HALF], dtype=np.float32).reshape(1, 2, 1, 1)
    with no_grad():
        assert model(Tensor(x[None])).data.ravel().tolist() == [1.0, 0.0]
    export_nir(model, (2, 1, 1), tmp_path / "net.nir")
    net = import_from_nir(nir.read(tmp_path / "net.nir"))
    _, spikes = run_in_torch(net, snntorch.Leaky, x, 1, stateful=False)
    assert spikes["1"].ravel().tolist() == [1.0, 0.0]


@needs_norse
def test_norse_runs_the_plain_net_file_with_identical_spikes(digits_nets, tmp_path):
    """Norse ignores r, so the file carries the gain in the weights (r = 1); Norse's dt is passed."""
    data, nets = digits_nets
    export_nir(nets["plain"], (1, 8, 8), tmp_path / "net.nir", input_gain="weights")
    with warnings.catch_warnings():  # Norse's own: torch.jit.script at import, nirtorch's older loader
        warnings.simplefilter("ignore", DeprecationWarning)
        import norse.torch
        from norse.torch.module.lif_box import LIFBoxCell
        net = norse.torch.from_nir(nir.read(tmp_path / "net.nir"), dt=DT)
        out, spikes = run_in_torch(net, LIFBoxCell, data.test_x, nets["plain"].T, stateful=True)
    assert_same_run(nets["plain"], data.test_x, out, spikes)
