"""Checkpoints keep their promises: atomic (a failed write leaves the last good one loadable and no temp
file; the temp file sits beside the target and is synced before the rename), usual permissions, no
pickles, and clear refusals of empty, foreign, truncated or non-finite files."""
import errno
import os
import stat

import numpy as np
import pytest

from minisnn import checkpoint
from minisnn.checkpoint import (CheckpointError, finite_flags, load_checkpoint, read_meta, remove_stale_temps,
                                save_checkpoint)

META = {"config": {"model": "resnet_small"}, "epoch": 1}


def save_good(path, value=1.0):
    save_checkpoint(path, META, model={"w": np.full(3, value, np.float32)}, optim={"lr": 0.1})


def test_a_write_that_fails_part_way_leaves_the_last_good_checkpoint_and_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "last.npz"
    save_good(path, 1.0)

    def savez_then_disk_full(f, **arrays):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.np, "savez", savez_then_disk_full)
    with pytest.raises(OSError, match="No space"):
        save_good(path, 2.0)
    monkeypatch.undo()
    np.testing.assert_array_equal(load_checkpoint(path)["model"]["w"], np.full(3, 1.0, np.float32))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.npz"]


def test_the_temp_file_is_beside_the_target_and_synced_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_mkstemp, real_fsync, real_replace = checkpoint.tempfile.mkstemp, os.fsync, os.replace

    def mkstemp(*args, **kwargs):
        fd, name = real_mkstemp(*args, **kwargs)
        events.append(("create", fd, name))
        return fd, name

    monkeypatch.setattr(checkpoint.tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(checkpoint.os, "fsync",
                        lambda fd: (events.append(("fsync", fd, os.fstat(fd).st_size)), real_fsync(fd)))
    monkeypatch.setattr(checkpoint.os, "replace",
                        lambda src, dst: (events.append(("replace", str(src), str(dst))), real_replace(src, dst)))
    for target, write in ((tmp_path / "run" / "last.npz", save_good),
                          (tmp_path / "run" / "metrics.jsonl",  # a plain write stays in Python's buffer unless flushed
                           lambda path: checkpoint.atomic_write(path, lambda f: f.write(b'{"epoch": 1}\n')))):
        events.clear()
        write(target)
        (_, fd, temp), = [e for e in events if e[0] == "create"]
        (_, src, dst), = [e for e in events if e[0] == "replace"]
        assert (src, dst) == (temp, str(target)) and os.path.dirname(temp) == str(target.parent)
        rename_at = events.index(("replace", src, dst))
        # all the data, flushed from Python's buffer, reach the disk before the name points at them
        assert ("fsync", fd, target.stat().st_size) in events[:rename_at]
        assert any(e[0] == "fsync" for e in events[rename_at:])  # and the folder after the rename


def test_a_save_leaves_the_umask_and_the_open_files_as_they_were(tmp_path):
    umask = os.umask(0o027)
    try:
        fds = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
        for k in range(3):
            save_good(tmp_path / "last.npz", float(k))
        assert os.umask(0o027) == 0o027  # the process's umask is read, not changed
        if fds is not None:
            assert len(os.listdir("/proc/self/fd")) == fds  # no file or folder descriptor left open
        assert stat.S_IMODE((tmp_path / "last.npz").stat().st_mode) == 0o640
    finally:
        os.umask(umask)


def test_a_temp_file_is_hidden_beside_its_target_and_recognised_as_stale(tmp_path):
    seen = []
    checkpoint.atomic_write(tmp_path / "last.npz", lambda f: seen.extend(p.name for p in tmp_path.iterdir()))
    (temp,) = seen
    assert temp.startswith(".last.npz.") and temp.endswith(".tmp")
    (tmp_path / temp).write_bytes(b"left by a killed process")
    remove_stale_temps(tmp_path, ["last.npz"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.npz"]


def test_paths_may_be_strings_and_missing_folders_are_made(tmp_path):
    path = tmp_path / "runs" / "a" / "last.npz"
    save_good(str(path), 3.0)
    assert load_checkpoint(str(path))["model"]["w"].tolist() == [3.0] * 3
    assert read_meta(str(path)) == META


def test_unknown_groups_and_folders_are_refused_clearly(tmp_path):
    with pytest.raises(ValueError, match="unknown checkpoint group 'weights'"):
        save_checkpoint(tmp_path / "last.npz", META, weights={"w": np.ones(2)})
    assert not (tmp_path / "last.npz").exists()
    with pytest.raises(CheckpointError, match="that is a folder; give the .npz file in it"):
        load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="not found") as err:
        load_checkpoint(tmp_path / "missing.npz")
    assert "that is a folder" not in str(err.value)


@pytest.mark.parametrize("meta, says", [
    (None, r"an \.npz archive but not a minisnn checkpoint \(no meta\)"),
    ("[1, 2]", "holds no run configuration"),
    ('{"epoch": 3}', "holds no run configuration"),
    ('{"config": [1]}', "holds no run configuration"),
    ("not json", "cannot read checkpoint"),
])
def test_an_npz_that_is_not_a_checkpoint_is_named_as_such(tmp_path, meta, says):
    path = tmp_path / "other.npz"
    np.savez(path, **({"meta": np.array(meta)} if meta is not None else {}), **{"model/w": np.ones(2)})
    for read in (load_checkpoint, read_meta):
        with pytest.raises(CheckpointError, match=says):
            read(path)


def test_scalars_turns_zero_dimensional_arrays_into_numbers():
    out = checkpoint.scalars({"lr": np.array(0.5), "steps": np.array(7), "slot": np.arange(2), "given": 3})
    assert out["lr"] == 0.5 and type(out["lr"]) is float and out["steps"] == 7 and type(out["steps"]) is int
    assert out["slot"].tolist() == [0, 1] and out["given"] == 3


def test_written_files_get_the_usual_permissions(tmp_path):
    save_good(tmp_path / "last.npz")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "last.npz").stat().st_mode) == 0o666 & ~umask


def test_stale_temp_files_of_a_killed_write_are_removed_and_a_users_files_are_not(tmp_path):
    (tmp_path / ".last.npz.k2j4.tmp").write_bytes(b"cut off")
    (tmp_path / ".metrics.jsonl.a1b2.tmp").write_bytes(b"cut off")
    for mine in ("notes.txt", ".notes.old.tmp", ".last.npz.tmp", ".lastXnpz.k2j4.tmp"):  # not atomic_write's temps
        (tmp_path / mine).write_text("mine")
    save_good(tmp_path / "last.npz")
    remove_stale_temps(tmp_path, ["last.npz", "metrics.jsonl"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [".last.npz.tmp", ".lastXnpz.k2j4.tmp", ".notes.old.tmp",
                                                          "last.npz", "notes.txt"]


def test_loading_refuses_pickles_and_reports_truncation_and_absence(tmp_path):
    bad = tmp_path / "object.npz"
    np.savez(bad, meta=np.array('{"config": {}}'), **{"model/w": np.array([object()], dtype=object)})
    with pytest.raises(CheckpointError, match="object.npz"):
        load_checkpoint(bad)
    good = tmp_path / "good.npz"
    save_good(good)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:40])
    with pytest.raises(CheckpointError, match="truncated.npz"):
        load_checkpoint(truncated)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.npz")


@pytest.mark.parametrize("content, says", [(b"", r"is empty \(0 bytes\)"),
                                           (os.urandom(300), r"is not a minisnn checkpoint \(not an \.npz")])
def test_empty_or_foreign_files_are_named_as_such(tmp_path, content, says):
    path = tmp_path / "last.npz"
    path.write_bytes(content)
    for read in (load_checkpoint, read_meta):
        with pytest.raises(CheckpointError, match=says) as err:
            read(path)
        assert "allow_pickle" not in str(err.value) and str(path) in str(err.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_checkpoint_holding_nan_or_infinity_is_refused_naming_the_array(tmp_path, bad):
    weights = np.ones((4, 5), np.float32)
    weights[3, 2] = bad
    path = tmp_path / "last.npz"
    save_checkpoint(path, META, model={"stem.0.conv.weight": weights, "ok": np.ones(2, np.float32)},
                    optim={"m.0": np.zeros(3, np.float32)})
    with pytest.raises(CheckpointError, match=r"model/stem\.0\.conv\.weight") as err:
        load_checkpoint(path)
    assert "model/ok" not in str(err.value) and "optim/m.0" not in str(err.value)


def test_finite_flags_finds_every_kind_of_non_finite_value_anywhere():
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in [(3,), (2, 4), (5, 1, 2), ()]]
    assert finite_flags(arrays).tolist() == [True] * 4
    for k in range(len(arrays)):
        for bad in (np.nan, np.inf, -np.inf):
            broken = [a.copy() for a in arrays]
            broken[k].flat[-1] = bad
            assert finite_flags(broken).tolist() == [i != k for i in range(4)]
    huge = np.full(10, 3e38, np.float32)  # finite, though its sum would overflow float32
    assert finite_flags([huge, np.arange(3)]).tolist() == [True, True]
