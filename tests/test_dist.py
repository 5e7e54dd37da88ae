"""Data parallelism in one process: K ranks simulated by threads (``ThreadGroup``), and the NCCL transport
driven by a stand-in for NCCL. The runs over real MPI processes are in test_dist_mpi.py.

What must hold: 2 ranks with sync-norm compute the gradient of the whole batch; 2 ranks without it
compute what one process computes when it normalises each half of the batch separately; one allreduce
per step carries every gradient; shards of a batch are its rows, augmented as in the whole batch.
"""
import os
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from minisnn.core import Tensor
from minisnn.data import BatchIterator, crop_and_flip
from minisnn.data.shards import shard_rows
from minisnn.dist import DataParallel, DistError, GradientBucket, SoloGroup, ThreadGroup, world
from minisnn.dist.data_parallel import ShardedLoader, average_buffers, check_shards_not_empty
from minisnn.dist.group import Watchdog, timeout_from_env
from minisnn.dist.nccl import NcclTransport
from minisnn.functions.loss import softmax_cross_entropy
from minisnn.models import resnet_small
from minisnn.nn import BatchNorm


def tiny_model(dtype=np.float64):
    return resnet_small(width=4, blocks=(1,), in_channels=1, T=2, seed=3).astype(dtype)


def digits_like_batch(n=12, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 8, 8)), rng.integers(0, 10, n)


def gradients(model):
    return {name: p.grad.copy() for name, p in model.named_parameters()}


def whole_batch_gradients(x, y):
    model = tiny_model()
    softmax_cross_entropy(model(Tensor(x)), y).backward()
    return gradients(model)


def per_shard_gradients(x, y, K):
    """One process, each of the K shards through the net on its own (its own tdBN statistics):
    L = sum_k n_k L_k / B."""
    model = tiny_model()
    rows = [shard_rows(len(y), k, K) for k in range(K)]
    losses = [softmax_cross_entropy(model(Tensor(x[r])), y[r]) * float(len(y[r])) for r in rows]
    total = losses[0]
    for loss in losses[1:]:
        total = total + loss
    (total / float(len(y))).backward()
    return gradients(model)


def data_parallel_gradients(x, y, K, sync):
    """K simulated ranks, each with its own replica of the model and its shard of the batch."""

    def rank_program(group):
        dp = DataParallel(group, sync_norm=sync)
        model = dp.prepare(tiny_model())
        rows = shard_rows(len(y), group.rank, K)
        loss = softmax_cross_entropy(model(Tensor(x[rows])), y[rows])
        mean_loss, _ = dp.backward(loss, len(y[rows]))
        return gradients(model), mean_loss

    return ThreadGroup(K).run(rank_program)


def max_difference(a, b):
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


@pytest.mark.parametrize("K", [2, 3])
def test_sync_norm_ranks_compute_the_gradient_of_the_whole_batch(K):
    x, y = digits_like_batch(13)  # 13 rows: shards of unequal size
    want = whole_batch_gradients(x, y)
    results = data_parallel_gradients(x, y, K, sync=True)
    for grads, _ in results:
        assert max_difference(grads, want) < 1e-10
    model = tiny_model()
    whole_loss = float(softmax_cross_entropy(model(Tensor(x)), y).item())
    assert all(abs(loss - whole_loss) < 1e-12 for _, loss in results)


def test_without_sync_norm_each_rank_normalises_its_own_shard():
    """The documented difference: per-rank tdBN equals one process normalising each shard separately,
    and that differs from the whole batch's gradient by far more than rounding."""
    x, y = digits_like_batch(12)
    results = data_parallel_gradients(x, y, 2, sync=False)
    ghost = per_shard_gradients(x, y, 2)
    whole = whole_batch_gradients(x, y)
    for grads, _ in results:
        assert max_difference(grads, ghost) < 1e-10
    assert max_difference(ghost, whole) > 1e-3


class CountingGroup:
    """A rank's group that counts its allreduces."""

    def __init__(self, group):
        self.group, self.rank, self.size, self.allreduces = group, group.rank, group.size, []

    def allreduce_(self, array, what=""):
        self.allreduces.append((what, array.size))
        return self.group.allreduce_(array, what)

    def allgather(self, obj, what=""):
        return self.group.allgather(obj, what)


@pytest.mark.parametrize("sync", [False, True])
def test_one_bucketed_allreduce_carries_every_gradient(sync):
    x, y = digits_like_batch(8)

    def rank_program(group):
        counting = CountingGroup(group)
        dp = DataParallel(counting, sync_norm=sync)
        model = dp.prepare(tiny_model())
        rows = shard_rows(8, group.rank, 2)
        dp.backward(softmax_cross_entropy(model(Tensor(x[rows])), y[rows]), 4)
        norms = sum(isinstance(m, BatchNorm) for _, m in model.named_modules())
        return counting.allreduces, model.num_parameters(), norms

    allreduces, n_params, norms = ThreadGroup(2).run(rank_program)[0]
    gradient_calls = [size for what, size in allreduces if what == "the gradient allreduce"]
    assert gradient_calls == [n_params + 3]  # one flat buffer: every gradient, loss sum, rows, stop
    assert len(allreduces) == 1 + (2 * norms if sync else 0)  # sync-norm: one forward, one backward per layer


def test_a_stop_request_on_one_rank_stops_every_rank_after_the_same_step():
    def rank_program(group):
        dp = DataParallel(group)
        model = dp.prepare(tiny_model())
        x, y = digits_like_batch(4)
        return dp.backward(softmax_cross_entropy(model(Tensor(x)), y), 4, stop=group.rank == 1)[1]

    assert ThreadGroup(2).run(rank_program) == [True, True]


def test_the_identical_weights_check_names_the_parameter_that_differs():
    def rank_program(group):
        dp = DataParallel(group)
        model = dp.prepare(tiny_model())
        if group.rank == 1:
            model.head[0].weight.data[0, 0] += 1e-12
        dp.synchronise(model)

    with pytest.raises(DistError, match=r"rank 1's head\.0\.weight differs from rank 0's"):
        ThreadGroup(2).run(rank_program)


def test_running_statistics_are_averaged_over_the_ranks():
    def rank_program(group):
        model = tiny_model(np.float32)
        bn = model.stem[0].bn
        bn.running_mean[...] = group.rank + 1.0
        average_buffers(model, group)
        return bn.running_mean.copy(), bn.running_mean.dtype

    for mean, dtype in ThreadGroup(2).run(rank_program):
        assert dtype == np.float32
        np.testing.assert_array_equal(mean, 1.5)


def test_shards_of_every_batch_are_its_rows_augmented_as_in_the_whole_batch():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (23, 3, 8, 8), dtype=np.uint8)
    labels = rng.integers(0, 10, 23)
    loader = BatchIterator(images, labels, 7, shuffle=True, seed=5, augment=crop_and_flip,
                           mean=(0.5,) * 3, std=(0.25,) * 3)
    whole = list(loader.batches(epoch=2, start=1))
    for K in (1, 2, 3, 5):
        parts = [list(loader.batches(2, 1, shard=(k, K))) for k in range(K)]
        for step, (x, y) in enumerate(whole):
            np.testing.assert_array_equal(np.concatenate([p[step][0] for p in parts]), x)
            np.testing.assert_array_equal(np.concatenate([p[step][1] for p in parts]), y)


def test_evaluation_shards_skip_empty_parts_and_count_their_rows():
    images, labels = np.zeros((5, 1, 2, 2), np.float32), np.arange(5)
    loader = BatchIterator(images, labels, 4)  # batches of 4 and 1 rows
    shards = [ShardedLoader(loader, k, 3) for k in range(3)]
    seen = [[len(y) for _, y in s.batches()] for s in shards]
    assert seen == [[1], [1], [2, 1]]  # rows [0, 1), [1, 2), [2, 4) of 4; [0, 0), [0, 0), [0, 1) of 1
    assert [s.rows for s in shards] == [1, 1, 3]


def test_metrics_are_averaged_over_all_rows_of_all_ranks():
    images, labels = np.zeros((5, 1, 2, 2), np.float32), np.arange(5)

    def rank_program(group):
        dp = DataParallel(group)
        shard = dp.shard(BatchIterator(images, labels, 5))
        list(shard.batches())  # rank 0 sees 2 rows, rank 1 sees 3
        return dp.mean_over_ranks((float(group.rank), 1.0), shard)

    for loss, acc in ThreadGroup(2).run(rank_program):
        assert loss == pytest.approx(3 / 5) and acc == pytest.approx(1.0)


def test_a_training_batch_that_leaves_a_rank_without_rows_is_refused():
    check_shards_not_empty(10, 4, 2)  # batches of 4, 4 and 2 rows: fine on 2 ranks
    with pytest.raises(DistError, match="batch of 1 rows cannot be split over 2 ranks"):
        check_shards_not_empty(9, 4, 2)
    with pytest.raises(DistError, match="batch of 2 rows cannot be split over 3 ranks"):
        check_shards_not_empty(12, 2, 3)


def test_one_rank_is_the_ordinary_run():
    dp = DataParallel(SoloGroup())
    loader = BatchIterator(np.zeros((4, 1, 2, 2)), np.arange(4), 2)
    assert dp.shard(loader, training=True) is loader
    assert dp.local_config({"device": "cpu", "progress": True}) == {"device": "cpu", "progress": True}
    model = dp.prepare(tiny_model())
    x, y = digits_like_batch(4)
    loss = softmax_cross_entropy(model(Tensor(x)), y)
    value, stop = dp.backward(loss, 4)
    assert value is None and stop is False  # one process: the loss stays on the device, read with the step
    np.testing.assert_array_equal(model.head[0].weight.grad, whole_batch_gradients(x, y)["head.0.weight"])


def test_gradient_bucket_refuses_mixed_dtypes():
    model = tiny_model(np.float32)
    model.head[0].bias.data = model.head[0].bias.data.astype(np.float64)
    with pytest.raises(DistError, match="one dtype"):
        GradientBucket(model.parameters())


# ------------------------------------------------------------------------- launching and deadlines
def test_world_is_one_process_without_an_mpi_launcher(monkeypatch):
    for name in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MV2_COMM_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert isinstance(world(), SoloGroup)


def test_a_launcher_without_mpi4py_is_an_error_not_k_separate_runs(monkeypatch):
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setitem(__import__("sys").modules, "mpi4py", None)  # makes `import mpi4py` fail
    with pytest.raises(DistError, match=r"mpi4py cannot be imported.*pip install -e '\.\[dist\]'"):
        world()


@pytest.mark.parametrize("raw", ["0", "-3", "soon", "nan", "inf", "1e300"])
def test_the_timeout_must_be_a_positive_number(monkeypatch, raw):
    # inf and 1e300 passed, and then crashed the watchdog thread (OverflowError in its wait): no deadline at all
    monkeypatch.setenv("MINISNN_DIST_TIMEOUT", raw)
    with pytest.raises(DistError, match="MINISNN_DIST_TIMEOUT must be a positive number"):
        timeout_from_env()


def test_the_watchdog_fires_on_a_block_that_overruns_and_not_on_one_that_ends():
    fired = []
    event = threading.Event()
    dog = Watchdog(0.2, lambda what: (fired.append(what), event.set()))
    with dog.guard("a quick allreduce"):
        pass
    time.sleep(0.3)
    assert fired == []
    with dog.guard("setting up NCCL"):
        with dog.guard("the NCCL unique id"):  # an inner guard ends; the outer deadline still counts
            pass
        assert event.wait(5)
    assert fired == ["setting up NCCL"]


# ------------------------------------------------------------------------- NCCL, stood in for
class FakeDeviceArray:
    """Stands in for a CuPy array: device memory at ``data.ptr``; refuses to become a host array."""

    def __init__(self, array, memory):
        self._array = array
        self.data = SimpleNamespace(ptr=memory.setdefault("next", 0x1000) + len(memory) * 0x100)
        memory[self.data.ptr] = array
        self.dtype, self.size, self.flags = array.dtype, array.size, array.flags

    def __array__(self, *args, **kwargs):
        raise AssertionError("a device array was copied to the host")

    def get(self):
        raise AssertionError("a device array was copied to the host")


class FakeNccl:
    """Stands in for ``cupy.cuda.nccl``: the constants, get_unique_id, and NcclCommunicator objects whose
    allReduce sums the device memory behind the pointers across the communicators of one unique id."""
    NCCL_FLOAT16, NCCL_FLOAT32, NCCL_FLOAT64, NCCL_INT32, NCCL_INT64, NCCL_SUM = 6, 7, 8, 2, 4, 0

    def __init__(self, memory, size):
        self.memory, self.ids_made, self.log = memory, [], []
        self._barrier, self._slots = threading.Barrier(size, timeout=10), [None] * size

    def get_unique_id(self):
        self.ids_made.append(os.urandom(128))
        return self.ids_made[-1]

    def NcclCommunicator(self, ndev, uid, rank):  # noqa: N802 -- CuPy's name
        nccl = self

        class Communicator:
            def allReduce(self, sendbuf, recvbuf, count, datatype, op, stream):  # noqa: N802
                nccl.log.append(("allReduce", rank, sendbuf, recvbuf, count, datatype, op, stream))
                nccl._slots[rank] = nccl.memory[sendbuf].copy()
                nccl._barrier.wait()
                total = sum(nccl._slots[1:], nccl._slots[0].copy())
                nccl._barrier.wait()
                nccl.memory[recvbuf][...] = total

        communicator = Communicator()
        communicator.ndev, communicator.uid, communicator.rank = ndev, uid, rank
        return communicator


class FakeStream:
    def __init__(self, ptr, log):
        self.ptr, self.log = ptr, log

    def synchronize(self):
        self.log.append(("synchronize", self.ptr))


def test_nccl_transport_sums_device_memory_in_place_with_the_id_broadcast_from_rank_0():
    """What this shows without a GPU: the protocol -- one unique id made on rank 0 and handed to every
    rank over the host group, one communicator per rank with (K, id, rank), one in-place allReduce on
    the array's device pointer with NCCL's dtype and sum and the current stream, then a wait for the
    stream -- and that the array is never converted to a host array. It does not show that CuPy's real
    bindings accept these calls or that the GPUs compute the sum."""
    K, memory = 3, {}
    nccl = FakeNccl(memory, K)

    def rank_program(group):
        transport = NcclTransport(group, nccl, lambda: FakeStream(0xA0 + group.rank, nccl.log))
        buffers = [FakeDeviceArray(np.full(5, group.rank + 1.0, dtype), memory) for dtype in (np.float32, np.float64)]
        group.allgather(None)  # all buffers registered before any allreduce
        for buffer in buffers:
            transport.allreduce_(buffer)
        return transport.comm, [memory[b.data.ptr] for b in buffers], [b.data.ptr for b in buffers]

    results = ThreadGroup(K).run(rank_program)
    assert len(nccl.ids_made) == 1
    for rank, (comm, arrays, ptrs) in enumerate(results):
        assert (comm.ndev, comm.uid, comm.rank) == (K, nccl.ids_made[0], rank)
        for array in arrays:
            np.testing.assert_array_equal(array, 6.0)
        calls = [entry for entry in nccl.log if entry[0] == "allReduce" and entry[1] == rank]
        assert [(c[2], c[3], c[4], c[5], c[6], c[7]) for c in calls] == [
            (ptrs[0], ptrs[0], 5, nccl.NCCL_FLOAT32, nccl.NCCL_SUM, 0xA0 + rank),
            (ptrs[1], ptrs[1], 5, nccl.NCCL_FLOAT64, nccl.NCCL_SUM, 0xA0 + rank)]
        mine = [e for e in nccl.log if (e[0] == "allReduce" and e[1] == rank) or e == ("synchronize", 0xA0 + rank)]
        assert [e[0] for e in mine] == ["allReduce", "synchronize"] * 2


def test_nccl_transport_refuses_what_nccl_cannot_sum():
    memory = {}
    nccl = FakeNccl(memory, 1)
    transport = NcclTransport(SoloGroup(), nccl, lambda: FakeStream(1, nccl.log))
    with pytest.raises(TypeError, match="unsupported dtype bool"):
        transport.allreduce_(FakeDeviceArray(np.zeros(3, bool), memory))
    with pytest.raises(ValueError, match="contiguous"):
        transport.allreduce_(FakeDeviceArray(np.zeros((3, 4), np.float32)[:, ::2], memory))
