"""Data-parallel training past one process: MPI between CPUs, NCCL between GPUs.

    mpiexec -n K minisnn train ... [--sync-norm]

starts K copies of the trainer (ranks). Each takes its rows of every batch, computes the gradient of
their losses, and one allreduce per step sums the gradients of all ranks, so that every rank takes the
same step on the same weights -- the step one process would take on the whole batch. The pieces:

    group.py          who talks to whom: SoloGroup (K = 1), MpiGroup (mpi4py), ThreadGroup (K threads of one
                      process, for lessons and tests); deadlines so that a dead rank stops the job
    nccl.py           the GPU transport: CuPy's NCCL bindings, the unique id broadcast over MPI
    data_parallel.py  what they say: shards of each batch, the one bucketed gradient allreduce per step,
                      identical-weights checks, sharded evaluation, rank 0 alone writing

tdBN synchronised across ranks (``--sync-norm``) is ``SyncBatchNormFunction`` in
``minisnn/functions/norm.py``, beside the single-process tdBN it must equal.

Install MPI with the ``dist`` extra (``pip install -e '.[dist]'``: mpi4py and MPICH's wheel).
Nothing here imports mpi4py unless an MPI launcher started the process.
"""
from .data_parallel import DataParallel, GradientBucket, ShardedLoader, average_buffers, sync_norm
from .group import DistError, MpiGroup, SoloGroup, ThreadGroup, abort_other_ranks, launched_by_mpi, world
