"""Scoring a network: ``evaluate`` (mean loss and accuracy over a loader) and ``minisnn eval CHECKPOINT``.

``evaluate_checkpoint`` reads a run's checkpoint (refusing one that holds NaN or infinity), scores it on
the test split only (CIFAR-10's training batches need not be present), prints a per-layer table of firing
rates and synaptic operations, and writes into its own folder (default: ``eval/`` beside the checkpoint,
never the run's own files) ``layers.json`` and three pictures of the first test image: a spike raster
across all spiking layers, the firing rate of each layer, and membrane traces of neurons that fire.
"""
import json
from pathlib import Path

from .backend import xp_for
from .checkpoint import CheckpointError, load_checkpoint, nearest_existing
from .core import Tensor, no_grad
from .experiment import ConfigError, load_data, model_for, model_input, saved_config, usable_device
from .functions.loss import softmax_cross_entropy
from .monitor import Recorder, format_table, plot_firing_rates, plot_membrane, plot_raster, save_json

EVAL_FOLDER = "eval"  # minisnn eval's default folder, beside the checkpoint
EVAL_FILES = ("layers.json", "raster.png", "firing_rates.png", "membrane.png")  # what it writes there


def evaluate(model, loader, xp):
    """Mean loss and accuracy of ``model`` over the batches of ``loader``, in eval mode and without a graph.

    Eval mode uses tdBN's running statistics and leaves every buffer as it was, so the result does not
    depend on what was evaluated before; the model's mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    total_loss, correct, seen = 0.0, 0, 0
    try:
        with no_grad():
            for images, labels in loader.batches():
                x, y = model_input(images, xp), xp.asarray(labels)
                logits = model(Tensor(x))
                total_loss += float(softmax_cross_entropy(logits, y).item()) * len(y)
                correct += int((logits.data.argmax(axis=1) == y).sum())
                seen += len(y)
    finally:
        model.train(was_training)
    if seen == 0:
        raise ValueError("evaluate: the loader gave no images to score")
    return total_loss / seen, correct / seen


def evaluate_checkpoint(path, data_dir=None, device=None, limit_test=None, eval_batch_size=None, out=None,
                        sample_batch=16):
    """``minisnn eval``: score the checkpoint at ``path`` on its data set's test split and look inside.

    data_dir, device, limit_test, eval_batch_size: None keeps the run's own (for the device:
    ``$MINISNN_DEVICE``, else the run's). out: the folder for the table and pictures (default
    ``<checkpoint folder>/eval``). Returns (accuracy, per-layer rows).
    """
    path = Path(path)
    state = load_checkpoint(path)
    try:
        config = saved_config(state["meta"]["config"])
    except ConfigError as err:
        raise CheckpointError(f"{path}: its config is not valid today: {err}") from None
    config["device"] = usable_device(device, config["device"])
    config.update(data_dir=data_dir or config["data_dir"], download=False, limit_train=0,
                  limit_test=limit_test if limit_test is not None else config["limit_test"],
                  eval_batch_size=eval_batch_size or config["eval_batch_size"])
    out = Path(out) if out is not None else path.parent / EVAL_FOLDER
    existing = nearest_existing(out)
    if not existing.is_dir():
        raise ConfigError(f"--out {out}: {existing} is a file, not a folder; give a folder for the pictures")
    data = load_data(config)
    model = model_for(config, data)
    try:
        model.load_state_dict(state["model"])
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"{path} does not fit the model its config describes: {err}") from err
    xp = xp_for(config["device"])
    loss, acc = evaluate(model, data.loader("test", config["eval_batch_size"]), xp)
    print(f"{path}: test loss {loss:.4f}, accuracy {acc:.4f} on {len(data.test_y)} images "
          f"(model {config['model']}, T={config['T']}, device {config['device']})")

    images, _ = next(data.loader("test", sample_batch).batches())
    model.eval()
    with no_grad(), Recorder(model) as rec:
        model(Tensor(model_input(images, xp)))
    rows = rec.layer_table()
    print(format_table(rows))
    totals = rec.totals()
    print(json.dumps({k: round(v, 3) for k, v in totals.items()}))

    out.mkdir(parents=True, exist_ok=True)
    table, raster, rates, membrane = (out / name for name in EVAL_FILES)
    save_json(rows, table)
    written = [table]
    if rec.order_of_lif():
        plot_raster(rec, raster, title="spikes of every spiking layer, first test image")
        plot_firing_rates(rec, rates)
        plot_membrane(rec, model, membrane, title="membrane of firing neurons, first test image")
        written += [raster, rates, membrane]
    print(f"written: {', '.join(map(str, written))}")
    return acc, rows
