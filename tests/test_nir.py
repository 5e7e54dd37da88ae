"""NIR export and import: the graph's nodes and LIF mapping, and a file round trip that gives the same spikes."""
import sys

import numpy as np
import pytest

from minisnn import Tensor, cli, no_grad
from minisnn.checkpoint import save_checkpoint
from minisnn.data import get_dataset
from minisnn.fold import fold_tdbn
from minisnn.models import PlainSpikingNet, SpikingResNet
from minisnn.monitor import Recorder
from minisnn.nn import LIF, BatchNorm, Module, Sequential
from minisnn.train import make_config, model_for

nir = pytest.importorskip("nir", reason="the nir extra is not installed: pip install -e '.[nir]'")
from minisnn import nir_export  # noqa: E402  (needs nir only when called, but pointless without it)
from minisnn.nir_export import export_nir, from_nir, to_nir  # noqa: E402

DT = 1e-4


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


def assert_round_trip(model, input_shape, path, x):
    export_nir(model, input_shape, path, dt=DT)
    net = from_nir(path, dt=DT)
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


def test_resnet_round_trip_through_a_file_gives_identical_spikes(tmp_path):
    model = folded_resnet()
    rng = np.random.default_rng(1)
    net = assert_round_trip(model, (3, 8, 8), tmp_path / "net.nir", rng.standard_normal((4, 3, 8, 8)))
    assert net.T == model.T  # from the metadata
    frames = rng.standard_normal((model.T, 2, 3, 8, 8))
    with no_grad():
        np.testing.assert_allclose(net(Tensor(frames)).data, model(Tensor(frames)).data, rtol=1e-12, atol=1e-12)


def test_plain_net_round_trip_folds_tdbn_itself(tmp_path):
    rng = np.random.default_rng(2)
    model = PlainSpikingNet(depth=3, width=5, norm="tdbn", in_channels=2, num_classes=4, T=2,
                            seed=4).astype(np.float64).eval()
    for _, m in model.named_modules():
        if isinstance(m, BatchNorm):
            m.running_mean, m.running_var = rng.normal(0, 0.3, 5), rng.uniform(0.5, 2, 5)
    graph = to_nir(model, (2, 6, 6), dt=DT)  # unfolded model in: to_nir folds it
    assert sorted({type(node).__name__ for node in graph.nodes.values()}) == [
        "Affine", "AvgPool2d", "Conv2d", "Flatten", "Input", "LIF", "Output"]
    x = rng.standard_normal((3, 2, 6, 6))
    net = from_nir(graph, dt=DT)
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
    assert isinstance(nodes["head.0"], nir.Affine) and isinstance(nodes["pool"], nir.AvgPool2d)
    # residual joins: two edges into the block's LIF, from the branch and from the shortcut / identity
    into = lambda name: sorted(src for src, dst in graph.edges if dst == name)  # noqa: E731
    assert into("layers.0.lif") == ["layers.0.branch.2", "stem.1"]
    assert into("layers.3.lif") == ["layers.3.branch.2", "layers.3.shortcut"]
    # the LIF: u[t] = k u[t-1](1 - o[t-1]) + x[t] is forward Euler of tau dv/dt = -v + r I with
    # 1 - dt/tau = k and (dt/tau) r = 1, so tau = dt/(1 - k) = 4/3 dt and r = 4/3 for k = 0.25
    lif = nodes["layers.3.branch.1"]
    assert isinstance(lif, nir.LIF) and lif.tau.shape == (8, 4, 4)
    np.testing.assert_allclose(lif.tau, 4 / 3 * DT, rtol=1e-15)
    np.testing.assert_allclose(lif.r, 4 / 3, rtol=1e-15)
    np.testing.assert_allclose(1 - DT / lif.tau, 0.25, rtol=1e-15)
    np.testing.assert_array_equal(lif.v_threshold, 0.5)
    np.testing.assert_array_equal(lif.v_leak, 0)
    np.testing.assert_array_equal(lif.v_reset, 0)
    assert nodes["head.1"].tau.shape == (8,)
    meta = graph.metadata
    assert meta["dt"] == DT and meta["T"] == 3 and meta["tau_decay"] == "0.25"
    assert meta["encoding"].startswith("direct") and "mean over T" in meta["readout"] and ">=" in meta["spike_rule"]


def test_other_time_step_and_leak_map_consistently(tmp_path):
    model = Sequential(LIF(v_th=0.3, tau_decay=0.5))
    graph = to_nir(model, (1, 2, 2), dt=1e-3)
    lif = graph.nodes["0"]
    np.testing.assert_allclose(lif.tau, 2e-3)
    np.testing.assert_allclose(lif.r, 2.0)
    net = from_nir(graph, dt=1e-3, readout=None)
    assert net._modules["0"].tau_decay == 0.5 and net._modules["0"].v_th == 0.3
    with pytest.raises(NotImplementedError, match="input gain"):
        from_nir(graph, dt=1e-4)  # read with another dt the gain dt r / tau is no longer 1


def test_import_uses_minisnn_spike_rule_at_threshold():
    """u = V_th exactly: minisnn fires (H(0) = 1); NIR's text says v > v_threshold would not. The
    import keeps minisnn's rule so that a round trip is exact; the metadata says so."""
    model = Sequential(LIF(v_th=0.5))
    net = from_nir(to_nir(model, (1, 1, 1), dt=DT), dt=DT, readout=None)
    x = np.full((1, 1, 1, 1, 1), 0.5)
    with no_grad():
        assert net(Tensor(x)).data.item() == 1.0 == model(Tensor(x)).data.item()


def test_unsupported_modules_and_nodes_fail_loudly():
    class Custom(Module):
        def forward(self, x):
            return x

    with pytest.raises(NotImplementedError, match="Custom"):
        to_nir(Sequential(Custom()), (1, 2, 2))
    with pytest.raises(ValueError, match="tau_decay"):
        to_nir(Sequential(LIF(tau_decay=1.0)), (1, 2, 2))
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


def test_cli_export_without_nir_says_how_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "nir", None)
    assert cli.main(["export", str(tmp_path / "missing.npz"), str(tmp_path / "net.nir")]) == 2
    assert "pip install -e '.[nir]'" in capsys.readouterr().err
