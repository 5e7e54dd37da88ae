"""Data-parallel STBP: K ranks train one model on K shards of every batch and stay identical.

Why it is the same as one process with the whole batch. The loss of a batch of B examples is the mean
of their losses, L = (1/B) sum_i l_i. Split the batch into K shards of n_k rows; rank k computes the sum of
its own losses, S_k = n_k * L_k, and its gradient. Gradients add, so

    dL/dw = (1/B) sum_k dS_k/dw,        B = sum_k n_k,

which is one allreduce: every rank puts its dS_k/dw (all parameters, one flat buffer), S_k and n_k into
one array, the allreduce sums it over the ranks, and each divides by B. All ranks then hold the same
gradient, take the same optimizer step, and their weights stay identical (``check_identical`` makes
sure, once per epoch). Shards may differ in size by one row: the division by the total B weighs them.

The one layer where the shards are not independent is batch norm: tdBN takes its mean and variance
over the batch. Per rank (the default), each rank normalises its shard with the shard's own statistics
-- the same as one process normalising each B/K-row part of the batch separately -- and the running
statistics of the ranks are averaged before every evaluation and checkpoint. With ``sync_norm`` the
ranks add their per-channel sums (``SyncBatchNormFunction``), and the step equals the single-process
step on the whole batch up to float32 summation order.

What else the ranks share: each rank reads only its rows of every batch (``shard``; the global batch
order and augmentation depend on (seed, epoch, step) alone, so any K sees the same batches and a
checkpoint resumes with any K); evaluation is split the same way and its sums reduced; only rank 0
writes files (``is_writer``); a Ctrl-C on any rank stops every rank after the same step.
"""
import hashlib

import numpy as np

from ..backend import as_numpy, get_array_module, get_device
from ..nn.norm import BatchNorm
from .group import DistError, SoloGroup, world


class DataParallel:
    """Data parallelism over ``group`` (a SoloGroup for an ordinary run: then every method is the
    single-process behaviour, and no MPI is involved)."""

    def __init__(self, group=None, sync_norm=False):
        self.group = group if group is not None else SoloGroup()
        self.sync_norm = bool(sync_norm)
        self.params, self.bucket = None, None

    @classmethod
    def launch(cls, config):
        """The DataParallel of this process: K ranks under ``mpiexec -n K``, else one."""
        return cls(world(), sync_norm=config.get("sync_norm", False))

    rank = property(lambda self: self.group.rank)
    size = property(lambda self: self.group.size)
    is_writer = property(lambda self: self.group.rank == 0, doc="Only rank 0 writes files and prints progress.")

    def local_config(self, config):
        """The config as this rank runs it: on GPUs, rank r of a machine takes GPU r ('cuda' means
        'cuda:<local rank>'); ranks after 0 show no progress."""
        if self.size == 1:
            return config
        device = get_device(config["device"])
        if device != "cpu":
            device = f"cuda:{self.group.local_rank()}"
        return dict(config, device=device, progress=config["progress"] and self.is_writer)

    # -- the model -------------------------------------------------------------------------------
    def prepare(self, model):
        """Attach the model: its parameters are the ones the gradient allreduce sums; with sync_norm
        its tdBN/BN layers take their statistics over all ranks. Checks that the ranks start equal."""
        self.params = model.parameters()
        if self.size > 1:
            if self.sync_norm:
                sync_norm(model, self.group)
            self.check_identical(model, "at the start")
        return model

    def backward(self, loss, count, stop=False):
        """Backpropagate this rank's loss (the mean over its ``count`` rows) so that every rank ends with
        the gradient of the mean loss over the whole batch. Returns (that mean loss, whether any rank
        asked to stop) -- the same on every rank; with one process (None, stop), reading nothing."""
        if self.size == 1:  # the loss stays on the device: the trainer reads it with the step's other figures
            loss.backward()
            return None, bool(stop)
        (loss * float(count)).backward()  # S_k = n_k L_k: gradients of the ranks' S_k add up
        if self.bucket is None:
            self.bucket = GradientBucket(self.params)
        return self.bucket.reduce(self.group, loss.data * count, count, stop)

    def synchronise(self, model):
        """Before evaluating or saving: make the running statistics agree (the mean over ranks, unless
        sync_norm already keeps them equal) and check that every rank holds the same weights."""
        if self.size == 1:
            return
        if not self.sync_norm:
            average_buffers(model, self.group)
        self.check_identical(model, "after synchronising")

    def check_identical(self, model, when):
        """Raise DistError naming the first parameter or buffer in which some rank differs from rank 0."""
        digests = [hashlib.blake2b(np.ascontiguousarray(array).tobytes(), digest_size=16).digest()
                   for array in model.state_dict().values()]
        every = self.group.allgather(digests, what="the weight digests (identical-weights check)")
        names = list(model.state_dict())
        for rank, theirs in enumerate(every):
            if theirs != every[0]:
                first = next(i for i, (a, b) in enumerate(zip(theirs, every[0])) if a != b)
                raise DistError(f"rank {rank}'s {names[first]} differs from rank 0's {when}: the ranks' weights "
                                "must stay identical in data-parallel training")

    # -- the data --------------------------------------------------------------------------------
    def shard(self, loader, training=False):
        """This rank's part of every batch of ``loader`` (the loader itself when K = 1)."""
        if self.size == 1:
            return loader
        if training:
            check_shards_not_empty(len(loader.order(0)), loader.batch_size, self.size)
        return ShardedLoader(loader, self.rank, self.size)

    def sum_over_ranks(self, sums):
        """A dict of per-rank running sums (images, loss x images, ...) -> the sums over all ranks."""
        if self.size == 1:
            return dict(sums)
        keys = sorted(sums)
        total = np.array([float(sums[k]) for k in keys], dtype=np.float64)
        self.group.allreduce_(total, what="the epoch's running sums")
        return dict(zip(keys, total.tolist()))

    def mean_over_ranks(self, means, loader):
        """Per-rank means over the rows each rank saw in its last pass over ``loader`` (a ``shard``)
        -> the means over all rows of all ranks, the same on every rank."""
        if self.size == 1:
            return tuple(means)
        rows = loader.rows
        sums = np.array([m * rows for m in means] + [rows], dtype=np.float64)
        self.group.allreduce_(sums, what="the epoch's metrics")
        return tuple(float(s / max(sums[-1], 1)) for s in sums[:-1])


class GradientBucket:
    """One flat buffer holding every parameter's gradient, plus three numbers: the ranks' loss sums, row
    counts and stop requests. One allreduce per step sums all of it (NCCL on GPUs, in device memory).

    Layout: [grad of p_0 | grad of p_1 | ... | loss sum | rows | stop], all in the parameters' dtype.
    """

    def __init__(self, params):
        dtypes = {p.dtype for p in params}
        if len(dtypes) != 1:
            raise DistError(f"data-parallel training needs parameters of one dtype, got {sorted(map(str, dtypes))}")
        self.params = params
        self.offsets = np.cumsum([0] + [p.size for p in params])
        xp = get_array_module(params[0].data)
        self.flat = xp.zeros(int(self.offsets[-1]) + 3, dtype=params[0].dtype)

    def reduce(self, group, loss_sum, count, stop):
        """Sum the gradients (of S_k), loss sums and row counts over the ranks; divide by the total rows.
        Returns (mean loss over the whole batch, whether any rank asked to stop)."""
        flat, offsets = self.flat, self.offsets
        for p, start, end in zip(self.params, offsets[:-1], offsets[1:]):
            flat[start:end] = 0 if p.grad is None else p.grad.reshape(-1)
        flat[-3], flat[-2], flat[-1] = loss_sum, count, float(stop)
        group.allreduce_(flat, what="the gradient allreduce")
        loss_total, rows, stops = (float(v) for v in as_numpy(flat[-3:]))
        flat /= rows
        for p, start, end in zip(self.params, offsets[:-1], offsets[1:]):
            if p.grad is not None:
                p.grad = flat[start:end].reshape(p.shape).copy()
        return loss_total / rows, stops > 0


def average_buffers(model, group):
    """Running mean and variance of every rank <- their mean over the ranks (one allreduce)."""
    buffers = [(module, name) for _, module, name in model.named_buffers()
               if getattr(module, name).dtype.kind == "f"]
    if not buffers:
        return
    arrays = [getattr(module, name) for module, name in buffers]
    xp = get_array_module(arrays[0])
    flat = xp.concatenate([a.reshape(-1).astype(xp.float64) for a in arrays])
    group.allreduce_(flat, what="the running statistics")
    flat /= group.size
    start = 0
    for (module, name), array in zip(buffers, arrays):
        array[...] = flat[start:start + array.size].reshape(array.shape)
        start += array.size


def sync_norm(model, group):
    """Make every tdBN / BN layer of ``model`` take its training statistics over all ranks of ``group``."""
    for _, module in model.named_modules():
        if isinstance(module, BatchNorm):
            module.sync_group = group
    return model


def check_shards_not_empty(rows, batch_size, ranks):
    """Every training batch must give every rank at least one row (an empty shard cannot join the
    allreduces of a step). Raises DistError saying which batch size would do."""
    last = rows % batch_size
    if batch_size < ranks or 0 < last < ranks:
        small = batch_size if batch_size < ranks else last
        raise DistError(f"a training batch of {small} rows cannot be split over {ranks} ranks (batch size "
                        f"{batch_size}, {rows} training rows); choose a batch size of at least {ranks} whose "
                        f"last batch ({rows} mod batch size) is 0 or at least {ranks}")


class ShardedLoader:
    """This rank's rows of every batch of a loader, with the loader's length (steps per epoch).

    ``rows`` counts the rows the last pass yielded. A rank whose share of a (last, small) evaluation
    batch is empty skips it."""

    def __init__(self, loader, rank, size):
        self.loader, self.rank, self.size = loader, rank, size
        self.rows = 0

    def __len__(self):
        return len(self.loader)

    def batches(self, epoch=0, start=0):
        self.rows = 0
        for x, y in self.loader.batches(epoch, start, shard=(self.rank, self.size)):
            if len(y):
                self.rows += len(y)
                yield x, y
