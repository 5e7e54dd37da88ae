"""Lesson 11 -- the training loop by hand: SGD with momentum and weight decay, a cosine schedule; then the Trainer.

What you will learn: everything that happens between "here is a batch" and "the weights have moved",
written out in about 20 lines, and then the engine's ``Trainer`` doing exactly the same. The pieces:

    readout   z = (1/T) sum_t y[t]                        the mean over time of the last layer
    loss      L = -(1/N) sum_n log softmax(z_n)[c_n],     dL/dz = (softmax(z) - onehot(c)) / N
    SGD       g = dL/dp + wd * p;   v = mu * v + g  (v = g at the first step);   p = p - lr * v
    cosine    lr(s) = lr_min + (lr_0 - lr_min) * (1 + cos(pi * s / S)) / 2,   s = 0 .. S steps

SGD with momentum mu = 0.9 and weight decay wd = 5e-4 under a cosine schedule is the optimiser of
most spiking-ResNet recipes (the README's GPU command uses it; whether it is the paper's exact setting
is not claimed, as the paper's text was not available to this project). It is written as PyTorch
does: the decay is added to the gradient, the momentum buffer starts at the first gradient. For small
runs on a CPU the later lessons use Adam, whose update is

    m = b1 m + (1 - b1) g,   v = b2 v + (1 - b2) g^2,   p = p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps).

What you will see:

1. The readout and the loss by hand equal ``mean_over_time`` and ``softmax_cross_entropy``, value
   and gradient.
2. The loop by hand training ``resnet_small`` (lesson 10) on the digits (lesson 08): loss per step,
   learning rate per step, test accuracy per epoch (``11_training_loop.png``).
3. The same run with ``Trainer`` (``minisnn.train``) from a config (``minisnn.experiment.make_config``,
   which checks every value): the same weights, bit for bit.
   The Trainer adds what a real run needs -- a progress bar, evaluation every epoch, ``metrics.jsonl``,
   an atomic checkpoint ``last.npz`` that ``--resume`` continues from, Ctrl-C handling.
4. One Adam update by hand equals ``minisnn.optim.Adam``'s.

Run:  python lessons/11_training_loop.py      (add --fast or MINISNN_FAST=1 for the test mode)
"""
import math

import numpy as np

from _common import FAST, Timer, finish, output_dir, plt, save_figure, section, title
from minisnn import Tensor, no_grad
from minisnn.data import get_dataset
from minisnn.experiment import limit, make_config
from minisnn.functions.loss import mean_over_time, softmax_cross_entropy
from minisnn.models import resnet_small
from minisnn.optim import SGD, Adam, CosineSchedule
from minisnn.train import Trainer

INTRODUCES = ("minisnn.functions.loss.softmax_cross_entropy", "minisnn.functions.loss.mean_over_time",
              "minisnn.optim.SGD", "minisnn.optim.Adam", "minisnn.optim.CosineSchedule", "minisnn.train.Trainer",
              "minisnn.experiment.make_config", "minisnn.experiment.limit", "minisnn.train.Trainer.fit")

LR, MOMENTUM, WEIGHT_DECAY, BATCH, SEED = 0.1, 0.9, 5e-4, 32, 0
EPOCHS = 1 if FAST else 2
WIDTH = 4 if FAST else 8


def accuracy(model, data):
    """Share of the test images the model gets right (eval mode: tdBN uses its running statistics)."""
    model.eval()
    with no_grad():
        images, labels = next(data.loader("test", len(data.test_y)).batches())
        right = float((model(Tensor(images)).data.argmax(axis=1) == labels).mean())
    model.train()
    return right


def train_by_hand(data):
    """The whole loop: returns the model, the loss and learning rate of every step, accuracy per epoch."""
    model = resnet_small(num_classes=10, in_channels=1, T=2, width=WIDTH, blocks=(1, 1), seed=SEED)
    params = model.parameters()
    velocity = [None] * len(params)
    loader = data.loader("train", BATCH, seed=SEED)
    total, step, lr = EPOCHS * len(loader), 0, LR
    losses, rates, accs = [], [], []
    for epoch in range(EPOCHS):
        for images, labels in loader.batches(epoch):
            loss = softmax_cross_entropy(model(Tensor(images)), labels)      # forward: mean over T inside
            for p in params:
                p.grad = None
            loss.backward()                                                  # STBP through every layer
            for i, p in enumerate(params):                                   # SGD, momentum, weight decay
                g = p.grad + WEIGHT_DECAY * p.data
                velocity[i] = g.copy() if velocity[i] is None else MOMENTUM * velocity[i] + g
                p.data -= lr * velocity[i]
            losses.append(loss.item())
            rates.append(lr)
            step += 1
            lr = 0.0 + (LR - 0.0) * 0.5 * (1 + math.cos(math.pi * min(1.0, step / total)))   # cosine
        accs.append(accuracy(model, data))
    return model, losses, rates, accs


def main(argv=None):
    title("Lesson 11: the training loop by hand, then the Trainer")
    rng = np.random.default_rng(0)

    section("1. the readout and the loss by hand")
    y = rng.standard_normal((4, 5, 10))                                      # [T, N, classes]
    labels = rng.integers(0, 10, 5)
    z = y.mean(axis=0)
    shifted = z - z.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss_hand = -log_p[np.arange(5), labels].mean()
    grad_hand = (np.exp(log_p) - np.eye(10)[labels]) / 5 / 4                 # dL/dy[t] = dL/dz / T, every t
    yt = Tensor(y, requires_grad=True)
    loss = softmax_cross_entropy(mean_over_time(yt), labels)
    loss.backward()
    loss_gap = max(abs(loss.item() - loss_hand), float(np.abs(yt.grad - grad_hand).max()))
    print(f"loss by hand {loss_hand:.6f}, engine {loss.item():.6f}; max |dL/dy difference| {np.abs(yt.grad - grad_hand).max():.1e}")

    section(f"2. the loop by hand: resnet_small (width {WIDTH}) on the digits, {EPOCHS} epoch(s), SGD + cosine")
    data = get_dataset("digits")
    if FAST:
        data = limit(data, 128, 64)
    with Timer() as hand_time:
        model, losses, lrs, accs = train_by_hand(data)
    print(f"{len(losses)} steps in {hand_time.seconds:.1f} s; loss {losses[0]:.3f} -> {np.mean(losses[-5:]):.3f} "
          "(mean of the last 5); test accuracy by epoch " + " ".join(f"{a:.1%}" for a in accs))
    print(f"learning rate: {lrs[0]:.3f} at the start, {lrs[len(lrs) // 2]:.4f} half way, {lrs[-1]:.5f} at the last step")

    section("3. the same run with the Trainer")
    config = make_config(model="resnet_small", model_args={"width": WIDTH, "blocks": [1, 1]}, dataset="digits",
                         T=2, epochs=EPOCHS, batch_size=BATCH, optimizer="sgd", lr=LR, momentum=MOMENTUM,
                         weight_decay=WEIGHT_DECAY, seed=SEED, augment=False, out=str(output_dir() / "11_trainer_run"),
                         progress=not FAST, limit_train=128 if FAST else None, limit_test=64 if FAST else None)
    trainer = Trainer(config)
    print(f"the Trainer built: {type(trainer.optimizer).__name__}(lr={LR}, momentum={trainer.optimizer.momentum}, "
          f"weight_decay={trainer.optimizer.weight_decay}) and {type(trainer.schedule).__name__} over "
          f"{trainer.schedule.total_steps} steps")
    print(f"{type(trainer.optimizer).__name__} is optim.SGD's fast version for the CPU, as in lesson 07 (a subclass of it: "
          f"{isinstance(trainer.optimizer, SGD)}), with the same update")
    with Timer() as trainer_time:
        history = trainer.fit()
    mine, theirs = model.state_dict(), trainer.model.state_dict()
    weight_gap = max(float(np.abs(mine[k] - theirs[k]).max()) for k in mine)
    identical = all(np.array_equal(mine[k], theirs[k]) for k in mine)
    print(f"trained in {trainer_time.seconds:.1f} s; test accuracy by epoch "
          + " ".join(f"{row['test_acc']:.1%}" for row in history))
    print(f"every parameter and running statistic, loop by hand vs Trainer: max |difference| = {weight_gap}, "
          f"identical: {identical}")
    print(f"the Trainer also wrote {sorted(p.name for p in trainer.out.iterdir())} into {trainer.out}")

    section("4. one Adam step by hand and the engine's")
    p = Tensor(rng.standard_normal(6), requires_grad=True)
    adam = Adam([p], lr=0.01)
    start = p.data.copy()
    m = v = np.zeros(6)
    for t in range(1, 4):
        g = rng.standard_normal(6)
        p.grad = g
        adam.step()
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        start = start - 0.01 * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
    adam_gap = float(np.abs(start - p.data).max())
    print(f"three Adam steps: max |by hand - optim.Adam| = {adam_gap:.1e}")
    sgd = SGD([Tensor(np.zeros(2), requires_grad=True)], lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    schedule = CosineSchedule(sgd, total_steps=10)
    print(f"optim.SGD and optim.CosineSchedule are what the Trainer used above: lr(0..10) = "
          + " ".join(f"{schedule.lr_at(s):.3f}" for s in range(11)))

    fig, (ax_loss, ax_lr) = plt.subplots(1, 2, figsize=(11, 3.6))
    ax_loss.plot(losses, lw=0.8, label="loop by hand, per step")
    steps_per_epoch = len(losses) // EPOCHS
    ax_loss.plot([steps_per_epoch * (row["epoch"] - 0.5) for row in history], [row["train_loss"] for row in history],
                 "o", label="Trainer, mean per epoch")
    ax_loss.set(xlabel="step", ylabel="cross-entropy", title="the same run, two ways")
    ax_loss.legend()
    ax_lr.plot(lrs)
    ax_lr.set(xlabel="step", ylabel="learning rate", title=f"cosine schedule from {LR} to 0")
    save_figure(fig, "11_training_loop.png")

    return finish({"loss_gap": loss_gap, "trainer_weights_identical": identical, "trainer_weight_gap": weight_gap,
                   "loss_first_last": [losses[0], float(np.mean(losses[-5:]))], "test_accuracy": accs[-1],
                   "trainer_test_accuracy": history[-1]["test_acc"], "adam_gap": adam_gap,
                   "lr_first_last": [lrs[0], lrs[-1]]},
                  "lesson 12 -- looking inside a network with forward hooks, and finding dead layers.")


if __name__ == "__main__":
    main()
