"""The course: every lesson runs, writes a figure and its key results hold; no lesson uses a name early.

How the lessons run here. Each lesson's ``main()`` returns its key results (``_common.finish``). The
tests import every lesson into this process in fast mode (``_common.FAST``, tiny sizes) with its
figures sent to a temporary folder, call ``main([])`` and check the result against the lesson's claim
in ``CLAIMS`` -- the claim, not just the exit status. Running in this process pays numpy's, matplotlib's
and minisnn's imports once instead of 21 times. ``test_a_lesson_runs_as_a_script`` runs one lesson the
way a reader does, ``python lessons/NN_topic.py --fast``, in a fresh process.

Some claims need a lesson's full size (lesson 14: tdBN ahead of plain BN after five epochs). With
``MINISNN_SLOW_LESSONS=1`` those lessons also run in full mode, as scripts (several minutes).

The order of the course: every lesson lists in ``INTRODUCES`` the engine names it teaches.
``test_no_engine_name_before_the_lesson_that_introduces_it`` reads every lesson's imports (and, for the
methods listed there, its attribute uses) and checks that each minisnn name a lesson imports was
introduced by that lesson or an earlier one; that each introduced name is used in its lesson's code (not
just imported); and that no name is introduced twice. Names are compared as the objects they resolve to, so
``minisnn.Tensor`` and ``minisnn.core.Tensor`` are one name.
"""
import ast
import importlib
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LESSON_DIR = REPO / "lessons"
LESSONS = sorted(LESSON_DIR.glob("[0-9][0-9]_*.py"))
STEMS = [p.stem for p in LESSONS]
SLOW = os.environ.get("MINISNN_SLOW_LESSONS", "") not in ("", "0")


# -------------------------------------------------------------------------------- the claims
def close(a, b, tol):
    return abs(a - b) <= tol


def claim_01(r, fast):
    assert r["dy_dx_at_3"] == 8 and r["max_error_vs_by_hand"] < 1e-12
    assert r["broadcast_grad_is_column_sum"] and r["own_function_grad_is_2x"] and r["no_grad_builds_no_graph"]


def claim_02(r, fast):
    assert r["best_error_float64"] < 1e-9 < 1e-6 < r["best_error_float32"]   # float32 never gets near float64
    assert r["worst_gradcheck_error"] < 1e-6 and r["bug_caught"]


def claim_03(r, fast):
    assert r["engine_equals_tiny_output"] < 1e-5 and r["engine_equals_tiny_grad"] < 1e-5
    assert r["parameters"][0] == r["parameters"][1]
    assert r["buffer_error"] < 0.2 and r["eval_uses_running_mean"]
    assert r["reload_difference"] == 0 and r["mismatch_refused"]
    first, last = r["fit_loss_first_last"]
    assert last < first / 10


def claim_04(r, fast):
    assert r["hand_equals_engine_membrane"] == 0 and r["hand_equals_engine_spikes"]
    step = r["current_step"]
    for rheobase, first in r["rheobase_and_first_firing"]:       # never below the rheobase, at most a step above
        assert -1e-6 <= first - rheobase <= step + 1e-6, (rheobase, first)


def claim_05(r, fast):
    assert r["flat_share_of_rate_curve"] > 0.5
    assert r["slope_true_derivative"] == 0 and r["slope_rectangular"] != 0
    areas = r["surrogate_areas"]
    assert all(close(areas[name], 1, 0.01) for name in ("rectangular", "triangle", "sigmoid"))
    assert 0.85 < areas["atan"] < 0.95                             # heavy tails outside [-2, 2]
    losses = r["loss_first_last"]
    assert losses["true derivative"][1] == losses["true derivative"][0]
    assert all(last < first / 5 for name, (first, last) in losses.items() if name != "true derivative")


def claim_06(r, fast):
    assert r["gradcheck_error"] < 1e-6 and not r["detach_reset_is_exact_derivative"]
    assert r["stbp_minus_unrolled"] == 0
    measured, predicted = r["silent_neuron_step_ratio"]
    assert close(measured, predicted, 1e-6)


def claim_07(r, fast):
    assert r["conv_vs_loops"] < 1e-12 and r["adjoint_relative_gap"] < 1e-12
    assert r["backward_as_gemms_vs_engine"] < 1e-10 and r["gradcheck_error"] < 1e-6
    assert r["folded_vs_per_step"] == 0 and r["fast_vs_reference"] < 1e-5


def claim_08(r, fast):
    assert r["direct_encoding_same_every_step"]
    assert -0.6 < r["rate_coding_slope"] < -0.4
    assert r["normalise_by_hand_gap"] < 1e-5 and r["loader_uses_normalize"]
    mean, std = r["normalised_mean_std"]
    assert abs(mean) < 0.01 and close(std, 1, 0.02)
    assert r["same_seed_same_batches"] and r["epochs_differ"] and r["resume_equal"] and r["augmentation_repeatable"]


def claim_09(r, fast):
    assert r["forward_gap"] < 1e-5 and r["backward_gap"] < 1e-12 and r["gradcheck_error"] < 1e-6
    assert r["engine_layers_agree"] < 1e-5
    for share, theory in zip(r["share_at_threshold"], r["share_at_threshold_theory"]):
        assert close(share, theory, 0.015)
    tdbn_window, bn_window = r["share_in_surrogate_window"]
    assert tdbn_window > bn_window + 0.1
    tdbn_gap, bn_gap = r["train_eval_gap"]
    assert tdbn_gap < 0.05 and bn_gap > 0.2
    running, theory = r["running_mean_after_30"]
    assert close(running, theory, 0.05)


def claim_10(r, fast):
    assert r["hand_equals_engine"] and r["resnet_is_blocks"]
    assert close(r["var_join_alpha_1"], 0.5, 0.05) and close(r["var_join_alpha_rsqrt2"], 0.25, 0.025)
    assert all(abs(c) < 0.05 for c in r["branch_correlation"])
    assert close(r["rate_after_join"][1], r["rate_single_tdbn"], 0.02) and r["rate_after_join"][0] > r["rate_single_tdbn"] + 0.04
    alpha_1, alpha_rsqrt2 = r["identity_stack_rates"]
    assert all(b < a for a, b in zip(alpha_1, alpha_rsqrt2))


def claim_11(r, fast):
    assert r["loss_gap"] < 1e-12 and r["adam_gap"] < 1e-12
    assert r["trainer_weights_identical"] and r["trainer_weight_gap"] == 0
    assert r["test_accuracy"] == r["trainer_test_accuracy"]
    assert r["lr_first_last"][0] == 0.1 and r["lr_first_last"][1] < 0.1
    if not fast:
        assert r["test_accuracy"] > 0.3


def claim_12(r, fast):
    dead = r["dead_layers"]
    assert dead and dead == list(range(dead[0], 9)), dead           # from some layer on, all the rest are dead
    assert r["dead_layers_with_tdbn"] == []
    assert all(g == 0 for g in r["conv_grads_without_norm"])
    assert all(g > 0 for g in r["conv_grads_with_tdbn"])
    assert all(0.1 < rate < 0.25 for rate in r["rates_with_tdbn"])
    assert r["monitor_gap"] == 0


def claim_13(r, fast):
    gain, estimate, ratio = r["gain_per_block"], r["estimate_per_block"], r["first_over_last"]
    assert 0.9 < gain["tdBN"] < 1.05 and gain["plain BN"] > 1.15 and gain["no norm"] < 0.95
    assert estimate["plain BN"] > 1 and estimate["no norm"] < 1 and close(estimate["tdBN"], gain["tdBN"], 0.1)
    assert ratio["plain BN"] > 10 * ratio["tdBN"] and ratio["no norm"] < ratio["tdBN"]
    resnet = r["resnet_first_over_last"]
    assert resnet["plain BN"] > 10 * max(resnet["tdBN, alpha = 1/sqrt(2)"], resnet["tdBN, alpha = 1"])


def claim_14(r, fast):
    ratio = r["grad_first_over_last"]
    assert ratio["plain BN"] > 10 * ratio["tdBN"] and ratio["no norm"] < ratio["tdBN"]
    if not fast:                                                    # the lesson's seed, full budget
        acc = r["test_accuracy"]
        assert acc["tdBN"] >= acc["plain BN"] + 0.10 and acc["no norm"] < 0.12, acc


def claim_15(r, fast):
    assert r["checkpoint_written"] and r["epochs"] == (1 if fast else 3)
    assert all(0 < rate < 1 for rate in r["lif_rates"]) and 0 < r["sops_per_ann_mac"] < 1
    if not fast:
        assert r["test_accuracy"] > 0.7


def claim_16(r, fast):
    assert r["test_images"] == (64 if fast else 517) and len(r["per_class"]) == 10
    if not fast:
        assert r["test_accuracy"] > 0.2                             # chance is 0.1


def claim_17(r, fast):
    assert r["hand_equals_engine"] == {"number": 0, "time": 0}
    counts = r["events_per_frame_by_number"]
    assert sum(counts) == r["events"] and max(counts) - min(counts) <= 1
    by_time = r["events_per_frame_by_time"]                         # the bar accelerates: later slices hold more
    assert sum(by_time) == r["events"] and all(a < b for a, b in zip(by_time, by_time[1:])), by_time
    assert r["aedat_round_trip"] and r["first_record_decoded"] and r["logits_shape"] == [2, 10]


def claim_18(r, fast):
    assert r["macs_by_hand"] == r["macs_recorder"] == 2_285_373_952
    assert 12.6e6 < r["parameters"] < 12.8e6 and r["synaptic_layers"] == 21
    ann, snn = r["energy_uj"]
    assert snn < ann
    share = r["share_by_stage"]                                     # [parameters, MACs] of each stage
    assert 0.6 < share["512-wide (8x8)"][0] < 0.7                   # two thirds of the parameters ...
    assert all(share[s][1] > 0.2 for s in ("128-wide (32x32)", "256-wide (16x16)", "512-wide (8x8)"))  # ... the MACs spread


def claim_19(r, fast):
    assert r["fold_by_hand_gap"] < 1e-5 and r["fold_pair_gap"] < 1e-6 and r["stem_spikes_equal"]
    assert r["float64_spikes_identical"] and r["float64_membrane_gap"] < 1e-12 and r["norms_left"] == 0
    assert r["float32_flipped_share"] < 1e-3
    ratios = r["exact_over_estimate"]
    assert min(ratios) < 0.95 and max(ratios) < 1.1                # the estimate overcounts at the borders
    snn, ann = r["energy_uj"]
    assert snn < ann


def claim_20(r, fast):
    assert r["euler_differs_only_at_ties"] and r["exported_threshold_identical"] and r["exp_reading_differs"] > 0
    if importlib.util.find_spec("nir") is None:
        assert r["nir_available"] is False
        return
    assert r["nir_available"] and r["residual_joins"] == 2
    assert r["spikes_identical"] and r["logit_gap"] < 1e-5 and r["answers_agree"] == 1


def claim_21(r, fast):
    assert close(r["standardise_mean"], 0, 1e-6)
    if r["gpu"] is None:
        assert r["no_gpu_reason"]                                   # a reason, not a crash
    else:
        logits, grad = r["cpu_minus_gpu"]
        assert logits < 1e-3 and grad < 1e-3


def claim_22(r, fast):
    # 2 ranks with sync-norm are one process up to float32 rounding; per-rank tdBN is another function,
    # exactly one process normalising each half of the batch separately
    assert r["grad_sync_vs_whole"] < 1e-5 and r["grad_per_rank_vs_halves"] < 1e-5
    assert r["grad_per_rank_vs_whole"] > 100 * r["grad_sync_vs_whole"]
    assert r["final_distance_sync"] < 1e-4 < r["final_distance_per_rank"]


CLAIMS = {name[6:8]: fn for name, fn in globals().items() if name.startswith("claim_")}
FULL_MODE = ("11", "14", "15", "16")      # lessons with claims that only their full size can show


# -------------------------------------------------------------------------------- running lessons
def run_in_process(path, monkeypatch, tmp_path):
    """Import a lesson in fast mode and run ``main([])``; returns its key results."""
    monkeypatch.syspath_prepend(str(LESSON_DIR))
    import _common
    monkeypatch.setattr(_common, "FAST", True)
    monkeypatch.setenv("MINISNN_LESSONS_OUT", str(tmp_path))
    monkeypatch.delenv("MINISNN_DEVICE", raising=False)
    monkeypatch.delenv("MINISNN_LESSON_RESULT", raising=False)
    spec = importlib.util.spec_from_file_location(f"lesson_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main([])


def run_as_script(path, tmp_path, fast, timeout):
    """``python lessons/NN_topic.py`` in a fresh process; returns (completed process, key results)."""
    result_file = tmp_path / "result.json"
    env = dict(os.environ, MINISNN_LESSONS_OUT=str(tmp_path), MINISNN_LESSON_RESULT=str(result_file),
               MPLBACKEND="Agg")
    env.pop("MINISNN_DEVICE", None)
    env.pop("MINISNN_FAST", None)
    command = [sys.executable, str(path)] + (["--fast"] if fast else [])
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{path.name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done, json.loads(result_file.read_text())


def assert_figures(tmp_path, name):
    figures = list(tmp_path.rglob("*.png"))
    assert figures, f"{name} wrote no PNG under {tmp_path}"
    assert all(f.stat().st_size > 1000 for f in figures), f"{name} wrote an empty PNG: {figures}"


@pytest.mark.parametrize("lesson", LESSONS, ids=STEMS)
def test_lesson_runs_and_its_claim_holds(lesson, tmp_path, monkeypatch, capsys):
    result = run_in_process(lesson, monkeypatch, tmp_path)
    out = capsys.readouterr().out
    assert "fast mode" in out, f"{lesson.name} did not announce its fast mode"
    assert_figures(tmp_path, lesson.name)
    number = int(lesson.name[:2])
    if number < len(LESSONS):
        assert f"Next: lesson {number + 1:02d}" in out, f"{lesson.name} does not point to the next lesson"
    CLAIMS[lesson.name[:2]](result, fast=True)


def test_a_lesson_runs_as_a_script(tmp_path):
    done, result = run_as_script(LESSONS[0], tmp_path, fast=True, timeout=120)
    assert "fast mode" in done.stdout
    assert_figures(tmp_path, LESSONS[0].name)
    CLAIMS["01"](result, fast=True)


def test_the_nir_lesson_skips_cleanly_without_nir(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "nir", None)                   # import nir now raises ImportError
    lesson = next(p for p in LESSONS if "nir" in p.name)
    result = run_in_process(lesson, monkeypatch, tmp_path)
    assert result["nir_available"] is False and result["euler_differs_only_at_ties"]
    assert "skipped" in capsys.readouterr().out
    assert_figures(tmp_path, lesson.name)


@pytest.mark.skipif(not SLOW, reason="full-size lessons take minutes: set MINISNN_SLOW_LESSONS=1")
@pytest.mark.parametrize("number", FULL_MODE)
def test_full_size_claims(number, tmp_path):
    lesson = next(p for p in LESSONS if p.name.startswith(number))
    _, result = run_as_script(lesson, tmp_path, fast=False, timeout=900)
    assert_figures(tmp_path, lesson.name)
    CLAIMS[number](result, fast=False)


# -------------------------------------------------------------------------------- the course as a whole
def test_the_course_is_complete():
    numbers = [int(p.name[:2]) for p in LESSONS]
    assert len(LESSONS) >= 18, STEMS
    assert numbers == list(range(1, len(LESSONS) + 1)), f"lessons are not numbered 01, 02, ...: {numbers}"
    assert sorted(CLAIMS) == [p.name[:2] for p in LESSONS], "every lesson needs a claim in CLAIMS, and only they"


def test_every_lesson_is_in_the_readme_index():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    missing = [p.name for p in LESSONS if f"lessons/{p.name}" not in readme]
    assert not missing, f"README.md's lesson index does not mention {missing}"


def test_every_lesson_says_what_you_will_learn_and_see():
    for lesson in LESSONS:
        doc = ast.get_docstring(ast.parse(lesson.read_text(encoding="utf-8")))
        assert doc and doc.startswith(f"Lesson {lesson.name[:2]} -- "), lesson.name
        for part in ("What you will learn", "What you will see", f"python lessons/{lesson.name}"):
            assert part in doc, f"{lesson.name}: the docstring lacks {part!r}"
        mentioned = {int(n) for n in _lesson_numbers(doc)}
        assert all(1 <= n <= len(LESSONS) for n in mentioned), f"{lesson.name} mentions a lesson that does not exist"


def _lesson_numbers(text):
    return re.findall(r"[Ll]essons? (\d\d)\b", text)


def _resolve(dotted):
    """The object a dotted minisnn name stands for: the longest importable module prefix, then attributes."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


def _uses(tree):
    """Of one lesson: the engine names it imports ({dotted name: local name}), the plain names its code
    uses, and the attribute names it uses (x.attr)."""
    imported, names, attributes = {}, set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "minisnn":
            imported.update({f"{node.module}.{a.name}": a.asname or a.name for a in node.names})
        elif isinstance(node, ast.Import):
            imported.update({a.name: (a.asname or a.name).split(".")[0] for a in node.names
                             if a.name.split(".")[0] == "minisnn"})
        elif isinstance(node, ast.Attribute):
            attributes.add(node.attr)
        elif isinstance(node, ast.Name):
            names.add(node.id)
    return imported, names, attributes


def _introduces(tree, name):
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "INTRODUCES" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{name} has no INTRODUCES tuple")


def test_no_engine_name_before_the_lesson_that_introduces_it():
    introduced_by = {}                   # id(object) -> (lesson, dotted name) for module-level names
    methods_by = {}                      # attribute name -> (lesson, dotted name) for methods of classes
    trees = {p.name: ast.parse(p.read_text(encoding="utf-8")) for p in LESSONS}
    for lesson, tree in trees.items():
        for dotted in _introduces(tree, lesson):
            parent, _, attr = dotted.rpartition(".")
            if isinstance(_resolve(parent), type):
                assert attr not in methods_by, f"{dotted} introduced twice: {lesson} and {methods_by[attr][0]}"
                methods_by[attr] = (lesson, dotted)
            else:
                key = id(_resolve(dotted))
                assert key not in introduced_by, f"{dotted} introduced twice: {lesson} and {introduced_by[key][0]}"
                introduced_by[key] = (lesson, dotted)
    problems = []
    for lesson, tree in trees.items():
        imported, names, attributes = _uses(tree)
        for dotted in sorted(imported):
            source = introduced_by.get(id(_resolve(dotted)))
            if source is None:
                problems.append(f"{lesson} uses {dotted}, which no lesson introduces")
            elif source[0] > lesson:
                problems.append(f"{lesson} uses {dotted} before {source[0]} introduces it")
        for attr in sorted(attributes & set(methods_by)):
            if methods_by[attr][0] > lesson:
                problems.append(f"{lesson} uses .{attr} before {methods_by[attr][0]} introduces {methods_by[attr][1]}")
        local_names = {id(_resolve(d)): name for d, name in imported.items()}   # the name the import binds
        for dotted in _introduces(tree, lesson):
            parent, _, attr = dotted.rpartition(".")
            if isinstance(_resolve(parent), type):
                ok = attr in attributes
            else:
                ok = local_names.get(id(_resolve(dotted))) in names
            if not ok:
                problems.append(f"{lesson} introduces {dotted} but does not use it")
    assert not problems, "\n".join(problems)
