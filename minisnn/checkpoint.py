"""Checkpoints as ``.npz`` files without pickle, written atomically.

A checkpoint holds groups of arrays -- ``model/<param>``, ``optim/<slot>``, ``sched/<key>`` -- and one
JSON document ``meta`` (config, epoch, step, seed, metrics). Loading uses ``allow_pickle=False``,
so a checkpoint can carry no code. Writing goes to a temporary file in the same folder, which is
flushed, synced and then renamed over the target: a crash or Ctrl-C at any moment leaves either
the old checkpoint or the new one, never half of one.
"""
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

GROUPS = ("model", "optim", "sched")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or does not match the model."""


def atomic_write(path, write):
    """Call ``write(fileobj)`` on a temporary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(path, meta, **groups):
    """Write ``meta`` (JSON-serialisable) and groups of ``{name: array or number}`` to ``path``."""
    arrays = {"meta": np.array(json.dumps(meta))}
    for group, state in groups.items():
        if group not in GROUPS:
            raise ValueError(f"unknown checkpoint group {group!r}; expected one of {GROUPS}")
        for name, value in state.items():
            arrays[f"{group}/{name}"] = np.asarray(value)
    atomic_write(path, lambda f: np.savez(f, **arrays))


def load_checkpoint(path):
    """Return ``{"meta": dict, "model": {...}, "optim": {...}, "sched": {...}}`` from ``path``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            out = {group: {} for group in GROUPS}
            out["meta"] = json.loads(str(data["meta"]))
            for key in data.files:
                if "/" in key:
                    group, name = key.split("/", 1)
                    out.setdefault(group, {})[name] = data[key]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {type(err).__name__}: {err}") from err
    return out


def scalars(state):
    """Turn 0-d arrays from a loaded group back into Python numbers."""
    return {k: (v.item() if getattr(v, "ndim", 1) == 0 else v) for k, v in state.items()}
