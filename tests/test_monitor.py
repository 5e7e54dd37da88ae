"""Monitors: what Recorder keeps, firing rates, synaptic operations and energy, plots, and `minisnn eval`."""
import json

import numpy as np
import pytest

from minisnn import Tensor, cli, no_grad
from minisnn.checkpoint import save_checkpoint
from minisnn.data import get_dataset
from minisnn.models import PlainSpikingNet, resnet_small
from minisnn.monitor import (E_AC_PJ, E_MAC_PJ, FiringRates, Recorder, count_macs, format_table, plot_firing_rates,
                             plot_membrane, plot_raster)
from minisnn.nn import LIF, Conv2d, Linear
from minisnn.train import make_config, model_for

PNG = b"\x89PNG\r\n\x1a\n"
T = 3


def small_resnet():
    return resnet_small(num_classes=4, in_channels=3, T=T, width=4, blocks=(1, 1), fc_hidden=6, seed=0)


def run(model, x):
    model.eval()
    with no_grad(), Recorder(model) as rec:
        model(Tensor(x))
    return rec


@pytest.fixture
def recorded():
    model = small_resnet()
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    return model, run(model, x)


def test_recorder_keeps_spikes_and_membranes_of_every_lif_layer(recorded):
    model, rec = recorded
    lifs = [name for name, m in model.named_modules() if isinstance(m, LIF)]
    assert sorted(rec.order_of_lif()) == sorted(lifs)
    assert rec.order_of_lif()[0] == "stem.1" and rec.order_of_lif()[-1] == "head.1"  # forward order
    for name in lifs:
        s, u = rec.spikes[name], rec.membrane[name]
        assert s.shape == u.shape and s.shape[:2] == (T, 2)
        np.testing.assert_array_equal(s, (u >= 0.5).astype(s.dtype))  # o[t] = H(u[t] - V_th)
        assert rec.firing_rates()[name] == pytest.approx(s.mean())


def test_recorder_removes_its_hooks_on_exit(recorded):
    model, _ = recorded
    for _, m in model.named_modules():
        assert not m._forward_hooks and not m._forward_pre_hooks
        assert "forward" not in vars(m)  # the class's forward, never patched


def test_monitors_nest_and_each_keeps_its_own_result():
    """Recorder, MAC counting and firing rates at once, in either nesting order: each sees every layer,
    the results equal those of each monitor alone, and every hook is gone afterwards."""
    model = small_resnet().eval()
    x = Tensor(np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32))
    with no_grad():
        with count_macs(model) as alone_macs:
            model(x)
        alone = run(model, x.data)
        for outer, inner in ((Recorder, count_macs), (count_macs, Recorder)):
            with outer(model) as a, inner(model) as b, FiringRates(model) as rates:
                model(x)
            rec, macs = (a, b) if outer is Recorder else (b, a)
            assert macs.total == alone_macs.total > 0
            assert rec.order == alone.order
            for name in alone.spikes:
                np.testing.assert_array_equal(rec.spikes[name], alone.spikes[name])
                np.testing.assert_array_equal(rec.membrane[name], alone.membrane[name])
                assert float(rates.layers[name]) == pytest.approx(alone.spikes[name].mean())
            assert float(rates.mean()) == pytest.approx(np.mean(list(alone.firing_rates().values())), rel=1e-6)
            assert all(not m._forward_hooks for _, m in model.named_modules())


def test_sops_equal_macs_times_input_rate_times_T(recorded):
    model, rec = recorded
    rows = {r["layer"]: r for r in rec.layer_table()}
    # layers.0.branch.2: conv3x3 4 -> 4 on 8x8, fed by the spikes of layers.0.branch.1
    conv = model.layers[0].branch[2].conv
    macs = 4 * 8 * 8 * (4 * 3 * 3)                  # outputs per image x fan-in
    rate = rec.spikes["layers.0.branch.1"].mean()
    row = rows["layers.0.branch.2.conv"]
    assert conv.weight.shape == (4, 4, 3, 3) and row["ann_macs"] == macs
    assert row["input_rate"] == pytest.approx(rate)
    assert row["sops"] == pytest.approx(macs * rate * T)
    assert row["snn_macs"] == 0
    assert row["snn_energy_uj"] == pytest.approx(macs * rate * T * E_AC_PJ * 1e-6)
    assert row["ann_energy_uj"] == pytest.approx(macs * E_MAC_PJ * 1e-6)
    # the stride-2 stage: 4 -> 8 channels on 4x4 outputs
    stride2 = rows["layers.1.branch.0.conv"]
    assert stride2["ann_macs"] == 8 * 4 * 4 * (4 * 3 * 3)
    assert stride2["sops"] == pytest.approx(8 * 4 * 4 * 36 * rec.spikes["layers.0.lif"].mean() * T)


def test_analog_inputs_cost_macs_per_timestep_they_run(recorded):
    _, rec = recorded
    rows = {r["layer"]: r for r in rec.layer_table()}
    stem = rows["stem.0.conv"]  # direct encoding: the image is convolved once, not T times
    assert stem["input_rate"] is None and stem["sops"] == 0
    assert stem["snn_macs"] == stem["ann_macs"] == 4 * 8 * 8 * (3 * 3 * 3)
    head = rows["head.0"]  # after average pooling the input is a rate, not spikes: a MAC at every t
    assert head["input_rate"] is None and head["ann_macs"] == 8 * 6
    assert head["snn_macs"] == 8 * 6 * T
    assert rows["head.2"]["sops"] == pytest.approx(6 * 4 * rec.spikes["head.1"].mean() * T)
    totals = rec.totals()
    synapses = [r for r in rec.layer_table() if r["kind"] == "synapses"]
    assert totals["sops"] == pytest.approx(sum(r["sops"] for r in synapses))
    assert totals["snn_energy_uj"] == pytest.approx(
        sum(r["snn_macs"] for r in synapses) * E_MAC_PJ * 1e-6 + totals["sops"] * E_AC_PJ * 1e-6)


def test_every_synaptic_layer_is_counted_once_in_forward_order():
    model = PlainSpikingNet(depth=3, width=4, norm="tdbn", in_channels=1, T=2, seed=0)
    rec = run(model, np.random.default_rng(1).standard_normal((2, 1, 6, 6)).astype(np.float32))
    rows = rec.layer_table()
    expected = [name for name, m in model.named_modules() if isinstance(m, (Conv2d, Linear, LIF))]
    assert [r["layer"] for r in rows] == expected
    assert [r["kind"] for r in rows] == ["synapses", "LIF"] * 3 + ["synapses"]
    text = format_table(rows)
    assert all(name in text for name in expected) and "SOPs" in text.splitlines()[0]


def test_plots_are_written(recorded, tmp_path):
    model, rec = recorded
    plot_raster(rec, tmp_path / "raster.png")
    plot_firing_rates(rec, tmp_path / "firing_rates.png")
    plot_membrane(rec, model, tmp_path / "membrane.png")
    for name in ("raster.png", "firing_rates.png", "membrane.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG


def test_minisnn_eval_prints_the_layer_table_and_saves_plots(cifar_sample, tmp_path, capsys):
    config = make_config(model="resnet_small", model_args={"width": 4, "blocks": (1, 1)}, dataset="cifar10",
                         data_dir=str(cifar_sample), T=2, out=str(tmp_path), limit_test=16, eval_batch_size=16,
                         progress=False)
    model = model_for(config, get_dataset("cifar10", data_dir=cifar_sample))
    save_checkpoint(tmp_path / "last.npz", {"config": config}, model=model.state_dict())
    out = tmp_path / "eval"
    assert cli.main(["eval", str(tmp_path / "last.npz"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "accuracy" in printed and "16 images" in printed
    rows = json.loads((out / "layers.json").read_text())
    lifs = [name for name, m in model.named_modules() if isinstance(m, LIF)]
    synapses = [name for name, m in model.named_modules() if isinstance(m, (Conv2d, Linear))]
    assert sorted(r["layer"] for r in rows) == sorted(lifs + synapses)
    table = printed[printed.index("layer"):]
    for r in rows:  # every row printed, with its rate or its SOPs as in layers.json
        line = next(line for line in table.splitlines() if line.split()[0] == r["layer"])
        value = r["firing_rate"] if r["kind"] == "LIF" else r["sops"]
        shown = line.split()[1] if r["kind"] == "LIF" else line.split()[3]
        assert float(shown) == pytest.approx(value, abs=1e-3, rel=1e-2)
    # SOPs of a conv fed by spikes = MACs x (rate of the LIF before it) x T
    by_name = {r["layer"]: r for r in rows}
    conv, source = by_name["layers.0.branch.2.conv"], by_name["layers.0.branch.1"]
    assert conv["input_rate"] == pytest.approx(source["firing_rate"])
    assert conv["sops"] == pytest.approx(conv["ann_macs"] * source["firing_rate"] * 2)
    assert 0 < source["firing_rate"] < 1
    for name in ("raster.png", "membrane.png"):
        assert (out / name).read_bytes()[:8] == PNG
