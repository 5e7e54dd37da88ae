"""Lesson 16 -- a small spiking ResNet on real CIFAR-10 images (the sample beside the repository).

What you will learn: how the same code meets real photographs -- the CIFAR-10 files, their
per-channel normalisation x_c = (v_c - mean_c) / std_c (lesson 08) -- and what a CPU minute buys.

The same trainer as lesson 15, now on 32x32 colour photographs: the real CIFAR-10 files (the official
"python version" layout), a sample of 5,085 training and 517 test images read from
``<repo>/../shared/data/cifar10-sample`` (or ``--data-dir PATH``, a folder holding
``cifar-10-batches-py``). Images are normalised with the CIFAR-10 channel means and standard deviations,
and presented unchanged at every timestep.

A CPU minute buys little on CIFAR-10, so this is a taste, not a result: a resnet_small of width 8
sees the first 2,500 training images twice and gets clearly above chance (10%): about 25% on the
517 test images. Given 18 minutes of this CPU and all 5,085 images, the README's CIFAR-sample
command (width 32, stride 2 in every stage, 25 epochs) reaches about 60%. ResNet-19 on all
50,000 images for the README's 200 epochs (the paper reports 92-93%) is a GPU job -- see the README
and lesson 21.

What you will see:

1. The data: shapes, classes, and how many images of each class.
2. Training with the progress bar; the test accuracy on all 517 test images; ``curves.png`` and a
   checkpoint in ``lessons/output/16_cifar_run/``.
3. Accuracy per class and a few test images with the net's answers (``16_cifar_answers.png``).

Run:  python lessons/16_train_cifar_sample.py [--data-dir PATH]    (add --fast or MINISNN_FAST=1 for the test mode)
"""
import argparse
import json

import numpy as np

from _common import CIFAR_SAMPLE, FAST, Timer, finish, output_dir, plt, save_figure, section, title
from minisnn import Tensor, no_grad
from minisnn.data import CIFAR10_MEAN, CIFAR10_STD, DatasetError
from minisnn.train import Trainer, make_config

INTRODUCES = ("minisnn.data.CIFAR10_MEAN", "minisnn.data.CIFAR10_STD", "minisnn.data.DatasetError")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(CIFAR_SAMPLE), help="folder holding cifar-10-batches-py")
    args, _ = parser.parse_known_args(argv)  # --fast is read by _common
    title("Lesson 16: a spiking ResNet on real CIFAR-10 images")
    run = output_dir() / "16_cifar_run"
    config = make_config(
        model="resnet_small", model_args={"width": 4 if FAST else 8, "blocks": [1, 1]},
        dataset="cifar10", data_dir=args.data_dir, T=2, epochs=1 if FAST else 2, batch_size=32,
        optimizer="adam", lr=0.005, weight_decay=0.0, augment=False, out=str(run), progress=not FAST,
        limit_train=64 if FAST else 2500, limit_test=64 if FAST else None)

    section("1. the data")
    try:
        trainer = Trainer(config)
    except DatasetError as err:
        raise SystemExit(f"cannot read CIFAR-10 from {args.data_dir}:\n{err}\n"
                         "Pass --data-dir to a folder that holds cifar-10-batches-py.")
    data = trainer.data
    print(f"training images {data.train_x.shape} {data.train_x.dtype}, test images {data.test_x.shape}")
    counts = np.bincount(data.train_y, minlength=10)
    print("training images per class:", ", ".join(f"{c} {n}" for c, n in zip(data.classes, counts)))
    print(json.dumps(config))

    section("2. training")
    print(f"{trainer.model.num_parameters():,} parameters, {trainer.steps_per_epoch} steps per epoch")
    with Timer() as timer:
        history = trainer.fit()
    for row in history:
        print(f"epoch {row['epoch']}: train loss {row['train_loss']:.3f} acc {row['train_acc']:.3f} | "
              f"test acc {row['test_acc']:.3f} | firing rate {row['firing_rate']:.3f} | {row['seconds']:.1f} s")
    print(f"trained in {timer.seconds:.1f} s; test accuracy {history[-1]['test_acc']:.1%} on "
          f"{len(data.test_y)} test images (chance: 10%)")
    print(f"[figure] {run / 'curves.png'}")

    section("3. what it gets right")
    model = trainer.model.eval()
    predicted = []
    with no_grad():
        for images, _ in data.loader("test", 256).batches():
            predicted.append(model(Tensor(images)).data.argmax(axis=1))
    predicted = np.concatenate(predicted)
    right = np.bincount(data.test_y[predicted == data.test_y], minlength=10)
    per_class = right / np.maximum(np.bincount(data.test_y, minlength=10), 1)
    for name, acc in zip(data.classes, per_class):
        print(f"{name:<11} {acc:6.1%}")

    fig = plt.figure(figsize=(11, 4.2))
    ax_c = fig.add_subplot(1, 3, 1)
    ax_c.barh(data.classes[::-1], per_class[::-1])
    ax_c.axvline(0.1, color="gray", ls="--", lw=0.8)
    ax_c.set(xlabel="test accuracy", title="per class (dashed: chance)")
    images = data.test_x[:12].transpose(0, 2, 3, 1)        # uint8 [N, H, W, C] for imshow
    for k in range(12):
        ax = fig.add_subplot(3, 6, 6 * (k // 4) + 3 + k % 4)
        ax.imshow(images[k])
        ok = predicted[k] == data.test_y[k]
        ax.set_title(data.classes[predicted[k]], fontsize=7, color="green" if ok else "red")
        ax.axis("off")
    fig.suptitle("test images and the net's answers (red: wrong)", fontsize=9)
    save_figure(fig, "16_cifar_answers.png")
    print(f"(normalisation: mean {CIFAR10_MEAN}, std {CIFAR10_STD} per channel)")
    return finish({"test_accuracy": history[-1]["test_acc"], "test_images": len(data.test_y),
                   "train_images": len(data.train_y), "per_class": per_class.tolist()},
                  "lesson 17 -- event cameras: from a stream of events to frames.")


if __name__ == "__main__":
    main()
