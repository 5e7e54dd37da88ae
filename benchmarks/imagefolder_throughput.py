"""Throughput of the image-folder loader: images decoded and augmented per second with 0, 1 and 2 workers.

Builds an ImageNet-like folder in a temporary directory -- photographs from the CIFAR-10 sample, scaled
up to 500x375 (ImageNet's most common size) and saved as JPEG (quality 90) -- then reads it once per
setting with the training transform (random-resized crop + mirror to 224x224) and the evaluation one
(resize + centre crop), batch 32. Images/s counts every image after the first batch, so that starting
the worker processes is not part of the rate (it is given separately).

With ``--step-seconds S`` the training batches are also read by a loop that sleeps S seconds per batch,
a stand-in for a training step that leaves the CPU free (a GPU step): decoding in workers overlaps it,
decoding in the training process adds to it.

    python benchmarks/imagefolder_throughput.py [--images 256] [--workers 0 1 2] [--step-seconds 0.1]
"""
import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

from PIL import Image

from minisnn.data import read_batch
from minisnn.data.imagefolder import load_image_folder

SAMPLE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10-sample" / "cifar-10-batches-py"


def make_folder(root, images, size=(500, 375), classes=4):
    for split, count, source in (("train", images, "data_batch_1"), ("val", images // 4, "test_batch")):
        pictures, labels = read_batch(SAMPLE / source)
        for i in range(count):
            j = i % len(labels)
            folder = root / split / f"class{labels[j] % classes}"
            folder.mkdir(parents=True, exist_ok=True)
            picture = Image.fromarray(pictures[j].transpose(1, 2, 0)).resize(size, Image.Resampling.BICUBIC)
            picture.save(folder / f"{split}_{i:05d}.JPEG", quality=90)


def measure(data, split, workers, batch=32, step_seconds=0.0):
    loader = dataclasses.replace(data, workers=workers).loader(split, batch, seed=0)
    start = time.perf_counter()
    batches = loader.batches(0)
    first = next(batches)
    after_first = time.perf_counter()
    rest = 0
    for _, labels in batches:
        time.sleep(step_seconds)
        rest += len(labels)
    end = time.perf_counter()
    return after_first - start, rest / (end - after_first), len(first[1]) + rest


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--step-seconds", type=float, default=0.0, help="also read with a step of S seconds")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        make_folder(Path(tmp), args.images)
        data = load_image_folder(tmp, size=224)
        print("| split (transform) | workers | first batch s | images/s after it | images |")
        print("|---|---|---|---|---|")
        for split, name in (("train", "train (random-resized crop + mirror)"), ("test", "val (resize + centre crop)")):
            for workers in args.workers:
                first, rate, n = measure(data, split, workers)
                print(f"| {name} | {workers} | {first:.2f} | {rate:.0f} | {n} |")
        if args.step_seconds:
            print(f"\nTraining batches read by a loop with a {args.step_seconds:g} s step per batch of 32:\n")
            print("| workers | images/s | of the step alone |")
            print("|---|---|---|")
            for workers in args.workers:
                _, rate, _ = measure(data, "train", workers, step_seconds=args.step_seconds)
                print(f"| {workers} | {rate:.0f} | {rate * args.step_seconds / 32:.0%} |")


if __name__ == "__main__":
    main()
