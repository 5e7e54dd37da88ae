"""Lesson 08 -- encoding an image over time, and the data pipeline that feeds the network.

What you will learn: a spiking network runs for T timesteps, so a static image has to become a
sequence [T, N, C, H, W]. Two ways:

    direct encoding (the paper's):  x[t] = image                     for t = 0 .. T-1
    rate coding:                    o[t] ~ Bernoulli(p),  p = pixel intensity in [0, 1]

With direct encoding the first layer sees the analog image at every step and its LIF neurons do the
encoding (lesson 04: a constant current gives a spike train whose rate grows with it). Rate coding
sends spikes from the start, but the mean of T coin flips estimates p only to within a standard
deviation of sqrt(p (1 - p) / T): halving the error costs four times the timesteps, which is why
STBP-tdBN uses direct encoding with T = 2 to 6.

Then the pipeline the training lessons use: a ``Dataset`` (arrays, classes, per-channel mean and std),
its ``loader`` -- a ``BatchIterator`` giving normalised float32 batches

    x_c = (v_c - mean_c) / std_c,     v = pixel value in [0, 1],

in an order that depends only on (seed, epoch), so that a run stopped at step s resumes with exactly
the batches it would have seen -- and augmentation drawn from an explicit random generator.

What you will see:

1. ``repeat_over_time``: the same image at every t, as a broadcast view (no copy); a convolution of
   it is the same at every t, so the engine's ResNet computes its first layer once.
2. Rate coding by hand: spike frames of a digit, and the error of the mean over T against T, with
   its slope of -1/2 on a log-log plot (``08_encoding.png``).
3. The digits data set (scikit-learn's 8x8 images, bundled: no download) through the loader: shapes,
   the normalisation checked by hand, batch statistics, the same batches from two loaders with one
   seed, and a resumed epoch.
4. Augmentation: random crops and mirror images from a seeded generator (``08_augmentation.png``).

Run:  python lessons/08_encoding_and_data.py      (add --fast or MINISNN_FAST=1 for the test mode)
"""
import numpy as np

from _common import FAST, finish, plt, save_figure, section, title
from minisnn import Tensor, no_grad
from minisnn.data import BatchIterator, Dataset, get_dataset, normalize, random_crop, random_flip
from minisnn.functions.basic import repeat_over_time
from minisnn.nn import Conv2d, LIF

INTRODUCES = ("minisnn.functions.basic.repeat_over_time", "minisnn.data.get_dataset", "minisnn.data.Dataset",
              "minisnn.data.BatchIterator", "minisnn.data.normalize", "minisnn.data.random_crop",
              "minisnn.data.random_flip", "minisnn.data.Dataset.loader", "minisnn.data.BatchIterator.batches")


def rate_code(images, T, rng):
    """Bernoulli spike frames [T, N, ...]: o[t] = 1 with probability p = the pixel value in [0, 1]."""
    return (rng.random((T,) + images.shape) < images).astype(np.float32)


def main(argv=None):
    title("Lesson 08: encoding an image over time, and the data pipeline")
    rng = np.random.default_rng(0)
    data = get_dataset("digits")
    image = data.train_x[:1]                                      # [1, 1, 8, 8], values in [0, 1]

    section("1. direct encoding: the same image at every timestep")
    T = 4
    x = repeat_over_time(Tensor(image), T)
    print(f"image {image.shape} -> repeat_over_time(image, {T}) {x.shape}; every step equal to the image: "
          f"{all(np.array_equal(x.data[t], image) for t in range(T))}; a view, no copy: "
          f"{np.shares_memory(x.data, image)}")
    conv, neurons = Conv2d(1, 4, 3, padding=1, seed=0), LIF()
    with no_grad():
        current = conv(x)
        spikes = neurons(current)
    conv_same = all(np.array_equal(current.data[t], current.data[0]) for t in range(T))
    print(f"conv of the repeated image: the same at every t: {conv_same} -- so it only needs computing once;")
    print(f"the LIF after it turns the constant currents into spike trains: firing rate per step "
          + " ".join(f"{r:.3f}" for r in spikes.data.mean(axis=(1, 2, 3, 4))))

    section("2. rate coding by hand: Bernoulli spikes with p = pixel value")
    Ts = [1, 4, 16, 64] if FAST else [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
    batch = data.train_x[:64 if FAST else 256]
    errors = []
    for steps in Ts:
        estimate = rate_code(batch, steps, rng).mean(axis=0)
        errors.append(float(np.abs(estimate - batch).mean()))
        print(f"T = {steps:>3}: mean |mean over T of the spikes - pixel value| = {errors[-1]:.4f}")
    slope = float(np.polyfit(np.log(Ts), np.log(errors), 1)[0])
    print(f"slope of log(error) against log(T): {slope:.3f}  (the theory: -1/2, since the error's standard "
          "deviation is sqrt(p (1 - p) / T))")

    fig = plt.figure(figsize=(11, 4))
    frames = rate_code(image, 8, rng)
    ax = fig.add_subplot(2, 10, 1)
    ax.imshow(image[0, 0], cmap="gray_r")
    ax.set_title("image", fontsize=8)
    ax.axis("off")
    for t in range(8):
        ax = fig.add_subplot(2, 10, t + 3)
        ax.imshow(frames[t, 0, 0], cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(f"spikes t={t}", fontsize=8)
        ax.axis("off")
    for k, steps in enumerate((4, 16, 64)):
        ax = fig.add_subplot(2, 10, 11 + k)
        ax.imshow(rate_code(image, steps, rng).mean(axis=0)[0, 0], cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(f"mean of T={steps}", fontsize=8)
        ax.axis("off")
    ax = fig.add_subplot(1, 2, 2)
    ax.loglog(Ts, errors, "o-", label="rate coding, measured")
    ax.loglog(Ts, errors[0] / np.sqrt(Ts), "k--", lw=0.8, label="error[T=1] / sqrt(T)")
    ax.set(xlabel="timesteps T", ylabel="mean |estimate - pixel|",
           title="rate coding needs many steps (direct encoding: exact at any T)")
    ax.legend(fontsize=8)
    save_figure(fig, "08_encoding.png")

    section("3. the digits through the data pipeline")
    print(f"{type(data).__name__} {data.name!r} (a minisnn.data.Dataset: {isinstance(data, Dataset)}): train {data.train_x.shape} {data.train_x.dtype}, test {data.test_x.shape}, "
          f"{data.num_classes} classes {data.classes}, per-channel mean {data.mean} std {data.std}")
    loader = data.loader("train", 32, seed=0)
    print(f"loader('train', 32, seed=0) is a {type(loader).__name__}: {len(loader)} batches per epoch, shuffled")
    images, labels = next(loader.batches(epoch=0))
    by_hand = (data.train_x[loader.order(0)[:32]] - np.float32(data.mean[0])) / np.float32(data.std[0])
    normalise_gap = float(np.abs(images - by_hand).max())
    print(f"first batch: images {images.shape} {images.dtype}, labels {labels[:10]}...; "
          f"max |loader - (v - mean) / std by hand| = {normalise_gap:.1e}")
    everything = np.concatenate([b for b, _ in loader.batches(0)])
    print(f"over one epoch the normalised pixels have mean {everything.mean():+.3f} and std {everything.std():.3f}")
    twin = BatchIterator(data.train_x, data.train_y, 32, shuffle=True, seed=0, mean=data.mean, std=data.std)
    same_batches = all(np.array_equal(a[1], b[1]) for a, b in zip(loader.batches(3), twin.batches(3)))
    next_epoch_differs = not np.array_equal(next(loader.batches(3))[1], next(loader.batches(4))[1])
    resumed = next(loader.batches(3, start=5))
    straight = list(loader.batches(3))[5]
    resume_equal = bool(np.array_equal(resumed[0], straight[0]))
    print(f"two loaders with seed 0 give the same batches in epoch 3: {same_batches}; epoch 4 has another order: "
          f"{next_epoch_differs}")
    print(f"starting epoch 3 at step 5 gives exactly step 5 of a full epoch 3: {resume_equal}")
    inside = bool(np.array_equal(images, normalize(data.train_x[loader.order(0)[:32]], data.mean, data.std)))
    print(f"the loader's batch is normalize(raw images, mean, std), bit for bit: {inside}")

    section("4. augmentation from a seeded generator")
    originals = data.train_x[:6]
    shown = []
    for seed in range(3):
        gen = np.random.default_rng(seed)
        shown.append(random_flip(random_crop(originals, 1, gen), gen))
    gen = np.random.default_rng(0)
    repeatable = bool(np.array_equal(shown[0], random_flip(random_crop(originals, 1, gen), gen)))
    print("random_crop(batch, 1, rng): pad by 1 pixel, cut a random 8x8 window per image; random_flip(batch, rng):")
    print("mirror each image with probability 1/2. The same generator seed gives the same augmented batch:",
          repeatable)
    print("(CIFAR-10 uses crop_and_flip: 4 pixels of padding, then a flip; the loader applies a Dataset's augment\n"
          " to training batches only, with a generator seeded by (seed, epoch, step))")
    fig, axes = plt.subplots(4, 6, figsize=(8, 5.6))
    for col in range(6):
        axes[0, col].imshow(originals[col, 0], cmap="gray_r")
        for row in range(3):
            axes[row + 1, col].imshow(shown[row][col, 0], cmap="gray_r")
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    for row, label in enumerate(["original", "rng seed 0", "rng seed 1", "rng seed 2"]):
        axes[row, 0].set_ylabel(label, fontsize=8)
    fig.suptitle("random_crop(padding 1) + random_flip on the digits", fontsize=9)
    save_figure(fig, "08_augmentation.png")

    return finish({"direct_encoding_same_every_step": conv_same, "rate_coding_slope": slope,
                   "rate_coding_errors": errors, "normalise_by_hand_gap": normalise_gap,
                   "normalised_mean_std": [float(everything.mean()), float(everything.std())],
                   "same_seed_same_batches": same_batches, "epochs_differ": next_epoch_differs,
                   "resume_equal": resume_equal, "loader_uses_normalize": inside,
                   "augmentation_repeatable": repeatable},
                  "lesson 09 -- threshold-dependent batch norm, by hand, forward and backward.")


if __name__ == "__main__":
    main()
