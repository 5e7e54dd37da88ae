"""Where a training step's time goes, phase by phase: recorded only when asked.

The CPU code marks its parts with the phase they belong to::

    @timed("im2col")                   # a whole function
    def im2col_into(...): ...

    with timed("GEMM"):                 # or a block
        np.matmul(a, b, out=y)

and ``recording()`` adds up the time spent in each phase while its block runs::

    with recording() as seconds:
        step()
    seconds  ->  {"im2col": 0.21, "GEMM": 1.43, "LIF": 0.09, ...}

A phase's time is the CPU time of the thread that ran it (``time.thread_time``), summed over threads:
run with one worker and one BLAS thread (``MINISNN_THREADS=1 OPENBLAS_NUM_THREADS=1``) to split one
core's time cleanly, unaffected by other jobs on the machine. Phases nest: time spent in an inner
phase is charged to it and not to the phase around it. Outside ``recording()`` a marked part costs
one flag test. ``minisnn bench --phases`` prints the table.
"""
import contextlib
import functools
import threading
import time

_recording = None             # phase -> seconds while recording, else None
_lock = threading.Lock()
_threads = threading.local()  # per thread: the recording it counts for, and the phases it is in (innermost last)


class timed:
    """Mark a function (as a decorator) or a block (as a context manager) as part of ``phase``."""

    def __init__(self, phase):
        self.phase = phase

    def __call__(self, function):
        @functools.wraps(function)
        def marked(*args, **kwargs):
            with self:
                return function(*args, **kwargs)
        return marked

    def __enter__(self):
        if _recording is not None:
            _switch(self.phase)

    def __exit__(self, *exc):
        if _recording is not None:
            _switch(None)


def _switch(phase):
    """Charge the time since the thread's last switch to the phase it was in; then enter ``phase``, or
    leave the innermost phase when ``phase`` is None (the one around it resumes counting)."""
    now, totals = time.thread_time(), _recording
    if totals is None:                                        # the recording ended meanwhile
        return
    if getattr(_threads, "recording", None) is not totals:   # phases entered before this recording began
        _threads.recording, _threads.stack = totals, []
    stack = _threads.stack
    if stack:
        with _lock:
            totals[stack[-1][0]] = totals.get(stack[-1][0], 0.0) + now - stack[-1][1]
    if phase is not None:
        stack.append([phase, now])
    elif stack:
        stack.pop()
        if stack:
            stack[-1][1] = now


def carried(function):
    """``function``, run in another thread within the phase the calling thread is in now (so that chunks
    handed to the workers of ``parallel.map_chunks`` count where their caller does)."""
    stack = getattr(_threads, "stack", None)
    if _recording is None or getattr(_threads, "recording", None) is not _recording or not stack:
        return function
    return timed(stack[-1][0])(function)


@contextlib.contextmanager
def recording():
    """Add up the time of every marked phase while the block runs; yields the dict it fills."""
    global _recording
    if _recording is not None:
        raise RuntimeError("phases.recording() is already active")
    _recording = {}
    try:
        yield _recording
    finally:
        _recording = None
