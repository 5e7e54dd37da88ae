"""CIFAR-10 from the official "python version" archive: safe reading, checked download, safe extraction.

The archive https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz holds ``cifar-10-batches-py/`` with
five training batches (``data_batch_1`` ... ``data_batch_5``), ``test_batch`` and ``batches.meta``.
Each batch is a Python-2 pickle of a dict with ``b"data"`` (uint8, shape (n, 3072): 1024 red, then 1024
green, then 1024 blue values of a row-major 32x32 image) and ``b"labels"`` (n ints in 0..9).

Pickle files can run arbitrary code when loaded, so they are read with ``SafeUnpickler``: it accepts only
the three NumPy globals needed to rebuild an array and refuses everything else *before* calling it.
A download is written to ``<file>.part`` (resumed with an HTTP Range request if one is there), and only
renamed to its final name once its MD5 matches the published one; nothing is unpickled or extracted
before that check. Every failure raises ``DatasetError`` naming the file and what is wrong.
"""
import hashlib
import os
import pickle
import shutil
import tarfile
import zlib
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .errors import DatasetError

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
ARCHIVE_NAME = "cifar-10-python.tar.gz"
FOLDER_NAME = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
ARCHIVE_FILES = TRAIN_FILES + (TEST_FILE, "batches.meta", "readme.html")

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# Per-channel mean and standard deviation of the pixel values / 255 over the full 50,000-image training set.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

CACHE_ENV_VAR = "MINISNN_DATA"


# ------------------------------------------------------------------ reading batches
def _numpy_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct  # NumPy >= 2
    except ImportError:
        from numpy.core.multiarray import _reconstruct  # NumPy 1.x
    return _reconstruct


class SafeUnpickler(pickle.Unpickler):
    """An Unpickler that can rebuild NumPy arrays, dicts, lists, ints and bytes, and nothing else.

    A pickle calls a global only after looking it up with ``find_class``; refusing the lookup refuses
    the call. The official CIFAR-10 files (and NumPy 2 pickles of them) name exactly these globals.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"forbidden global {module}.{name}: a CIFAR-10 batch never needs it")
        if name == "_reconstruct":
            return _numpy_reconstruct()
        return getattr(np, name)


def _unpickle(path):
    try:
        with open(path, "rb") as f:
            return SafeUnpickler(f, encoding="bytes").load()
    except Exception as err:  # pickle raises many types on corrupt input; report them all the same way
        raise DatasetError(f"{path}: cannot read CIFAR-10 batch (truncated, corrupt or unsafe file): "
                           f"{type(err).__name__}: {err}") from None


def read_batch(path):
    """Read one CIFAR-10 batch file: images uint8 [n, 3, 32, 32] and labels int64 [n].

    Raises DatasetError (naming the file) if it cannot be unpickled safely or its content is wrong.
    """
    path = Path(path)
    batch = _unpickle(path)
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        got = f"keys {sorted(map(repr, batch))}" if isinstance(batch, dict) else type(batch).__name__
        raise DatasetError(f"{path}: expected a dict with keys b'data' and b'labels', got {got}")
    data = batch[b"data"]
    try:
        labels = np.asarray(batch[b"labels"])
    except ValueError:  # a ragged list
        labels = np.asarray(None)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        what = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DatasetError(f"{path}: b'data' must be a uint8 array of shape (n, 3072), got {what}")
    if labels.dtype.kind not in "iu" or labels.shape != (data.shape[0],):
        raise DatasetError(f"{path}: b'labels' must be {data.shape[0]} integers, got {labels.dtype} "
                           f"of shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= len(CIFAR10_CLASSES)):
        raise DatasetError(f"{path}: labels must lie in 0..9, found {labels.min()}..{labels.max()}")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def read_cifar10_folder(folder):
    """Read ``cifar-10-batches-py``: (train_x, train_y, test_x, test_y) as uint8 [N,3,32,32] / int64 [N]."""
    folder = Path(folder)
    missing = [name for name in TRAIN_FILES + (TEST_FILE,) if not (folder / name).is_file()]
    if missing:
        raise DatasetError(f"{folder} lacks {', '.join(missing)}: a CIFAR-10 folder holds "
                           f"{', '.join(TRAIN_FILES)} and {TEST_FILE}; copy the missing files from the official archive")
    train = [read_batch(folder / name) for name in TRAIN_FILES]
    test_x, test_y = read_batch(folder / TEST_FILE)
    return np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]), test_x, test_y


# ------------------------------------------------------------------ download and extraction
def md5_of(path, chunk_size=1 << 20):
    """Hex MD5 digest of a file, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_file(url, dest, md5, chunk_size=1 << 20, timeout=30):
    """Download ``url`` to ``dest``, resuming ``dest.part`` if present; rename only once the MD5 matches.

    A partial file is continued with ``Range: bytes=<size>-``; a server that answers with the whole file
    (status 200) restarts it. On an MD5 mismatch the partial file is deleted and DatasetError raised;
    on a network failure the partial file is kept for the next try and DatasetError raised.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    start = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            resumed = start > 0 and getattr(response, "status", None) == 206 and \
                str(response.headers.get("Content-Range", "")).startswith(f"bytes {start}-")
            offset = start if resumed else 0
            size = response.headers.get("Content-Length")
            with open(part, "ab" if resumed else "wb") as f, tqdm(
                    total=int(size) + offset if size else None, initial=offset, unit="B", unit_scale=True,
                    desc=f"downloading {dest.name}", leave=False) as bar:
                for chunk in iter(lambda: response.read(chunk_size), b""):
                    f.write(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as err:
        if not (err.code == 416 and start > 0):  # 416: the part file already holds the whole file
            raise DatasetError(f"download of {url} failed: HTTP {err.code} {err.reason}") from err
    except (OSError, ValueError) as err:  # URLError, timeouts, broken connections, bad URLs
        kept = f"the partial file {part} is kept and resumed next time" if part.exists() and part.stat().st_size \
            else "nothing was downloaded"
        raise DatasetError(f"download of {url} failed: {type(err).__name__}: {err} ({kept})") from err
    actual = md5_of(part)
    if actual != md5:
        part.unlink()
        raise DatasetError(f"download of {url} has MD5 {actual}, expected {md5}; the file was deleted")
    os.replace(part, dest)
    return dest


def extract_cifar10(archive, dest_dir):
    """Extract ``cifar-10-batches-py`` from the official archive into ``dest_dir``, safely.

    Only the expected members (the folder and its regular files listed in ARCHIVE_FILES) are accepted:
    absolute paths, ``..``, links and unknown names are refused. Files go to a temporary folder that is
    renamed into place once everything was read.
    """
    archive, dest_dir = Path(archive), Path(dest_dir)
    allowed = {f"{FOLDER_NAME}/{name}" for name in ARCHIVE_FILES}
    tmp = dest_dir / (FOLDER_NAME + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                name = member.name.rstrip("/")
                if member.isdir() and name == FOLDER_NAME:
                    continue
                if name not in allowed or not member.isfile():
                    raise DatasetError(f"{archive}: unexpected archive member {member.name!r} "
                                       "(only the official cifar-10-batches-py files are extracted)")
                with tar.extractfile(member) as src, open(tmp / Path(name).name, "wb") as out:
                    shutil.copyfileobj(src, out)
        missing = [name for name in TRAIN_FILES + (TEST_FILE,) if not (tmp / name).exists()]
        if missing:
            raise DatasetError(f"{archive}: archive lacks {', '.join(missing)}")
        os.replace(tmp, dest_dir / FOLDER_NAME)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
        raise DatasetError(f"{archive}: cannot extract: {type(err).__name__}: {err}") from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest_dir / FOLDER_NAME


def default_data_dir():
    """``$MINISNN_DATA`` if set, else ``~/.cache/minisnn``."""
    return Path(os.environ.get(CACHE_ENV_VAR) or Path.home() / ".cache" / "minisnn")


def _manual_steps(root):
    return (f"To install CIFAR-10 by hand: download {CIFAR10_URL} (MD5 {CIFAR10_MD5}) and put it at "
            f"{root / ARCHIVE_NAME} (it is checked and extracted on the next run), or extract it so that "
            f"{root / FOLDER_NAME} exists; or point --data-dir / data_dir / ${CACHE_ENV_VAR} at a folder "
            f"that contains {FOLDER_NAME}.")


def cifar10_folder(data_dir=None, download=False):
    """Find (or fetch) the ``cifar-10-batches-py`` folder and return its path.

    ``data_dir`` is a folder containing ``cifar-10-batches-py``, or that folder itself; default
    ``default_data_dir()``. If the folder is missing, an archive already at ``<data_dir>/
    cifar-10-python.tar.gz`` is MD5-checked and extracted; with ``download=True`` a missing archive is
    downloaded first. Otherwise DatasetError explains the manual steps.
    """
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    if root.name == FOLDER_NAME and root.is_dir():
        return root
    if (root / FOLDER_NAME).is_dir():
        return root / FOLDER_NAME
    archive = root / ARCHIVE_NAME
    if not archive.exists():
        if not download:
            raise DatasetError(f"CIFAR-10 not found in {root} (download=False). " + _manual_steps(root))
        try:
            download_file(CIFAR10_URL, archive, CIFAR10_MD5)
        except DatasetError as err:
            raise DatasetError(f"{err}\n{_manual_steps(root)}") from err
    else:
        actual = md5_of(archive)
        if actual != CIFAR10_MD5:
            raise DatasetError(f"{archive} has MD5 {actual}, expected {CIFAR10_MD5}: not the official "
                               f"archive (delete it and retry). " + _manual_steps(root))
    return extract_cifar10(archive, root)


def load_cifar10(data_dir=None, download=False):
    """CIFAR-10 as (train_x, train_y, test_x, test_y): uint8 [N, 3, 32, 32] images, int64 [N] labels.

    See ``cifar10_folder`` for where the files are looked for and how they are fetched.
    """
    return read_cifar10_folder(cifar10_folder(data_dir, download))
