"""Programs that the MPI tests (test_dist_mpi.py) start under ``mpiexec -n 2``.

    python tests/dist_programs.py failing-rank MODE     rank 1 stalls / is killed / raises at step 3 of a
                                                        training loop; rank 0 must not wait forever
    python tests/dist_programs.py late-rank            rank 1 comes to the one allreduce 0.5 s late, then both end
    python tests/dist_programs.py ctrl-c STEP RANK ARGS...   ``minisnn ARGS...`` where rank RANK presses Ctrl-C
                                                        during step STEP (counted from 1 in this process)
    python tests/dist_programs.py ctrl-c-late STEP RANK ARGS...   the same, the Ctrl-C (a real SIGINT) coming
                                                        after that step's allreduce
"""
import itertools
import os
import signal
import sys
import time

import numpy as np


def failing_rank(mode):
    from minisnn.core import Tensor
    from minisnn.dist import DataParallel, world
    from minisnn.functions.loss import softmax_cross_entropy
    from minisnn.models import resnet_small

    dp = DataParallel(world())
    model = dp.prepare(resnet_small(width=4, blocks=(1,), in_channels=1, T=2))
    rng = np.random.default_rng(dp.rank)
    for step in range(20):
        if step == 3 and dp.rank == 1:
            if mode == "stall":
                time.sleep(300)
            elif mode == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            elif mode == "raise":
                raise RuntimeError("rank 1 failed on purpose")
        x, y = rng.random((4, 1, 8, 8)).astype(np.float32), rng.integers(0, 10, 4)
        model.zero_grad()
        dp.backward(softmax_cross_entropy(model(Tensor(x)), y), 4)
    print(f"rank {dp.rank} finished", flush=True)


def late_rank():
    """Rank 1 reaches the only allreduce 0.5 s after rank 0, then both finish at once."""
    from minisnn.dist import world
    group = world()
    if group.rank == 1:
        time.sleep(0.5)
    group.allreduce_(np.ones(3), what="the late allreduce")
    print(f"rank {group.rank} finished", flush=True)


def ctrl_c(step, rank, argv, late=False):
    from minisnn import cli
    from minisnn.dist import data_parallel

    original, calls = data_parallel.DataParallel.backward, itertools.count(1)

    def backward(self, loss, count, stop=False):
        pressed = next(calls) == step and self.rank == rank
        if not late:
            return original(self, loss, count, stop or pressed)
        result = original(self, loss, count, stop)
        if pressed:
            signal.raise_signal(signal.SIGINT)
        return result

    data_parallel.DataParallel.backward = backward
    return cli.main(argv)


if __name__ == "__main__":
    if sys.argv[1] == "failing-rank":
        failing_rank(sys.argv[2])
    elif sys.argv[1] == "late-rank":
        late_rank()
    elif sys.argv[1] in ("ctrl-c", "ctrl-c-late"):
        sys.exit(ctrl_c(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:], late=sys.argv[1] == "ctrl-c-late"))
    else:
        sys.exit(f"unknown program {sys.argv[1]!r}")
