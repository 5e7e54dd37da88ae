"""The image-folder data set (ImageNet's layout) on small generated folders, and the ImageNet ResNet-34."""
import dataclasses
import multiprocessing
import os
import signal
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("PIL", reason="image folders need Pillow: pip install -e '.[imagenet]'")
from PIL import Image  # noqa: E402

from minisnn.cli import main  # noqa: E402
from minisnn.core import Tensor, no_grad  # noqa: E402
from minisnn.data import DatasetError, get_dataset, normalize  # noqa: E402
from minisnn.data import imagefolder  # noqa: E402
from minisnn.data.imagefolder import (CROP_RATIO, ImageBatches, centre_box, load_image, load_image_folder,  # noqa: E402
                                     random_resized_box)
from minisnn.models import build_model  # noqa: E402

CLASSES = ("ant", "bee", "cow")


def gradient_image(width, height, shade):
    """RGB image whose red channel grows left to right, green top to bottom, blue = shade."""
    x = np.linspace(0, 255, width)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height)[:, None].repeat(width, 1)
    return Image.fromarray(np.stack([x, y, np.full_like(x, shade)], axis=2).astype(np.uint8))


def make_folder(root, per_class=(4, 2)):
    """root/{train,val}/{ant,bee,cow}/*: images of different sizes, JPEG and PNG."""
    for split, count in zip(("train", "val"), per_class):
        for label, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                image = gradient_image(20 + 7 * i, 14 + 5 * label, 80 * label)
                image.save(folder / (f"{i}.JPEG" if i % 2 == 0 else f"{i}.png"))
    return root


@pytest.fixture
def folder(tmp_path):
    return make_folder(tmp_path / "images")


def test_classes_labels_and_batches(folder):
    data = get_dataset("imagefolder", data_dir=folder, image_size=12, workers=0)
    assert data.classes == CLASSES and data.num_classes == 3 and data.in_channels == 3
    assert data.image_size == (12, 12) and len(data.train_y) == 12 and len(data.test_y) == 6
    assert list(data.train_y) == [0] * 4 + [1] * 4 + [2] * 4
    assert all(Path(p).parent.name == CLASSES[y] for p, y in zip(data.test_x, data.test_y))
    loader = data.loader("train", 5, seed=3)
    batches = list(loader.batches(epoch=0))
    assert len(loader) == 3 and [len(y) for _, y in batches] == [5, 5, 2]
    x, y = batches[0]
    assert x.dtype == np.float32 and x.shape == (5, 3, 12, 12) and y.dtype == np.int64
    assert sorted(np.concatenate([y for _, y in batches])) == sorted(data.train_y)


def test_evaluation_is_the_centre_crop_and_training_crops_and_mirrors(folder):
    data = get_dataset("imagefolder", data_dir=folder, image_size=8, workers=0)
    raw = dataclasses.replace(data, mean=(0, 0, 0), std=(1, 1, 1))  # pixel values / 255
    x, _ = next(raw.loader("test", 6).batches())
    red = x[:, 0].mean(axis=1)  # red = column / (width - 1) in the original images
    for row, path in zip(red, data.test_x):
        width, height = Image.open(path).size
        left, _, right, _ = centre_box(width, height, 8)
        centres = left + (np.arange(8) + 0.5) * (right - left) / 8 - 0.5  # original column under each pixel
        np.testing.assert_allclose(row[1:-1], (centres / (width - 1))[1:-1], atol=0.02)
    np.testing.assert_array_equal(x, next(raw.loader("test", 6).batches())[0])  # deterministic
    orientations, widths = set(), set()
    loader = raw.loader("train", 12, seed=0)
    for epoch in range(4):
        x, _ = next(loader.batches(epoch))
        red = x[:, 0].mean(axis=1)
        orientations |= {bool(np.all(np.diff(r) >= 0)) for r in red}
        widths |= {round(float(r[-1] - r[0]), 2) for r in red}  # the crop's share of the image's width
    assert orientations == {True, False}  # mirrored about half the time
    assert len(widths) > 10  # crops of many sizes


def test_batches_depend_on_seed_epoch_and_image_only(folder):
    data = get_dataset("imagefolder", data_dir=folder, image_size=8, workers=0)
    loader = data.loader("train", 5, seed=7)
    whole = list(loader.batches(epoch=1))
    again = list(data.loader("train", 5, seed=7).batches(epoch=1))
    for (x, y), (x2, y2) in zip(whole, again):
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(y, y2)
    assert not np.array_equal(next(loader.batches(epoch=2))[0], whole[0][0])
    for (x, _), (x2, _) in zip(whole[1:], loader.batches(epoch=1, start=1)):  # resuming at step 1
        np.testing.assert_array_equal(x, x2)
    for K in (2, 3):  # data-parallel shards: the rows of each batch, the same crops
        parts = [list(loader.batches(1, shard=(k, K))) for k in range(K)]
        for step, (x, y) in enumerate(whole):
            np.testing.assert_array_equal(np.concatenate([p[step][0] for p in parts]), x)
            np.testing.assert_array_equal(np.concatenate([p[step][1] for p in parts]), y)


def test_the_training_order_follows_the_loaders_seed_and_the_test_order_is_the_folders(folder):
    data = get_dataset("imagefolder", data_dir=folder, image_size=8, workers=0)
    orders = [data.loader("train", 4, seed=seed).order(0) for seed in range(4)]
    assert len({tuple(order) for order in orders}) == 4
    assert list(data.loader("test", 4, seed=1).order(0)) == list(range(len(data.test_y)))


def test_bad_batch_sizes_splits_and_worker_counts_are_refused_and_one_image_per_batch_works(folder):
    data = get_dataset("imagefolder", data_dir=folder, image_size=8, workers=0)
    assert [len(y) for _, y in data.loader("test", 1).batches()] == [1] * 6
    for bad in (0, -1, 2.0):
        with pytest.raises(ValueError, match="batch_size must be a positive int"):
            data.loader("test", bad)
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        data.loader("val", 4)
    with pytest.raises(ValueError, match="workers must be a non-negative int"):
        ImageBatches(data.test_x, data.test_y, 4, size=8, train=False, workers=-1)
    with pytest.raises(ValueError, match="workers must be a non-negative int"):
        get_dataset("imagefolder", data_dir=folder, workers=-1)


def test_image_folders_without_pillow_say_how_to_install_it(folder, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "PIL", None)
    monkeypatch.setitem(sys.modules, "PIL.Image", None)
    with pytest.raises(DatasetError, match=r"image folders need Pillow: pip install -e '\.\[imagenet\]'"):
        get_dataset("imagefolder", data_dir=folder, workers=0)


def test_an_image_folder_is_read_only_and_its_images_are_224_pixels_unless_asked(folder):
    data = get_dataset("imagefolder", data_dir=folder, workers=0)
    assert data.image_size == (224, 224)
    with pytest.raises(dataclasses.FrozenInstanceError):
        data.size = 32  # a loader made earlier would disagree with the model built from the data set


def test_worker_processes_give_the_same_batches_and_report_a_corrupt_file_by_name(folder, monkeypatch):
    bad = folder / "train" / "bee" / "9.JPEG"
    good = folder / "train" / "bee" / "0.JPEG"
    data = get_dataset("imagefolder", data_dir=folder, image_size=8, workers=0)
    in_process = [x for x, _ in data.loader("train", 4, seed=1).batches(0)]
    # the workers start from a fresh interpreter ('spawn'), not from a copy of this process and its state (the
    # trainer's threads, MPI): a change made here after the start does not reach them
    monkeypatch.setattr(imagefolder, "load_image", lambda path, size, rng=None: np.zeros((3, size, size), np.uint8))
    in_workers = [x for x, _ in dataclasses.replace(data, workers=1).loader("train", 4, seed=1).batches(0)]
    assert len(in_process) == len(in_workers) == 3
    for a, b in zip(in_process, in_workers):
        np.testing.assert_array_equal(a, b)
    monkeypatch.undo()
    bad.write_bytes(good.read_bytes()[:200])  # a truncated JPEG
    data = get_dataset("imagefolder", data_dir=folder, image_size=8, workers=1)
    with pytest.raises(DatasetError, match=rf"{bad}: cannot decode this image"):
        list(data.loader("train", 4).batches())


@pytest.mark.parametrize("content", [b"", b"this is not a picture", b"\x89PNG\r\n\x1a\n" + b"\0" * 40])
def test_a_corrupt_image_is_an_error_naming_it(folder, content):
    bad = folder / "val" / "cow" / "broken.png"
    bad.write_bytes(content)
    data = get_dataset("imagefolder", data_dir=folder, image_size=8, workers=0)
    with pytest.raises(DatasetError, match=rf"{bad}: cannot decode this image .*replace or remove the file"):
        list(data.loader("test", 4).batches())


def test_a_file_that_is_not_an_image_is_an_error_naming_it(folder):
    stray = folder / "train" / "ant" / "notes.txt"
    stray.write_text("labels checked by hand")
    with pytest.raises(DatasetError, match=rf"{stray}: not an image file"):
        get_dataset("imagefolder", data_dir=folder)


def test_a_broken_link_is_an_error_naming_it_and_where_it_points(folder, tmp_path):
    link = folder / "train" / "ant" / "moved.png"
    link.symlink_to(tmp_path / "elsewhere" / "moved.png")
    with pytest.raises(DatasetError, match=rf"{link}: a link to {tmp_path / 'elsewhere' / 'moved.png'}, which does not "
                                           "exist; mend the link"):
        get_dataset("imagefolder", data_dir=folder)


def test_folder_layout_errors(folder, tmp_path):
    (folder / "val" / "yak").mkdir()
    with pytest.raises(DatasetError, match=r"class folders \['yak'\] are not among the 3 training classes"):
        get_dataset("imagefolder", data_dir=folder)
    with pytest.raises(DatasetError, match="image folder split not found"):
        get_dataset("imagefolder", data_dir=tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="needs --data-dir"):
        get_dataset("imagefolder")
    with pytest.raises(DatasetError, match="not downloaded"):
        get_dataset("imagefolder", data_dir=folder, download=True)


@settings(max_examples=200)
@given(st.integers(1, 400), st.integers(1, 400), st.integers(0, 2**32 - 1))
def test_random_resized_boxes_lie_inside_the_image(width, height, seed):
    left, top, right, bottom = random_resized_box(width, height, np.random.default_rng(seed))
    assert 0 <= left < right <= width and 0 <= top < bottom <= height
    ratio = (right - left) / (bottom - top)
    if (right - left, bottom - top) != (width, height) and min(right - left, bottom - top) > 10:
        assert CROP_RATIO[0] * 0.9 <= ratio <= CROP_RATIO[1] * 1.1


@pytest.mark.parametrize("width, height, box", [(1000, 10, (493, 0, 506, 10)), (10, 1000, (0, 493, 10, 506))])
def test_an_image_too_elongated_for_any_random_box_gives_the_largest_centred_box_of_the_nearest_ratio(width, height,
                                                                                                     box):
    # no box of 8 %..100 % of the area with ratio 3/4..4/3 fits: the ratio is clamped, 13 x 10 or 10 x 13,
    # centred: (1000 - 13) // 2 = 493
    assert random_resized_box(width, height, np.random.default_rng(0)) == box


def test_random_resized_boxes_take_every_aspect_ratio_of_the_range():
    rng = np.random.default_rng(0)
    boxes = [random_resized_box(400, 400, rng) for _ in range(200)]
    ratios = np.array([(right - left) / (bottom - top) for left, top, right, bottom in boxes])
    assert ratios.min() < 0.8 and ratios.max() > 1.25  # the range is 3/4 .. 4/3
    assert np.mean(ratios < 1) == pytest.approx(0.5, abs=0.15)  # log-uniform: as many tall as wide


def test_the_centre_box_is_the_central_square_of_the_resized_image():
    left, top, right, bottom = centre_box(300, 200, 224)  # shorter side 200 -> 256; 224 of 256 is 175 of 200
    assert right - left == pytest.approx(175) and bottom - top == pytest.approx(175)
    assert (left + right) / 2 == pytest.approx(150) and (top + bottom) / 2 == pytest.approx(100)


def test_cli_trains_on_an_image_folder_and_names_a_corrupt_file(folder, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MINISNN_THREADS", "1")
    args = ["train", "--dataset", "imagefolder", "--data-dir", str(folder), "--image-size", "16", "--workers", "0",
            "--model", "resnet_small", "--width", "4", "--blocks", "1", "-T", "2", "--batch-size", "6",
            "--epochs", "1", "--no-progress", "--optimizer", "adam", "--lr", "0.003"]
    assert main(args + ["--out", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "last.npz").is_file()
    bad = folder / "train" / "cow" / "3.png"
    bad.write_bytes(b"garbage")
    capsys.readouterr()
    assert main(args + ["--out", str(tmp_path / "run2")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: ") and str(bad) in err


def test_the_imagenet_resnet34_has_the_imagenet_stem():
    model = build_model("resnet34_imagenet", num_classes=1000)
    conv = model.stem[0].conv
    assert (conv.kernel_size, conv.stride, conv.padding) == ((7, 7), (2, 2), (3, 3)) and conv.out_channels == 64
    assert model.T == 6 and model.num_parameters() == 21_797_672  # torchvision's ResNet-34: 21,797,672
    small = build_model("resnet34_imagenet", num_classes=3, T=2)
    shapes = []
    small.layers[0].register_forward_hook(lambda module, inputs, output: shapes.append(inputs[0].shape))
    small.eval()
    with no_grad():
        logits = small(Tensor(np.random.default_rng(0).random((2, 3, 64, 64)).astype(np.float32)))
    assert logits.shape == (2, 3) and shapes == [(2, 2, 64, 16, 16)]  # 64 -> 32 (conv) -> 16 (pool)
    cifar_sized = build_model("resnet34")  # the existing ResNet-34 keeps its 3x3 stem and no pooling
    assert cifar_sized.stem[0].conv.kernel_size == (3, 3) and cifar_sized.stem_pool is None


def test_the_folders_loaders_take_its_worker_count_and_drop_the_last_batch_when_told(folder):
    data = get_dataset("imagefolder", data_dir=folder, image_size=8, workers=3)
    assert data.workers == 3 and data.loader("train", 5).workers == 3 and data.loader("test", 5).workers == 3
    for split, sizes in (("train", [5, 5]), ("test", [5])):  # 12 training and 6 test images
        loader = dataclasses.replace(data, workers=0).loader(split, 5, drop_last=True)
        assert [len(y) for _, y in loader.batches(0)] == sizes


def test_images_are_normalised_with_imagenets_published_statistics():
    # the per-channel mean and std every ImageNet recipe (and torchvision's models) normalise with
    from minisnn.data import imagefolder
    assert imagefolder.IMAGENET_MEAN == (0.485, 0.456, 0.406) and imagefolder.IMAGENET_STD == (0.229, 0.224, 0.225)


def test_a_folder_without_class_folders_or_without_images_is_an_error_saying_so(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(DatasetError, match=r"train: no class folders \(expected .*train/<class>/<image>\)"):
        load_image_folder(tmp_path, workers=0)
    (tmp_path / "train" / "ant").mkdir()
    with pytest.raises(DatasetError, match="train/ant: a training class folder without images"):
        load_image_folder(tmp_path, workers=0)


def test_a_validation_folder_whose_class_folders_are_all_empty_is_an_error_saying_so(folder):
    for class_dir in (folder / "val").iterdir():
        for image in class_dir.iterdir():
            image.unlink()
    with pytest.raises(DatasetError, match=r"val: no images in its class folders"):
        load_image_folder(folder, workers=0)


def test_a_link_to_an_image_is_read_as_that_image(folder, tmp_path):
    kept = tmp_path / "kept.png"
    (folder / "train" / "ant" / "1.png").rename(kept)
    (folder / "train" / "ant" / "1.png").symlink_to(kept)
    data = load_image_folder(folder, size=8, workers=0)
    assert len(data.train_y) == 12 and str(folder / "train" / "ant" / "1.png") in list(data.train_x)


def test_an_empty_training_class_folder_is_refused_naming_it_before_a_model_with_an_unlearnable_class_trains(folder):
    (folder / "train" / "dog").mkdir()  # e.g. a class whose archive was not unpacked
    with pytest.raises(DatasetError, match=r"train/dog: a training class folder without images.*remove the folder"):
        load_image_folder(folder, workers=0)


def test_a_flat_validation_folder_is_an_error_saying_to_sort_it_into_class_folders(folder):
    # ImageNet's validation images come as one flat folder of 50,000 JPEGs
    for class_dir in list((folder / "val").iterdir()):
        for image in class_dir.iterdir():
            image.rename(folder / "val" / f"{class_dir.name}_{image.name}")
        class_dir.rmdir()
    with pytest.raises(DatasetError, match=r"val: no class folders .*sort its images into one folder per class"):
        load_image_folder(folder, workers=0)


def test_bad_image_sizes_are_refused_and_one_pixel_images_work(folder):
    for bad in (0, -1, 8.0, "8"):
        with pytest.raises(ValueError, match="the image size must be a positive int"):
            load_image_folder(folder, size=bad, workers=0)
    x, _ = next(load_image_folder(folder, size=1, workers=0).loader("train", 4).batches())
    assert x.shape == (4, 3, 1, 1)


def test_an_image_folder_made_without_options_has_224_pixel_images_two_workers_and_crops_and_mirrors(folder):
    listed = load_image_folder(folder, size=8, workers=0)
    mine = imagefolder.ImageFolder("mine", listed.train_x, listed.train_y, listed.test_x, listed.test_y,
                                   listed.classes)
    for data in (load_image_folder(folder), get_dataset("imagefolder", data_dir=folder), mine):
        assert (data.size, data.workers, data.augment) == (224, 2, "crop-and-flip")
        assert (data.mean, data.std) == (imagefolder.IMAGENET_MEAN, imagefolder.IMAGENET_STD)
    np.testing.assert_array_equal(listed.loader("train", 5).order(0), listed.loader("train", 5, seed=0).order(0))


def test_image_batches_made_without_options_keep_the_stored_order_and_every_image_decoded_here(folder, monkeypatch):
    data = load_image_folder(folder, size=8, workers=0)
    monkeypatch.setattr(imagefolder, "ProcessPoolExecutor", None)  # no worker process may be started
    plain = ImageBatches(data.train_x, data.train_y, 5, size=8, train=True)
    told = ImageBatches(data.train_x, data.train_y, 5, size=8, train=True, shuffle=False, seed=0, workers=0,
                        drop_last=False)
    batches, expected = list(plain.batches()), list(told.batches(epoch=0, start=0, shard=(0, 1)))
    assert [len(y) for _, y in batches] == [5, 5, 2]
    np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), data.train_y)
    for (x, y), (x2, y2) in zip(batches, expected):
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(y, y2)


def test_one_images_training_crop_comes_from_its_own_documented_generator(folder):
    # the module's promise: image i of epoch e is cropped and mirrored by default_rng([seed, e, 1, i]), so one
    # image's crop can be reproduced (or shown) alone, without the loader
    data = load_image_folder(folder, size=8, workers=0)
    loader = data.loader("train", 12, seed=5)
    x, _ = next(loader.batches(epoch=2))
    for row, i in zip(x, loader.order(2)):
        alone = load_image(data.train_x[i], 8, np.random.default_rng([5, 2, 1, i]))
        np.testing.assert_array_equal(row, normalize(alone, data.mean, data.std))


def test_random_boxes_of_tiny_images_are_never_empty():
    for width, height in ((1, 1), (1, 2), (2, 1), (2, 2), (1, 3)):
        for seed in range(100):
            left, top, right, bottom = random_resized_box(width, height, np.random.default_rng(seed))
            assert 0 <= left < right <= width and 0 <= top < bottom <= height, (width, height, seed)


def test_a_random_box_can_be_any_size_from_one_pixel_to_a_whole_side():
    rng = np.random.default_rng(0)
    sizes = {(right - left, bottom - top) for left, top, right, bottom in
             (random_resized_box(4, 4, rng) for _ in range(300))}
    assert {w for w, _ in sizes} == {1, 2, 3, 4} and {h for _, h in sizes} == {1, 2, 3, 4}
    assert any(w == 4 and h < 4 for w, h in sizes) and any(h == 4 and w < 4 for w, h in sizes)


def test_an_image_no_random_box_fits_takes_ten_tries_before_the_centred_box():
    class Counting:  # a Generator that counts the boxes asked of it (two uniform draws each)
        def __init__(self):
            self.rng, self.draws = np.random.default_rng(0), 0

        def uniform(self, *args):
            self.draws += 1
            return self.rng.uniform(*args)

    rng = Counting()
    assert random_resized_box(1000, 10, rng) == (493, 0, 506, 10) and rng.draws == 2 * 10


class LazyPool:
    """Stands in for ProcessPoolExecutor in one process: a job runs when its result is asked for, or at a
    shutdown that neither cancels it nor leaves it behind -- as a pool's queued jobs do."""

    made = []

    def __init__(self, workers, mp_context=None):
        self.submitted, self.ran, self.joined = [], [], False
        LazyPool.made.append(self)

    def submit(self, fn, *args):
        pool = self

        class Job:
            def __init__(self):
                self.value, self.cancelled = None, False

            def result(self):
                if self.value is None:
                    pool.ran.append(self)
                    self.value = fn(*args)
                return self.value
        self.submitted.append(Job())
        return self.submitted[-1]

    def shutdown(self, wait=True, cancel_futures=False):
        for job in self.submitted:
            if job.value is None:
                job.cancelled = cancel_futures
                if wait and not cancel_futures:
                    job.result()
        self.joined = wait


def test_decoding_keeps_two_batches_per_worker_ahead_and_stops_with_the_reader(folder, monkeypatch):
    data = load_image_folder(folder, size=8, workers=0)
    monkeypatch.setattr(imagefolder, "ProcessPoolExecutor", LazyPool)
    loader = dataclasses.replace(data, workers=2).loader("train", 2, seed=3)  # 6 batches
    in_flight = []
    for k, (x, y) in enumerate(loader.batches(1), 1):
        pool = LazyPool.made[-1]
        in_flight.append(len(pool.submitted) - k)  # asked of the workers and not yet taken by the reader
    assert in_flight == [4, 4, 3, 2, 1, 0] and pool.joined  # 2 x workers ahead; every worker gone at the end
    in_process = list(dataclasses.replace(data, workers=0).loader("train", 2, seed=3).batches(1))
    for (x, y), (x2, y2) in zip(loader.batches(1), in_process):
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(y, y2)
    batches = loader.batches(1)
    next(batches)
    batches.close()  # a reader that stops after one batch: the batches queued behind it are never decoded
    pool = LazyPool.made[-1]
    assert len(pool.ran) == 1 and pool.joined and sum(job.cancelled for job in pool.submitted) == 4


def test_image_folders_compare_and_hash_by_identity(folder):
    data, again = load_image_folder(folder, size=8, workers=0), load_image_folder(folder, size=8, workers=0)
    assert data == data and data != again and len({data: 1, again: 2}) == 2  # no NumPy "truth value is ambiguous"


def test_a_ctrl_c_reaches_the_trainer_alone_and_the_decoding_workers_go_on(folder):
    # a Ctrl-C in a terminal goes to every process of the job, the decoding workers too: they must go on
    # decoding, so that the trainer can finish its step and save it, instead of dying with a traceback each
    # and breaking the pool (a BrokenProcessPool traceback and no checkpoint)
    data = get_dataset("imagefolder", data_dir=folder, image_size=8, workers=1)
    batches = data.loader("train", 2).batches()
    next(batches)
    workers = multiprocessing.active_children()
    assert workers
    for worker in workers:
        os.kill(worker.pid, signal.SIGINT)
    assert len(list(batches)) == 5


def test_the_trainer_itself_still_answers_ctrl_c_after_starting_its_decoding_workers(folder):
    data = get_dataset("imagefolder", data_dir=folder, image_size=8, workers=1)
    assert len(list(data.loader("train", 2).batches())) == 6
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, [])  # unblocked again in this process


def test_sigint_blocked_is_a_plain_block_where_signal_masks_do_not_exist(monkeypatch):
    monkeypatch.delattr(signal, "pthread_sigmask")  # (Windows)
    with imagefolder.sigint_blocked():
        ran = True
    assert ran


def test_a_decoding_worker_that_dies_is_an_error_saying_so_not_a_broken_pool_traceback(folder):
    data = get_dataset("imagefolder", data_dir=folder, image_size=8, workers=1)
    batches = data.loader("train", 2).batches()
    next(batches)
    for worker in multiprocessing.active_children():
        os.kill(worker.pid, signal.SIGKILL)  # what the out-of-memory killer does
    with pytest.raises(DatasetError, match=r"a process decoding the images .* died .*--workers"):
        list(batches)


@pytest.mark.parametrize("name", ["deep.png", "deep.ppm"])
def test_a_16_bit_greyscale_image_keeps_its_shades_instead_of_turning_white(folder, name):
    # Pillow opens these as mode I;16 / I, and converting that to RGB clips every value above 255
    shades = (np.arange(4 * 6).reshape(4, 6) * 2800).astype(np.uint16)
    path = folder / "train" / "ant" / name
    if name.endswith(".png"):
        Image.fromarray(shades).save(path)
    else:
        path.write_bytes(b"P5\n6 4\n65535\n" + shades.astype(">u2").tobytes())
    pixels = np.asarray(imagefolder.read_image(path))
    np.testing.assert_array_equal(pixels, np.repeat((shades >> 8).astype(np.uint8)[:, :, None], 3, axis=2))
