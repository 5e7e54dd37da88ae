"""Process groups: K copies of one training program that add arrays together.

A group has a ``rank`` (0 .. K-1) and a ``size`` K, and one operation that data parallelism needs:
``group.allreduce_(a)`` replaces the array ``a`` of every rank, in place, by the sum over the ranks

    a  <-  a_0 + a_1 + ... + a_{K-1}        (the same bits on every rank)

plus ``bcast`` and ``allgather`` of small Python objects. Three kinds:

    SoloGroup     K = 1: the sum of one array is the array. An ordinary run uses it; nothing is imported.
    MpiGroup      the K processes of ``mpiexec -n K``, through mpi4py. Host (NumPy) arrays are summed by
                  MPI; device (CuPy) arrays by NCCL on the GPUs (``nccl.py``), never through the host.
    ThreadGroup   K simulated ranks as threads of one process, for lessons and tests.

No collective waits forever. A rank that died or stalled never arrives at the next allreduce, and the
ranks that did arrive would wait for it indefinitely; instead each MPI collective runs under a deadline
(``$MINISNN_DIST_TIMEOUT`` seconds, default 600). When it passes, the waiting rank prints one line saying
what it waited for and stops the whole job with MPI_Abort. (``mpiexec`` itself also ends the job when one
of its processes is killed; the deadline covers a rank that hangs, and launchers that do not.)
"""
import atexit
import contextlib
import os
import sys
import threading
import time

from ..backend import is_gpu_array

TIMEOUT_ENV_VAR = "MINISNN_DIST_TIMEOUT"
DEFAULT_TIMEOUT = 600.0
EXIT_CODE = 2  # what an aborted job exits with: the CLI's code for an error it explains in one line
# Environment variables that MPI launchers set in the processes they start (MPICH/Intel MPI, Open MPI,
# PMIx launchers such as Slurm's srun, MVAPICH).
LAUNCHER_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MV2_COMM_WORLD_SIZE")


class DistError(RuntimeError):
    """Data-parallel training cannot start or cannot go on: MPI missing, ranks that disagree, a timeout."""


def timeout_from_env():
    """Seconds a collective may wait: $MINISNN_DIST_TIMEOUT (finite, > 0), else 600."""
    raw = os.environ.get(TIMEOUT_ENV_VAR)
    if raw is None:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= threading.TIMEOUT_MAX:  # the longest wait the watchdog's thread can take
        raise DistError(f"${TIMEOUT_ENV_VAR} must be a positive number of seconds, at most "
                        f"{threading.TIMEOUT_MAX:.0f}, got {raw!r}")
    return seconds


_mpi_world = None


def launched_by_mpi():
    """Whether an MPI launcher (mpiexec, mpirun, srun) started this process."""
    return any(name in os.environ for name in LAUNCHER_VARS)


def world():
    """The group of this job's processes: an MpiGroup under ``mpiexec -n K`` with K > 1, else a SoloGroup.

    mpi4py is imported (which starts MPI) only when a launcher started the process; a launcher without
    mpi4py is an error, never K independent runs that would overwrite each other's files.
    """
    global _mpi_world
    if not launched_by_mpi():
        return SoloGroup()
    if _mpi_world is None:  # one group per process: its watchdog and error hook are made once
        try:
            from mpi4py import MPI
        except ImportError as err:
            raise DistError(f"this process was started by an MPI launcher, but mpi4py cannot be imported ({err}); "
                            "install the dist extra: pip install -e '.[dist]'") from err
        comm = MPI.COMM_WORLD
        _mpi_world = SoloGroup() if comm.Get_size() == 1 else MpiGroup(comm, timeout_from_env())
    return _mpi_world


class SoloGroup:
    """One rank: every collective returns its input."""
    rank, size = 0, 1

    def allreduce_(self, array, what=""):
        return array

    def bcast(self, obj, root=0, what=""):
        return obj

    def allgather(self, obj, what=""):
        return [obj]

    def local_rank(self):
        return 0


class Watchdog:
    """Calls ``on_timeout(what)`` when a ``guard(what)`` block lasts longer than ``seconds``.

    One daemon thread sleeps until the deadline of the block in progress; entering and leaving a block
    only sets two fields under a lock, so guarding every collective costs microseconds.
    """

    def __init__(self, seconds, on_timeout):
        self.seconds, self.on_timeout = seconds, on_timeout
        self._what, self._deadline = None, 0.0
        self._changed = threading.Condition()
        threading.Thread(target=self._watch, name="minisnn-watchdog", daemon=True).start()

    @contextlib.contextmanager
    def guard(self, what):
        with self._changed:
            outer = self._what, self._deadline  # a guard inside a guard: the outer one resumes after it
            self._what, self._deadline = what, time.monotonic() + self.seconds
            self._changed.notify()
        try:
            yield
        finally:
            with self._changed:
                self._what, self._deadline = outer
                self._changed.notify()

    def _watch(self):
        with self._changed:
            while True:
                left = self._deadline - time.monotonic()
                if self._what is None:
                    self._changed.wait()
                elif left > 0:
                    self._changed.wait(left)
                else:
                    break
            what = self._what
        self.on_timeout(what)


class MpiGroup:
    """The K processes of ``mpiexec -n K``. NumPy arrays are summed by MPI, CuPy arrays by NCCL."""

    def __init__(self, comm, timeout=DEFAULT_TIMEOUT):
        self.comm, self.rank, self.size = comm, comm.Get_rank(), comm.Get_size()
        self.timeout = timeout
        self.watchdog = Watchdog(timeout, self._stalled)
        self._nccl = None
        _abort_on_uncaught_exceptions(self)

    def allreduce_(self, array, what="an allreduce"):
        if is_gpu_array(array):
            with self.watchdog.guard(what):
                if self._nccl is None:  # the first device allreduce sets up NCCL, on every rank at once
                    from .nccl import NcclTransport
                    self._nccl = NcclTransport.for_current_gpu(self)
                return self._nccl.allreduce_(array)
        from mpi4py import MPI
        with self.watchdog.guard(what):
            self.comm.Allreduce(MPI.IN_PLACE, array, op=MPI.SUM)
        return array

    def bcast(self, obj, root=0, what="a broadcast"):
        with self.watchdog.guard(what):
            return self.comm.bcast(obj, root=root)

    def allgather(self, obj, what="an allgather"):
        with self.watchdog.guard(what):
            return self.comm.allgather(obj)

    def local_rank(self):
        """This process's index among the ranks on its own machine (which GPU it takes)."""
        from mpi4py import MPI
        with self.watchdog.guard("finding the ranks on this machine"):
            return self.comm.Split_type(MPI.COMM_TYPE_SHARED).Get_rank()

    def abort(self, code=EXIT_CODE):
        """End every rank of the job now (MPI_Abort)."""
        sys.stdout.flush()
        sys.stderr.flush()
        time.sleep(0.5)  # let the launcher forward what this rank printed before MPI_Abort tears the job down
        self.comm.Abort(code)

    def _stalled(self, what):
        print(f"error: rank {self.rank} of {self.size} waited {self.timeout:g} s for {what}: another rank has "
              f"died or stalled; stopping all ranks (${TIMEOUT_ENV_VAR} sets the wait)", file=sys.stderr)
        atexit.register(_exit_now, EXIT_CODE)  # should the program end during abort's pause, it still fails
        self.abort()


def _exit_now(code):
    """End this process with ``code`` at once, its output flushed (no more exit handlers run)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _abort_on_uncaught_exceptions(group):
    """An uncaught exception on one rank ends the whole job (after its traceback) instead of leaving the
    other ranks waiting for it."""
    previous = sys.excepthook

    def hook(kind, value, traceback):
        previous(kind, value, traceback)
        group.abort(1)

    sys.excepthook = hook


def abort_other_ranks(code=EXIT_CODE):
    """After an error this rank reported and is about to exit with: end the other ranks of an MPI job
    too (they would wait for this one). Does nothing outside ``mpiexec -n K``, K > 1."""
    if "mpi4py.MPI" not in sys.modules:
        return
    from mpi4py import MPI
    if MPI.Is_initialized() and not MPI.Is_finalized() and MPI.COMM_WORLD.Get_size() > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        MPI.COMM_WORLD.Abort(code)


class ThreadGroup:
    """K simulated ranks as threads of one process: ``ThreadGroup(K).run(fn)`` calls ``fn(rank)`` in K
    threads, each with its own ``rank`` group object, and returns the K results in rank order.

    The collectives meet at a barrier: every rank puts its array in a slot, each then adds the slots in
    rank order (so all get the same bits), and after a second barrier writes the sum into its own array.
    An exception in one thread breaks the barrier, so the others stop too; ``run`` re-raises the first.

    The ranks share one process, and so its global switches: ``no_grad`` turns gradients off for every
    thread, so a simulated rank must not evaluate under it while another still trains.
    """

    def __init__(self, size, timeout=120.0):
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"ThreadGroup: size must be a positive int, got {size!r}")
        self.size = size
        self._barrier = threading.Barrier(size, timeout=timeout)
        self._slots = [None] * size

    def run(self, fn):
        results, errors = [None] * self.size, [None] * self.size

        def main(rank):
            try:
                results[rank] = fn(_ThreadRank(self, rank))
            except BaseException as err:  # noqa: BLE001 -- handed to the caller below
                errors[rank] = err
                self._barrier.abort()

        threads = [threading.Thread(target=main, args=(rank,), name=f"rank-{rank}") for rank in range(self.size)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        first = next((e for e in errors if e is not None and not isinstance(e, threading.BrokenBarrierError)),
                     next((e for e in errors if e is not None), None))
        if first is not None:
            raise first
        return results

    def _exchange(self, rank, value):
        """Every rank's value, in rank order, once all have arrived."""
        self._slots[rank] = value
        self._barrier.wait()
        values = list(self._slots)
        self._barrier.wait()  # nobody may put the next value before all have read this one
        return values


class _ThreadRank:
    """One simulated rank of a ThreadGroup: the group interface of SoloGroup and MpiGroup."""

    def __init__(self, group, rank):
        self._group, self.rank, self.size = group, rank, group.size

    def allreduce_(self, array, what=""):
        self._group._slots[self.rank] = array
        self._group._barrier.wait()
        total = self._group._slots[0].copy()
        for other in self._group._slots[1:]:
            total += other
        self._group._barrier.wait()  # all have read every array before any is overwritten
        array[...] = total
        return array

    def bcast(self, obj, root=0, what=""):
        return self._group._exchange(self.rank, obj)[root]

    def allgather(self, obj, what=""):
        return self._group._exchange(self.rank, obj)

    def local_rank(self):
        return self.rank

