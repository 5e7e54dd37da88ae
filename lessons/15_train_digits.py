"""Lesson 15 -- training a small spiking ResNet on the 8x8 digits, and looking inside it.

What you will learn: what a complete, ordinary training run looks like and how to read a trained
spiking net -- its per-layer firing rates, the synaptic operations (SOPs) those spikes cost, its spike
raster and membrane traces. Everything of the previous lessons in one loop (``Trainer``, lesson 11):

    images -> the same image at every timestep (direct encoding) -> conv + tdBN + LIF ... -> FC
           -> mean over T -> softmax cross-entropy -> STBP backward -> Adam -> next batch

A spike into a synapse is an accumulate, not a multiply-accumulate, so a layer whose input fires at
rate r costs SOPs = MACs x r x T instead of an ANN's MACs (lesson 19 counts them exactly).

What you will see:

1. The configuration: the same keys as ``minisnn train`` on the command line.
2. Training with a progress bar (loss, accuracy, firing rate, images/s) and the test accuracy after
   every epoch; the trainer writes ``metrics.jsonl``, ``last.npz`` (a checkpoint you can resume or
   evaluate with ``minisnn eval``) and ``curves.png`` into ``lessons/output/15_digits_run/``.
3. Inside the trained net (``Recorder``, lesson 12): the firing rate of every LIF layer, MACs, SOPs and
   energy per layer (``format_table``), a spike raster across all LIF layers, membrane traces of neurons
   that fire, and a few test digits with the network's answers (``15_*.png``).

Run:  python lessons/15_train_digits.py      (add --fast or MINISNN_FAST=1 for the test mode)
"""
import json

from _common import FAST, Timer, finish, output_dir, plt, save_figure, section, title
from minisnn import Tensor, no_grad
from minisnn.monitor import Recorder, format_table, plot_membrane, plot_raster
from minisnn.train import Trainer, make_config

INTRODUCES = ("minisnn.monitor.format_table",)


def main(argv=None):
    title("Lesson 15: training a small spiking ResNet on the digits")
    run = output_dir() / "15_digits_run"
    config = make_config(
        model="resnet_small", model_args={"width": 4 if FAST else 16, "blocks": [1, 1]},
        dataset="digits", T=2, epochs=1 if FAST else 3, batch_size=32, optimizer="adam", lr=0.003,
        weight_decay=0.0, augment=False, out=str(run), progress=not FAST,
        limit_train=64 if FAST else None, limit_test=64 if FAST else None)

    section("1. the configuration")
    print(json.dumps(config))

    section("2. training")
    trainer = Trainer(config)
    print(f"{trainer.model.num_parameters():,} parameters, {len(trainer.data.train_y)} training and "
          f"{len(trainer.data.test_y)} test images, {trainer.steps_per_epoch} steps per epoch")
    with Timer() as timer:
        history = trainer.fit()
    print(f"{'epoch':>5} {'train loss':>11} {'train acc':>10} {'test acc':>9} {'rate':>6} {'seconds':>8}")
    for row in history:
        print(f"{row['epoch']:>5} {row['train_loss']:>11.4f} {row['train_acc']:>10.3f} {row['test_acc']:>9.3f} "
              f"{row['firing_rate']:>6.3f} {row['seconds']:>8.1f}")
    print(f"trained in {timer.seconds:.1f} s; test accuracy {history[-1]['test_acc']:.1%} (chance: 10%)")
    print(f"[figure] {run / 'curves.png'}   (checkpoint: {run / 'last.npz'}, try: minisnn eval {run / 'last.npz'})")

    section("3. inside the trained network")
    model = trainer.model.eval()
    images, labels = next(trainer.data.loader("test", 16).batches())
    with no_grad(), Recorder(model) as rec:
        logits = model(Tensor(images))
    print(format_table(rec.layer_table()))
    plot_raster(rec, output_dir() / "15_raster.png", title="spikes of every LIF layer, one test digit")
    plot_membrane(rec, model, output_dir() / "15_membrane.png", title="membrane of neurons that fire, one test digit")
    print(f"[figure] {output_dir() / '15_raster.png'}\n[figure] {output_dir() / '15_membrane.png'}")

    rates = rec.firing_rates()
    predicted = logits.data.argmax(axis=1)
    fig = plt.figure(figsize=(11, 4.2))
    ax_r = fig.add_subplot(1, 2, 1)
    ax_r.barh(list(rates)[::-1], list(rates.values())[::-1])
    ax_r.set(xlabel="firing rate (spikes per neuron per step)", title="LIF layers of the trained net")
    ax_r.tick_params(axis="y", labelsize=7)
    for k in range(16):                       # a 4 x 4 block of digits in the right half
        ax = fig.add_subplot(4, 8, 8 * (k // 4) + 5 + k % 4)
        ax.imshow(images[k, 0], cmap="gray_r")
        ax.set_title(f"says {predicted[k]}", fontsize=7, color="green" if predicted[k] == labels[k] else "red")
        ax.axis("off")
    fig.suptitle("test digits and the net's answers (red: wrong)", fontsize=9, x=0.75)
    save_figure(fig, "15_rates_and_answers.png")
    print(f"{int((predicted == labels).sum())} of 16 shown digits right")
    totals = rec.totals()
    print(f"per test digit: {totals['sops']:.3g} SOPs and {totals['snn_macs']:.3g} real MACs (the layers with analog inputs: "
          f"the first conv, on the image, and the read-out, on spikes averaged by the pooling)\n"
          f"instead of {totals['ann_macs']:.3g} MACs for the same net as an ANN")
    return finish({"test_accuracy": history[-1]["test_acc"], "epochs": len(history),
                   "checkpoint_written": (run / "last.npz").is_file(),
                   "lif_rates": list(rates.values()), "sops_per_ann_mac": totals["sops"] / totals["ann_macs"]},
                  "lesson 16 -- the same on real CIFAR-10 images.")


if __name__ == "__main__":
    main()
