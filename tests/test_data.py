"""Data layer: safe CIFAR-10 reading, checked download and extraction, transforms, seeded batches, digits."""
import dataclasses
import hashlib
import io
import os
import pickle
import sys
import tarfile
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minisnn.data import (CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD, DIGITS_MEAN, DIGITS_STD, BatchIterator,
                          DatasetError, crop_and_flip, default_data_dir, download_file, get_dataset, load_cifar10,
                          load_digits, normalize, random_crop, random_flip, read_batch)
from minisnn.data import cifar10
from minisnn.data.cifar10 import extract_cifar10
from strategies import seeds

FILES = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]


# ------------------------------------------------------------------ helpers
def write_batch(path, data, labels):
    """A batch file like the official ones (protocol 3: NumPy arrays need no _codecs global then)."""
    path.write_bytes(pickle.dumps({b"batch_label": b"test", b"data": data, b"labels": labels}, protocol=3))


def make_folder(root, n=6, seed=0):
    """A tiny valid cifar-10-batches-py folder under root; returns it and its images per file."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    content = {}
    for name in FILES:
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=n)]
        write_batch(folder / name, data, labels)
        content[name] = (data, labels)
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"x"] * 10}, protocol=3))
    return folder, content


def make_archive(root, members=None):
    """A gzip tar of a tiny folder (or of the given {name: bytes}); returns its path and MD5."""
    archive = root / "upload" / "cifar-10-python.tar.gz"
    archive.parent.mkdir(parents=True)
    if members is None:
        folder, _ = make_folder(root / "src")
        members = {f"cifar-10-batches-py/{p.name}": p.read_bytes() for p in folder.iterdir()}
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return archive, hashlib.md5(archive.read_bytes()).hexdigest()


class FakeResponse(io.BytesIO):
    def __init__(self, payload, status, headers):
        super().__init__(payload)
        self.status, self.headers = status, headers


class SlowResponse(FakeResponse):
    """A response whose bytes after the first read come 0.12 s late: a slow network, slow enough for tqdm
    (which redraws at most every 0.1 s) to show the bar's progress before the end."""

    def read(self, size=-1):
        if 0 < self.tell() < len(self.getbuffer()):
            time.sleep(0.12)
        return super().read(size)


def fake_server(payload, honour_range=True, log=None, response=FakeResponse):
    """A urlopen replacement serving ``payload``, answering Range requests with 206 if honour_range (and,
    as HTTP servers do, with 416 Range Not Satisfiable for a range that starts at or past the end)."""
    def urlopen(request, timeout=None):
        wanted = request.get_header("Range")
        if log is not None:
            log.append(wanted)
        if wanted and honour_range:
            start = int(wanted.split("=")[1].rstrip("-"))
            if start >= len(payload):
                raise urllib.error.HTTPError(request.full_url, 416, "Range Not Satisfiable", {}, None)
            return response(payload[start:], 206, {"Content-Range": f"bytes {start}-{len(payload) - 1}/"
                                                   f"{len(payload)}", "Content-Length": len(payload) - start})
        return response(payload, 200, {"Content-Length": len(payload)})
    return urlopen


# ------------------------------------------------------------------ reading the real sample
def test_reads_real_cifar10_sample(cifar_sample):
    train_x, train_y, test_x, test_y = load_cifar10(cifar_sample)
    assert train_x.shape == (5085, 3, 32, 32) and train_x.dtype == np.uint8
    assert test_x.shape == (517, 3, 32, 32) and test_x.dtype == np.uint8
    assert train_y.shape == (5085,) and test_y.shape == (517,)
    assert train_y.dtype == np.int64 and test_y.dtype == np.int64
    assert set(np.unique(train_y)) == set(range(10)) and set(np.unique(test_y)) == set(range(10))
    # Channel-first layout: per-channel means of the sample match the full training set's (to 0.01);
    # a wrong reshape mixes the red, green and blue planes and misses by more.
    assert np.allclose((train_x / 255).mean(axis=(0, 2, 3)), CIFAR10_MEAN, atol=0.01)
    # The folder itself is accepted as data_dir too.
    same_x, same_y, _, _ = load_cifar10(cifar_sample / "cifar-10-batches-py")
    assert np.array_equal(same_x, train_x) and np.array_equal(same_y, train_y)
    text_x, _, _, text_y = cifar10.read_cifar10_folder(str(cifar_sample / "cifar-10-batches-py"))  # a text path
    assert np.array_equal(text_x, train_x) and np.array_equal(text_y, test_y)


def test_normalisation_constants_are_the_statistics_of_the_real_images(cifar_sample):
    """CIFAR10_MEAN and CIFAR10_STD are the per-channel mean and standard deviation of all training pixels
    (/255). The 5,085 real images of the sample give them to within 0.003; the often copied std
    (0.2023, 0.1994, 0.2010) -- the mean of the per-image standard deviations -- misses by over 0.04."""
    train_x = np.concatenate([read_batch(cifar_sample / "cifar-10-batches-py" / name)[0] for name in FILES[:5]])
    pixels = train_x.transpose(1, 0, 2, 3).reshape(3, -1).astype(np.float32)
    mean, std = pixels.mean(axis=1) / 255, pixels.std(axis=1) / 255
    np.testing.assert_allclose(CIFAR10_MEAN, mean, atol=0.005)
    np.testing.assert_allclose(CIFAR10_STD, std, atol=0.005)
    assert np.abs(np.array([0.2023, 0.1994, 0.2010]) - std).min() > 0.04  # the tolerance tells them apart


def test_class_names_are_the_official_label_names_in_order(cifar_sample):
    meta = cifar10._unpickle(cifar_sample / "cifar-10-batches-py" / "batches.meta")
    assert CIFAR10_CLASSES == tuple(name.decode() for name in meta[b"label_names"])
    assert get_dataset("cifar10", cifar_sample).classes == CIFAR10_CLASSES


def test_cache_dir_from_environment(cifar_sample, monkeypatch):
    monkeypatch.setenv("MINISNN_DATA", str(cifar_sample))
    assert default_data_dir() == cifar_sample
    assert load_cifar10()[2].shape == (517, 3, 32, 32)


def test_missing_data_explains_manual_steps(tmp_path):
    with pytest.raises(DatasetError) as err:
        load_cifar10(tmp_path)
    text = str(err.value)
    assert str(tmp_path) in text and cifar10.CIFAR10_URL in text and cifar10.CIFAR10_MD5 in text
    assert "--data-dir" in text


def test_a_folder_missing_some_batches_names_them_all_not_a_corrupt_file(tmp_path):
    folder, _ = make_folder(tmp_path)
    (folder / "test_batch").unlink()
    (folder / "data_batch_2").unlink()
    with pytest.raises(DatasetError) as err:
        load_cifar10(tmp_path)
    text = str(err.value)
    assert text.startswith(f"{folder} lacks data_batch_2, test_batch: a CIFAR-10 folder holds data_batch_1")
    assert "corrupt" not in text


# ------------------------------------------------------------------ corrupt and unsafe files
def test_truncated_batch_names_the_file(cifar_sample, tmp_path):
    folder, _ = make_folder(tmp_path)
    real = (cifar_sample / "cifar-10-batches-py" / "data_batch_3").read_bytes()
    (folder / "data_batch_3").write_bytes(real[:len(real) // 2])
    with pytest.raises(DatasetError, match="data_batch_3.*truncated"):
        load_cifar10(tmp_path)


def test_corrupted_batch_names_the_file(cifar_sample, tmp_path):
    real = bytearray((cifar_sample / "cifar-10-batches-py" / "test_batch").read_bytes())
    real[:64] = b"\xff" * 64
    path = tmp_path / "test_batch"
    path.write_bytes(bytes(real))
    with pytest.raises(DatasetError, match="test_batch"):
        read_batch(path)


@pytest.mark.parametrize("content, problem", [
    ({b"data": np.zeros((2, 3072), np.uint8)}, "got keys \\[\"b'data'\"\\]"),  # the keys it has
    ([1, 2, 3], "got list$"),
    ({b"data": np.zeros((2, 3000), np.uint8), b"labels": [0, 1]}, "shape"),
    ({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, "uint8"),
    ({b"data": [[0] * 3072] * 2, b"labels": [0, 1]}, "uint8"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, "0..9"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, -1]}, "0..9"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1, 2]}, "labels"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": ["a", "b"]}, "labels"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [[0], [1, 2]]}, "labels"),
    ({b"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1]}, "keys"),
])
def test_wrong_content_is_refused(tmp_path, content, problem):
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps(content, protocol=3))
    with pytest.raises(DatasetError, match=problem) as err:
        read_batch(path)
    assert str(path) in str(err.value)


class WritesFile:
    """Unpickling this with plain pickle runs exec, which writes the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"with open({self.marker!r}, 'w') as f: f.write('pwned')",)


class RunsShell:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


@pytest.mark.parametrize("attack", [WritesFile, RunsShell])
def test_malicious_pickle_is_refused_and_not_executed(tmp_path, attack):
    marker = tmp_path / "executed"
    payload = pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": attack(marker)}, protocol=3)
    path = tmp_path / "data_batch_1"
    path.write_bytes(payload)
    with pytest.raises(DatasetError, match="forbidden global") as err:
        read_batch(path)
    assert str(path) in str(err.value)
    assert not marker.exists()
    if attack is WritesFile:  # the payload is real: plain pickle does run it
        pickle.loads(payload)
        assert marker.read_text() == "pwned"


# The globals an official batch names (and a NumPy 2 pickle of one): nothing else may be looked up.
ARRAY_GLOBALS = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                 ("numpy", "ndarray"), ("numpy", "dtype")}


def global_lookups():
    """(module, name) pairs a crafted pickle might name: every public and private name of builtins and
    numpy (as both spell their modules), of numpy's multiarray module, and the array globals' own names
    under other modules."""
    import builtins
    from numpy._core import multiarray
    names = {"builtins": dir(builtins), "__builtin__": dir(builtins), "numpy": dir(np),
             "numpy.core.multiarray": dir(multiarray), "numpy._core.multiarray": dir(multiarray),
             "numpy.lib.npyio": ["load", "save", "savez", "loadtxt"], "numpy.lib.format": ["read_array"]}
    pairs = {(module, name) for module, listed in names.items() for name in listed}
    for module in list(names) + ["os", "posix", "subprocess", "pickle", "copyreg", "copy_reg", "_codecs"]:
        pairs.update((module, name) for _, name in ARRAY_GLOBALS)
    return sorted(pairs - ARRAY_GLOBALS)


def short_string(text):
    """The pickle opcode SHORT_BINUNICODE pushing ``text``."""
    return b"\x8c" + bytes([len(text.encode())]) + text.encode()


def test_every_global_but_the_array_builders_is_refused_by_name():
    pairs = global_lookups()
    assert len(pairs) > 1000 and ("numpy", "save") in pairs and ("builtins", "eval") in pairs
    for module, name in pairs:
        for payload in (f"c{module}\n{name}\n.".encode(),  # GLOBAL (protocols 0-3)
                        b"\x80\x04" + short_string(module) + short_string(name) + b"\x93."):  # STACK_GLOBAL (4+)
            with pytest.raises(pickle.UnpicklingError) as err:
                cifar10.SafeUnpickler(io.BytesIO(payload), encoding="bytes").load()
            assert str(err.value).startswith(f"forbidden global {module}.{name}: "), (module, name, str(err.value))


def test_the_array_builders_are_numpys_own():
    from numpy._core.multiarray import _reconstruct
    for module, name in ARRAY_GLOBALS:
        found = cifar10.SafeUnpickler(io.BytesIO(f"c{module}\n{name}\n.".encode())).load()
        assert found is {"_reconstruct": _reconstruct, "ndarray": np.ndarray, "dtype": np.dtype}[name]


class Calls:
    """Unpickling this with plain pickle calls function(*args)."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def crafted_batch(tmp_path, labels):
    """A batch whose b'data' is right and whose b'labels' entry runs a call while it is unpickled."""
    path = tmp_path / "data_batch_1"
    write_batch(path, np.zeros((1, 3072), np.uint8), labels)
    return path


def test_a_batch_calling_numpy_save_is_refused_before_it_writes_anything(tmp_path):
    target = tmp_path / "planted.npy"
    path = crafted_batch(tmp_path, Calls(np.save, str(target), np.arange(3)))
    with pytest.raises(DatasetError, match="forbidden global numpy.save") as err:
        read_batch(path)
    assert str(path) in str(err.value)
    assert not target.exists()
    pickle.loads(path.read_bytes())  # the payload is real: plain pickle writes the file
    assert np.array_equal(np.load(target), np.arange(3))


def test_a_batch_calling_numpy_load_with_pickles_allowed_is_refused_before_it_runs_anything(tmp_path):
    marker = tmp_path / "executed"
    inner = tmp_path / "inner.pkl"  # a pickle that numpy.load(..., allow_pickle=True) would run
    inner.write_bytes(pickle.dumps(WritesFile(marker), protocol=3))
    path = crafted_batch(tmp_path, Calls(np.load, str(inner), None, True))  # load(file, mmap_mode, allow_pickle)
    with pytest.raises(DatasetError, match="forbidden global numpy.load"):
        read_batch(path)
    assert not marker.exists()
    pickle.loads(path.read_bytes())  # the payload is real: plain pickle runs the inner file's exec
    assert marker.read_text() == "pwned"


# ------------------------------------------------------------------ archive: MD5 first, safe extraction
def test_placed_archive_with_wrong_md5_is_not_extracted(tmp_path):
    archive, _ = make_archive(tmp_path)
    with pytest.raises(DatasetError, match="MD5"):
        load_cifar10(archive.parent)
    assert not (archive.parent / "cifar-10-batches-py").exists()


def test_placed_archive_with_right_md5_is_extracted(tmp_path, monkeypatch):
    archive, md5 = make_archive(tmp_path)
    monkeypatch.setattr(cifar10, "CIFAR10_MD5", md5)
    train_x, train_y, test_x, test_y = load_cifar10(archive.parent)
    assert train_x.shape == (30, 3, 32, 32) and test_x.shape == (6, 3, 32, 32)
    assert (archive.parent / "cifar-10-batches-py" / "batches.meta").exists()


@pytest.mark.parametrize("bad_name", ["cifar-10-batches-py/../evil", "/tmp/evil", "evil", "cifar-10-batches-py/x"])
def test_extraction_refuses_unexpected_members(tmp_path, bad_name):
    archive, _ = make_archive(tmp_path, {"cifar-10-batches-py/data_batch_1": b"x", bad_name: b"evil"})
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(DatasetError, match="unexpected archive member"):
        extract_cifar10(archive, dest)
    assert list(dest.iterdir()) == [] and not (tmp_path / "evil").exists()


def test_extraction_creates_the_folder_it_extracts_into(tmp_path):
    archive, _ = make_archive(tmp_path)
    folder = extract_cifar10(archive, tmp_path / "new" / "cache")
    assert folder == tmp_path / "new" / "cache" / "cifar-10-batches-py"
    official = tmp_path / "src" / "cifar-10-batches-py"
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in official.iterdir())


def test_extraction_killed_midway_does_not_block_or_leak_into_the_next_one(tmp_path):
    archive, _ = make_archive(tmp_path)
    stale = tmp_path / "cache" / "cifar-10-batches-py.tmp"  # what an extraction killed midway leaves
    stale.mkdir(parents=True)
    (stale / "data_batch_1").write_bytes(b"half a file")
    folder = extract_cifar10(archive, tmp_path / "cache")
    official = tmp_path / "src" / "cifar-10-batches-py"
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in official.iterdir())
    assert (folder / "data_batch_1").read_bytes() == (official / "data_batch_1").read_bytes()
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["cifar-10-batches-py"]


def test_extraction_refuses_links(tmp_path):
    archive = tmp_path / "a.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(DatasetError, match="unexpected archive member"):
        extract_cifar10(archive, tmp_path)


# ------------------------------------------------------------------ download
def test_download_from_file_url_then_load(tmp_path, monkeypatch):
    archive, md5 = make_archive(tmp_path)
    monkeypatch.setattr(cifar10, "CIFAR10_URL", archive.as_uri())
    monkeypatch.setattr(cifar10, "CIFAR10_MD5", md5)
    cache = tmp_path / "cache"
    train_x, _, test_x, _ = load_cifar10(cache, download=True)
    assert train_x.shape == (30, 3, 32, 32) and test_x.shape == (6, 3, 32, 32)
    assert (cache / "cifar-10-python.tar.gz").read_bytes() == archive.read_bytes()
    assert not (cache / "cifar-10-python.tar.gz.part").exists()


def test_download_with_wrong_md5_is_deleted_and_not_extracted(tmp_path, monkeypatch):
    archive, _ = make_archive(tmp_path)
    monkeypatch.setattr(cifar10, "CIFAR10_URL", archive.as_uri())
    cache = tmp_path / "cache"
    with pytest.raises(DatasetError, match="MD5") as err:
        load_cifar10(cache, download=True)
    assert "--data-dir" in str(err.value)
    assert not any(cache.iterdir())  # no archive, no .part, no extracted folder


@pytest.mark.parametrize("kept", [1, 4321, 9999])
def test_download_resumes_a_partial_file(tmp_path, monkeypatch, kept):
    payload = np.random.default_rng(1).integers(0, 256, size=10_000, dtype=np.uint8).tobytes()
    dest = tmp_path / "file.bin"
    (tmp_path / "file.bin.part").write_bytes(payload[:kept])
    log = []
    monkeypatch.setattr(urllib.request, "urlopen", fake_server(payload, log=log))
    download_file("https://example.invalid/file.bin", dest, hashlib.md5(payload).hexdigest(), chunk_size=1000)
    assert log == [f"bytes={kept}-"]
    assert dest.read_bytes() == payload and not (tmp_path / "file.bin.part").exists()


@pytest.mark.parametrize("payload", [bytes(range(256)) * 40, b"x"], ids=["10240 bytes", "1 byte"])
def test_a_partial_file_that_already_holds_the_whole_download_is_finished_not_refetched(tmp_path, monkeypatch,
                                                                                        payload):
    # a download killed after its last byte but before the rename: the server answers the resume with 416
    dest = tmp_path / "file.bin"
    (tmp_path / "file.bin.part").write_bytes(payload)
    log = []
    monkeypatch.setattr(urllib.request, "urlopen", fake_server(payload, log=log))
    download_file("https://example.invalid/file.bin", dest, hashlib.md5(payload).hexdigest())
    assert log == [f"bytes={len(payload)}-"]
    assert dest.read_bytes() == payload and not (tmp_path / "file.bin.part").exists()


def test_a_download_makes_its_folders_and_returns_the_files_path(tmp_path, monkeypatch):
    payload = bytes(range(256)) * 4
    dest = tmp_path / "new" / "cache" / "file.bin"
    monkeypatch.setattr(urllib.request, "urlopen", fake_server(payload))
    assert download_file("https://example.invalid/file.bin", dest, hashlib.md5(payload).hexdigest()) == dest
    assert dest.read_bytes() == payload


def test_nothing_is_downloaded_unless_asked(tmp_path, monkeypatch):
    def no_network(request, timeout=None):
        raise AssertionError("a download was started without download=True")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    for call in (load_cifar10, cifar10.cifar10_folder):
        with pytest.raises(DatasetError, match="To install CIFAR-10 by hand"):
            call(tmp_path)


def test_a_corrupt_archive_is_an_error_naming_it_and_leaves_no_folder(tmp_path):
    archive = tmp_path / "cifar-10-python.tar.gz"
    archive.write_bytes(b"\x1f\x8b" + b"not really gzip" * 10)
    with pytest.raises(DatasetError, match=f"{archive}: cannot extract"):
        extract_cifar10(archive, tmp_path / "out")
    assert not (tmp_path / "out" / "cifar-10-batches-py").exists()


def test_a_download_passes_its_timeout_and_an_http_error_is_named(tmp_path, monkeypatch):
    payload, seen = b"x" * 100, []

    def server(request, timeout=None):
        seen.append(timeout)
        return fake_server(payload)(request, timeout)

    monkeypatch.setattr(urllib.request, "urlopen", server)
    download_file("https://example.invalid/file.bin", tmp_path / "f.bin", hashlib.md5(payload).hexdigest(), timeout=7)
    assert seen == [7]  # a stalled server gives up after it, never hangs

    def missing(request, timeout=None):
        raise urllib.error.HTTPError(request.full_url, 404, "Not Found", {}, None)

    monkeypatch.setattr(urllib.request, "urlopen", missing)
    with pytest.raises(DatasetError, match="download of https://example.invalid/g.bin failed: HTTP 404 Not Found"):
        download_file("https://example.invalid/g.bin", tmp_path / "g.bin", "0" * 32)


def test_a_416_to_a_fresh_download_is_an_http_error_naming_it(tmp_path, monkeypatch):
    # with no partial file there is no range to be unsatisfiable: a 416 is the server's error, not "done"
    def refusing(request, timeout=None):
        raise urllib.error.HTTPError(request.full_url, 416, "Range Not Satisfiable", {}, None)

    monkeypatch.setattr(urllib.request, "urlopen", refusing)
    with pytest.raises(DatasetError, match="HTTP 416"):
        download_file("https://example.invalid/file.bin", tmp_path / "file.bin", "0" * 32)
    assert list(tmp_path.iterdir()) == []


def test_download_restarts_when_server_ignores_range(tmp_path, monkeypatch):
    payload = bytes(range(256)) * 40
    dest = tmp_path / "file.bin"
    (tmp_path / "file.bin.part").write_bytes(b"garbage")
    monkeypatch.setattr(urllib.request, "urlopen", fake_server(payload, honour_range=False))
    download_file("https://example.invalid/file.bin", dest, hashlib.md5(payload).hexdigest())
    assert dest.read_bytes() == payload


def test_resumed_download_with_bad_prefix_fails_md5(tmp_path, monkeypatch):
    payload = bytes(range(256)) * 40
    part = tmp_path / "file.bin.part"
    part.write_bytes(b"\x00" * 100)  # wrong bytes: resuming after them cannot give the right MD5
    monkeypatch.setattr(urllib.request, "urlopen", fake_server(payload))
    with pytest.raises(DatasetError, match="MD5"):
        download_file("https://example.invalid/file.bin", tmp_path / "file.bin", hashlib.md5(payload).hexdigest())
    assert not part.exists() and not (tmp_path / "file.bin").exists()


def test_offline_download_keeps_partial_file_and_explains(tmp_path, monkeypatch):
    def offline(request, timeout=None):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    (tmp_path / "cifar-10-python.tar.gz.part").write_bytes(b"partial")
    with pytest.raises(DatasetError, match="no network") as err:
        load_cifar10(tmp_path, download=True)
    assert cifar10.CIFAR10_URL in str(err.value) and cifar10.CIFAR10_MD5 in str(err.value)
    assert (tmp_path / "cifar-10-python.tar.gz.part").read_bytes() == b"partial"


def test_a_download_shows_its_progress_in_bytes_and_clears_it_when_done(tmp_path, monkeypatch, capsys):
    """What the user sees on stderr: the file's name and the bytes so far out of the whole file, in kB; a
    download resumed from a part file starts at the bytes already there; the bar is gone once it is done."""
    payload = bytes(range(256)) * 40  # 10,240 bytes: "10.2k"
    md5 = hashlib.md5(payload).hexdigest()
    monkeypatch.setattr(urllib.request, "urlopen", fake_server(payload, response=SlowResponse))
    download_file("https://example.invalid/fresh.bin", tmp_path / "fresh.bin", md5, chunk_size=5120)
    frames = capsys.readouterr().err.split("\r")  # each redraw of the bar starts with a carriage return
    assert frames[1].startswith("downloading fresh.bin:   0%") and "| 0.00/10.2k [" in frames[1]
    assert "?B/s" in frames[1]  # a speed in bytes per second
    assert any("100%" in f and "| 10.2k/10.2k [" in f for f in frames[2:])  # it counts every byte it writes
    assert frames[-1] == "" and frames[-2].strip() == "" and "\n" not in "".join(frames)  # cleared, not kept
    (tmp_path / "resumed.bin.part").write_bytes(payload[:4096])
    monkeypatch.setattr(urllib.request, "urlopen", fake_server(payload))
    download_file("https://example.invalid/resumed.bin", tmp_path / "resumed.bin", md5)
    first = capsys.readouterr().err.split("\r")[1]
    assert first.startswith("downloading resumed.bin:  40%") and "| 4.10k/10.2k [" in first
    assert (tmp_path / "resumed.bin").read_bytes() == payload


def test_a_failed_download_says_whether_a_partial_file_is_kept(tmp_path, monkeypatch):
    def offline(request, timeout=None):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DatasetError, match=r"no network> \(nothing was downloaded\)$"):
        download_file("https://example.invalid/f.bin", tmp_path / "f.bin", "0" * 32)
    (tmp_path / "f.bin.part").write_bytes(b"")  # an empty part file holds nothing either
    with pytest.raises(DatasetError, match=r"\(nothing was downloaded\)$"):
        download_file("https://example.invalid/f.bin", tmp_path / "f.bin", "0" * 32)
    (tmp_path / "f.bin.part").write_bytes(b"12345")
    with pytest.raises(DatasetError, match=r"\(the partial file .*f\.bin\.part is kept and resumed next time\)$"):
        download_file("https://example.invalid/f.bin", tmp_path / "f.bin", "0" * 32)
    assert (tmp_path / "f.bin.part").read_bytes() == b"12345"


def test_download_and_extraction_take_paths_given_as_text(tmp_path, monkeypatch):
    archive, md5 = make_archive(tmp_path)
    monkeypatch.setattr(urllib.request, "urlopen", fake_server(archive.read_bytes()))
    dest = str(tmp_path / "cache" / "cifar-10-python.tar.gz")
    assert download_file("https://example.invalid/a.tar.gz", dest, md5) == tmp_path / "cache" / archive.name
    folder = extract_cifar10(dest, str(tmp_path / "cache"))
    assert folder == tmp_path / "cache" / "cifar-10-batches-py" and len(read_batch(str(folder / "test_batch"))[1]) == 6


def test_cifar10_downloads_give_a_stalled_server_30_seconds(tmp_path, monkeypatch):
    archive, md5 = make_archive(tmp_path)
    monkeypatch.setattr(cifar10, "CIFAR10_MD5", md5)
    seen = []

    def server(request, timeout=None):
        seen.append(timeout)
        return fake_server(archive.read_bytes())(request, timeout)

    monkeypatch.setattr(urllib.request, "urlopen", server)
    assert load_cifar10(tmp_path / "cache", download=True)[2].shape == (6, 3, 32, 32)
    assert seen == [30]


def members_of_folder(root):
    """{name: bytes} of a tiny valid folder, as make_archive takes them."""
    folder, _ = make_folder(root)
    return {f"cifar-10-batches-py/{p.name}": p.read_bytes() for p in folder.iterdir()}


def tar_with_folders(path, members, folders):
    """A gzip tar holding the folder entries ``folders`` first (as the official archive does), then ``members``."""
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        for name in folders:
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


def test_extraction_takes_the_official_folder_entry_and_refuses_any_other_folder_or_a_missing_batch(tmp_path):
    members = members_of_folder(tmp_path / "src")
    official = tar_with_folders(tmp_path / "official.tar.gz", members, ["cifar-10-batches-py/"])
    folder = extract_cifar10(official, tmp_path / "ok")
    assert sorted(p.name for p in folder.iterdir()) == sorted(name.split("/")[1] for name in members)
    for other in ("cifar-10-batches-py/extra/", "elsewhere/"):
        odd = tar_with_folders(tmp_path / "odd.tar.gz", members, ["cifar-10-batches-py/", other])
        with pytest.raises(DatasetError, match=f"unexpected archive member '{other.rstrip('/')}'"):
            extract_cifar10(odd, tmp_path / "odd")
    plain = {**members, "cifar-10-batches-py": b"a file where the folder belongs"}
    with pytest.raises(DatasetError, match="unexpected archive member 'cifar-10-batches-py'"):
        extract_cifar10(tar_with_folders(tmp_path / "file.tar.gz", plain, []), tmp_path / "file")
    del members["cifar-10-batches-py/test_batch"], members["cifar-10-batches-py/data_batch_2"]
    short = tar_with_folders(tmp_path / "short.tar.gz", members, ["cifar-10-batches-py/"])
    with pytest.raises(DatasetError, match=f"{short}: archive lacks data_batch_2, test_batch$"):
        extract_cifar10(short, tmp_path / "short")
    assert list((tmp_path / "short").iterdir()) == []  # no folder, complete or not, and no temporary one


def test_the_default_data_folder_is_the_users_cache_unless_minisnn_data_is_set(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("MINISNN_DATA", raising=False)
    assert default_data_dir() == tmp_path / ".cache" / "minisnn"
    monkeypatch.setenv("MINISNN_DATA", "")  # set but empty: as if unset
    assert default_data_dir() == tmp_path / ".cache" / "minisnn"
    monkeypatch.setenv("MINISNN_DATA", str(tmp_path / "data"))
    assert default_data_dir() == tmp_path / "data"


# ------------------------------------------------------------------ transforms
def test_normalize_uint8_and_float():
    images = np.full((2, 3, 4, 4), 128, np.uint8)
    out = normalize(images, (0.5, 0.25, 0.0), (0.5, 0.25, 1.0))
    assert out.dtype == np.float32 and out.shape == images.shape
    expected = (128 / 255 - np.array([0.5, 0.25, 0.0])) / np.array([0.5, 0.25, 1.0])
    assert np.allclose(out[0, :, 0, 0], expected, atol=1e-6)
    floats = np.full((1, 1, 2, 2), 0.75, np.float64)
    out = normalize(floats, (0.25,), (0.5,))
    assert np.allclose(out, 1.0) and out.dtype == np.float32
    with pytest.raises(ValueError, match="per channel"):
        normalize(images, (0.5,), (0.5,))
    with pytest.raises(TypeError, match="uint8"):
        normalize(images.astype(np.int32), (0, 0, 0), (1, 1, 1))


@settings(max_examples=25)
@given(n=st.integers(1, 6), c=st.integers(1, 3), h=st.integers(1, 7), w=st.integers(1, 7),
       padding=st.integers(0, 4), seed=seeds)
def test_random_crop_cuts_a_window_of_the_padded_image(n, c, h, w, padding, seed):
    rng = np.random.default_rng(seed)
    batch = rng.integers(1, 256, size=(n, c, h, w), dtype=np.uint8)  # no zeros: padding is recognisable
    out = random_crop(batch, padding, np.random.default_rng(seed + 1))
    assert out.shape == batch.shape and out.dtype == batch.dtype
    padded = np.pad(batch, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    for i in range(n):
        windows = [(dy, dx) for dy in range(2 * padding + 1) for dx in range(2 * padding + 1)
                   if np.array_equal(out[i], padded[i, :, dy:dy + h, dx:dx + w])]
        assert windows, f"image {i} is not a window of its padded original"


def test_random_crop_offsets_differ_per_image_and_padding_zero_is_identity():
    batch = np.random.default_rng(0).integers(1, 256, size=(64, 3, 8, 8), dtype=np.uint8)
    out = random_crop(batch, 4, np.random.default_rng(1))
    zeros_per_image = (out == 0).sum(axis=(1, 2, 3))
    assert len(np.unique(zeros_per_image)) > 3  # different amounts of padding visible
    assert np.array_equal(random_crop(batch, 0, np.random.default_rng(1)), batch)
    with pytest.raises(TypeError, match="Generator"):
        random_crop(batch, 4, 0)
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        random_crop(batch[0], 4, np.random.default_rng(0))


def test_the_standard_augmentation_shifts_each_image_by_up_to_4_pixels_each_way():
    # the usual CIFAR recipe: pad by 4, crop 32 x 32 at random, mirror half; a lit pixel shows the shift
    batch = np.zeros((400, 1, 32, 32), np.uint8)
    batch[:, 0, 16, 16] = 255
    out = crop_and_flip(batch, np.random.default_rng(3))
    _, _, rows, cols = np.nonzero(out)
    assert len(rows) == len(batch)
    column_shifts = np.minimum(np.abs(cols - 16), np.abs(31 - cols - 16))  # either side of a mirror
    assert set(rows - 16) == set(range(-4, 5)) and column_shifts.max() == 4


def test_random_flip_mirrors_about_half_and_is_its_own_inverse():
    batch = np.random.default_rng(0).integers(0, 256, size=(200, 2, 3, 5), dtype=np.uint8)
    out = random_flip(batch, np.random.default_rng(7))
    flipped = np.array([np.array_equal(o, b[..., ::-1]) for o, b in zip(out, batch)])
    kept = np.array([np.array_equal(o, b) for o, b in zip(out, batch)])
    assert np.all(flipped | kept) and 60 < flipped.sum() < 140
    assert np.array_equal(random_flip(out, np.random.default_rng(7)), batch)
    with pytest.raises(TypeError, match="Generator"):
        random_flip(batch, 7)  # a seed where a Generator belongs: refused, not silently used


# ------------------------------------------------------------------ batch iteration
def small_iterator(seed=3, **kw):
    images = np.random.default_rng(0).integers(0, 256, size=(50, 3, 8, 8), dtype=np.uint8)
    return BatchIterator(images, np.arange(50), 8, shuffle=True, seed=seed, augment=crop_and_flip,
                         mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), **kw)


def test_batches_are_reproducible_and_resumable():
    first, second = small_iterator(), small_iterator()
    list(second.batches(0))  # iterating earlier epochs leaves no hidden state behind
    for epoch in (0, 1, 2):
        a, b = list(first.batches(epoch)), list(second.batches(epoch))
        assert len(a) == len(first) == 7
        for (xa, ya), (xb, yb) in zip(a, b):
            assert np.array_equal(xa, xb) and np.array_equal(ya, yb)
        resumed = list(first.batches(epoch, start=4))
        assert len(resumed) == 3
        for (xa, ya), (xr, yr) in zip(a[4:], resumed):
            assert np.array_equal(xa, xr) and np.array_equal(ya, yr)
    x, y = next(first.batches(0))
    assert x.dtype == np.float32 and x.shape == (8, 3, 8, 8) and y.dtype == np.int64


def test_each_epoch_is_a_new_permutation_of_all_samples():
    it = small_iterator()
    orders = [np.concatenate([y for _, y in it.batches(e)]) for e in range(3)]
    for order in orders:
        assert sorted(order) == list(range(50))
    assert not np.array_equal(orders[0], orders[1])
    other = np.concatenate([y for _, y in small_iterator(seed=4).batches(0)])
    assert not np.array_equal(orders[0], other)


def test_augmentation_differs_between_steps_and_epochs():
    image = np.random.default_rng(0).integers(1, 256, size=(1, 3, 8, 8), dtype=np.uint8)
    it = BatchIterator(np.repeat(image, 40, axis=0), np.zeros(40, np.int64), 1, augment=crop_and_flip)
    seen = {x.tobytes() for epoch in (0, 1) for x, _ in it.batches(epoch)}
    assert len(seen) > 30  # 81 crops x 2 flips: identical draws would give one distinct batch


def test_drop_last_and_ordered_iteration():
    it = small_iterator(drop_last=True)
    assert len(it) == 6 and sum(len(y) for _, y in it.batches(0)) == 48
    plain = BatchIterator(np.zeros((10, 1, 2, 2), np.float32), np.arange(10), 4)
    assert [list(y) for _, y in plain.batches()] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    with pytest.raises(ValueError, match="labels"):
        BatchIterator(np.zeros((10, 1, 2, 2)), np.arange(9), 4)


def test_a_data_sets_loaders_training_shuffled_by_its_seed_test_in_order_both_may_drop_the_last_batch():
    digits = get_dataset("digits")
    orders = [digits.loader("train", 32, seed=seed).order(0) for seed in range(3)]
    assert len({tuple(order) for order in orders}) == 3
    assert sorted(orders[0]) == list(range(len(digits.train_y))) and list(orders[0]) != sorted(orders[0])
    test = digits.loader("test", 100, seed=5)
    assert list(test.order(0)) == list(range(360))
    assert len(test) == 4 and len(digits.loader("test", 100, drop_last=True)) == 3
    assert len(digits.loader("train", 100, drop_last=True)) == 1437 // 100
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        digits.loader("val", 100)


def test_batch_iterator_takes_flat_feature_rows_and_a_data_set_is_read_only(cifar_sample):
    it = BatchIterator(np.arange(12, dtype=np.float32).reshape(6, 2), np.arange(6), 4)
    assert [x.shape for x, _ in it.batches()] == [(4, 2), (2, 2)]
    with pytest.raises(ValueError, match="need images"):
        BatchIterator(np.arange(6, dtype=np.float32), np.arange(6), 4)
    data = get_dataset("cifar10", cifar_sample)
    with pytest.raises(dataclasses.FrozenInstanceError):
        data.mean = (0.5, 0.5, 0.5)  # a loader made earlier would normalise with the old values


def test_batches_refuse_a_negative_epoch_or_start_and_normalize_takes_one_image():
    it = BatchIterator(np.zeros((4, 1, 2, 2), np.float32), np.arange(4), 2)
    for epoch, start in ((-1, 0), (0, -1), (0.5, 0)):
        with pytest.raises(ValueError, match="epoch and start must be non-negative ints"):
            next(it.batches(epoch, start))
    assert normalize(np.full((2, 1, 1), 255, np.uint8), (0.0, 0.5), (1.0, 0.5)).tolist() == [[[1.0]], [[1.0]]]


def test_batch_iterator_needs_mean_and_std_together():
    images, labels = np.zeros((4, 1, 2, 2), np.float32), np.arange(4)
    for mean, std in (((0.5,), None), (None, (0.5,))):
        with pytest.raises(ValueError, match="give both mean and std, or neither"):
            BatchIterator(images, labels, 2, mean=mean, std=std)


def test_normalize_takes_nested_lists_and_random_crop_refuses_a_padding_that_is_no_count():
    assert normalize([[[[1.0]]]], (0.5,), (0.25,)).tolist() == [[[[2.0]]]]
    batch = np.ones((2, 1, 4, 4), np.uint8)
    for bad in (-1, 1.0, 1.5):
        with pytest.raises(ValueError, match="padding must be a non-negative int"):
            random_crop(batch, bad, np.random.default_rng(0))


def test_a_rank_outside_its_group_gets_no_rows():
    from minisnn.data.shards import shard_rows
    assert [shard_rows(10, k, 3) for k in range(3)] == [slice(0, 3), slice(3, 6), slice(6, 10)]
    for rank, size in ((3, 3), (-1, 3), (0, 0), (0, 1.0)):
        with pytest.raises(ValueError, match="need 0 <= rank < size"):
            shard_rows(10, rank, size)


# ------------------------------------------------------------------ digits and the data-set description
def test_digits_split_and_statistics():
    train_x, train_y, test_x, test_y = load_digits()
    assert train_x.shape == (1437, 1, 8, 8) and test_x.shape == (360, 1, 8, 8)
    assert train_x.dtype == np.float32 and train_x.min() == 0.0 and train_x.max() == 1.0
    assert set(np.unique(test_y)) == set(range(10)) and train_y.dtype == np.int64
    assert np.array_equal(load_digits()[3], test_y)  # fixed split
    assert np.allclose(train_x.mean(), DIGITS_MEAN, atol=1e-4) and np.allclose(train_x.std(), DIGITS_STD, atol=1e-4)


def test_digits_without_sklearn_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(DatasetError, match=r"pip install -e '\.\[digits\]'"):
        load_digits()


def test_get_dataset_describes_each_data_set(cifar_sample):
    digits = get_dataset("digits")
    assert (digits.num_classes, digits.in_channels, digits.image_size, digits.augment) == (10, 1, (8, 8), None)
    x, _ = next(digits.loader("train", 32).batches())
    assert x.shape == (32, 1, 8, 8) and abs(float(x.mean())) < 0.5
    cifar = get_dataset("cifar10", cifar_sample)
    assert (cifar.num_classes, cifar.in_channels, cifar.image_size) == (10, 3, (32, 32))
    assert cifar.augment is crop_and_flip
    test = cifar.loader("test", 100)
    assert len(test) == 6 and np.array_equal(next(test.batches())[1], cifar.test_y[:100])
    with pytest.raises(ValueError, match="unknown data set"):
        get_dataset("imagenet")
