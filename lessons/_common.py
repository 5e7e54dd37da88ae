"""What every lesson shares: the output folder, the fast mode, figures and the real data sample.

* Figures go to ``lessons/output/`` (git ignores it), or to ``$MINISNN_LESSONS_OUT`` when set.
* Fast mode -- ``MINISNN_FAST=1`` or ``--fast`` on the command line -- makes every lesson run in a few
  seconds on tiny sizes, so the tests (and CI) can run them all. The full mode is what you read.
* Matplotlib uses the Agg backend: lessons write PNG files and never open a window.
"""
import os
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

LESSONS = Path(__file__).resolve().parent
REPO = LESSONS.parent
FAST = os.environ.get("MINISNN_FAST", "") not in ("", "0") or "--fast" in sys.argv[1:]
CIFAR_SAMPLE = REPO.parent / "shared" / "data" / "cifar10-sample"


def output_dir():
    """The folder the figures go to (created if needed)."""
    out = Path(os.environ.get("MINISNN_LESSONS_OUT", LESSONS / "output"))
    out.mkdir(parents=True, exist_ok=True)
    return out


def save_figure(fig, name):
    """Save ``fig`` as ``<output>/<name>`` (PNG), close it and say where it went."""
    path = output_dir() / name
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"[figure] {path}")
    return path


def title(text):
    """Print a lesson's title, and whether it runs in fast mode."""
    mode = "  (fast mode: tiny sizes, for the tests)" if FAST else ""
    print(f"\n{'=' * 78}\n{text}{mode}\n{'=' * 78}")


def section(text):
    print(f"\n--- {text} " + "-" * max(0, 73 - len(text)))


class Timer:
    """``with Timer() as t: ...`` then ``t.seconds``."""

    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
        return False
