"""Data-parallel training over real MPI processes: ``mpiexec -n 2 minisnn train`` on 64 images of the real
CIFAR-10 sample (with its crop-and-flip augmentation), 2 epochs of 4 steps.

* 2 ranks with global batch B and --sync-norm end with the weights of 1 process with batch B (to float32
  summation order); without --sync-norm they differ by far more (each rank's tdBN uses its own rows --
  test_dist.py checks that this is exactly one process normalising each half separately);
* a Ctrl-C on one rank stops both after the same step, and the checkpoint resumes with 1 process; a
  checkpoint of 1 process resumes with 2 ranks; both end where the uninterrupted run ends;
* a rank that stalls, is killed or raises ends the job with an error instead of a hang.

Needs the dist extra (mpi4py and an MPI with mpiexec); skipped, saying so, without it.
"""
import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from minisnn.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
PROGRAMS = Path(__file__).resolve().parent / "dist_programs.py"
MPIEXEC = shutil.which("mpiexec", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("mpi4py") is None or MPIEXEC is None,
    reason="the dist extra is not installed (mpi4py and an MPI with mpiexec): pip install -e '.[dist]'")

SAMPLE = REPO.parent / "shared" / "data" / "cifar10-sample"
TRAIN = ["train", "--dataset", "cifar10", "--data-dir", str(SAMPLE), "--model", "resnet_small", "--width", "4",
         "--blocks", "1", "--strides", "2", "--optimizer", "adam", "--lr", "0.003", "-T", "2", "--batch-size", "16",
         "--limit-train", "64", "--limit-test", "40", "--epochs", "2", "--no-progress", "--seed", "1"]
TIGHT = 1e-5  # float32 summation order, after 8 Adam steps of a net whose weights are of order 1


def env(**extra):
    values = dict(os.environ, MINISNN_THREADS="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MPLBACKEND="Agg",
                  MINISNN_DIST_TIMEOUT="60")
    values.update(extra)
    values.pop("MINISNN_DEVICE", None)
    return values


def run(args, ranks=1, timeout=120, **extra):
    """python ARGS (under mpiexec -n RANKS when RANKS > 1); returns the CompletedProcess."""
    command = [sys.executable] + args
    if ranks > 1:
        command = [MPIEXEC, "-n", str(ranks)] + command
    return subprocess.run(command, cwd=REPO, env=env(**extra), capture_output=True, text=True, timeout=timeout)


def train(out, ranks=1, extra=(), program=None):
    args = (program or ["-m", "minisnn.cli"]) + TRAIN + ["--out", str(out)] + list(extra)
    result = run(args, ranks)
    return result


def weights(out):
    return load_checkpoint(Path(out) / "last.npz")


def max_difference(a, b):
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """One process, batch 16, --sync-norm (which one process ignores), 2 epochs."""
    out = tmp_path_factory.mktemp("single")
    result = train(out, extra=["--sync-norm"])
    assert result.returncode == 0, result.stderr
    return weights(out)


def test_two_ranks_with_sync_norm_end_with_the_weights_of_one_process(single, tmp_path):
    result = train(tmp_path, ranks=2, extra=["--sync-norm"])
    assert result.returncode == 0, result.stderr
    state = weights(tmp_path)
    assert state["meta"]["epoch"] == 2 and state["meta"]["config"]["sync_norm"] is True
    assert max_difference(state["model"], single["model"]) < TIGHT
    assert abs(state["meta"]["history"][-1]["test_acc"] - single["meta"]["history"][-1]["test_acc"]) < 1e-9
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "curves.png", "last.npz", "metrics.jsonl"]


def test_two_ranks_without_sync_norm_differ_by_their_per_rank_statistics(single, tmp_path):
    result = train(tmp_path, ranks=2)
    assert result.returncode == 0, result.stderr
    assert max_difference(weights(tmp_path)["model"], single["model"]) > 100 * TIGHT


@pytest.mark.parametrize("program, step", [("ctrl-c", "6"), ("ctrl-c-late", "5")])
def test_a_checkpoint_of_two_ranks_resumes_with_one_process(single, tmp_path, program, step):
    # rank 1 presses Ctrl-C during step 6 (of 8): both ranks stop after it, rank 0 saves the position; or
    # during step 5 after its allreduce: both ranks stop after step 6, when the next allreduce told rank 0
    result = run([str(PROGRAMS), program, step, "1"] + TRAIN + ["--out", str(tmp_path), "--sync-norm"], ranks=2)
    assert result.returncode != 0  # 130 from each rank: interrupted
    meta = weights(tmp_path)["meta"]
    assert meta["interrupted"] and (meta["epoch"], meta["step"]) == (1, 2)
    result = run(["-m", "minisnn.cli", "train", "--resume", "--out", str(tmp_path), "--no-progress"])
    assert result.returncode == 0, result.stderr
    state = weights(tmp_path)
    assert state["meta"]["epoch"] == 2
    assert max_difference(state["model"], single["model"]) < TIGHT


def test_a_checkpoint_of_one_process_resumes_with_two_ranks(single, tmp_path):
    result = run([str(PROGRAMS), "ctrl-c", "3", "0"] + TRAIN + ["--out", str(tmp_path), "--sync-norm"])
    assert result.returncode == 130, result.stderr
    assert (weights(tmp_path)["meta"]["epoch"], weights(tmp_path)["meta"]["step"]) == (0, 3)
    result = run(["-m", "minisnn.cli", "train", "--resume", "--out", str(tmp_path), "--no-progress"], ranks=2)
    assert result.returncode == 0, result.stderr
    assert max_difference(weights(tmp_path)["model"], single["model"]) < TIGHT


@pytest.mark.parametrize("mode", ["stall", "kill", "raise"])
def test_a_rank_that_dies_or_stalls_ends_the_job_instead_of_hanging(mode):
    start = time.monotonic()
    result = run([str(PROGRAMS), "failing-rank", mode], ranks=2, timeout=60, MINISNN_DIST_TIMEOUT="2")
    assert result.returncode != 0
    assert time.monotonic() - start < 30
    assert "rank 0 finished" not in result.stdout
    if mode == "stall":  # rank 0's deadline passes: it says what it waited for, and stops both
        assert ("error: rank 0 of 2 waited 2 s for the gradient allreduce: another rank has died or stalled; "
                "stopping all ranks") in result.stderr
    elif mode == "raise":  # rank 1's traceback, then the job ends
        assert "RuntimeError: rank 1 failed on purpose" in result.stderr


def test_an_error_on_the_command_line_of_two_ranks_is_one_line_and_exit_2(tmp_path):
    result = run(["-m", "minisnn.cli"] + TRAIN[:-2] + ["--batch-size", "1", "--out", str(tmp_path)], ranks=2)
    assert result.returncode == 2
    assert "error: a training batch of 1 rows cannot be split over 2 ranks" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "last.npz").exists()


def test_a_deadline_that_passed_fails_the_job_even_when_the_wait_then_ends():
    # rank 0 waits 0.5 s for rank 1 with a 0.1 s deadline: it reports the stall, and although the allreduce
    # then completes and the program ends during the pause before MPI_Abort, the job must not exit 0
    result = run([str(PROGRAMS), "late-rank"], ranks=2, timeout=60, MINISNN_DIST_TIMEOUT="0.1")
    assert "error: rank 0 of 2 waited 0.1 s for the late allreduce" in result.stderr
    assert result.returncode != 0
