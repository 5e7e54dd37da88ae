"""Every lesson runs, in fast mode, as a user would run it: ``python lessons/NN_topic.py``.

Each lesson is started as a fresh subprocess with MINISNN_FAST=1 and its figures sent to a temporary
folder; it must exit with status 0 and write at least one new PNG there. This keeps the lessons from
drifting away from the library's API.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LESSONS = sorted(p for p in (REPO / "lessons").glob("[0-9][0-9]_*.py"))


def test_the_course_is_complete():
    numbers = [int(p.name[:2]) for p in LESSONS]
    assert len(LESSONS) >= 11, [p.name for p in LESSONS]
    assert numbers == list(range(1, len(LESSONS) + 1)), f"lessons are not numbered 01, 02, ...: {numbers}"


def test_every_lesson_is_in_the_readme_index():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    missing = [p.name for p in LESSONS if f"lessons/{p.name}" not in readme]
    assert not missing, f"README.md's lesson index does not mention {missing}"


@pytest.mark.parametrize("lesson", LESSONS, ids=[p.stem for p in LESSONS])
def test_lesson_runs_in_fast_mode(lesson, tmp_path):
    env = dict(os.environ, MINISNN_FAST="1", MINISNN_LESSONS_OUT=str(tmp_path), MPLBACKEND="Agg",
               OMP_NUM_THREADS="1")
    env.pop("MINISNN_DEVICE", None)
    result = subprocess.run([sys.executable, str(lesson)], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, f"{lesson.name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert "fast mode" in result.stdout, f"{lesson.name} did not announce its fast mode"
    figures = list(tmp_path.rglob("*.png"))
    assert figures, f"{lesson.name} wrote no PNG under {tmp_path}"
    assert all(f.stat().st_size > 1000 for f in figures), f"{lesson.name} wrote an empty PNG: {figures}"
