"""Lesson 22 -- data parallelism: K ranks, one batch, and what it does to tdBN.

What you will learn: how training is spread over K processes (ranks) that each take a shard of every
batch, why adding their gradients gives exactly the gradient of the whole batch, and why tdBN -- whose
statistics are taken over the batch -- is the one place where that is not so unless the ranks share
their statistics (``--sync-norm``).

One process runs out of time long before ResNet-19 finishes the README's 200 epochs on CIFAR-10. The
way out that every framework takes is data parallelism: K copies of the program (ranks), each with
the same weights, each computing the gradient on its own shard of the batch, then adding the K
gradients together.

Why that is the same as one large batch. The loss of a batch of B examples is the mean of their losses,
L = (1/B) sum_i l_i. Cut the batch into K shards of n_k rows and let rank k compute the sum of its own
losses, S_k = n_k L_k. The gradient of a sum is the sum of the gradients:

    dL/dw = (1/B) sum_k dS_k/dw,        B = n_1 + ... + n_K.

So each rank backpropagates S_k, one allreduce adds the K gradient arrays (and the K row counts), and
each rank divides by B: every rank now holds the gradient of the whole batch, takes the same optimizer
step, and the weights stay identical. minisnn packs every gradient into one flat buffer, so a step costs
one allreduce (``minisnn/dist/data_parallel.py``).

Where it is not the same: tdBN. Its mean and variance are taken over the batch (over T, N, H, W), and
each rank only sees its shard. With per-rank statistics (the default of every framework) rank k
normalises with its shard's mean, which is the batch mean plus sampling noise of about
sigma / sqrt(n_k T H W): the step equals one process pushing each shard through the net separately --
a different function, not rounding. ``--sync-norm`` adds the ranks' per-channel sums with one allreduce
per tdBN layer (sum x, sum x^2, n in forward; sum gy, sum gy x_hat in backward), and the step is again the
whole batch's, up to float32 summation order (``SyncBatchNormFunction`` in ``minisnn/functions/norm.py``).

What you will see, with 2 ranks (simulated by 2 threads of this process; under ``mpiexec -n 2`` two
real MPI processes):

1. One step on 32 digits, the gradient of a small spiking ResNet: 2 ranks with sync-norm differ from one
   process by rounding (about 1e-7 of the gradient's size in float32), 2 ranks with per-rank tdBN by a
   third of it (36 % here) -- and they equal, bit for bit here, one process that normalises each half
   separately.
2. The statistics themselves: the per-channel means of the first tdBN layer in each shard and in the
   whole batch (``22_data_parallel_tdbn_stats.png``, left).
3. A short training run (40 steps of Adam on the same batches): the distance of the 2-rank weights from
   the one-process weights, step by step (right). With sync-norm it stays at rounding level (1e-8 to
   1e-7); per rank it is 1 % after the first step and 8 % after 40. Both train (44 % and 42 % test
   accuracy here, against 44 % for one process): per-rank statistics give a valid optimizer -- just not
   the single-process one.

Run:  python lessons/22_data_parallel.py              (add --fast or MINISNN_FAST=1 for the test mode)
      mpiexec -n 2 python lessons/22_data_parallel.py  (real ranks: pip install -e '.[dist]')
"""
import numpy as np

from _common import FAST, Timer, finish, plt, save_figure, section, title
from minisnn import Tensor, no_grad
from minisnn.data import get_dataset
from minisnn.data.shards import shard_rows
from minisnn.dist import DataParallel, ThreadGroup, launched_by_mpi, world
from minisnn.fast import parallel
from minisnn.functions.loss import softmax_cross_entropy
from minisnn.models import resnet_small
from minisnn.optim import Adam
from minisnn.experiment import limit

INTRODUCES = ("minisnn.dist.DataParallel", "minisnn.dist.ThreadGroup", "minisnn.dist.world",
              "minisnn.dist.launched_by_mpi", "minisnn.data.shards.shard_rows")
K = 2
BATCH, STEPS, WIDTH, LR, SEED = (16, 6, 4, 0.003, 0) if FAST else (32, 40, 8, 0.003, 0)


def build():
    return resnet_small(width=WIDTH, blocks=(1, 1), in_channels=1, T=2, seed=SEED)


def flat_weights(model):
    return np.concatenate([p.data.ravel() for p in model.parameters()])


def flat_grads(model):
    return np.concatenate([p.grad.ravel() for p in model.parameters()])


def stem_statistics(model, x):
    """Per-channel mean of the first tdBN layer's input for the batch x (a forward pre-hook keeps it)."""
    seen = []
    handle = model.stem[0].bn.register_forward_pre_hook(lambda layer, args: seen.append(args[0].data))
    with no_grad():
        model(Tensor(x))
    handle.remove()
    return seen[0].mean(axis=(0, 1, 3, 4))


def accuracy(model, data):
    model.eval()
    with no_grad():
        images, labels = next(data.loader("test", 10_000).batches())
        acc = float((model(Tensor(images)).data.argmax(axis=1) == labels).mean())
    model.train()
    return acc


# ---------------------------------------------------------------------------- one process
def one_process_gradient(x, y, halves=False):
    """The gradient of the mean loss over (x, y) in one process; with ``halves`` each half of the batch goes
    through the net on its own (so tdBN uses each half's statistics), as per-rank tdBN does."""
    model = build()
    if halves:
        parts = [shard_rows(len(y), k, K) for k in range(K)]
        total = None
        for rows in parts:
            loss = softmax_cross_entropy(model(Tensor(x[rows])), y[rows]) * float(len(y[rows]))
            total = loss if total is None else total + loss
        (total / float(len(y))).backward()
    else:
        softmax_cross_entropy(model(Tensor(x)), y).backward()
    return flat_grads(model)


def one_process_training(data):
    model = build()
    optimizer = Adam(model.parameters(), lr=LR)
    trajectory = []
    for step, (x, y) in enumerate(data.loader("train", BATCH, seed=SEED).batches(0)):
        if step == STEPS:
            break
        model.zero_grad()
        softmax_cross_entropy(model(Tensor(x)), y).backward()
        optimizer.step()
        trajectory.append(flat_weights(model))
    return trajectory, accuracy(model, data)


# ---------------------------------------------------------------------------- each rank
def rank_program(group, data, x, y):
    """What every rank runs: one gradient step with and without sync-norm, then a short training run both
    ways. Returns the gradients, the weights after every step and the trained models.

    (Nothing here uses ``no_grad``: it switches gradients off for the whole process, and simulated ranks
    are threads of one process -- evaluation waits until all ranks are done.)"""
    rows = shard_rows(len(y), group.rank, K)
    result = {}
    for sync in (True, False):
        dp = DataParallel(group, sync_norm=sync)
        model = dp.prepare(build())
        dp.backward(softmax_cross_entropy(model(Tensor(x[rows])), y[rows]), len(y[rows]))
        result[f"grad_sync={sync}"] = flat_grads(model)
    for sync in (True, False):
        dp = DataParallel(group, sync_norm=sync)
        model = dp.prepare(build())
        optimizer = Adam(model.parameters(), lr=LR)
        trajectory = []
        for step, (xs, ys) in enumerate(dp.shard(data.loader("train", BATCH, seed=SEED), training=True).batches(0)):
            if step == STEPS:
                break
            model.zero_grad()
            dp.backward(softmax_cross_entropy(model(Tensor(xs)), ys), len(ys))
            optimizer.step()
            trajectory.append(flat_weights(model))
        dp.synchronise(model)  # running statistics agreed (averaged when per rank); weights checked equal
        result[f"trajectory_sync={sync}"] = trajectory
        result[f"model_sync={sync}"] = model
    return result


def main(argv=None):
    title("Lesson 22: data-parallel STBP -- 2 ranks, one batch, and tdBN")
    parallel.set_workers(1)  # one thread per rank: the ranks are the parallelism here
    if launched_by_mpi():
        group = world()
        if group.size != K:
            raise SystemExit(f"run this lesson with mpiexec -n {K} (got {group.size} ranks)")
        how = f"{K} MPI processes"
    else:
        group = None
        how = f"{K} ranks simulated by threads of this process (mpiexec -n {K} runs real ones)"
    data = limit(get_dataset("digits"), 512 if FAST else None, 128 if FAST else None)
    x, y = next(data.loader("train", 32, seed=SEED).batches())
    print(f"{how}; a spiking ResNet of width {WIDTH} on the 8x8 digits, T = 2")

    with Timer() as timer:
        if group is None:
            result = ThreadGroup(K).run(lambda g: rank_program(g, data, x, y))[0]
        else:
            result = rank_program(group, data, x, y)
            if group.rank != 0:
                return {}
        accuracies = {sync: accuracy(result[f"model_sync={sync}"], data) for sync in (True, False)}
        whole = one_process_gradient(x, y)
        halves = one_process_gradient(x, y, halves=True)
        reference, reference_acc = one_process_training(data)

    section("1. one step on 32 digits: the gradient of 2 ranks against one process")
    size = np.linalg.norm(whole)

    def relative(g, h):
        return float(np.linalg.norm(g - h) / size)

    print(f"|grad| of one process (whole batch):                      {size:.4f}")
    print(f"2 ranks, sync-norm      vs one process, whole batch:      {relative(result['grad_sync=True'], whole):.1e}")
    print(f"2 ranks, per-rank tdBN  vs one process, whole batch:      {relative(result['grad_sync=False'], whole):.1e}")
    print(f"2 ranks, per-rank tdBN  vs one process, halves separately: "
          f"{relative(result['grad_sync=False'], halves):.1e}")
    print("(relative differences |g - g_ref| / |g_ref|; float32 rounding is about 1e-7)")

    section("2. tdBN's statistics: the first layer's per-channel mean")
    shard_means = [stem_statistics(build(), x[shard_rows(len(y), k, K)]) for k in range(K)]
    whole_mean = stem_statistics(build(), x)
    print(f"{'channel':>7} " + " ".join(f"{f'shard {k}':>9}" for k in range(K)) + f" {'batch':>9}")
    for c in range(len(whole_mean)):
        print(f"{c:>7} " + " ".join(f"{m[c]:>9.4f}" for m in shard_means) + f" {whole_mean[c]:>9.4f}")
    print("Each shard's mean scatters around the batch's: per-rank tdBN normalises with these, sync-norm with "
          "the batch's (the mean of the shards' means, weighted by their rows).")

    section(f"3. training {STEPS} steps of {BATCH} images: distance from the one-process weights")
    distances = {sync: [float(np.linalg.norm(w - r) / np.linalg.norm(r))
                        for w, r in zip(result[f"trajectory_sync={sync}"], reference)] for sync in (True, False)}
    for step in sorted({0, 1, STEPS // 2, STEPS - 1}):
        print(f"step {step + 1:>3}: sync-norm {distances[True][step]:.1e}   per-rank tdBN {distances[False][step]:.1e}")
    print(f"test accuracy after {STEPS} steps: one process {reference_acc:.1%}, 2 ranks sync-norm "
          f"{accuracies[True]:.1%}, 2 ranks per-rank tdBN {accuracies[False]:.1%}")
    print(f"(all of it in {timer.seconds:.1f} s)")

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    channels = np.arange(len(whole_mean))
    for k, means in enumerate(shard_means):
        left.bar(channels + (k - 0.5) * 0.3, means, width=0.3, label=f"shard {k} ({len(y) // K} rows)")
    left.scatter(channels, whole_mean, color="black", zorder=3, label="whole batch")
    left.set(xlabel="channel of the first tdBN layer", ylabel="mean of its input", title="tdBN statistics per shard")
    left.legend(fontsize=8)
    steps = np.arange(1, STEPS + 1)
    right.semilogy(steps, np.maximum(distances[True], 1e-12), marker="o", label="2 ranks, sync-norm")
    right.semilogy(steps, distances[False], marker="s", label="2 ranks, per-rank tdBN")
    right.set(xlabel="step", ylabel="|w - w_1 process| / |w_1 process|", title="distance from one process")
    right.legend(fontsize=8)
    save_figure(fig, "22_data_parallel_tdbn_stats.png")
    summary = finish({"grad_sync_vs_whole": relative(result["grad_sync=True"], whole),
                      "grad_per_rank_vs_whole": relative(result["grad_sync=False"], whole),
                      "grad_per_rank_vs_halves": relative(result["grad_sync=False"], halves),
                      "final_distance_sync": distances[True][-1], "final_distance_per_rank": distances[False][-1],
                      "accuracy_one_process": reference_acc, "accuracy_sync": accuracies[True],
                      "accuracy_per_rank": accuracies[False]})
    print("\nThat is the whole course: back to the index in README.md.")
    return summary


if __name__ == "__main__":
    main()
