"""What every lesson shares: the output folder, the fast mode, figures, the key results and the data sample.

* Figures go to ``lessons/output/`` (git ignores it), or to ``$MINISNN_LESSONS_OUT`` when set.
* Fast mode -- ``MINISNN_FAST=1`` or ``--fast`` on the command line -- makes every lesson run in a few
  seconds on tiny sizes, so the tests (and CI) can run them all. The full mode is what you read.
* Every lesson's ``main()`` ends with ``finish(result)``: it prints the lesson's key results and
  returns them as a dict, which ``tests/test_lessons.py`` checks against the lesson's claims (and
  writes them as JSON to ``$MINISNN_LESSON_RESULT`` when that is set, for a lesson run as a script).
* Matplotlib uses the Agg backend: lessons write PNG files and never open a window.

(This file is plumbing for the lessons, not part of the course: it uses nothing from minisnn.)
"""
import json
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


def finish(result, next_lesson=None):
    """Print the lesson's key results (``result``, a dict of numbers, flags and short lists) and the
    pointer to the next lesson; return ``result`` for the tests."""
    section("key results (tests/test_lessons.py checks these)")
    for key, value in result.items():
        print(f"  {key} = {_short(value)}")
    if os.environ.get("MINISNN_LESSON_RESULT"):
        Path(os.environ["MINISNN_LESSON_RESULT"]).write_text(json.dumps(result, default=lambda v: v.item()))
    if next_lesson:
        print(f"\nNext: {next_lesson}")
    return result


def _short(value):
    """A number, list, tuple or dict as text with floats to 4 significant digits."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_short(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_short(v)}" for k, v in value.items()) + "}"
    return str(value)


class Timer:
    """``with Timer() as t: ...`` then ``t.seconds``."""

    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
        return False
