"""Checkpoints as ``.npz`` files without pickle, written atomically, refused when they hold NaN or infinity.

A checkpoint holds groups of arrays -- ``model/<param>``, ``optim/<slot>``, ``sched/<key>`` -- and one
JSON document ``meta`` (config, epoch, step, metrics). Loading uses ``allow_pickle=False``, so a
checkpoint can carry no code, and checks that every array is finite (``finite_flags``), so a diverged
network is never evaluated, exported or trained on. Writing goes to a temporary file in the same folder,
which is flushed, synced and then renamed over the target (and the folder synced): a crash or Ctrl-C at
any moment leaves either the old checkpoint or the new one, never half of one. A temporary file left by a
killed process is removed by ``remove_stale_temps``. Files get the usual permissions (0666 less the
umask, 0644 for most users), not mkstemp's 0600.
"""
import glob
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .backend import get_array_module

GROUPS = ("model", "optim", "sched")
TEMP_SUFFIX = ".tmp"
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip archive with members, an empty one


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, not finite, does not match the model, or cannot be written."""


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def nearest_existing(path):
    """``path`` itself if it exists, else the nearest folder above it that does (where writing it would start)."""
    path = Path(path)
    return next(place for place in (path, *path.absolute().parents) if place.exists())


def atomic_write(path, write):
    """Call ``write(fileobj)`` on a temporary file beside ``path``, then rename it over ``path``.

    The temporary file is synced before the rename and the folder after it; on any failure (or Ctrl-C)
    the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~_umask())
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable (POSIX)
        folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def remove_stale_temps(folder, names):
    """Delete the temporary files that ``atomic_write`` leaves in ``folder`` when its process is killed while
    writing one of the files ``names`` (``.<name>.<random>.tmp``); nothing else, whatever its name."""
    for name in names:
        for stale in Path(folder).glob(f".{glob.escape(name)}.*{TEMP_SUFFIX}"):
            if stale.is_file():
                stale.unlink()


def finite_flags(arrays):
    """One flag per array, as one boolean array on the arrays' device: flags[i] = all(isfinite(arrays[i])).
    Nothing is read back to the host here."""
    xp = get_array_module(*arrays)
    return xp.stack([xp.isfinite(a).all() for a in arrays])


def save_checkpoint(path, meta, **groups):
    """Write ``meta`` (JSON-serialisable) and groups of ``{name: array or number}`` to ``path``."""
    arrays = {"meta": np.array(json.dumps(meta))}
    for group, state in groups.items():
        if group not in GROUPS:
            raise ValueError(f"unknown checkpoint group {group!r}; expected one of {GROUPS}")
        for name, value in state.items():
            arrays[f"{group}/{name}"] = np.asarray(value)
    atomic_write(path, lambda f: np.savez(f, **arrays))


def _open(path):
    """The opened ``.npz`` of a checkpoint, after checking that it exists and is a zip archive."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}" +
                              (" (that is a folder; give the .npz file in it)" if path.is_dir() else ""))
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        raise CheckpointError(f"{path} is empty (0 bytes), not a checkpoint (minisnn never leaves one half "
                              "written: was it copied or truncated elsewhere?); use another copy of the run")
    if head not in ZIP_MAGIC:
        raise CheckpointError(f"{path} is not a minisnn checkpoint (not an .npz archive); give the last.npz "
                              "of a run folder")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {type(err).__name__}: {err}") from err


def _meta(path, data):
    if "meta" not in data.files:
        raise CheckpointError(f"{path} is an .npz archive but not a minisnn checkpoint (no meta); give the "
                              "last.npz of a run folder")
    meta = json.loads(str(data["meta"]))
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"{path}: its meta holds no run configuration; not a minisnn checkpoint")
    return meta


def read_meta(path):
    """Only the ``meta`` document of a checkpoint (its arrays are not read)."""
    try:
        with _open(path) as data:
            return _meta(path, data)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {type(err).__name__}: {err}") from err


def load_checkpoint(path):
    """Return ``{"meta": dict, "model": {...}, "optim": {...}, "sched": {...}}`` from ``path``.

    Raises CheckpointError naming the file when it is missing, empty, not a checkpoint, holds pickled
    objects, is truncated, or when any of its arrays holds a NaN or an infinity (naming those arrays).
    """
    try:
        with _open(path) as data:
            out = {group: {} for group in GROUPS}
            out["meta"] = _meta(path, data)
            for key in data.files:
                if "/" in key:
                    group, name = key.split("/", 1)
                    out.setdefault(group, {})[name] = data[key]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {type(err).__name__}: {err}") from err
    named = [(f"{group}/{name}", array) for group in GROUPS for name, array in out[group].items()
             if array.dtype.kind in "fc"]
    if named:
        flags = finite_flags([array for _, array in named])
        bad = [name for (name, _), ok in zip(named, flags) if not ok]
        if bad:
            raise CheckpointError(
                f"{path} holds NaN or infinity in {', '.join(bad[:3])}"
                f"{f' and {len(bad) - 3} more arrays' if len(bad) > 3 else ''}: the network it saved had "
                "diverged, so it is not used; take an earlier copy of the run, or train again with a lower --lr")
    return out


def scalars(state):
    """Turn 0-d arrays from a loaded group back into Python numbers."""
    return {k: (v.item() if getattr(v, "ndim", 1) == 0 else v) for k, v in state.items()}
