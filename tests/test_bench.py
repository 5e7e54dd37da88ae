"""The benchmark's logic on a tiny model (no timing assertions): MAC counting, one measured step, an
isolated run, ``minisnn bench``, and benchmarks/bench.py's Markdown report and -- where PyTorch is
installed -- that its PyTorch peer computes the same network as minisnn (same loss and gradients in
float64)."""
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from minisnn import bench
from minisnn.cli import main as cli_main
from minisnn.core import Tensor
from minisnn.fast import parallel, phases
from minisnn.functions.loss import softmax_cross_entropy
from minisnn.models import resnet_small
from minisnn.monitor import count_macs

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_script(name):
    """A script of benchmarks/ as a module (they are run from the checkout, not installed)."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


report = load_script("bench")

TINY = {"width": 4, "blocks": (1, 1, 1)}


def resnet_small_macs(width, T, N, size, in_channels=3, classes=10):
    """Forward MACs of resnet_small(width, blocks=(1,1,1), fc_hidden=0), worked out layer by layer:
    outputs x fan-in. The stem conv runs once (direct encoding), every other layer on T*N images."""
    w, s = width, size
    macs = N * w * s * s * in_channels * 9                          # stem conv3x3, on N images only
    macs += 2 * T * N * w * s * s * w * 9                            # stage 1: two conv3x3 w -> w
    for cin, cout in ((w, 2 * w), (2 * w, 4 * w)):                   # stages 2, 3: stride 2
        s //= 2
        out = T * N * cout * s * s
        macs += out * cin * 9 + out * cout * 9 + out * cin           # conv3x3, conv3x3, 1x1 shortcut
    return macs + T * N * classes * 4 * w                            # FC 4w -> classes


def test_count_macs_matches_layer_by_layer_count():
    model = resnet_small(T=3, **TINY)
    x = np.random.default_rng(0).random((2, 3, 8, 8), dtype=np.float32)
    with count_macs(model) as macs:
        model(Tensor(x))
    assert macs.total == resnet_small_macs(4, T=3, N=2, size=8)
    model(Tensor(x))  # outside the block the hooks are gone: nothing more is counted
    assert macs.total == resnet_small_macs(4, T=3, N=2, size=8)
    assert not any(m._forward_hooks for _, m in model.named_modules())


def test_measure_step_reports_figures_and_trains():
    row = bench.measure_step("resnet_small", T=2, batch=2, steps=2, warmup=1, model_args=TINY, gemm_size=256)
    assert row["forward_macs"] == resnet_small_macs(4, T=2, N=2, size=32)
    assert len(row["step_s_all"]) == 2 and row["step_s"] > 0
    assert row["images_per_s"] == pytest.approx(2 / row["step_s"])
    assert row["gflops"] == pytest.approx(6 * row["forward_macs"] / row["step_s"] / 1e9)
    assert row["gemm_gflops"] > 0 and row["gemm_fraction"] == pytest.approx(row["gflops"] / row["gemm_gflops"])
    # the kernel keeps a process's RSS in per-CPU counters that it reads approximately: the peak may read a
    # few pages below the current size measured a moment earlier
    assert row["base_rss_mb"] > 0 and row["peak_rss_mb"] > row["base_rss_mb"] - 1
    assert np.isfinite(row["loss"])


def test_measure_step_with_phases_splits_the_cpu_time_of_a_step():
    row = bench.measure_step("resnet_small", T=2, batch=2, steps=1, warmup=1, model_args=TINY, gemm_size=256,
                             phases=True)
    phases = row["phases"]
    assert {"im2col", "GEMM", "tdBN", "LIF", "optimizer", "other"} <= set(phases)
    assert all(seconds >= 0 for name, seconds in phases.items() if name != "other")
    assert sum(phases.values()) == pytest.approx(row["step_cpu_s"])    # "other" is the rest of the step
    text = bench.phase_table([row])
    assert text.splitlines()[0].split() == ["CPU", "s", "per", "step", "resnet_small", "T2", "b2"]
    assert text.splitlines()[-1].split()[0] == "step"


def spin(seconds):
    """Burn CPU time in this thread for about ``seconds``."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_phases_nest_and_count_only_while_recording():
    with phases.timed("outer"):            # entered before the recording began: not counted, no error on exit
        with phases.recording() as seconds:
            spin(0.01)
    assert seconds == {}
    with phases.recording() as seconds:
        with phases.timed("outer"):
            spin(0.02)
            with phases.timed("inner"):
                spin(0.03)
        spin(0.01)                         # in no phase
    assert seconds["outer"] == pytest.approx(0.02, abs=0.01)
    assert seconds["inner"] == pytest.approx(0.03, abs=0.01)
    with phases.timed("outside"):
        spin(0.001)
    assert set(seconds) == {"outer", "inner"}


def test_chunks_handed_to_workers_count_in_the_callers_phase(monkeypatch):
    monkeypatch.setattr(parallel, "SPLIT_BYTES", 0)
    before = parallel.workers()
    parallel.set_workers(2)
    try:
        with phases.recording() as seconds, phases.timed("caller"):
            parallel.map_chunks(lambda rows: spin(0.01), 4, np, nbytes=4 * parallel.CHUNK_BYTES)
    finally:
        parallel.set_workers(before)
    assert seconds["caller"] == pytest.approx(0.04, abs=0.015)


def test_machine_info_names_the_cpu_and_its_vector_extensions():
    info = bench.machine_info()
    assert info["cpu"] and info["vector"]
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if " avx2 " in flags:
        assert "avx2" in info["vector"].split()


def test_run_isolated_measures_in_a_fresh_process():
    config = dict(model="resnet_small", T=1, batch=2, steps=1, warmup=1, model_args=TINY, gemm_size=256)
    row = bench.run_isolated(config, threads=1)
    assert row["framework"] == "minisnn" and row["T"] == 1 and row["model_args"]["blocks"] == [1, 1, 1]
    assert row["forward_macs"] == resnet_small_macs(4, T=1, N=2, size=32)


def fake_row(T, step_s, step_rss_mb, **extra):
    return dict(model="resnet19", model_args={}, T=T, batch=8, step_s=step_s, images_per_s=8 / step_s,
                forward_macs=2e9 * T, gflops=12e9 * T / step_s / 1e9, gemm_gflops=50.0,
                gemm_fraction=12 * T / step_s / 50, peak_rss_mb=step_rss_mb + 100, step_rss_mb=step_rss_mb, **extra)


def test_markdown_report_has_command_machine_rows_and_growth():
    rows = [fake_row(2, 2.0, 400, torch_step_s=4.0, torch_peak_rss_mb=900, torch_step_rss_mb=600, ratio=0.5),
            fake_row(6, 5.0, 1000)]
    text = report.markdown(rows, "python benchmarks/bench.py -T 2 6", bench.machine_info(), threads=2)
    assert "Command: `python benchmarks/bench.py -T 2 6`" in text and "2 threads" in text
    table = [line for line in text.splitlines() if line.startswith("| resnet19")]
    assert len(table) == 2
    assert table[0].split("|")[-3].strip() == "0.50"           # ratio column
    assert table[0].split("|")[-2].strip() == "0.56"           # peak RSS ratio: 500 / 900
    assert table[1].split("|")[-3].strip() == "-"              # no peer figures for that row
    assert "relative to T=2: T=6: 2.50x time, 2.50x memory." in text


def test_growth_with_depth_counts_weight_layers_of_the_main_path():
    rows = [dict(fake_row(2, 1.0 * n, 100 * n), model="resnet_small", model_args={"width": 8, "blocks": (n, n, n)})
            for n in (2, 1, 3)]
    # blocks (n, n, n): stem conv + 2 convs per block + FC = 6n + 2 weight layers
    assert report.growth(rows) == ["- resnet_small width 8, T=2, batch 8, relative to 8 layers: "
                                  "14 layers: 2.00x time, 2.00x memory; 20 layers: 3.00x time, 3.00x memory."]


def test_cli_bench_prints_rows_and_a_table(capsys):
    code = cli_main(["bench", "--model", "resnet_small", "--width", "4", "-T", "1", "--batch", "2",
                     "--steps", "1", "--threads", "1", "--gemm-size", "256"])
    assert code == 0
    out = capsys.readouterr().out.strip().splitlines()
    row = json.loads(out[0])
    assert row["model"] == "resnet_small" and row["batch"] == 2
    assert out[-1].split()[:3] == ["resnet_small", "1", "2"]


def test_benchmark_script_appends_a_section_to_the_results_file(tmp_path, capsys):
    results = tmp_path / "RESULTS.md"
    results.write_text("# Results\n\nearlier section\n")
    code = report.main(["--model", "resnet_small", "--width", "4", "-T", "1", "--batch", "2",
                        "--steps", "1", "--no-peer", "--threads", "1", "--gemm-size", "256", "--results", str(results)])
    assert code == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["model"] == "resnet_small" and "torch_step_s" not in row
    text = results.read_text()
    assert text.startswith("# Results\n\nearlier section\n")   # appended, nothing rewritten
    assert "python benchmarks/bench.py --model resnet_small -T 1 --batch 2 --width 4 --blocks 1 1 1" in text
    assert "| resnet_small w4 b111 | 1 | 2 |" in text


# ------------------------------------------------------------------------ the PyTorch peer
def load_peer():
    pytest.importorskip("torch")
    return load_script("peer_torch")


@pytest.mark.parametrize("strides", [None, (2, 2, 2)])
def test_peer_computes_the_same_network_as_minisnn(strides):
    """Same weights, same float64 input: the same loss and the same gradient for every weight."""
    torch = pytest.importorskip("torch")
    peer = load_peer()
    ours = resnet_small(T=3, strides=strides, **TINY).astype(np.float64)
    theirs = peer.build("resnet_small", T=3, width=4, blocks=(1, 1, 1), strides=strides).double()
    convbn_ours = [m for _, m in ours.named_modules() if type(m).__name__ == "ConvBN"]
    convbn_theirs = [m for m in theirs.modules() if isinstance(m, peer.ConvBN)]
    assert len(convbn_ours) == len(convbn_theirs) == (9 if strides is None else 10)  # + the first stage's shortcut
    pairs = []
    for a, b in zip(convbn_ours, convbn_theirs):
        pairs += [(a.conv.weight, b.conv.weight), (a.bn.weight, b.weight), (a.bn.bias, b.bias)]
    pairs += [(ours.head[0].weight, theirs.fc2.weight), (ours.head[0].bias, theirs.fc2.bias)]
    rng = np.random.default_rng(0)
    with torch.no_grad():
        for a, b in pairs:
            a.data = a.data + rng.normal(0, 0.1, a.shape)  # move lambda, beta off 1, 0 as well
            b.copy_(torch.from_numpy(a.data))
    x = rng.random((4, 3, 16, 16))
    y = rng.integers(0, 10, 4)

    loss = softmax_cross_entropy(ours(Tensor(x)), y)
    loss.backward()
    torch_loss = torch.nn.functional.cross_entropy(theirs(torch.from_numpy(x)), torch.from_numpy(y))
    torch_loss.backward()
    assert float(loss.data) == pytest.approx(torch_loss.item(), rel=1e-9)
    for a, b in pairs:
        np.testing.assert_allclose(a.grad, b.grad.numpy(), rtol=1e-7, atol=1e-9)


def test_peer_profile_splits_its_step_into_phases():
    pytest.importorskip("torch")
    peer = load_peer()
    row = peer.run("resnet_small", T=2, batch=2, steps=1, warmup=1, threads=1, width=4, profiled=True)
    assert set(row["phases"]) <= set(peer.SCOPES) | {"optimizer", "other"}
    assert {"convolution", "tdBN", "LIF", "optimizer"} <= set(row["phases"])
    # backward nodes count where their forward op ran: the convolutions' backward makes them the larger part
    assert row["phases"]["convolution"] > row["phases"]["optimizer"]


def test_phases_markdown_puts_both_profiles_side_by_side():
    ours = dict(fake_row(2, 2.0, 400), step_cpu_s=2.0, phases={"im2col": 0.5, "GEMM": 1.0, "other": 0.5})
    theirs = {"phases": {"convolution": 1.0, "tdBN": 0.25, "other": 0.25}}
    text = report.phases_markdown([(ours, theirs)], "cmd", bench.machine_info())
    rows = [line for line in text.splitlines() if line.startswith("| ") and "phase" not in line]
    assert rows[0] == "| im2col | 0.50 | 25% | | convolution | 1.00 | 67% |"
    assert "| step (CPU) | 2.00 | 100% |" in text and "| step (profiled) | 1.50 | 100% |" in text


def test_peer_is_not_a_dependency_of_minisnn():
    for path in Path(bench.__file__).parent.rglob("*.py"):
        assert "import torch" not in path.read_text(), f"{path} imports torch"


def test_gemm_shapes_prints_both_libraries_rates_and_their_ratio(monkeypatch, capsys):
    pytest.importorskip("torch")
    gemm = load_script("gemm_shapes")
    monkeypatch.setattr(gemm, "SHAPES", [(8, 4, 6, "nn", "a plain product"), (8, 4, 6, "nt", "a transposed factor")])
    timed, real_gflops = [], gemm.gflops

    def quick(product, M, K, N, seconds=0.5):
        result = product()
        timed.append((M, K, N, tuple(result.shape)))
        return {0: 3.0, 1: 2.0, 2: 5.0, 3: 4.0}[len(timed) - 1]  # NumPy's rate, then PyTorch's, per shape

    monkeypatch.setattr(gemm, "gflops", quick)
    gemm.main()
    rows = capsys.readouterr().out.splitlines()
    assert rows[2:] == ["| 8 x 4 x 6 | nn | a plain product | 3 | 2 | 1.50 |",
                        "| 8 x 4 x 6 | nt | a transposed factor | 5 | 4 | 1.25 |"]
    assert all(shape == (8, 6) for *_, shape in timed)  # every product is [M, K] x [K, N]
    assert real_gflops(lambda: None, 1000, 1000, 1000, seconds=0.01) > 0


BAD_BENCH_FLAGS = [(["--steps", "0"], "--steps: must be an integer >= 1, got 0"),
                   (["--warmup", "-1"], "--warmup: must be an integer >= 0, got -1"),
                   (["--batch", "0"], "--batch: must be an integer >= 1, got 0"),
                   (["-T", "0"], "-T/--timesteps: must be an integer >= 1, got 0"),
                   (["--threads", "0"], "--threads: must be an integer >= 1, got 0"),
                   (["--gemm-size", "0"], "--gemm-size: must be an integer >= 1, got 0"),
                   (["--model", "nope"], "--model: must be one of resnet19,"),
                   (["--device", "tpu"], "--device: unknown device 'tpu'"),
                   (["--strides", "1"], "--strides gives 1 strides for 2 stages"),
                   (["--device", "cuda"], "CuPy")]


@pytest.mark.parametrize("flags, says", BAD_BENCH_FLAGS, ids=[" ".join(f) for f, _ in BAD_BENCH_FLAGS])
def test_cli_bench_refuses_a_bad_flag_in_one_line_before_any_process_starts(capsys, monkeypatch, flags, says):
    if flags == ["--device", "cuda"] and bench.get_device("cuda") and importlib.util.find_spec("cupy"):
        pytest.skip("CuPy is installed here: --device cuda may work")
    monkeypatch.setattr(bench, "run_isolated", lambda *args, **kwargs: pytest.fail("a benchmark process started"))
    code = cli_main(["bench", "--model", "resnet_small", "--width", "4", "--blocks", "1", "1", *flags])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error: ") and says in err, err


@pytest.mark.parametrize("returncode, stderr, says", [
    (1, "Traceback (most recent call last):\n  ...\nMemoryError: Unable to allocate 3.1 GiB\n\n",
     "failed with exit status 1: MemoryError: Unable to allocate 3.1 GiB"),
    (-9, "", "failed with exit status -9 (killed: out of memory?): no error output"),
    (None, "", "ran past 3600 s; try a smaller --batch or -T"),
])
def test_a_benchmark_process_that_fails_is_one_line_naming_the_configuration(capsys, monkeypatch, returncode, stderr,
                                                                              says):
    def child(cmd, timeout, **kwargs):
        if returncode is None:
            raise subprocess.TimeoutExpired(cmd, timeout)
        return subprocess.CompletedProcess(cmd, returncode, "", stderr)

    monkeypatch.setattr(bench.subprocess, "run", child)
    code = cli_main(["bench", "--model", "resnet_small", "--width", "4", "--blocks", "1", "1", "--batch", "2"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.strip() == f"error: the benchmark process of resnet_small, T=2, batch 2 {says}"
