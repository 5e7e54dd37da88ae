"""`minisnn` as a user drives it, on the offline digits: runs that resume where they are told and write
nowhere else, refusals of every bad value before any work, non-finite and broken checkpoints explained, and
never a traceback. Every error is one line, ``error: ...``, exit 2."""
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from minisnn import __version__, backend, cli, experiment
from minisnn.backend import DeviceError
from minisnn.checkpoint import load_checkpoint, save_checkpoint
from minisnn.core import Tensor, no_grad
from minisnn.experiment import DEFAULTS, make_config, model_for, load_data
from minisnn.monitor import Recorder

pytest.importorskip("sklearn", reason="the digits data set needs scikit-learn: pip install -e '.[digits]'")

TINY = ["--dataset", "digits", "--model", "resnet_small", "--width", "4", "--blocks", "1", "1", "-T", "2",
        "--batch-size", "16", "--limit-train", "32", "--limit-test", "16", "--optimizer", "adam", "--lr", "0.01",
        "--no-progress"]


def minisnn(capsys, *argv):
    """Run the command line; return (exit status, stdout, stderr). An error must be one line, no traceback."""
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    if code != 0:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), err
    return code, out, err


def snapshot(folder):
    """Every file under ``folder`` with its bytes (to show that nothing was written there)."""
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A 1-epoch digits run, made once; tests copy it."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert cli.main(["train", *TINY, "--epochs", "1", "--out", str(out)]) == 0
    return out


@pytest.fixture
def run(finished_run, tmp_path):
    return shutil.copytree(finished_run, tmp_path / "run")


def test_train_then_eval_writes_into_its_own_folder(run, capsys, monkeypatch):
    from minisnn import evaluate
    returned, real_evaluate_checkpoint = [], evaluate.evaluate_checkpoint
    monkeypatch.setattr(evaluate, "evaluate_checkpoint", lambda *args, **kwargs: returned.append(
        real_evaluate_checkpoint(*args, **kwargs)) or returned[-1])
    before = snapshot(run)
    code, out, _ = minisnn(capsys, "eval", run / "last.npz", "--limit-test", "32")
    assert code == 0 and "accuracy" in out and "SOPs" in out and "32 images" in out
    written = [run / "eval" / name for name in ("layers.json", "raster.png", "firing_rates.png", "membrane.png")]
    assert sorted((run / "eval").iterdir()) == sorted(written)
    assert out.splitlines()[-1] == f"written: {', '.join(map(str, written))}"
    assert {k: v for k, v in snapshot(run).items() if k.parts[0] != "eval"} == before
    # the table is the network as it runs at inference: the first 16 test images through the saved model in
    # eval mode (tdBN's running statistics); the totals come as one JSON line a script can read
    rows = json.loads((run / "eval" / "layers.json").read_text())
    (accuracy, table), = returned  # what evaluate_checkpoint gives a script: the accuracy and the table
    assert f"accuracy {accuracy:.4f} on 32 images" in out and json.loads(json.dumps(table)) == rows
    state = load_checkpoint(run / "last.npz")
    config = experiment.saved_config(state["meta"]["config"])
    data = load_data(dict(config, limit_train=0, limit_test=32))
    model = model_for(config, data)
    model.load_state_dict(state["model"])
    model.eval()
    with no_grad(), Recorder(model) as recorder:
        model(Tensor(next(data.loader("test", 16).batches())[0]))
    rates = [row["firing_rate"] for row in rows if row["kind"] == "LIF"]
    assert rates and rates == pytest.approx(
        [row["firing_rate"] for row in recorder.layer_table() if row["kind"] == "LIF"], rel=1e-12)
    (line,) = [line for line in out.splitlines() if line.startswith("{")]
    totals = json.loads(line)
    synapses = [row for row in rows if row["kind"] == "synapses"]
    assert totals and totals == {key: round(sum(row[key] for row in synapses), 3) for key in totals}
    assert totals["sops"] > 0 and totals["ann_macs"] > 0


def test_resume_trains_the_folder_it_is_given_wherever_it_was_moved(run, tmp_path, capsys, monkeypatch):
    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    run.rename(moved)
    decoy = tmp_path / "run"  # the run's old path now holds another run, which must be left alone
    shutil.copytree(moved, decoy)
    before = snapshot(decoy)
    monkeypatch.chdir(moved.parent)  # another working directory, a relative --out
    code, out, _ = minisnn(capsys, "train", "--resume", "--out", "moved", "--epochs", "2", "--no-progress")
    assert code == 0 and '"epoch": 2' in out.splitlines()[-1]
    assert len((moved / "metrics.jsonl").read_text().splitlines()) == 2
    assert load_checkpoint(moved / "last.npz")["meta"]["config"]["out"] == "moved"
    assert snapshot(decoy) == before


def test_resume_accepts_the_runs_own_flags_refuses_changes_and_extends(run, capsys):
    code, _, err = minisnn(capsys, "train", "--resume", "--out", run, "--lr", "0.5", "--width", "8", "-T", "2")
    assert code == 2 and "--lr (the run has lr = 0.01)" in err and "--width (the run has width = 4)" in err
    assert "-T (" not in err  # given with the run's own value
    code, _, err = minisnn(capsys, "train", "--resume", "--out", run, "--depth", "3")
    assert code == 2 and "--depth (not an option of the run's resnet_small)" in err
    code, _, err = minisnn(capsys, "train", "--resume", "--out", run, "--no-progress")
    assert code == 2 and "finished its 1 epochs" in err and "--epochs N" in err
    before = snapshot(run)
    code, _, err = minisnn(capsys, "train", "--resume", "--overwrite", "--out", run)
    assert code == 2 and snapshot(run) == before
    # the command that started the run, with --resume and a longer --epochs: it goes on
    code, out, _ = minisnn(capsys, "train", *TINY, "--epochs", "3", "--out", run, "--resume")
    assert code == 0 and '"epoch": 3' in out.splitlines()[-1]
    rows = (run / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 3 and rows[0] == before[Path("metrics.jsonl")].decode().strip()


def test_a_new_run_into_a_run_folder_is_refused_unless_overwrite(run, capsys):
    before = snapshot(run)
    code, _, err = minisnn(capsys, "train", *TINY, "--out", run)
    assert code == 2 and "--resume" in err and "--overwrite" in err and snapshot(run) == before
    (run / "eval").mkdir()
    (run / "eval" / "layers.json").write_text("[]")  # what minisnn eval wrote for the old run
    (run / "notes.txt").write_text("mine")
    code, _, _ = minisnn(capsys, "train", *TINY, "--epochs", "2", "--seed", "1", "--out", run, "--overwrite")
    assert code == 0 and load_checkpoint(run / "last.npz")["meta"]["config"]["seed"] == 1
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    assert not (run / "eval" / "layers.json").exists() and (run / "notes.txt").read_text() == "mine"


def test_overwrite_keeps_the_old_run_when_the_new_one_cannot_start(run, tmp_path, capsys):
    before = snapshot(run)
    code, _, err = minisnn(capsys, "train", "--dataset", "cifar10", "--data-dir", tmp_path / "no_such_data",
                           "--model", "resnet_small", "--width", "4", "--out", run, "--overwrite")
    assert code == 2 and "CIFAR-10 not found" in err
    assert snapshot(run) == before


INVALID = [  # (flags, what the one-line error must say: the flag and why)
    (["--lr", "-1"], ("--lr", "must be a number > 0, got -1")), (["--lr", "0"], ("--lr", "must be a number > 0, got 0")),
    (["--lr", "nan"], ("--lr", "must be a number > 0, got nan")),
    (["--lr", "abc"], ("--lr", "must be a number > 0, got 'abc'")),
    (["--weight-decay", "-1"], ("--weight-decay", "must be a number >= 0, got -1")),
    (["--optimizer", "sgd", "--momentum", "1.5"], ("--momentum", "must be a number in [0, 1), got 1.5")),
    (["--optimizer", "sgd", "--momentum", "1"], ("--momentum", "must be a number in [0, 1), got 1")),
    (["--warmup-epochs", "-1"], ("--warmup-epochs", "must be an integer >= 0, got -1")),
    (["--blocks", "0"], ("--blocks", "must be an integer >= 1, got 0")),
    (["--limit-train", "-1"], ("--limit-train", "must be an integer >= 1, got -1")),
    (["--limit-train", "0"], ("--limit-train", "must be an integer >= 1, got 0")),
    (["--limit-test", "0"], ("--limit-test", "must be an integer >= 1, got 0")),
    (["--width", "0"], ("--width", "must be an integer >= 1, got 0")), (["-T", "0"], ("-T", "must be an integer >= 1")),
    (["--batch-size", "0"], ("--batch-size", "must be an integer >= 1, got 0")),
    (["--eval-batch-size", "0"], ("--eval-batch-size", "must be an integer >= 1, got 0")),
    (["--epochs", "0"], ("--epochs", "must be an integer >= 1, got 0")),
    (["--seed", "-1"], ("--seed", "must be an integer >= 0, got -1")),
    (["--min-lr", "-1"], ("--min-lr", "must be a number >= 0, got -1")),
    (["--model", "nope"], ("--model", "must be one of resnet19,")), (["--dataset", "nope"], ("--dataset", "must be one of")),
    (["--device", "tpu"], "--device"), (["--dvs-size", "200"], ("--dvs-size", "must be an integer in 1..128, got 200")),
    (["--warmup-epochs", "2", "--epochs", "2"], "--warmup-epochs (2) must be less than --epochs (2)"),
    (["--min-lr", "1"], "--min-lr (1) must not exceed --lr (0.01)"),
    (["--strides", "1", "2", "2"], "--strides gives 3 strides for 2 stages"),
    # flags that do not apply to the chosen model, optimizer or data set
    (["--depth", "3"], "--depth applies to --model plain, not resnet_small"),
    (["--norm", "bn"], "--norm applies to --model plain"),
    (["--model", "resnet19"], "--width applies to --model resnet_small or plain, not resnet19"),
    (["--momentum", "0.5"], "--momentum applies to --optimizer sgd"),
    (["--dvs-size", "32"], "--dvs-size applies to --dataset cifar10-dvs, not digits"),
    (["--download"], "--download applies to --dataset cifar10, not digits"),
]


def test_integer_settings_take_numpy_integers_and_text_and_refuse_fractions_and_bools():
    config = make_config(T=np.int64(3), epochs="2")
    assert (config["T"], type(config["T"]), config["epochs"]) == (3, int, 2)
    for bad in (2.5, True, "2.5"):
        with pytest.raises(experiment.ConfigError, match="-T must be an integer >= 1"):
            make_config(T=bad)
    with pytest.raises(experiment.ConfigError, match="--depth must be an integer >= 1, got 0"):
        make_config(model="plain", model_args={"depth": 0})
    folder = {"dataset": "imagefolder", "data_dir": "images"}
    assert make_config(**folder, dataset_args={"image_size": 8})["dataset_args"] == {"image_size": 8}
    for bad in (7, 4097):
        with pytest.raises(experiment.ConfigError, match=f"--image-size must be an integer in 8..4096, got {bad}"):
            make_config(**folder, dataset_args={"image_size": bad})


@pytest.mark.parametrize("variable, value", [("MINISNN_THREADS", "two"), ("MINISNN_GPU_CHUNK_MB", "0")])
def test_a_malformed_setting_in_the_environment_is_refused_before_any_work(tmp_path, capsys, monkeypatch, variable,
                                                                           value):
    monkeypatch.setenv(variable, value)
    code, _, err = minisnn(capsys, "train", *TINY, "--out", tmp_path / "run")
    assert code == 2 and err.strip() == f"error: ${variable} must be a positive " + (
        "integer" if variable == "MINISNN_THREADS" else "number of megabytes") + f", got {value!r}"
    assert not (tmp_path / "run").exists()


def test_a_bad_device_in_the_environment_is_the_variables_error_not_the_flags(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MINISNN_DEVICE", "junk")
    code, _, err = minisnn(capsys, "train", *TINY, "--out", tmp_path / "run")
    assert code == 2 and err.strip() == "error: unknown device 'junk' (from the $MINISNN_DEVICE); use 'cpu', 'cuda' or 'cuda:N'"
    assert not (tmp_path / "run").exists()
    code, _, err = minisnn(capsys, "train", *TINY, "--device", "junk", "--out", tmp_path / "run")
    assert code == 2 and err.startswith("error: ") and "--device" in err and "$MINISNN_DEVICE" not in err


def test_a_diverging_run_exits_3_with_one_line_naming_the_fix(tmp_path, capsys):
    with np.errstate(over="ignore", invalid="ignore"):
        code, _, err = minisnn(capsys, "train", *TINY, "--optimizer", "sgd", "--lr", "1e30", "--out", tmp_path / "run")
    assert code == cli.EXIT_DIVERGED == 3
    assert "training diverged at epoch 1" in err and "start again with a lower --lr" in err


def test_export_writes_the_time_step_it_is_given(run, tmp_path, capsys):
    nir = pytest.importorskip("nir", reason="export needs the nir extra: pip install -e '.[nir]'")
    taus = []
    for dt in ("1e-4", "1e-3"):
        code, _, _ = minisnn(capsys, "export", run / "last.npz", tmp_path / f"{dt}.nir", "--dt", dt)
        graph = nir.read(tmp_path / f"{dt}.nir")
        taus.append(next(node.tau for node in graph.nodes.values() if isinstance(node, nir.LIF)))
        assert code == 0
    np.testing.assert_allclose(taus[1], 10 * taus[0], rtol=1e-12)  # tau = dt / (1 - tau_decay)


def test_export_never_writes_over_a_checkpoint_or_a_folder(run, tmp_path, capsys):
    pytest.importorskip("nir", reason="export needs the nir extra: pip install -e '.[nir]'")
    other = shutil.copytree(run, tmp_path / "other")
    before, other_before = snapshot(run), snapshot(other)
    for target, says in [(run / "last.npz", "is not a NIR file"), (other / "last.npz", "is not a NIR file"),
                         (other / "metrics.jsonl", "is not a NIR file"), (other, "is a folder")]:
        code, _, err = minisnn(capsys, "export", run / "last.npz", target)
        assert code == 2 and f"{target} {says}" in err, err
    assert snapshot(run) == before and snapshot(other) == other_before
    code, _, _ = minisnn(capsys, "export", run / "last.npz", tmp_path / "net.nir")
    assert code == 0
    code, _, _ = minisnn(capsys, "export", run / "last.npz", tmp_path / "net.nir")  # an earlier export: replaced
    assert code == 0


def test_export_of_a_checkpoint_that_does_not_fit_its_model_or_holds_a_bad_config_says_so(run, tmp_path, capsys):
    pytest.importorskip("nir", reason="export needs the nir extra: pip install -e '.[nir]'")
    state = load_checkpoint(run / "last.npz")
    del state["model"]["stem.0.conv.weight"]
    save_checkpoint(tmp_path / "unfit.npz", state["meta"], model=state["model"], optim=state["optim"],
                    sched=state["sched"])
    code, _, err = minisnn(capsys, "export", tmp_path / "unfit.npz", tmp_path / "net.nir")
    assert code == 2 and f"{tmp_path / 'unfit.npz'} does not fit the model its config describes" in err
    spoil(run / "last.npz", model_args=[4])
    code, _, err = minisnn(capsys, "export", run / "last.npz", tmp_path / "net.nir")
    assert code == 2 and "its config is not valid today" in err
    assert not (tmp_path / "net.nir").exists()


DAMAGED_POSITIONS = [({"epoch": None}, "epoch None"), ({"epoch": "1"}, "epoch '1'"), ({"step": -1}, "step -1"),
                     ({"step": 99}, "step 99"), ({"history": "x"}, "history"), ({"sums": "x"}, "sums")]


@pytest.mark.parametrize("changes, says", DAMAGED_POSITIONS, ids=[says for _, says in DAMAGED_POSITIONS])
def test_resuming_a_checkpoint_whose_position_is_damaged_says_so_in_one_line(run, capsys, changes, says):
    state = load_checkpoint(run / "last.npz")
    state["meta"].update(changes)
    save_checkpoint(run / "last.npz", state["meta"], model=state["model"], optim=state["optim"], sched=state["sched"])
    before = snapshot(run)
    code, _, err = minisnn(capsys, "train", "--resume", "--out", run, "--epochs", "2")
    assert code == 2 and "does not say where the run stands" in err and says in err, err
    assert snapshot(run) == before


def test_resuming_a_checkpoint_without_its_schedule_says_so_in_one_line(run, capsys):
    state = load_checkpoint(run / "last.npz")
    save_checkpoint(run / "last.npz", state["meta"], model=state["model"], optim=state["optim"])
    code, _, err = minisnn(capsys, "train", "--resume", "--out", run, "--epochs", "2")
    assert code == 2 and "does not fit the run its config describes (model, optimizer and schedule" in err, err
    assert "KeyError" in err and "position" in err, err


def test_resuming_with_no_more_epochs_than_done_says_how_many_to_give(run, capsys):
    before = snapshot(run)
    code, _, err = minisnn(capsys, "train", "--resume", "--out", run, "--epochs", "1")
    assert code == 2 and "--epochs 1: the run in" in err and "has done 1 epochs already; give more than 1" in err
    assert snapshot(run) == before


def test_a_misspelt_config_key_is_refused_naming_it_and_the_known_ones():
    with pytest.raises(experiment.ConfigError, match=r"unknown config keys \['learning_rate'\]; known: \[.*'lr'"):
        make_config(learning_rate=0.1)


@pytest.mark.parametrize("flags, says", INVALID, ids=[" ".join(f) for f, _ in INVALID])
def test_every_invalid_value_is_refused_before_any_work(tmp_path, capsys, monkeypatch, flags, says):
    def no_data(*args, **kwargs):
        raise AssertionError("the data were loaded before the flags were checked")

    monkeypatch.setattr(experiment, "get_dataset", no_data)
    code, _, err = minisnn(capsys, "train", *TINY, *flags, "--out", tmp_path / "run")
    assert code == 2 and all(part in err for part in ((says,) if isinstance(says, str) else says)), err
    assert not (tmp_path / "run").exists()


def spoil(path, **config_changes):
    """Rewrite a checkpoint with its first conv weight holding a NaN (and its config changed)."""
    state = load_checkpoint(path)
    state["meta"]["config"].update(config_changes)
    if not config_changes:
        state["model"]["stem.0.conv.weight"][0, 0, 1, 1] = np.nan
    save_checkpoint(path, state["meta"], model=state["model"], optim=state["optim"], sched=state["sched"])


def test_a_nan_weight_makes_eval_export_and_resume_refuse_naming_it(run, tmp_path, capsys):
    spoil(run / "last.npz")
    before = snapshot(run)
    commands = [["eval", run / "last.npz"], ["train", "--resume", "--out", run, "--epochs", "2"]]
    if importlib.util.find_spec("nir"):  # export is checked where its extra is installed
        commands.append(["export", run / "last.npz", tmp_path / "net.nir"])
    for command in commands:
        code, _, err = minisnn(capsys, *command)
        assert code == 2 and "NaN or infinity in model/stem.0.conv.weight" in err, (command, err)
    assert snapshot(run) == before and not (tmp_path / "net.nir").exists()


@pytest.mark.parametrize("content, says", [(b"", "is empty (0 bytes)"), (b"\x93NUMPY" + os.urandom(200),
                                                                        "not a minisnn checkpoint")])
def test_broken_checkpoints_are_explained(tmp_path, capsys, content, says):
    path = tmp_path / "last.npz"
    path.write_bytes(content)
    for command in (["eval", path], ["train", "--resume", "--out", tmp_path]):
        code, _, err = minisnn(capsys, *command)
        assert code == 2 and says in err and "allow_pickle" not in err
    code, _, err = minisnn(capsys, "eval", tmp_path)
    assert code == 2 and "that is a folder" in err


def test_out_naming_a_file_or_an_unwritable_folder_is_refused(tmp_path, capsys):
    (tmp_path / "a_file").write_text("mine")
    code, _, err = minisnn(capsys, "train", *TINY, "--out", tmp_path / "a_file")
    assert code == 2 and "is a file" in err and (tmp_path / "a_file").read_text() == "mine"
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders: the permission check cannot be seen")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    code, _, err = minisnn(capsys, "train", *TINY, "--out", locked / "run")
    assert code == 2 and "cannot be written" in err and not (locked / "run").exists()


def test_a_full_disk_stops_training_keeping_the_last_checkpoint(tmp_path, capsys, monkeypatch):
    import errno
    from minisnn import checkpoint
    real_savez, saves = checkpoint.np.savez, []

    def savez(f, **arrays):
        saves.append(1)
        if len(saves) == 2:
            f.write(b"PK\x03\x04 half")
            raise OSError(errno.ENOSPC, "No space left on device")
        real_savez(f, **arrays)

    monkeypatch.setattr(checkpoint.np, "savez", savez)
    code, _, err = minisnn(capsys, "train", *TINY, "--epochs", "3", "--out", tmp_path / "run")
    assert code == 2 and "No space left on device" in err and "(end of epoch 1), left as it was" in err
    assert "--resume" in err and load_checkpoint(tmp_path / "run" / "last.npz")["meta"]["epoch"] == 1
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]


def test_a_gpu_run_on_a_cpu_only_machine_says_device_cpu(run, capsys, monkeypatch):
    spoil(run / "last.npz", device="cuda:0")

    def no_cupy():
        raise DeviceError("CuPy is needed for the GPU but could not be imported: No module named 'cupy'")

    monkeypatch.setattr(backend, "cupy", no_cupy)
    monkeypatch.delenv(backend.ENV_VAR, raising=False)
    for command in (["eval", run / "last.npz"], ["train", "--resume", "--out", run, "--epochs", "2"]):
        code, _, err = minisnn(capsys, *command)
        assert code == 2 and "saved on cuda:0" in err and "--device cpu" in err
    for command in (["eval", run / "last.npz"], ["train", "--resume", "--out", run, "--epochs", "2"]):  # as told
        code, _, err = minisnn(capsys, *command, "--device", "cpu")
        assert code == 0, err


def test_an_offline_download_says_what_happened(tmp_path, capsys, monkeypatch):
    def offline(request, timeout=None):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    code, _, err = minisnn(capsys, "train", "--dataset", "cifar10", "--download", "--data-dir", tmp_path / "data",
                           "--out", tmp_path / "run", "--no-progress")
    assert code == 2 and "no network" in err and "nothing was downloaded" in err and "kept" not in err


def test_eval_needs_only_the_test_batch(cifar_sample, tmp_path, capsys):
    data_dir = tmp_path / "cifar" / "cifar-10-batches-py"
    data_dir.mkdir(parents=True)
    shutil.copy(cifar_sample / "cifar-10-batches-py" / "test_batch", data_dir)
    config = make_config(model="resnet_small", model_args={"width": 4, "blocks": [1]}, dataset="cifar10",
                         data_dir=str(data_dir.parent), limit_test=16, eval_batch_size=16, out=str(tmp_path))
    model = model_for(config, load_data(dict(config, limit_train=0)))
    save_checkpoint(tmp_path / "last.npz", {"config": config}, model=model.state_dict())
    (tmp_path / "eval").mkdir()  # from an earlier eval: written into again, the user's own files left alone
    (tmp_path / "eval" / "notes.txt").write_text("mine")
    code, out, _ = minisnn(capsys, "eval", tmp_path / "last.npz")
    assert code == 0 and "on 16 images" in out
    assert (tmp_path / "eval" / "notes.txt").read_text() == "mine" and (tmp_path / "eval" / "layers.json").exists()


def test_python_dash_m_minisnn_is_the_minisnn_command():
    import minisnn
    done = subprocess.run([sys.executable, "-m", "minisnn", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and minisnn.__version__ in done.stdout
    done = subprocess.run([sys.executable, "-m", "minisnn", "train", "--lr", "x"], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.startswith("error: minisnn train: argument --lr")


def test_version_doctor_and_help_with_the_experiments_defaults(capsys, monkeypatch):
    assert cli.main(["--version"]) == 0 and capsys.readouterr().out.strip() == f"minisnn {__version__}"
    monkeypatch.setenv(backend.ENV_VAR, "cpu")
    assert cli.main(["doctor"]) == 0 and f"minisnn {__version__}" in capsys.readouterr().out
    assert cli.main(["train", "--help"]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    for key in ("lr", "batch_size", "eval_batch_size", "T", "model", "out", "weight_decay"):
        assert f"(default: {DEFAULTS[key]})" in shown, key
    assert "resnet_small 32, plain 16" in shown and "cosine schedule is recomputed over the new total" in shown


def test_doctor_exits_1_when_the_device_asked_for_does_not_work(capsys, monkeypatch):
    from minisnn import doctor

    def no_cupy():
        raise DeviceError("CuPy is needed for the GPU but could not be imported: No module named 'cupy'")

    monkeypatch.setattr(doctor, "cupy", no_cupy)
    monkeypatch.setenv(backend.ENV_VAR, "cuda")
    assert cli.main(["doctor"]) == 1
    assert "default device: cuda:0" in capsys.readouterr().out
    monkeypatch.setenv(backend.ENV_VAR, "cpu")
    assert cli.main(["doctor"]) == 0


@pytest.mark.parametrize("variable, value, says", [
    ("MINISNN_THREADS", "two", "CPU workers: BAD SETTING: $MINISNN_THREADS must be a positive integer, got 'two'"),
    ("MINISNN_GPU_CHUNK_MB", "0", "CPU workers: BAD SETTING: $MINISNN_GPU_CHUNK_MB must be a positive number"),
    ("MINISNN_DIST_TIMEOUT", "inf", "data-parallel deadline: BAD SETTING: $MINISNN_DIST_TIMEOUT must be a positive"),
])
def test_doctor_reports_a_bad_setting_instead_of_refusing_to_run(capsys, monkeypatch, variable, value, says):
    monkeypatch.setenv(backend.ENV_VAR, "cpu")
    monkeypatch.setenv(variable, value)
    assert cli.main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert says in out and f"minisnn {__version__}" in out and "data folder: " in out


def test_doctor_shows_the_settings_it_runs_with(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(backend.ENV_VAR, "cpu")
    monkeypatch.setenv("MINISNN_DATA", str(tmp_path))
    monkeypatch.setenv("MINISNN_DIST_TIMEOUT", "30")
    assert cli.main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert f"data folder: {tmp_path} ($MINISNN_DATA={tmp_path})" in out
    assert "data-parallel deadline: 30 s ($MINISNN_DIST_TIMEOUT=30)" in out


def train_parser():
    return next(a for a in cli.build_parser()._actions if a.dest == "command").choices["train"]


def test_train_help_documents_every_flag_under_its_heading_and_each_options_owners():
    parser = train_parser()
    for action in parser._actions:
        assert action.help, f"{action.option_strings} has no help"
        assert not action.help.startswith(" only") and "(default: )" not in action.help, action.help
    flags = {group.title: {flag for a in group._group_actions for flag in a.option_strings}
             for group in parser._action_groups}
    assert [title for title in flags if flags[title]][-4:] == ["the model", "the data", "training", "the run"]
    assert {"--model", "--strides", "-T"} <= flags["the model"] and {"--dataset", "--workers"} <= flags["the data"]
    assert {"--epochs", "--sync-norm"} <= flags["training"] and {"--out", "--overwrite"} <= flags["the run"]
    helps = {flag: a.help for a in parser._actions for flag in a.option_strings}
    assert helps["--strides"].endswith("(default: resnet_small 1, then 2 for each later stage)")  # None, in words
    assert helps["--depth"].endswith("(default: plain 20)")


def test_every_flag_of_train_eval_and_export_has_help():
    commands = next(a for a in cli.build_parser()._actions if a.dest == "command").choices
    for name in ("train", "eval", "export"):  # (bench's -T, --batch, --warmup and --device have none yet)
        parser = commands[name]
        for action in parser._actions:
            assert not action.option_strings or action.help, f"minisnn {name} {action.option_strings} has no help"


def test_list_flags_take_several_values_and_switches_take_none():
    args = train_parser().parse_args(["--strides", "1", "2", "--blocks", "1", "1", "--sync-norm", "--no-augment"])
    assert (args.strides, args.blocks, args.sync_norm, args.augment) == ([1, 2], [1, 1], True, False)


def test_a_real_ctrl_c_saves_the_position_and_the_run_resumes(cifar_sample, tmp_path, capsys):
    run = tmp_path / "run"  # CIFAR-10 sample here: the process then needs no scikit-learn (faster to start)
    job = subprocess.Popen([sys.executable, "-m", "minisnn.cli", "train", "--dataset", "cifar10", "--data-dir",
                            str(cifar_sample), *TINY[2:], "--epochs", "1000", "--out", str(run)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (run / "metrics.jsonl").exists() and time.monotonic() < deadline and job.poll() is None:
        time.sleep(0.05)
    job.send_signal(signal.SIGINT)
    out, err = job.communicate(timeout=60)
    assert job.returncode == 130 and f"continue with minisnn train --resume --out {run}" in out, out + err
    assert "Traceback" not in err
    meta = load_checkpoint(run / "last.npz")["meta"]
    assert meta["interrupted"] and meta["epoch"] >= 1
    code, out, _ = minisnn(capsys, "train", "--resume", "--out", run, "--epochs", meta["epoch"] + 1)
    assert code == 0 and f'"epoch": {meta["epoch"] + 1}' in out


def test_the_defaults_are_the_readmes_recipe_for_the_paper():
    # `minisnn train` with no flags trains what the README's command spells out (how long, and where, aside)
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    start = "minisnn train --dataset cifar10 --download --model resnet19"
    command = readme.split(start, 1)[1].split("\nminisnn eval")[0]
    args = vars(train_parser().parse_args(["--model", "resnet19", *command.replace("\\\n", " ").split()]))
    aside = ("epochs", "download", "device", "out")
    recipe = make_config(**{key: value for key, value in args.items() if key not in aside + ("resume", "overwrite")})
    assert (recipe["batch_size"], recipe["lr"], recipe["weight_decay"]) == (64, 0.1, 5e-4)
    assert {key: value for key, value in recipe.items() if key not in aside} == \
        {key: value for key, value in make_config().items() if key not in aside}


def test_a_resumed_or_evaluated_run_goes_where_minisnn_device_says(run, capsys, monkeypatch):
    spoil(run / "last.npz", device="cuda:0")
    monkeypatch.setenv(backend.ENV_VAR, "cpu")
    code, _, err = minisnn(capsys, "train", "--resume", "--out", run, "--epochs", "2")
    assert code == 0, err
    assert load_checkpoint(run / "last.npz")["meta"]["config"]["device"] == "cpu"
    code, _, err = minisnn(capsys, "eval", run / "last.npz")
    assert code == 0, err


def test_eval_scores_as_many_test_images_as_limit_test_says(run, capsys):
    nested = run / "scores" / "first 8"  # a new --out, its parent folder new too
    code, out, _ = minisnn(capsys, "eval", run / "last.npz", "--limit-test", "8", "--out", nested)
    assert code == 0 and "on 8 images" in out and (nested / "layers.json").exists()
    code, _, err = minisnn(capsys, "eval", run / "last.npz", "--limit-test", "0")
    assert code == 2 and "--limit-test" in err


def test_every_model_and_data_set_option_has_its_flag_on_train():
    flags = {flag: action.dest for action in train_parser()._actions for flag in action.option_strings}
    options = set().union(*experiment.MODEL_OPTIONS.values(), *experiment.DATASET_OPTIONS.values())
    for option in options:
        assert flags.get(experiment.FLAGS[option]) == option, experiment.FLAGS[option]
    args = train_parser().parse_args(["--dvs-split", "time", "--dvs-split-rule", "spikingjelly", "--dvs-resize",
                                      "bilinear", "--dvs-size", "48"])
    assert (args.split_by, args.split_rule, args.resize, args.size) == ("time", "spikingjelly", "bilinear", 48)


def test_a_reader_that_goes_away_ends_the_command_quietly():
    # `minisnn eval ... | head -1`: the pipe closes while minisnn still writes; exit 2 and not a word more
    program = ("import sys\nfrom minisnn import cli\n"
               "def chatty(args):\n    for i in range(100000):\n        print('line', i)\n"
               "cli.doctor_command = chatty\nsys.exit(cli.main(['doctor']))\n")
    buffered = {key: value for key, value in os.environ.items() if key != "PYTHONUNBUFFERED"}  # as in a shell
    child = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=buffered)
    child.stdout.close()  # the reader is gone before the first line is written
    _, err = child.communicate(timeout=60)
    assert child.returncode == cli.EXIT_ERROR and err == b"", err.decode()


def test_model_and_data_set_options_must_come_as_a_dict_naming_which():
    for key in ("model_args", "dataset_args"):
        with pytest.raises(experiment.ConfigError, match=f"{key} must be a dict of options, got \\[4\\]"):
            make_config(**{key: [4]})


def test_every_command_has_a_line_of_help():
    commands = next(a for a in cli.build_parser()._actions if a.dest == "command")
    helped = {choice.dest: choice.help for choice in commands._choices_actions}
    assert set(helped) == set(commands.choices) and all(helped.values()), helped



def test_a_run_whose_config_is_no_longer_valid_is_refused_saying_so(run, capsys):
    spoil(run / "last.npz", model="resnet_gone")  # e.g. a model a later version renamed
    for command in (["eval", run / "last.npz"], ["train", "--resume", "--out", run, "--epochs", "2"]):
        code, _, err = minisnn(capsys, *command)
        assert code == 2 and "last.npz: its config is not valid today: --model must be one of" in err, err


def test_eval_reads_the_data_where_data_dir_says_never_downloads_and_takes_its_batch_size(run, tmp_path, capsys,
                                                                                         monkeypatch):
    from minisnn import evaluate
    from minisnn.data import DatasetError
    spoil(run / "last.npz", dataset="cifar10", download=True)  # a CIFAR-10 run that downloaded its data
    asked = []

    def load_data(config):  # record where and how eval reads the data, then stop it
        asked.append((config["data_dir"], config["download"], config["eval_batch_size"]))
        raise DatasetError("recorded")

    monkeypatch.setattr(evaluate, "load_data", load_data)
    minisnn(capsys, "eval", run / "last.npz", "--data-dir", tmp_path / "moved", "--eval-batch-size", "8",
            "--out", tmp_path)  # an existing folder is a fine --out
    minisnn(capsys, "eval", run / "last.npz")
    assert asked == [(str(tmp_path / "moved"), False, 8), (None, False, DEFAULTS["eval_batch_size"])]
    (tmp_path / "a_file").write_text("mine")
    code, _, err = minisnn(capsys, "eval", run / "last.npz", "--out", tmp_path / "a_file")
    assert code == 2 and "is a file, not a folder" in err and len(asked) == 2
    code, _, err = minisnn(capsys, "eval", run / "last.npz", "--out", tmp_path / "a_file" / "eval")  # below a file
    assert code == 2 and "a_file is a file, not a folder" in err and len(asked) == 2
    assert (tmp_path / "a_file").read_text() == "mine"


def test_eval_of_a_checkpoint_that_does_not_fit_its_model_says_so(run, capsys):
    state = load_checkpoint(run / "last.npz")
    state["model"]["stem.0.conv.weight"] = state["model"]["stem.0.conv.weight"][:2]
    save_checkpoint(run / "last.npz", state["meta"], model=state["model"], optim=state["optim"], sched=state["sched"])
    code, _, err = minisnn(capsys, "eval", run / "last.npz")
    assert code == 2 and "last.npz does not fit the model its config describes" in err

def test_each_range_takes_its_ends_and_numbers_refuse_bools_and_words():
    folder = {"dataset": "imagefolder", "data_dir": "images"}
    ends = {"image_size": 4096, "workers": 64}
    assert make_config(**folder, dataset_args=ends)["dataset_args"] == ends
    assert make_config(dataset="cifar10-dvs", dataset_args={"size": 128})["dataset_args"] == {"size": 128}
    config = make_config(momentum=0, weight_decay=0, lr=0.1, min_lr=0.1)
    assert (config["momentum"], config["weight_decay"], config["min_lr"]) == (0.0, 0.0, 0.1)
    for key, flag in (("lr", "--lr"), ("momentum", "--momentum"), ("weight_decay", "--weight-decay"),
                      ("min_lr", "--min-lr")):
        for bad in (True, "fast"):
            with pytest.raises(experiment.ConfigError, match=f"^{flag} must be a number .*, got {bad!r}$"):
                make_config(**{key: bad})
    assert make_config(**folder, dataset_args={"workers": 0})["dataset_args"] == {"workers": 0}
    refused = [(dict(**folder, dataset_args={"workers": 65}), "--workers must be an integer in 0..64, got 65"),
               (dict(dataset="cifar10-dvs", dataset_args={"size": 129}), "--dvs-size must be an integer in 1..128"),
               (dict(dataset="cifar10-dvs", dataset_args={"size": 0}), "--dvs-size must be an integer in 1..128"),
               (dict(model="resnet_small", model_args={"strides": [0]}), "--strides must be an integer >= 1, got 0"),
               (dict(model="resnet_small", model_args={"blocks": "11"}), "--blocks must be a non-empty list"),
               (dict(model="resnet_small", model_args={"blocks": []}), "--blocks must be a non-empty list"),
               (dict(augment="no"), "--no-augment must be True or False, got 'no'"),
               (dict(out=""), "--out must be a non-empty string, got ''"),
               (dict(out=3), "--out must be a non-empty string, got 3"),
               (dict(model="plain", model_args={"widht": 4}), r"unknown model options \['widht'\]; the models take "
                                                               "blocks, depth, norm, strides, width")]
    for given, says in refused:
        with pytest.raises(experiment.ConfigError, match=says):
            make_config(**given)


def test_a_resumed_run_keeps_the_model_options_it_is_not_given():
    saved = make_config(model="resnet_small", model_args={"width": 4, "blocks": [1, 1]})
    assert experiment.resumed_config(saved, {"model_args": {"width": 4}})["model_args"] == {"width": 4,
                                                                                           "blocks": [1, 1]}


def test_a_saved_device_that_works_is_kept_and_one_asked_for_that_does_not_is_refused_as_is(monkeypatch):
    monkeypatch.delenv(backend.ENV_VAR, raising=False)
    monkeypatch.setattr(experiment, "xp_for", lambda device: np)  # as on a machine whose GPUs work
    assert experiment.usable_device(None, "cuda:1") == "cuda:1"

    def no_gpu(device):
        if device != "cpu":
            raise DeviceError("CuPy is needed for the GPU but could not be imported. More words.")
        return np

    monkeypatch.setattr(experiment, "xp_for", no_gpu)
    with pytest.raises(DeviceError, match=r"^CuPy is needed for the GPU but could not be imported\. More words\.$"):
        experiment.usable_device("cuda", "cpu")  # asked for: its own error, not the saved run's


def test_event_data_get_the_runs_timesteps_and_come_to_the_model_time_major(monkeypatch):
    from minisnn.data import DatasetError
    asked = {}

    def get_dataset(name, **options):
        asked.update(options)
        raise DatasetError("recorded")

    monkeypatch.setattr(experiment, "get_dataset", get_dataset)
    with pytest.raises(DatasetError):
        load_data(make_config(dataset="cifar10-dvs", data_dir="dvs", T=3))
    assert asked["T"] == 3  # frames per recording = the model's timesteps
    frames = np.arange(2 * 3 * 2 * 4 * 4, dtype=np.float32).reshape(2, 3, 2, 4, 4)  # [N, T, C, H, W]
    x = experiment.model_input(frames, np)
    assert x.shape == (3, 2, 2, 4, 4) and all(np.array_equal(x[t, n], frames[n, t]) for t in range(3) for n in range(2))
    images = frames[:, 0]
    assert np.array_equal(experiment.model_input(images, np), images)


def test_the_model_takes_the_data_sets_classes_and_channels_and_the_runs_timesteps_and_seed():
    from minisnn.data.loader import Dataset
    data = Dataset("three", np.zeros((1, 2, 8, 8), np.uint8), np.zeros(1, np.int64), np.zeros((1, 2, 8, 8), np.uint8),
                   np.zeros(1, np.int64), ("a", "b", "c"), (0.5, 0.5), (0.2, 0.2))
    config = make_config(model="resnet_small", model_args={"width": 4, "blocks": [1]}, T=3, seed=5)
    model = model_for(config, data)
    assert model.T == 3 and model(Tensor(np.zeros((2, 2, 8, 8), np.float32))).shape == (2, 3)
    again, other = model_for(config, data), model_for(dict(config, seed=6), data)
    first = {name: p.data for name, p in model.named_parameters()}
    assert all(np.array_equal(first[name], p.data) for name, p in again.named_parameters())
    assert not all(np.array_equal(first[name], p.data) for name, p in other.named_parameters())


def test_train_help_shows_the_choices_of_every_flag_that_takes_one_of_a_few(capsys):
    from minisnn.data.cifar10_dvs import RESIZE_MODES, SPLIT_RULES
    from minisnn.models.plain import NORMS
    assert cli.main(["train", "--help"]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    for choices in (experiment.MODELS, NORMS, experiment.DATASETS, experiment.OPTIMIZERS, experiment.DVS_SPLITS,
                    SPLIT_RULES, RESIZE_MODES):
        assert "{" + ",".join(choices) + "}" in shown, choices


def test_minisnn_names_itself_describes_itself_and_needs_a_command(capsys):
    assert cli.main(["--help"]) == 0 and "Train and inspect spiking networks" in capsys.readouterr().out
    code, _, err = minisnn(capsys, "train", "--lr", "-1")
    assert code == 2 and err.startswith("error: minisnn train: argument --lr: must be a number > 0")
    code, _, err = minisnn(capsys)
    assert code == 2 and err.startswith("error: minisnn: the following arguments are required: command")


def test_every_export_flag_reaches_the_export(monkeypatch, capsys):
    from minisnn import nir_export
    seen = {}
    monkeypatch.setattr(nir_export, "export_checkpoint", lambda *args, **options: seen.update(options, args=args))
    assert cli.main(["export", "run/last.npz", "net.nir", "--dt", "0.001", "--data-dir", "data",
                     "--input-gain", "weights"]) == 0
    assert seen == {"args": ("run/last.npz", "net.nir"), "dt": 0.001, "data_dir": "data", "input_gain": "weights"}
    assert cli.main(["export", "run/last.npz", "net.nir"]) == 0
    assert (seen["dt"], seen["data_dir"], seen["input_gain"]) == (1e-4, None, "r")  # the defaults --help gives
    for bad in (["--dt", "0"], ["--input-gain", "w"]):
        code, _, err = minisnn(capsys, "export", "run/last.npz", "net.nir", *bad)
        assert code == 2 and bad[0] in err


def test_a_file_that_cannot_be_replaced_is_named_not_the_hidden_temp_file_beside_it(run, capsys):
    (run / "config.json").unlink()
    (run / "config.json").mkdir()  # a folder where the run writes its config.json
    code, _, err = minisnn(capsys, "train", "--resume", "--out", run, "--epochs", "2")
    assert code == 2 and f"cannot access {run / 'config.json'}: Is a directory" in err and ".tmp" not in err, err


def test_a_file_error_is_one_line_naming_the_file_and_what_to_check(tmp_path, capsys, monkeypatch):
    assert cli.one_line(FileNotFoundError(2, "No such file or directory", "/data/x")) == (
        "cannot access /data/x: No such file or directory; check the path, its permissions and the free disk space")
    assert cli.one_line(OSError(28, "No space left on device")) == (
        "a file operation failed: No space left on device; check the path, its permissions and the free disk space")
    aborted = []
    monkeypatch.setattr(cli, "abort_other_ranks", aborted.append)  # [dist] the other ranks must not wait for this one
    code, _, _ = minisnn(capsys, "train", "--resume", "--out", tmp_path / "no run")
    assert code == 2 and aborted == [2]
