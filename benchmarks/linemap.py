"""Which test runs which line of minisnn: the line map that lets mutate.py run, for each mutant, only the tests
that execute the mutated line (a test that never reaches a line cannot notice a change there).

A ``LineTracer`` records every (file, line) executed in the package's files, in every thread
(``sys.settrace`` and ``threading.settrace``). ``LineMapPlugin`` is a pytest plugin that hands each test the
lines run between its start and its end (set-up and tear-down included); lines run outside any test
(imports, collection) are kept under ``OUTSIDE`` -- a mutant there may change every test. Python processes a
test starts (the ``minisnn`` command, ``mpiexec`` ranks) are traced too: the plugin names a spool folder in
``$MINISNN_LINEMAP``, and ``site_hook`` (installed as the child's ``sitecustomize``) writes that process's
lines there when it exits. Lines run only in a process that ends without its exit handlers (``os._exit``, a
kill) are missed: a mutant there looks uncovered, never covered when it is not, so a selection can only make
a mutant survive that the whole test list would kill -- which is why mutate.py re-runs survivors with the
whole list before it reports them.
"""
import atexit
import json
import os
import sys
import threading
import time
from pathlib import Path

ENV = "MINISNN_LINEMAP"            # the spool folder of the test now running
ROOT_ENV = "MINISNN_LINEMAP_ROOT"  # the package folder whose lines are recorded
OUTSIDE = "<outside tests>"


class LineTracer:
    """Records (file name, line) for each line executed in a file under ``root``."""

    def __init__(self, root):
        self.root = str(root)
        self.lines = set()
        self._wanted = {}  # file name -> whether it is under root (asked once per file)

    def _call(self, frame, event, arg):
        name = frame.f_code.co_filename
        wanted = self._wanted.get(name)
        if wanted is None:
            wanted = self._wanted[name] = name.startswith(self.root)
        if not wanted:
            return None  # no line events for code outside the package
        self.lines.add((name, frame.f_lineno))
        return self._line

    def _line(self, frame, event, arg):
        if event == "line":
            self.lines.add((frame.f_code.co_filename, frame.f_lineno))
        return self._line

    def start(self):
        threading.settrace(self._call)
        sys.settrace(self._call)

    def take(self):
        """The lines recorded since the last call, and a fresh start."""
        lines, self.lines = self.lines, set()
        return lines


def site_hook():
    """Trace this process if a test asked for it, and write its lines to the spool folder at exit."""
    spool, root = os.environ.get(ENV), os.environ.get(ROOT_ENV)
    if not spool or not root:
        return
    tracer = LineTracer(root)
    tracer.start()

    def write():
        path = Path(spool) / f"{os.getpid()}.json"
        path.write_text(json.dumps(sorted(tracer.take())))
    atexit.register(write)


class LineMapPlugin:
    """Attributes the tracer's lines to the test that ran them; ``by_test`` maps a node id to its lines."""

    def __init__(self, tracer, spool):
        self.tracer, self.spool = tracer, Path(spool)
        self.by_test = {OUTSIDE: set()}
        self.seconds = {}  # node id -> seconds its run took (set-up and tear-down included)
        self._started, self._start = 0, 0.0

    def pytest_runtest_logstart(self, nodeid, location):
        self.by_test[OUTSIDE] |= self.tracer.take()
        self._started += 1
        folder = self.spool / str(self._started)
        folder.mkdir(parents=True)
        os.environ[ENV] = str(folder)
        self._start = time.perf_counter()

    def pytest_runtest_logfinish(self, nodeid, location):
        self.seconds[nodeid] = self.seconds.get(nodeid, 0.0) + time.perf_counter() - self._start
        lines = self.tracer.take()
        folder = Path(os.environ.pop(ENV))
        for child in folder.glob("*.json"):
            lines |= {tuple(pair) for pair in json.loads(child.read_text())}
        self.by_test[nodeid] = self.by_test.get(nodeid, set()) | lines

    def save(self, path, repo):
        """Write {file relative to repo: {line: [node ids, the fastest first]}} as JSON (a mutant's covering
        tests then run the quick ones first, and ``-x`` stops at the first that fails)."""
        repo = str(repo).rstrip("/") + "/"
        out = {}
        for nodeid in sorted(self.by_test, key=lambda n: self.seconds.get(n, 0.0)):
            lines = self.by_test[nodeid]
            for name, line in lines:
                if name.startswith(repo):
                    out.setdefault(name[len(repo):], {}).setdefault(line, []).append(nodeid)
        Path(path).write_text(json.dumps(out))
