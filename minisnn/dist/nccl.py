"""Summing GPU arrays across ranks with NCCL, through CuPy's bindings (``cupy.cuda.nccl``).

Setting up (once, collectively): rank 0 asks NCCL for a unique id, the host group (MPI) broadcasts it,
and every rank joins the NCCL communicator named by it with its own rank:

    uid = nccl.get_unique_id()                      on rank 0
    uid = host_group.bcast(uid)                     to all ranks, over MPI
    comm = nccl.NcclCommunicator(K, uid, rank)      on the GPU this rank uses

Summing: one ncclAllReduce on the array's own device memory, in place, on the current CUDA stream, then
a wait for that stream. The numbers never leave the GPUs: MPI only ever carries the id. Waiting for the
stream is what lets the caller's deadline (``group.py``) notice a peer that never joins.
"""
from ..backend import cupy, nccl

# numpy dtype name -> name of NCCL's data type constant
NCCL_TYPES = {"float32": "NCCL_FLOAT32", "float64": "NCCL_FLOAT64", "float16": "NCCL_FLOAT16",
              "int32": "NCCL_INT32", "int64": "NCCL_INT64"}


class NcclTransport:
    """In-place sums of device arrays over the ranks of ``host_group``.

    nccl: the NCCL bindings (``cupy.cuda.nccl``); current_stream: a callable returning the CUDA stream
    to run on (an object with ``ptr`` and ``synchronize()``). Both are arguments so that the tests can
    stand in for them where there is no GPU.
    """

    def __init__(self, host_group, nccl_module, current_stream):
        self.nccl, self.current_stream = nccl_module, current_stream
        uid = nccl_module.get_unique_id() if host_group.rank == 0 else None
        uid = host_group.bcast(uid, root=0, what="the NCCL unique id from rank 0")
        self.comm = nccl_module.NcclCommunicator(host_group.size, uid, host_group.rank)

    @classmethod
    def for_current_gpu(cls, host_group):
        """The transport for the GPU that CuPy has made current (``backend.xp_for('cuda:N')``)."""
        return cls(host_group, nccl(), lambda: cupy().cuda.get_current_stream())

    def allreduce_(self, array):
        """array <- sum over ranks of array, on the device; returns array."""
        if array.dtype.name not in NCCL_TYPES:
            raise TypeError(f"NCCL allreduce: unsupported dtype {array.dtype}; use one of {sorted(NCCL_TYPES)}")
        if not array.flags.c_contiguous:
            raise ValueError("NCCL allreduce: the array must be contiguous (one flat buffer)")
        stream = self.current_stream()
        kind = getattr(self.nccl, NCCL_TYPES[array.dtype.name])
        self.comm.allReduce(array.data.ptr, array.data.ptr, array.size, kind, self.nccl.NCCL_SUM, stream.ptr)
        stream.synchronize()
        return array
