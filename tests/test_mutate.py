"""benchmarks/mutate.py, the mutation-testing script: its mutants change the program and undo cleanly, and its
line map names the tests that run each line -- in the test process and in the processes a test starts."""
import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import linemap  # noqa: E402
import mutate  # noqa: E402


def test_every_mutant_of_a_module_changes_it_and_its_undo_restores_it():
    path = "minisnn/checkpoint.py"
    tree, found = mutate.load_mutants([path])[path]
    original = ast.unparse(tree)
    assert len(found) > 50
    assert len({m.id for m in found}) == len(found)
    for m in found:
        m.apply()
        changed = ast.unparse(tree)
        m.undo()
        assert changed != original, m.id
        assert ast.unparse(tree) == original, m.id
        assert m.line <= m.end_line


def test_the_line_map_names_the_tests_that_run_each_line_subprocesses_included(tmp_path):
    repo = tmp_path / "repo"
    (repo / "minisnn").mkdir(parents=True)
    (repo / "tests").mkdir()
    (repo / "minisnn" / "__init__.py").write_text("")
    (repo / "minisnn" / "mod.py").write_text(textwrap.dedent("""\
        LIMIT = 3


        def in_process(x):
            return x + 1


        def in_a_subprocess():
            return 'child'


        def never():
            return 0
        """))
    (repo / "tests" / "test_x.py").write_text(textwrap.dedent("""\
        import subprocess
        import sys

        from minisnn import mod


        def test_here():
            assert mod.in_process(1) == 2


        def test_there():
            code = "from minisnn import mod; print(mod.in_a_subprocess())"
            assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout == "child\\n"
        """))
    log = tmp_path / "log.txt"
    script = (f"import sys; sys.path.insert(0, {str(BENCHMARKS)!r}); import json, mutate; from pathlib import Path; "
              f"print(json.dumps(mutate.map_lines(Path({str(repo)!r}), ['tests/test_x.py'], {str(log)!r})))")
    env = {**os.environ, "PYTHONPATH": str(repo)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=repo)
    assert done.returncode == 0, done.stderr
    lines = {int(k): v for k, v in json.loads(done.stdout)["minisnn/mod.py"].items()}
    here, there = "tests/test_x.py::test_here", "tests/test_x.py::test_there"
    assert lines[1] == [linemap.OUTSIDE, there]         # LIMIT = 3: run at import, here and in the child
    assert lines[5] == [here]                           # in_process's body
    assert lines[9] == [there]                          # in_a_subprocess's body, run only in the child process
    assert 13 not in lines                              # never()'s body: no test runs it

    tests = ["tests/test_x.py"]
    at = {1: SimpleNamespace(path="minisnn/mod.py", line=1, end_line=1),
          5: SimpleNamespace(path="minisnn/mod.py", line=5, end_line=5),
          9: SimpleNamespace(path="minisnn/mod.py", line=9, end_line=9),
          13: SimpleNamespace(path="minisnn/mod.py", line=13, end_line=13)}
    line_map = {"minisnn/mod.py": lines}
    assert mutate.covering_tests(at[1], line_map, tests) is None   # every test may see an import-time change
    assert mutate.covering_tests(at[5], line_map, tests) == [here]
    assert mutate.covering_tests(at[9], line_map, tests) == [there]
    assert mutate.covering_tests(at[13], line_map, tests) == []
    assert mutate.covering_tests(at[5], line_map, ["tests/test_other.py"]) == []  # only the module's own tests


@pytest.mark.parametrize("kind", ["operator", "compare", "logic", "constant", "statement", "argument", "function"])
def test_each_kind_of_mutant_is_made(kind):
    source = textwrap.dedent("""\
        def f(a, b):
            if a < b and not a:
                a = max(a + 1, b)
            g(a, b, key=True)
            return -a
        """)
    tree = ast.parse(source)
    kinds = {m.kind for m in mutate.mutants_of("x.py", tree)}
    assert kind in kinds


def test_the_report_of_a_first_run_and_its_rerun_counts_each_mutant_once_by_its_latest_result(tmp_path, capsys):
    def result(n, status):
        return {"id": f"optim.py:f: constant: {n} -> {n + 1}", "file": "minisnn/optim.py", "line": n,
                "kind": "constant", "status": status, "killed_by": None if status == "passed" else "x"}
    first = {"totals": {"optim": 10}, "results": [result(n, "failed") for n in range(6)]
             + [result(n, "passed") for n in range(6, 10)]}
    rerun = {"totals": {"optim": 10}, "results": [result(6, "failed"), result(7, "failed"), result(8, "passed")]}
    (tmp_path / "first.json").write_text(json.dumps(first))
    (tmp_path / "rerun.json").write_text(json.dumps(rerun))
    assert mutate.main(["--report", str(tmp_path / "first.json"), "--report", str(tmp_path / "rerun.json"),
                        "optim"]) == 0
    table = capsys.readouterr().out
    assert "| optim | 10 | 10 | 8 | 0 | 0 | 2 | 80.0 % |" in table   # 8 of 10 killed; 8 and 9 still alive
    assert "constant: 8 -> 9" in table and "constant: 9 -> 10" in table and "constant: 7 -> 8" not in table
