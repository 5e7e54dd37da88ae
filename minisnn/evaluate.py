"""``minisnn eval CHECKPOINT``: accuracy, a per-layer table of firing rates and synaptic operations,
and spike-raster / membrane plots of the first test images."""
import json
from pathlib import Path

from .backend import get_device, xp_for
from .checkpoint import load_checkpoint
from .core import Tensor, no_grad
from .monitor import Recorder, format_table, plot_membrane, plot_raster, save_json
from .train import evaluate, load_data, model_for, model_input


def evaluate_checkpoint(path, data_dir=None, device=None, limit_test=None, out=None, sample_batch=16):
    state = load_checkpoint(path)
    config = dict(state["meta"]["config"])
    config["device"] = get_device(device if device is not None else config["device"])
    config.update(data_dir=data_dir or config["data_dir"], download=False, limit_train=0,
                  limit_test=limit_test if limit_test is not None else config["limit_test"])
    data = load_data(config)
    model = model_for(config, data)
    model.load_state_dict(state["model"])
    xp = xp_for(config["device"])
    loss, acc = evaluate(model, data.loader("test", config["eval_batch_size"]), xp)
    print(f"{path}: test loss {loss:.4f}, accuracy {acc:.4f} on {len(data.test_y)} images "
          f"(model {config['model']}, T={config['T']})")

    images, _ = next(data.loader("test", sample_batch).batches())
    model.eval()
    with no_grad(), Recorder(model) as rec:
        model(Tensor(model_input(images, xp)))
    rows = rec.layer_table()
    print(format_table(rows))
    totals = rec.totals()
    print(json.dumps({k: round(v, 3) for k, v in totals.items()}))

    out = Path(out) if out else Path(path).parent
    out.mkdir(parents=True, exist_ok=True)
    save_json(rows, out / "layers.json")
    first = rec.order_of_lif()[0] if rec.order_of_lif() else None
    if first is not None:
        plot_raster(rec.spikes[first], out / "raster.png", title=f"spikes of {first}, first test image")
        plot_membrane(rec.membrane[first], rec.spikes[first], out / "membrane.png",
                      title=f"membrane of {first}, first test image")
        print(f"plots: {out / 'raster.png'}, {out / 'membrane.png'}; table: {out / 'layers.json'}")
    return acc, rows
