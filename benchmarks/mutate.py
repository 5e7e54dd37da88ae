"""Mutation testing: plant one small bug at a time into minisnn and see whether the module's tests notice.

    python benchmarks/mutate.py core optim                  # every mutant of these module groups
    python benchmarks/mutate.py --sample 200 --seed 0 data  # a seeded random sample of each group
    python benchmarks/mutate.py --list checkpoint           # the mutants, without running them
    python benchmarks/mutate.py --only "optim.py:SGD.update" optim   # mutants whose id contains the text
    python benchmarks/mutate.py --covering-only --json /tmp/m.json data   # quick first pass (see below)
    python benchmarks/mutate.py --rerun /tmp/m.json data    # only the survivors of an earlier --json run
    python benchmarks/mutate.py --report /tmp/m.json --report /tmp/rerun.json data   # their combined table
    python benchmarks/mutate.py --planted                   # the hand-written bugs of PLANTED (issue #21)

Groups (``GROUPS``): core, functions, optim, checkpoint, train, data. A mutant is one small change of a
module's syntax tree, the slips a developer makes:

    operator    a + b -> a - b, - -> +, * <-> /, // -> /, % -> //, ** -> *, & <-> |, and the same in +=, -= ...
    compare     < <-> <=, > <-> >=, == <-> !=, is <-> is not, in <-> not in
    logic       and <-> or, not x -> x, -x -> x, if c -> if not (c) (also in x if c else y, while c)
    constant    n -> n + 1 (1 -> 0), x -> x + 1.0, True <-> False
    statement   an assignment, call, return, raise, del or assert replaced by pass
    argument    the first two positional arguments of a call swapped; one keyword argument dropped
    function    min <-> max, any <-> all, minimum <-> maximum, argmin <-> argmax

Docstrings, f-strings and other string constants (the text of messages) are not mutated.

Each mutant is written into a scratch copy of the repository (the working tree is never touched); tests then
run on it with ``pytest -x`` and a timeout, in a process forked from one that has already imported pytest,
Hypothesis and NumPy (no minisnn: the child imports the mutated code), with Hypothesis derandomised (the "ci"
profile of tests/conftest.py) so that a run is repeatable. First the tests of the module's list (``TESTS``)
that execute one of the mutant's lines, the fastest first: a traced run of the unmutated code maps each line
to the tests that run it, in child processes too (linemap.py); a line run at import time takes the whole
list. If those pass, the whole list runs -- or, with ``--covering-only``, the mutant is reported a survivor
at once (a quick first pass: never a false kill, at worst a false survivor, which ``--rerun`` then settles).
A mutant is killed when a test fails or errors, or the run times out; it survives when the tests pass. The
unmutated code must pass the whole list first (the baseline, which also sets each module's timeout).

Survivors that no test can tell from the original (equivalent mutants) or that are not worth a test are
listed in ``EXPLAINED`` with the reason. The kill rate per group is killed / (mutants run - equivalent);
a mutant "not worth a test" still counts as a survivor. Run it niced on a shared machine:

    nice -n 19 python benchmarks/mutate.py --json /tmp/mutants.json core functions optim checkpoint train data
"""
import argparse
import ast
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import linemap

REPO = Path(__file__).resolve().parents[1]
LINEMAP = Path(linemap.__file__).resolve()

# module file -> the fast test files (or single tests) that exercise it (the most specific first: -x stops at the
# first failure)
TESTS = {
    "minisnn/core.py": ["tests/test_core.py", "tests/test_basic_ops.py", "tests/test_partial_gradients.py"],
    "minisnn/functions/basic.py": ["tests/test_basic_ops.py", "tests/test_core.py", "tests/test_partial_gradients.py"],
    "minisnn/functions/conv.py": ["tests/test_conv.py", "tests/test_linear_pool.py", "tests/test_partial_gradients.py"],
    "minisnn/functions/linear.py": ["tests/test_linear_pool.py", "tests/test_partial_gradients.py"],
    "minisnn/functions/loss.py": ["tests/test_loss.py"],
    "minisnn/functions/neuron.py": ["tests/test_neuron.py"],
    "minisnn/functions/norm.py": ["tests/test_norm.py", "tests/test_sync_norm.py", "tests/test_partial_gradients.py"],
    "minisnn/functions/surrogate.py": ["tests/test_surrogate.py", "tests/test_neuron.py"],
    "minisnn/optim.py": ["tests/test_optim.py", "tests/test_train.py"],
    "minisnn/checkpoint.py": ["tests/test_checkpoint.py", "tests/test_train.py"],
    "minisnn/train.py": ["tests/test_train.py", "tests/test_cli.py"],
    "minisnn/experiment.py": ["tests/test_cli.py", "tests/test_train.py"],
    "minisnn/evaluate.py": ["tests/test_train.py", "tests/test_cli.py"],
    "minisnn/cli.py": ["tests/test_cli.py", "tests/test_train.py",
                       "tests/test_bench.py::test_cli_bench_prints_rows_and_a_table"],
    "minisnn/data/cifar10.py": ["tests/test_data.py"],
    "minisnn/data/cifar10_dvs.py": ["tests/test_cifar10_dvs.py"],
    "minisnn/data/digits.py": ["tests/test_data.py"],
    "minisnn/data/errors.py": ["tests/test_data.py"],
    "minisnn/data/imagefolder.py": ["tests/test_imagefolder.py", "tests/test_data.py"],
    "minisnn/data/loader.py": ["tests/test_loader.py", "tests/test_data.py", "tests/test_imagefolder.py",
                               "tests/test_dist.py", "tests/test_cifar10_dvs.py"],
    "minisnn/data/registry.py": ["tests/test_registry.py", "tests/test_data.py", "tests/test_cifar10_dvs.py",
                                 "tests/test_imagefolder.py"],
    "minisnn/data/shards.py": ["tests/test_data.py", "tests/test_imagefolder.py", "tests/test_dist.py"],
    "minisnn/data/transforms.py": ["tests/test_transforms.py", "tests/test_data.py"],
}

GROUPS = {
    "core": ["minisnn/core.py"],
    "functions": sorted(f for f in TESTS if f.startswith("minisnn/functions/")),
    "optim": ["minisnn/optim.py"],
    "checkpoint": ["minisnn/checkpoint.py"],
    "train": ["minisnn/train.py", "minisnn/experiment.py", "minisnn/evaluate.py", "minisnn/cli.py"],
    "data": sorted(f for f in TESTS if f.startswith("minisnn/data/")),
}

BINARY_SWAPS = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Div,
                ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult, ast.BitAnd: ast.BitOr, ast.BitOr: ast.BitAnd,
                ast.LShift: ast.RShift, ast.RShift: ast.LShift}
COMPARE_SWAPS = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
                 ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is, ast.In: ast.NotIn, ast.NotIn: ast.In}
FUNCTION_SWAPS = {"min": "max", "max": "min", "any": "all", "all": "any", "minimum": "maximum",
                  "maximum": "minimum", "argmin": "argmax", "argmax": "argmin"}
DROPPABLE = (ast.Expr, ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Return, ast.Raise, ast.Delete, ast.Assert)


# ----------------------------------------------------------------------------------- making mutants
class Mutant:
    """One change of one module's tree: ``apply()`` makes it, ``undo()`` reverts it. ``shown`` is the node
    whose source, after ``apply()``, shows the change."""

    def __init__(self, path, where, kind, node, shown, change, text=None):
        self.path, self.where, self.kind, self.line = path, where, kind, node.lineno
        self.end_line = getattr(node, "end_lineno", None) or node.lineno
        self.before, self.shown, self.text = short(node), shown, text
        self.apply, self.undo = change
        self.id, self.chosen = None, True


def short(node, width=70):
    text = " ".join(ast.unparse(node).split())
    return text if len(text) <= width else text[:width - 3] + "..."


def set_attribute(obj, attr, new):
    old = getattr(obj, attr)
    return (lambda: setattr(obj, attr, new)), (lambda: setattr(obj, attr, old))


def set_item(items, i, new):
    old = items[i]

    def apply():
        items[i] = new

    def undo():
        items[i] = old
    return apply, undo


def swap_first_two(items):
    def swap():
        items[0], items[1] = items[1], items[0]
    return swap, swap


def drop_item(items, i):
    dropped = items[i]
    return (lambda: items.pop(i)), (lambda: items.insert(i, dropped))


def is_text(node):
    return isinstance(node, ast.JoinedStr) or (isinstance(node, ast.Constant) and isinstance(node.value, str))


def is_negation_of_a_mutant(test):
    """Whether ``not (test)`` is already another mutant: not x -> x, a == b -> a != b, is, in."""
    return (isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not)) or (
        isinstance(test, ast.Compare) and len(test.ops) == 1
        and isinstance(test.ops[0], (ast.Eq, ast.NotEq, ast.Is, ast.IsNot, ast.In, ast.NotIn)))


def mutants_of(path, tree):
    """Every mutant of the module ``tree`` (parsed from ``path``), in a fixed order; ``where`` is the
    qualified name of the function or class a mutant sits in."""
    found = []

    def add(where, kind, node, shown, change, text=None):
        found.append(Mutant(path, where, kind, node, shown, change, text))

    def visit(node, where):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            where = f"{where}.{node.name}" if where else node.name
        for field, value in ast.iter_fields(node):  # statements dropped, and operands taken for -x and not x
            items = value if isinstance(value, list) else [value]
            for i, child in enumerate(items):
                if isinstance(child, DROPPABLE) and not (isinstance(child, ast.Expr) and is_text(child.value)) \
                        and not (isinstance(child, ast.Return) and child.value is None):
                    blank = ast.copy_location(ast.Pass(), child)
                    add(where, "statement", child, blank, set_item(items, i, blank) if isinstance(value, list)
                        else set_attribute(node, field, blank))
                elif isinstance(child, ast.UnaryOp) and isinstance(child.op, (ast.Not, ast.USub)):
                    add(where, "logic", child, child.operand, set_item(items, i, child.operand)
                        if isinstance(value, list) else set_attribute(node, field, child.operand))
        if isinstance(node, (ast.BinOp, ast.AugAssign)) and type(node.op) in BINARY_SWAPS \
                and not (isinstance(node, ast.BinOp) and is_text(node.left)):  # "..." % args is text
            add(where, "operator", node, node, set_attribute(node, "op", BINARY_SWAPS[type(node.op)]()))
        elif isinstance(node, ast.Compare):
            for k, op in enumerate(node.ops):
                if type(op) in COMPARE_SWAPS:
                    add(where, "compare", node, node, set_item(node.ops, k, COMPARE_SWAPS[type(op)]()))
        elif isinstance(node, ast.BoolOp):
            add(where, "logic", node, node, set_attribute(node, "op", ast.Or() if isinstance(node.op, ast.And)
                                                          else ast.And()))
        elif isinstance(node, ast.Constant) and type(node.value) in (bool, int, float):
            value = node.value
            new = (not value) if isinstance(value, bool) else (0 if value == 1 else value + 1)
            add(where, "constant", node, node, set_attribute(node, "value", new))
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
            if name in FUNCTION_SWAPS:
                add(where, "function", node, node, set_attribute(func, "id" if isinstance(func, ast.Name) else "attr",
                                                                 FUNCTION_SWAPS[name]))
            args = node.args
            if len(args) >= 2 and not any(isinstance(a, ast.Starred) for a in args[:2]) \
                    and ast.dump(args[0]) != ast.dump(args[1]):
                add(where, "argument", node, node, swap_first_two(args),
                    f"{short(func, 40)}({short(args[0], 30)}, {short(args[1], 30)}{', ...' if len(args) > 2 else ''})"
                    " -> the two swapped")
            for k, keyword in enumerate(node.keywords):
                if keyword.arg is not None:
                    add(where, "argument", node, node, drop_item(node.keywords, k),
                        f"{short(func, 40)}(..., {keyword.arg}={short(keyword.value, 30)}) -> without {keyword.arg}")
        elif isinstance(node, (ast.If, ast.IfExp, ast.While)) and not is_negation_of_a_mutant(node.test):
            negated = ast.copy_location(ast.UnaryOp(ast.Not(), node.test), node.test)
            add(where, "logic", node.test, negated, set_attribute(node, "test", negated))
        for child in ast.iter_child_nodes(node):
            if not is_text(child) and not (isinstance(child, ast.Expr) and is_text(child.value)):
                visit(child, where)  # docstrings, f-strings and string constants stay as they are

    visit(tree, "")
    return found


def load_mutants(files):
    """{file: (tree, [Mutant])}, each mutant with a unique, readable ``id``: file, function, kind, change."""
    out = {}
    for path in files:
        tree = ast.parse((REPO / path).read_text(), filename=path)
        found = mutants_of(path, tree)
        seen = {}
        for m in found:
            m.apply()
            after = short(m.shown)
            m.undo()
            change = m.text or f"{m.before} -> {after}"
            key = f"{Path(path).name}:{m.where or '<module>'}: {m.kind}: {change}"
            seen[key] = seen.get(key, 0) + 1
            m.id = key if seen[key] == 1 else f"{key} #{seen[key]}"
        out[path] = (tree, found)
    return out


# ------------------------------------------------------------------------------------ running them
def scratch_copy(root):
    """A copy of the repository (no .git, .venv, runs) under ``root``, with ``shared`` beside it."""
    repo = root / "repo"
    ignore = shutil.ignore_patterns(".git", ".venv", "__pycache__", "runs", "output", "*.egg-info", ".hypothesis",
                                    ".pytest_cache")
    shutil.copytree(REPO, repo, ignore=ignore, symlinks=True)
    shared = REPO.parent / "shared"
    if shared.exists():
        os.symlink(shared.resolve(), root / "shared")
    return repo


def in_child(body, repo, timeout, log):
    """Run ``body()`` (returning an exit code) in a forked child, in the scratch repository, its output in
    ``log``. Returns (exit code or "timeout", seconds)."""
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child: its own process group, so that a timeout takes the processes it started too
        try:
            os.setpgid(0, 0)
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.chdir(repo)
            sys.path.insert(0, str(repo))
            os._exit(int(body()))
        except BaseException:
            os._exit(99)
    deadline = start + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.perf_counter() > deadline:
            os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "timeout", time.perf_counter() - start
        time.sleep(0.02)
    return os.waitstatus_to_exitcode(status), time.perf_counter() - start


def pytest_args(tests, log, stop_at_first):
    return [*tests, *(["-x"] if stop_at_first else []), "-q", "-p", "no:cacheprovider",
            "--basetemp", str(Path(log).parent / "tmp")]


def run_tests(repo, tests, timeout, log, stop_at_first=True):
    """Run ``pytest -x`` (or without -x) on ``tests`` in the scratch repository in a forked child. Returns
    (status, seconds): status "passed", "failed" (a test failed or errored, or collection broke), "timeout"
    or "crashed"."""
    def body():
        import pytest
        return pytest.main(pytest_args(tests, log, stop_at_first))
    code, seconds = in_child(body, repo, timeout, log)
    if code == "timeout":
        return code, seconds
    if code == 0:
        return "passed", seconds
    if code in (1, 2, 3):  # tests failed / interrupted (collection or import error) / internal error
        return "failed", seconds
    if code < 0:
        return "crashed", seconds
    raise RuntimeError(f"pytest exited with {code} on {tests}; see {log}")


def map_lines(repo, tests, log):
    """Run ``tests`` once (no -x) with every line of the package traced; return {file: {line: [node ids]}}
    (see linemap.py), lines run outside any test under the node id ``linemap.OUTSIDE``."""
    out = Path(log).parent / "linemap.json"
    site = Path(log).parent / "linemap-site"
    site.mkdir(exist_ok=True)  # the sitecustomize of every Python process the tests start
    (site / "sitecustomize.py").write_text(
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('minisnn_linemap', {str(LINEMAP)!r})\n"
        "module = importlib.util.module_from_spec(spec)\nspec.loader.exec_module(module)\nmodule.site_hook()\n")

    def body():
        import pytest
        os.environ["PYTHONPATH"] = f"{site}{os.pathsep}{os.environ['PYTHONPATH']}"
        os.environ[linemap.ROOT_ENV] = str(repo / "minisnn")
        tracer = linemap.LineTracer(repo / "minisnn")
        plugin = linemap.LineMapPlugin(tracer, Path(log).parent / "linemap-spool")
        tracer.start()
        code = pytest.main(pytest_args(tests, log, False), plugins=[plugin])
        sys.settrace(None)
        plugin.save(out, repo)
        return code
    code, seconds = in_child(body, repo, 3600, log)
    if code != 0:
        raise SystemExit(f"the traced run of {tests} did not pass ({code}); see {log}:\n{first_failure(log)}")
    print(f"line map: {len(tests)} test files traced in {seconds:.0f} s", file=sys.stderr)
    return {path: {int(line): ids for line, ids in lines.items()} for path, lines in json.loads(out.read_text()).items()}


def covering_tests(m, line_map, tests):
    """The node ids of ``tests`` (the module's TESTS entries) that run a line of mutant ``m``, the fastest
    first; None when a line of it runs outside any test (at import: every test may see it)."""
    lines = line_map.get(m.path, {})
    found = []
    for line in range(m.line, m.end_line + 1):
        ids = lines.get(line, [])
        if linemap.OUTSIDE in ids:
            return None
        found += [i for i in ids if i not in found and any(i == t or i.startswith(t + "::") for t in tests)]
    return found


def failures(log):
    """The failing tests named in a pytest log, in order (or the log's last line when it names none)."""
    lines = Path(log).read_text(errors="replace").splitlines()
    named = [line.split(" - ")[0] for line in lines if line.startswith(("FAILED ", "ERROR "))]
    return named or lines[-1:]


def first_failure(log):
    """The first failing test named in a pytest log (or the log's last line)."""
    return (failures(log) or [""])[0]


def run(files, mutants, repo, timeout_factor, verbose, covering_only, save=lambda results: None):
    """Run the baseline of every file, then each mutant; return a list of result dicts. A mutant first meets
    the tests that run its lines (the line map); if they all pass, the whole test list of its module -- unless
    ``covering_only``, which reports it as a survivor of its covering tests (``"ran": "covering"``).
    ``save(results)`` is called after each mutant, so that a run cut short keeps what it found."""
    results = []
    work = repo.parent
    log = str(work / "log.txt")
    chosen_files = [path for path in files if any(m.chosen for m in mutants[path][1])]
    if not chosen_files:
        return results
    line_map = map_lines(repo, list(dict.fromkeys(t for path in chosen_files for t in TESTS[path])), log)
    for path in chosen_files:
        tree, found = mutants[path]
        chosen = [m for m in found if m.chosen]
        target = repo / path
        target.write_text(ast.unparse(tree))  # the rendered original: the same program, formatted like the mutants
        status, base = run_tests(repo, TESTS[path], 1800, log)
        if status != "passed":
            raise SystemExit(f"baseline of {path} does not pass its tests ({status}); see {log}:\n"
                             f"{first_failure(log)}")
        timeout = timeout_factor * base + 10
        print(f"{path}: baseline {base:.1f} s, {len(chosen)} mutants, timeout {timeout:.0f} s", file=sys.stderr)
        for k, m in enumerate(chosen, 1):
            m.apply()
            try:
                target.write_text(ast.unparse(tree))
            finally:
                m.undo()
            covering = covering_tests(m, line_map, TESTS[path])
            status, seconds, ran = "passed", 0.0, "none"
            if covering:
                status, seconds = run_tests(repo, covering, timeout, log)
                ran = "covering"
            if status == "passed" and (covering is None or not covering_only):
                status, more = run_tests(repo, TESTS[path], timeout, log)
                seconds, ran = seconds + more, "all"
            killed_by = first_failure(log) if status == "failed" else status
            results.append({"id": m.id, "file": path, "line": m.line, "kind": m.kind, "status": status,
                            "killed_by": killed_by if status != "passed" else None, "ran": ran,
                            "covering_tests": None if covering is None else len(covering),
                            "seconds": round(seconds, 2)})
            save(results)
            if verbose or status == "passed":
                print(f"  [{k}/{len(chosen)}] {'SURVIVED' if status == 'passed' else 'killed  '} "
                      f"line {m.line}: {m.id}" + ("" if ran == "all" else f" (tests run: {ran})"), file=sys.stderr)
        target.write_text((REPO / path).read_text())
    return results


def run_planted(repo, only, timeout):
    """Plant each bug of ``PLANTED`` in turn into the scratch copy, run its tests (all of them, no -x) and
    print the tests that fail; a bug no test notices is printed as MISSED. Returns the number missed."""
    log, missed = str(repo.parent / "log.txt"), 0
    for name, path, edits, tests in PLANTED:
        if only and only not in name:
            continue
        target = repo / path
        original = planted = target.read_text()
        for old, new in edits:
            if planted.count(old) != 1:
                raise SystemExit(f"planted bug {name!r}: {old!r} occurs {planted.count(old)} times in {path}, "
                                 "not once; update PLANTED")
            planted = planted.replace(old, new)
        target.write_text(planted)
        try:
            status, seconds = run_tests(repo, tests, timeout, log, stop_at_first=False)
        finally:
            target.write_text(original)
        failed = failures(log) if status == "failed" else [status]
        missed += status == "passed"
        print(f"{'MISSED' if status == 'passed' else 'caught'}  {name}  ({path}, {seconds:.0f} s)", flush=True)
        if status != "passed":
            print(f"    {len(failed)} failing: " + "; ".join(f.split(" ", 1)[-1] for f in failed[:3])
                  + (" ..." if len(failed) > 3 else ""), flush=True)
    return missed


# ------------------------------------------------------------------------------------------ report
def summarise(results, groups, totals):
    lines = ["| group | mutants | run | killed | survivors: equivalent | not worth a test | unexplained | "
             "kill rate (non-equivalent) |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    survivors = []
    for group in groups:
        mine = [r for r in results if r["file"] in GROUPS[group]]
        killed = sum(r["status"] != "passed" for r in mine)
        lived = [r for r in mine if r["status"] == "passed"]
        equivalent = [r for r in lived if EXPLAINED.get(r["id"], ("",))[0] == "equivalent"]
        unworthy = [r for r in lived if EXPLAINED.get(r["id"], ("",))[0] == "not worth a test"]
        unexplained = [r for r in lived if r["id"] not in EXPLAINED]
        counted = len(mine) - len(equivalent)
        rate = f"{100 * killed / counted:.1f} %" if counted else "-"
        lines.append(f"| {group} | {totals[group]} | {len(mine)} | {killed} | {len(equivalent)} | {len(unworthy)} | "
                     f"{len(unexplained)} | {rate} |")
        survivors += lived
    return "\n".join(lines), survivors


def main(argv=None):
    parser = argparse.ArgumentParser(description="Plant mutants into minisnn modules and run their tests.")
    parser.add_argument("groups", nargs="*", default=list(GROUPS), help=f"module groups ({', '.join(GROUPS)})")
    parser.add_argument("--sample", type=int, default=0, help="run a seeded random sample of N mutants per group "
                                                               "(0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default=None, help="run only the mutants whose id contains this text")
    parser.add_argument("--report", action="append", default=None, metavar="JSON",
                        help="print the table of earlier --json runs and stop; repeat it for a first run, then "
                             "its reruns (a later file's result for a mutant replaces an earlier one)")
    parser.add_argument("--rerun", default=None, help="run only the mutants that survived in this earlier --json "
                                                      "file (after writing tests for them)")
    parser.add_argument("--timeout-factor", type=float, default=4.0,
                        help="a mutant's timeout: this times the baseline seconds, plus 10 s")
    parser.add_argument("--covering-only", action="store_true",
                        help="a mutant that passes the tests running its lines survives without the rest of its "
                             "module's tests (faster; --rerun its survivors without this to confirm them)")
    parser.add_argument("--list", action="store_true", help="print the mutants (id and line) and stop")
    parser.add_argument("--json", default=None, help="write every result to this JSON file")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every mutant, not only survivors")
    parser.add_argument("--planted", action="store_true",
                        help="plant the hand-written bugs of PLANTED (issue #21's list) one at a time instead; "
                             "--only filters them")
    args = parser.parse_args(argv)
    if args.planted:
        os.environ.update(CI="1", PYTHONDONTWRITEBYTECODE="1", MPLBACKEND="Agg")
        sys.dont_write_bytecode = True
        import pytest  # noqa: F401  imported once here, so that every forked child starts with it
        with tempfile.TemporaryDirectory(prefix="minisnn-planted-") as root:
            repo = scratch_copy(Path(root))
            os.environ["PYTHONPATH"] = str(repo)
            missed = run_planted(repo, args.only, 900)
        print(f"{missed} of the planted bugs missed")
        return 1 if missed else 0
    unknown = [g for g in args.groups if g not in GROUPS]
    if unknown:
        parser.error(f"unknown group(s) {unknown}; choose from {list(GROUPS)}")
    if args.report:
        return report(args.report, args.groups)
    files = [f for g in args.groups for f in GROUPS[g]]
    mutants = load_mutants(files)
    survived = {r["id"] for r in json.loads(Path(args.rerun).read_text())["results"] if r["status"] == "passed"} \
        if args.rerun else None
    totals, sample_sizes = {}, {}
    for group in args.groups:
        pool = [m for f in GROUPS[group] for m in mutants[f][1]]
        totals[group] = len(pool)
        if args.only:
            pool = [m for m in pool if args.only in m.id]
        if survived is not None:
            pool = [m for m in pool if m.id in survived]
        chosen = random.Random(f"{args.seed}:{group}").sample(pool, args.sample) \
            if 0 < args.sample < len(pool) else pool
        chosen_ids = {id(m) for m in chosen}
        for m in (m for f in GROUPS[group] for m in mutants[f][1]):
            m.chosen = id(m) in chosen_ids
        sample_sizes[group] = len(chosen)
    if args.list:
        for path in files:
            for m in mutants[path][1]:
                if m.chosen:
                    print(f"{path}:{m.line}  {m.id}")
        print({g: f"{sample_sizes[g]} of {totals[g]}" for g in args.groups}, file=sys.stderr)
        return 0
    os.environ.update(CI="1", PYTHONDONTWRITEBYTECODE="1", MPLBACKEND="Agg")
    sys.dont_write_bytecode = True
    import numpy  # noqa: F401  imported once here, so that every forked child starts with it
    import pytest  # noqa: F401
    import hypothesis  # noqa: F401
    import hypothesis.extra.numpy  # noqa: F401
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="minisnn-mutate-") as root:
        repo = scratch_copy(Path(root))
        os.environ["PYTHONPATH"] = str(repo)  # subprocesses the tests start import the mutated copy too
        results = run(files, mutants, repo, args.timeout_factor, args.verbose, args.covering_only,
                      lambda results: save(args, totals, results, finished=False))
    table, survivors = summarise(results, args.groups, totals)
    print(f"\n{table}\n\n{len(results)} mutants in {time.perf_counter() - start:.0f} s "
          f"(sample: {args.sample or 'all'}, seed {args.seed})")
    for r in survivors:
        verdict, reason = EXPLAINED.get(r["id"], ("UNEXPLAINED", ""))
        print(f"- {r['file']}:{r['line']} {r['id']}\n    {verdict}{': ' + reason if reason else ''}")
    stale = [r["id"] for r in results if r["status"] != "passed" and r["id"] in EXPLAINED]
    names = {Path(f).name for f in files}
    ids = {m.id for f in files for m in mutants[f][1]}
    stale += [key for key in EXPLAINED if key.split(":")[0] in names and key not in ids]
    for key in stale:
        print(f"! EXPLAINED holds {key!r}, which is now killed or no longer made: remove it")
    save(args, totals, results, finished=True)
    return 0


def report(paths, groups):
    """Print the combined table of the runs in ``paths`` (the latest result of each mutant counts)."""
    latest, totals = {}, {}
    for path in paths:
        data = json.loads(Path(path).read_text())
        totals.update({g: n for g, n in data.get("totals", {}).items() if g not in totals})
        latest.update({r["id"]: r for r in data["results"]})
    results = list(latest.values())
    groups = [g for g in groups if g in totals]
    table, survivors = summarise(results, groups, totals)
    print(f"{table}\n\n{len(results)} mutants in {', '.join(paths)}")
    for r in survivors:
        verdict, reason = EXPLAINED.get(r["id"], ("UNEXPLAINED", ""))
        print(f"- {r['file']}:{r['line']} {r['id']}\n    {verdict}{': ' + reason if reason else ''}")
    return 0


def save(args, totals, results, finished):
    """Write the results so far to ``--json`` (through a temporary file, so a cut leaves the last whole one)."""
    if args.json:
        tmp = Path(args.json + ".tmp")
        tmp.write_text(json.dumps({"args": vars(args), "totals": totals, "finished": finished, "results": results},
                                  indent=1))
        os.replace(tmp, args.json)


# Survivors, by mutant id: ("equivalent" | "not worth a test", why). Reviewed by hand; see benchmarks/RESULTS.md.
EQ, NW = "equivalent", "not worth a test"
EXPLAINED = {
    # core
    "core.py:Tensor: constant: 200 -> 201": (EQ, "any __array_priority__ above ndarray's 0 makes NumPy defer"),
    "core.py:Tensor.backward: compare: g is None -> g is not None": (
        EQ, "enters the zero-filling branch for every function; it replaces only the missing gradients (timed out "
            "once on a loaded machine, which counts as killed: it is not)"),
    # functions
    "basic.py:sum_to_array: statement: return g -> pass": (
        EQ, "falls through to a sum over no axes: the same values, copied"),
    "basic.py:Clip.forward: argument: xp.clip(x, self.lo, ...) -> the two swapped": (
        EQ, "clip(lo, x, hi) = min(max(lo, x), hi) = clip(x, lo, hi) for lo <= hi"),
    "basic.py:Transpose.backward: constant: 0 -> 1": (EQ, "every entry of the inverse permutation is overwritten"),
    "basic.py:_is_basic_index: statement: return all((isinstance(i, (int, slice)) or i is None or i is Ellips... "
    "-> pass": (EQ, "every index then takes the add.at path, which is also right for basic indices"),
    "basic.py:_is_basic_index: logic: isinstance(i, (int, slice)) or i is None or i is Ellipsis -> "
    "isinstance(i, (int, slice)) and i is None and (i is Ellipsis)": (EQ, "always False: the add.at path, as above"),
    "basic.py:Mean.forward: operator: x.size // y.size -> x.size / y.size": (
        EQ, "the ratio is a whole number: dividing by it as a float gives the same values and dtype"),
    "basic.py:add: argument: Add()(a, b) -> the two swapped": (EQ, "a + b = b + a; each gradient goes to its input"),
    "basic.py:mul: argument: Mul()(a, b) -> the two swapped": (EQ, "a * b = b * a; each gradient goes to its input"),
    "basic.py:_bind_tensor_operators: argument: add(other, self) -> the two swapped": (EQ, "addition commutes"),
    "basic.py:_bind_tensor_operators: argument: mul(other, self) -> the two swapped": (EQ, "multiplication commutes"),
    "conv.py:col2im: constant: 2 -> 3": (EQ, "a larger zero buffer: nothing is added past H + 2 pad, and the cut "
                                             "[pad, pad + H) is the same"),
    "conv.py:col2im: constant: 2 -> 3 #2": (EQ, "the same, for the width"),
    "conv.py:_check_dtypes: constant: 0 -> 1": (EQ, "read after checking that all arrays share one dtype; conv2d "
                                                     "always passes at least two"),
    "loss.py:SoftmaxCrossEntropy.forward: argument: labels.astype(..., copy=False) -> without copy": (
        EQ, "a copy instead of the same array: never written to"),
    "loss.py:SoftmaxCrossEntropy.forward: constant: False -> True": (EQ, "the same: copy=True"),
    "norm.py:batch_norm: statement: x, weight, bias = (as_tensor(a) for a in (x, weight, bias)) -> pass": (
        EQ, "everything after it takes raw arrays as well: _check reads shape and dtype, the Functions wrap them"),
    "norm.py:tdbn: argument: batch_norm(..., per_timestep=False) -> without per_timestep": (
        EQ, "batch_norm's default is False"),
    "norm.py:_check: operator: x.size // C -> x.size / C": (EQ, "x.size is a multiple of C"),
    "norm.py:SyncBatchNormFunction.__init__: constant: True -> False": (
        EQ, "training is read only by BatchNormFunction's forward and backward, both of which the sync version "
            "replaces"),
    "norm.py:_check: constant: True -> False": (EQ, "a default that batch_norm, the one caller, always overrides "
                                                     "(one_rank=group is None)"),
    "norm.py:SyncBatchNormFunction.backward: argument: gy3.sum(..., dtype=xp.float64) -> without dtype": (
        NW, "float32 instead of float64 partial sums of a float32 gradient before the allreduce: the last bits "
            "of dx change, within the float32 two-rank test's tolerance"),
    "surrogate.py:Surrogate.cuda_grad: statement: return None -> pass": (EQ, "returns None all the same"),
    "surrogate.py:SmoothSigmoid.cuda_grad: statement: return None -> pass": (EQ, "returns None all the same"),
    "surrogate.py:Sigmoid.__init__: statement: self.cuda_grad() -> pass": (
        EQ, "the early check cannot fail for a sigmoid: k/2 and k are finite for every finite k"),
    "surrogate.py:Triangle.grad: argument: xp.maximum(1 - xp.abs(v) * (1 / self.a), 0) -> the two swapped": (
        EQ, "maximum is symmetric"),
    "norm.py:SyncBatchNormFunction.forward: argument: xp.full(..., dtype=xp.float64) -> without dtype": (
        EQ, "the count is then an int64 array, and concatenating it with the float64 sums gives float64: the same "
            "exact count"),
    "norm.py:SyncBatchNormFunction.forward: argument: xp.maximum(sums[C:2 * C] / n - mean * ..., 0) -> the two "
    "swapped": (EQ, "maximum(a, 0) = maximum(0, a)"),
    "basic.py:repeat_over_time: statement: x = x if isinstance(x, Tensor) else Tensor(x) -> pass": (
        EQ, "reshape and broadcast_to take a raw array as well and return the same Tensor"),
    "norm.py:SyncBatchNormFunction.__init__: constant: 1.0 -> 0": (
        EQ, "a default its one caller (batch_norm with a group) always overrides"),
    "norm.py:SyncBatchNormFunction.__init__: constant: 0.1 -> 1.1": (
        EQ, "a default its one caller (batch_norm with a group) always overrides"),
    "norm.py:SyncBatchNormFunction.__init__: constant: 1e-05 -> 1.00001": (
        EQ, "a default its one caller (batch_norm with a group) always overrides"),
    "norm.py:BatchNormFunction.forward: argument: xp.asarray(..., dtype=x.dtype) -> without dtype #2": (
        NW, "only running statistics kept in another dtype than x would promote the output; models keep them in x's"),
    "norm.py:SyncBatchNormFunction.backward: argument: (gy3 * xn).sum(..., dtype=xp.float64) -> without dtype": (
        NW, "as for gy3.sum's float64 partial sums: the last bits of dx"),
    "norm.py:SyncBatchNormFunction.forward: argument: self.group.allreduce_(..., what='the tdBN statistics (sync-...) "
    "-> without what": (NW, "the words naming the collective in a dead-rank error"),
    "norm.py:SyncBatchNormFunction.backward: argument: self.group.allreduce_(..., what='the tdBN gradient sums (sy...) "
    "-> without what": (NW, "the words naming the collective in a dead-rank error"),
    # optim
    "optim.py:CosineSchedule.lr_at: argument: min(1.0, (s - self.warmup_steps) / (...) -> the two swapped": (
        EQ, "min is symmetric"),
    # train
    "train.py:Trainer.__init__: constant: 0 -> 1": (
        EQ, "version_of(SGD, params[1].data): the optimizer's version (fused kernels on a GPU) is chosen by the array "
            "module of another parameter; every parameter lives on the config's one device"),
    "train.py:Trainer.__init__: constant: 0 -> 1 #2": (EQ, "the same for Adam"),
    "train.py:Trainer.load: argument: changed_keys(saved, self.config) -> the two swapped": (
        EQ, "changed_keys compares the two configs key by key with !=, which is symmetric; both are checked configs "
            "holding every key of DEFAULTS"),
    "evaluate.py:evaluate_checkpoint: statement: out.mkdir(parents=True, exist_ok=True) -> pass": (
        EQ, "every file eval writes there goes through atomic_write, which makes its folder, parents included"),
    "experiment.py:<module>: constant: 256 -> 257": (
        NW, "the default --eval-batch-size: evaluation in eval mode scores every image alone (running statistics), "
            "so 257 gives the same figures, with other memory and speed"),
    "experiment.py:<module>: constant: 0 -> 1 #2": (
        NW, "the default --seed: 1 is as fixed and reproducible as 0; no result is documented for a seed not given"),
    "experiment.py:as_type: statement: parse.__name__ = name -> pass": (
        EQ, "argparse names a type only when it raises ValueError or TypeError; parse turns every ValueError of a "
            "check into ArgumentTypeError, whose own text is shown, and the checks raise nothing else on text"),
    "experiment.py:integer.check: statement: raise ValueError(f'must be an integer {where}, got {value!r}') "
    "from... -> pass": (
        EQ, "text that int() refuses stays text, and the next check raises the same message for it (neither an int "
            "nor an __index__)"),
    "experiment.py:number: constant: False -> True #2": (
        EQ, "the default of high_open: read only with an upper bound, and momentum, the one number with one, passes "
            "high_open=True"),
    "cli.py:add_train_args: argument: g.add_argument(..., type=checked('T')) -> without type": (
        EQ, "the same check in make_config turns the text into the same int (see --model)"),
    "cli.py:add_train_args: argument: g.add_argument(..., type=checked('depth')) -> without type": (
        EQ, "the same check in make_config turns the text into the same int (see --model)"),
    "evaluate.py:evaluate_checkpoint: argument: plot_raster(..., title='spikes of every spiking la...) -> without "
    "title": (NW, "the raster picture's title"),
    "evaluate.py:evaluate_checkpoint: argument: plot_membrane(..., title='membrane of firing neurons...) -> without "
    "title": (NW, "the membrane picture's title"),
    "cli.py:add_train_args: argument: g.add_argument(..., type=checked('dataset')) -> without type": (
        EQ, "the same check in make_config (see --model)"),
    "cli.py:add_train_args: argument: g.add_argument(..., type=checked('split_by')) -> without type": (
        EQ, "the same check in make_config (see --model)"),
    "cli.py:add_train_args: argument: g.add_argument(..., type=checked('split_rule')) -> without type": (
        EQ, "the same check in make_config (see --model)"),
    "cli.py:add_train_args: argument: g.add_argument(..., type=checked('resize')) -> without type": (
        EQ, "the same check in make_config (see --model)"),
    "cli.py:add_train_args: argument: g.add_argument(..., type=checked('image_size')) -> without type": (
        EQ, "the same check in make_config (see --model)"),
    "cli.py:add_train_args: argument: g.add_argument(..., type=checked('workers')) -> without type": (
        EQ, "the same check in make_config (see --model)"),
    "cli.py:add_train_args: argument: g.add_argument(..., type=checked('limit_train')) -> without type": (
        EQ, "the same check in make_config (see --model)"),
    "cli.py:add_train_args: argument: g.add_argument(..., type=checked('limit_test')) -> without type": (
        EQ, "the same check in make_config (see --model)"),
    "cli.py:add_train_args: argument: g.add_argument(..., type=checked('epochs')) -> without type": (
        EQ, "the same check in make_config (see --model)"),
    "cli.py:add_train_args: argument: g.add_argument(..., type=checked('batch_size')) -> without type": (
        EQ, "the same check in make_config (see --model)"),
    "cli.py:add_train_args: argument: g.add_argument(..., type=checked('eval_batch_size')) -> without type": (
        EQ, "the same check in make_config (see --model)"),
    "cli.py:add_train_args: argument: g.add_argument(..., type=checked('optimizer')) -> without type": (
        EQ, "the same check in make_config (see --model)"),
    "cli.py:add_train_args: argument: g.add_argument(..., type=checked('lr')) -> without type": (
        EQ, "the same check in make_config (see --model)"),
    "cli.py:add_train_args: argument: g.add_argument(..., type=checked('momentum')) -> without type": (
        EQ, "the same check in make_config (see --model)"),
    "cli.py:add_train_args: argument: g.add_argument(..., type=checked('warmup_epochs')) -> without type": (
        EQ, "the same check in make_config (see --model)"),
    "cli.py:add_train_args: argument: g.add_argument(..., type=checked('seed')) -> without type": (
        EQ, "the same check in make_config (see --model)"),
    "cli.py:add_train_args: argument: g.add_argument(..., type=checked('out')) -> without type": (
        EQ, "the same check in make_config (see --model)"),
    "cli.py:add_train_args: argument: g.add_argument(..., type=checked('device')) -> without type": (
        EQ, "the same check in make_config (see --model)"),
    "cli.py:add_train_args: argument: g.add_argument(..., dest='data_dir') -> without dest": (
        EQ, "argparse derives the same dest from the flag"),
    "cli.py:add_train_args: argument: g.add_argument(..., dest='image_size') -> without dest": (
        EQ, "argparse derives the same dest from the flag"),
    "cli.py:add_train_args: argument: g.add_argument(..., dest='limit_test') -> without dest": (
        EQ, "argparse derives the same dest from the flag"),
    "cli.py:add_train_args: argument: g.add_argument(..., dest='batch_size') -> without dest": (
        EQ, "argparse derives the same dest from the flag"),
    "cli.py:add_train_args: argument: g.add_argument(..., dest='min_lr') -> without dest": (
        EQ, "argparse derives the same dest from the flag"),
    "cli.py:add_train_args: argument: g.add_argument(..., dest='weight_decay') -> without dest": (
        EQ, "argparse derives the same dest from the flag"),
    "cli.py:add_train_args: argument: g.add_argument(..., dest='sync_norm') -> without dest": (
        EQ, "argparse derives the same dest from the flag"),
    "cli.py:build_parser: argument: p.add_argument(..., dest='data_dir') -> without dest": (
        EQ, "argparse derives the same dest from the flag"),
    "cli.py:build_parser: argument: p.add_argument(..., dest='limit_test') -> without dest": (
        EQ, "argparse derives the same dest from the flag"),
    "cli.py:build_parser: argument: parser.add_subparsers(..., parser_class=Parser) -> without parser_class": (
        EQ, "add_subparsers' parser_class defaults to the parent parser's class, Parser"),
    "cli.py:build_parser: argument: sub.add_parser(..., argument_default=argparse.SUPPRESS) -> without "
    "argument_default #2": (EQ, "eval_command reads every optional flag with getattr(args, name, None): an absent "
                                 "flag and a None default give the same None"),
    "cli.py:build_parser: argument: p.add_argument(..., type=checked('device')) -> without type": (
        EQ, "eval's usable_device runs the same get_device check on the text: the same one-line error before any "
            "work"),
    "cli.py:build_parser: argument: p.add_argument(..., type=checked('data_dir')) -> without type": (
        NW, "an empty --data-dir for eval is taken as not given (the run's folder) instead of refused"),
    "cli.py:build_parser: argument: p.add_argument(..., help=\"a run's last.npz\") -> without help": (
        NW, "the checkpoint argument's line in eval --help"),
    "cli.py:build_parser: argument: p.add_argument(..., help='the .nir file to write') -> without help": (
        NW, "the output argument's line in export --help"),
    "cli.py:build_parser: argument: p.add_argument(..., type=checked('eval_batch_size')) -> without type": (
        NW, "eval --eval-batch-size left as text: a bad value fails later, in the loader, with its own one-line error"),
    "cli.py:build_parser: argument: p.add_argument(..., type=checked('out')) -> without type": (
        NW, "an empty eval --out is taken as the current folder instead of refused"),
    "cli.py:main: statement: os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno()) -> pass": (
        NW, "as for the swapped dup2 below: on CPython 3.11 nothing is left buffered after the failed write, so the "
            "exit is as quiet without the redirect"),
    "experiment.py:number.check: compare: value > high -> value >= high": (
        EQ, "momentum, the one number with an upper bound, has it open: its end is refused either way"),
    "experiment.py:_cifar10_test_split: constant: 0 -> 1": (
        EQ, "the training split of eval's and export's data set holds one image instead of none: they read only "
            "the test split, and the channels from either"),
    "experiment.py:_cifar10_test_split: constant: 0 -> 1 #2": (EQ, "the same, for the training labels"),
    # data
    "cifar10_dvs.py:_header_end: constant: 0 -> 1": (
        EQ, "first_end >= 1 instead of >= 0: the data begin with the '#!AER-DAT' magic (checked just before), so "
            "the first line end is never at 0 (as for >= 0 -> > 0)"),
    "cifar10_dvs.py:_slice_starts: argument: np.searchsorted(..., side='left') -> without side": (
        EQ, "'left' is searchsorted's default"),
    "cifar10_dvs.py:bilinear_weights: argument: np.maximum(0.0, 1.0 - np.abs(np.arange(in_s...) -> the two swapped": (
        EQ, "maximum is symmetric (the weights are finite: no NaN whose place would matter)"),
    "cifar10_dvs.py:events_to_frames: argument: max(x.max(), y.max()) -> the two swapped": (EQ, "max is symmetric"),
    "cifar10_dvs.py:events_to_frames: argument: np.arange(..., dtype=np.int32) -> without dtype #2": (
        EQ, "the cell of each sensor row in int64 instead of int32: the same cell indices and counts"),
    "cifar10_dvs.py:split_files: argument: np.array(..., dtype=np.int64) -> without dtype": (
        EQ, "NumPy's default integer is int64 here (and everywhere with NumPy 2); never empty (every class has files)"),
    "cifar10.py:md5_of: constant: 20 -> 21": (
        EQ, "the file is hashed in 2 MiB instead of 1 MiB pieces: the same digest"),
    "cifar10.py:md5_of: argument: hashlib.md5(..., usedforsecurity=False) -> without usedforsecurity": (
        EQ, "usedforsecurity=True, the default: the same digest (as for False -> True)"),
    "cifar10.py:download_file: constant: 20 -> 21": (
        EQ, "the response is read and written in 2 MiB instead of 1 MiB pieces: the same bytes; the bar is redrawn "
            "at most every 0.1 s either way"),
    "cifar10.py:download_file: compare: start > 0 -> start >= 0": (
        EQ, "start is 0 only when no part file or an empty one is there: no Range is asked for, and even a 206 "
            "answer then appends to nothing, with the bar starting at 0 (offset = start = 0) as before"),
    "cifar10_dvs.py:bilinear_weights: argument: max(scale, 1.0) -> the two swapped": (EQ, "max is symmetric"),
    "cifar10.py:read_batch: statement: path = Path(path) -> pass": (
        EQ, "every later use of the path (open, the messages) takes text as well"),
    "cifar10_dvs.py:read_aedat: argument: np.invert(..., out=address) -> without out": (
        EQ, "a new array instead of in place; address is not read afterwards"),
    "cifar10_dvs.py:_slice_starts: argument: np.minimum(k, n % T) -> the two swapped": (EQ, "minimum is symmetric"),
    "imagefolder.py:list_split: statement: folder = Path(folder) -> pass": (
        EQ, "its one caller, load_image_folder, passes a Path"),
    "shards.py:shard_rows: constant: 1 -> 0": (EQ, "size 0 is refused all the same by 0 <= rank < size"),
    "transforms.py:random_flip: compare: rng.random(batch.shape[0]) < 0.5 -> rng.random(batch.shape[0]) <= 0.5": (
        EQ, "differs only for a draw of exactly 0.5 (probability 2**-53 per image)"),
    "cifar10.py:md5_of: constant: False -> True": (
        EQ, "hashlib.md5(usedforsecurity=True): the same digest; the flag matters only where OpenSSL runs in FIPS "
            "mode"),
    "cifar10_dvs.py:_header_end: constant: 0 -> 1 #3": (
        EQ, "find() starts at pos, where a '#' stands: the line end found is never at 0 (< 0 and < 1 agree)"),
    "cifar10_dvs.py:_header_end: compare: first_end >= 0 -> first_end > 0": (
        EQ, "the data begin with the '#!AER-DAT' magic (checked just before): the first line end is never at 0"),
    "cifar10_dvs.py:_header_end: compare: end < 0 -> end <= 0": (
        EQ, "find() starts at pos, where a '#' stands: the line end found is never at 0 (as for 0 -> 1 #3)"),
    "cifar10_dvs.py:events_to_frames: argument: np.arange(..., dtype=np.int32) -> without dtype": (
        EQ, "the slice numbers in int64 instead of int32: the same cell indices and counts"),
    "cifar10_dvs.py:_slice_starts: operator: -k * (duration + 1) // T -> -k * (duration + 1) / T": (
        EQ, "the exact quotient instead of its ceiling: for whole-microsecond times e, e < x exactly when "
            "e < ceil(x), so searchsorted finds the same boundaries (float64 holds k (D + 1) / T of a recording "
            "far more finely than 1/T)"),
    "cifar10_dvs.py:monotonic_timestamps: argument: np.maximum.accumulate(..., out=unwrapped) -> without out": (
        EQ, "the running maximum into a new array instead of in place: the same values and dtype"),
    "cifar10_dvs.py:events_to_frames: argument: a.astype(..., copy=False) -> without copy": (
        EQ, "a copy of arrays that are only read"),
    "cifar10_dvs.py:events_to_frames: constant: False -> True": (EQ, "copy=True: a copy of arrays that are only read"),
    "imagefolder.py:list_split: argument: np.array(..., dtype=np.int64) -> without dtype": (
        EQ, "NumPy's default integer is int64 here (and everywhere with NumPy 2); Batches converts again"),
    "imagefolder.py:load_image: argument: np.asarray(..., dtype=np.uint8) -> without dtype": (
        EQ, "an RGB Pillow image converts to uint8 by itself"),
    "imagefolder.py:read_image: argument: np.asarray(..., dtype=np.int64) -> without dtype": (
        EQ, "a 16-bit image comes as uint16 (I;16) or int32 (I): shifted right by 8 and clipped to 0..255 either "
            "gives the same bytes as int64"),
    "imagefolder.py:read_image: constant: 255 -> 256": (
        EQ, "the image formats a folder may hold (PNG, PGM/PPM, ...) store at most 16 bits, so a value shifted right "
            "by 8 is at most 255 and the clip never acts"),
    "cifar10_dvs.py:cached_frames: argument: np.array(..., dtype=np.int64) -> without dtype": (
        EQ, "a size and a time in nanoseconds are Python ints, which NumPy 2 makes int64 on every platform"),
    "cifar10_dvs.py:cached_frames: argument: np.array_equal(archive['source'], made_from) -> the two swapped": (
        EQ, "array_equal is symmetric"),
    "experiment.py:_cifar10_test_split: argument: Dataset(..., augment=crop_and_flip) -> without augment": (
        EQ, "this data set has no training images (eval and export read the test batch only); augment acts on "
            "training batches alone"),
    "cli.py:add_train_args: argument: g.add_argument(..., dest='eval_batch_size') -> without dest": (
        EQ, "argparse derives the same dest from --eval-batch-size"),
    "cli.py:add_train_args: argument: g.add_argument(..., dest='warmup_epochs') -> without dest": (
        EQ, "argparse derives the same dest from --warmup-epochs"),
    "cli.py:build_parser: argument: p.add_argument(..., dest='eval_batch_size') -> without dest": (
        EQ, "argparse derives the same dest from --eval-batch-size"),
    "cli.py:add_train_args: argument: g.add_argument(..., type=checked('model')) -> without type": (
        EQ, "the text reaches make_config, which runs the same check: the same value, or the same one-line error "
            "naming --model before any work"),
    "cli.py:add_train_args: argument: g.add_argument(..., type=checked('norm')) -> without type": (
        EQ, "the same check in make_config (see --model)"),
    "cli.py:add_train_args: argument: g.add_argument(..., type=checked('weight_decay')) -> without type": (
        EQ, "the same check in make_config turns the text into the same float (see --model)"),
    "cli.py:add_train_args: argument: g.add_argument(..., type=checked('min_lr')) -> without type": (
        EQ, "the same check in make_config turns the text into the same float (see --model)"),
    "cli.py:main: argument: os.dup2(os.open(os.devnull, os.O_WR..., sys.stdout.fileno()) -> the two swapped": (
        NW, "the redirect guards the flush of stdout at exit; on CPython 3.11 a write that fails with EPIPE leaves "
            "nothing buffered, so nothing is flushed either way (measured: exit 2 and no message with the redirect, "
            "swapped or none; test_a_reader_that_goes_away_ends_the_command_quietly checks the quiet exit)"),
    "cli.py:add_train_args: argument: g.add_argument(..., type=checked('width')) -> without type": (
        EQ, "the same check in make_config turns the text into the same int (see --model)"),
    "cli.py:add_train_args: argument: g.add_argument(..., type=checked('data_dir')) -> without type": (
        EQ, "the same check in make_config takes the same text (see --model)"),
    "cli.py:add_train_args: argument: g.add_argument(..., dest='limit_train') -> without dest": (
        EQ, "argparse derives the same dest from --limit-train"),
    "cli.py:add_train_args: argument: g.add_argument('-T', '--timesteps') -> the two swapped": (
        NW, "dest is given; only the order in which --help and argparse's messages list -T and --timesteps"),
    "imagefolder.py:list_split: argument: np.array(..., dtype=object) -> without dtype": (
        EQ, "a fixed-width str array instead of an object array of str: each path is still a str (np.str_) that "
            "opens, pickles to a worker and prints the same"),
    "imagefolder.py:random_resized_box: compare: width / height <= ratio -> width / height < ratio": (
        EQ, "the branches differ only when the image's own ratio is inside the range (ratio == width / height): "
            "both give the whole image then (width / ratio rounds to height, height * ratio to width)"),
    "imagefolder.py:centre_box: argument: min(width, height) -> the two swapped": (EQ, "min is symmetric"),
    "imagefolder.py:load_image: compare: rng.random() < 0.5 -> rng.random() <= 0.5": (
        EQ, "differs only for a draw of exactly 0.5 (probability 2**-53 per image)"),
    "imagefolder.py:ImageBatches.batches: argument: pool.shutdown(..., wait=True) -> without wait": (
        EQ, "wait=True is shutdown's default"),
    "transforms.py:random_crop: constant: 0 -> 1 #3": (
        EQ, "np.pad adds a zero image after the last one, which the gather (images 0..n-1) never reads"),
    "transforms.py:random_crop: constant: 0 -> 1 #5": (
        EQ, "np.pad adds a zero channel after the last one, which the gather (channels 0..c-1) never reads"),
    # checkpoint
    "checkpoint.py:_umask: constant: 0 -> 1": (EQ, "the umask is set to 1 for an instant instead of 0; the value "
                                                   "read and restored is the same"),
    "checkpoint.py:atomic_write: operator: os.O_RDONLY | os.O_DIRECTORY -> os.O_RDONLY & os.O_DIRECTORY": (
        EQ, "O_RDONLY is 0 and a folder opens read-only without O_DIRECTORY, which only checks it is one"),
    "checkpoint.py:_open: argument: np.load(..., allow_pickle=False) -> without allow_pickle": (
        EQ, "allow_pickle defaults to False since NumPy 1.16.3 (setup.cfg needs numpy>=1.22); the tests check "
            "that a pickled array is refused"),
}


# Issue #21's list of bugs that once passed the suite unnoticed, as (name, file, [(text, replacement)], tests):
# ``--planted`` plants each in turn and names the tests that fail. Every one must fail at least one test.
TRAIN, CKPT, DATA = ["tests/test_train.py", "tests/test_cli.py"], ["tests/test_checkpoint.py", "tests/test_train.py"], \
    ["tests/test_data.py"]
CORE, OPS, GPU = ["tests/test_core.py", "tests/test_partial_gradients.py"], ["tests/test_basic_ops.py"], \
    ["tests/test_gpu.py"]
PLANTED = [
    ("Trainer: zero_grad() after backward()", "minisnn/train.py", [(
        "                self.optimizer.zero_grad()\n", ""), (
        "                self.stop_requested = self.stop_requested or any_stop\n",
        "                self.stop_requested = self.stop_requested or any_stop\n"
        "                self.optimizer.zero_grad()\n")], TRAIN),
    ("Trainer: schedule stepped before the optimizer", "minisnn/train.py", [(
        "                self.optimizer.step()\n                self.schedule.step()\n",
        "                self.schedule.step()\n                self.optimizer.step()\n")], TRAIN),
    ("evaluate() without model.eval()", "minisnn/evaluate.py", [(
        "    was_training = model.training\n    model.eval()\n", "    was_training = model.training\n")], TRAIN),
    ("epoch train loss: a sum of batch means, divided by images", "minisnn/train.py", [(
        'sums["loss_sum"] += loss_value * n', 'sums["loss_sum"] += loss_value')], TRAIN),
    ("checkpoint written in place (not atomic)", "minisnn/checkpoint.py", [(
        "    atomic_write(path, lambda f: np.savez(f, **arrays))",
        "    Path(path).parent.mkdir(parents=True, exist_ok=True)\n"
        "    with open(path, 'wb') as f:\n        np.savez(f, **arrays)")], CKPT),
    ("checkpoint: temporary file outside the target's folder", "minisnn/checkpoint.py", [(
        "suffix=TEMP_SUFFIX, dir=path.parent)", "suffix=TEMP_SUFFIX)")], CKPT),
    ("checkpoint: no fsync of the temporary file", "minisnn/checkpoint.py", [(
        "            os.fsync(f.fileno())\n", "")], CKPT),
    ("checkpoint: .tmp left after a failed write", "minisnn/checkpoint.py", [(
        "        if os.path.exists(tmp):\n            os.unlink(tmp)\n", "        pass\n")], CKPT),
    ("unpickler: allow-list checks the module, not the name (numpy.save, numpy.load)", "minisnn/data/cifar10.py", [(
        "        if (module, name) not in self.ALLOWED:", "        if module not in {m for m, _ in self.ALLOWED}:")],
     DATA),
    ("backward: functions taken in the order found, not by generation", "minisnn/core.py", [(
        "heapq.heappush(heap, (-func.generation, next(counter), func))",
        "heapq.heappush(heap, (0, next(counter), func))")], CORE),
    ("nested no_grad(): leaving sets backprop on, not back to before", "minisnn/core.py", [(
        "        Config.enable_backprop = old\n", "        Config.enable_backprop = True\n")], CORE),
    ("no_grad(): one switch for all threads, not one per thread", "minisnn/core.py", [(
        "class _Switches(threading.local):", "class _Switches:")], CORE),
    ("backward: a leaf's gradient from an earlier backward() overwritten", "minisnn/core.py", [(
        "        heap, seen, counter = [], set(), itertools.count()\n",
        "        heap, seen, counter, fresh = [], set(), itertools.count(), set()\n"), (
        "                x.grad = gx if x.grad is None else x.grad + gx\n",
        "                x.grad = gx if id(x) not in fresh else x.grad + gx\n"
        "                fresh.add(id(x))\n")], CORE),
    ("backward: the root's own gradient dropped", "minisnn/core.py", [(
        "if not retain_grad and y is not self:", "if not retain_grad:")], CORE),
    ("linear: input gradient only when the weight wants one", "minisnn/functions/linear.py", [(
        "gx = gy @ self.W if self.needs_input_grad[0] else None",
        "gx = gy @ self.W if self.needs_input_grad[1] else None")], CORE + ["tests/test_linear_pool.py"]),
    ("fused CUDA kernel: rectangular surrogate height a, not 1/a", "minisnn/functions/surrogate.py", [(
        'return inside * (F){_constant(1 / self.a, "1/a")};', 'return inside * (F){_constant(self.a, "1/a")};')],
     GPU),
    ("fused CUDA kernel: rectangular window |v| < a, not a/2", "minisnn/functions/surrogate.py", [(
        '(fabs(v) < (F){_constant(self.a / 2, "a/2")})', '(fabs(v) < (F){_constant(self.a, "a/2")})')], GPU),
    ("fused CUDA kernel: window closed, |v| <= a/2", "minisnn/functions/surrogate.py", [(
        "(F)(fabs(v) < (F)", "(F)(fabs(v) <= (F)")], GPU),
    ("fused CUDA kernel: fires on u > V_th, not u >= V_th", "minisnn/fast/neuron.py", [(
        "const unsigned char o_t = (u_t - v_th) >= 0;", "const unsigned char o_t = (u_t - v_th) > 0;")], GPU),
    ("CIFAR-10 std: the commonly copied wrong values", "minisnn/data/cifar10.py", [(
        "CIFAR10_STD = (0.2470, 0.2435, 0.2616)", "CIFAR10_STD = (0.2023, 0.1994, 0.2010)")], DATA),
    ("CIFAR-10 class names: cat and dog swapped", "minisnn/data/cifar10.py", [(
        '"cat", "deer", "dog"', '"dog", "deer", "cat"')], DATA),
    ("max: ties each get the whole gradient", "minisnn/functions/basic.py", [(
        "return mask * (_expand_reduced(gy, self.x.shape, self.axes) / count)",
        "return mask * _expand_reduced(gy, self.x.shape, self.axes)")], OPS),
    ("clip: no gradient exactly at its bounds", "minisnn/functions/basic.py", [(
        "mask = (self.x >= self.lo) & (self.x <= self.hi)", "mask = (self.x > self.lo) & (self.x < self.hi)")], OPS),
    ("cosine schedule: not held at min_lr past its end", "minisnn/optim.py", [(
        "progress = min(1.0, (s - self.warmup_steps) / (self.total_steps - self.warmup_steps))",
        "progress = (s - self.warmup_steps) / (self.total_steps - self.warmup_steps)")], ["tests/test_optim.py"]),
    ("SGD momentum: the velocity is the gradient array itself", "minisnn/optim.py", [(
        "v = self.velocity[i] = g.copy()", "v = self.velocity[i] = g")], ["tests/test_optim.py"]),
    ("NIR export: AvgPool2d's padding dropped", "minisnn/nir_export.py", [(
        "module.kernel_size, module.stride, module.padding)", "module.kernel_size, module.stride, (0, 0))")],
     ["tests/test_nir.py"]),
]

if __name__ == "__main__":
    sys.exit(main())
