"""tdBN synchronised across data-parallel ranks (``--sync-norm``), with the ranks simulated by threads.

Rank k holds rows x_k (along N) of the batch. The synchronised statistics over the K shards must be the
statistics of the whole batch, so in float64 forward and backward equal tdBN on the whole batch; and the
hand-written backward, allreduce included, must match finite differences of its forward.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minisnn.core import Function, Tensor
from minisnn.data.shards import shard_rows
from minisnn.dist import ThreadGroup, sync_norm
from minisnn.fast import reference_only
from minisnn.functions.norm import SyncBatchNormFunction, batch_norm
from minisnn.gradcheck import gradcheck
from minisnn.nn import BatchNorm, TdBN
from strategies import seeds


@st.composite
def sharded_cases(draw):
    """(x [T, N, C, ...] float64, lambda, beta, K ranks, rng) with at least one row (along N) per rank."""
    K = draw(st.integers(1, 3))
    T, N, C = draw(st.integers(1, 3)), draw(st.integers(K, K + 3)), draw(st.integers(1, 3))
    spatial = draw(st.sampled_from([(), (1, 2), (2, 2), (3, 1)]))
    if T * N * int(np.prod(spatial)) < 2:
        N += 1
    rng = np.random.default_rng(draw(seeds))
    x = rng.normal(rng.uniform(-3, 3), rng.uniform(0.5, 2), size=(T, N, C) + spatial)
    return x, rng.standard_normal(C), rng.standard_normal(C), K, rng


def shards(x, K):
    return [x[:, shard_rows(x.shape[1], k, K)] for k in range(K)]


def run_ranks(x, w, b, gy, K, scale, per_timestep=False):
    """batch_norm with group on K simulated ranks: each rank's forward and backward on its own rows.
    Returns (y, dx, dlambda summed over ranks, dbeta summed, running means, running vars)."""
    C = x.shape[2]

    def rank_program(group):
        k = group.rank
        xk = Tensor(shards(x, K)[k].copy(), requires_grad=True)
        wk, bk = Tensor(w.copy(), requires_grad=True), Tensor(b.copy(), requires_grad=True)
        rm, rv = np.zeros(C), np.ones(C)
        y = batch_norm(xk, wk, bk, rm, rv, True, per_timestep=per_timestep, scale=scale, group=group)
        y.backward(shards(gy, K)[k])
        return y.data, xk.grad, wk.grad, bk.grad, rm, rv

    results = ThreadGroup(K).run(rank_program)
    y, dx = (np.concatenate([r[i] for r in results], axis=1) for i in (0, 1))
    dw, db = (sum(r[i] for r in results) for i in (2, 3))
    return y, dx, dw, db, [r[4] for r in results], [r[5] for r in results]


def whole_batch(x, w, b, gy, scale, per_timestep=False):
    """The single-process reference: BatchNormFunction on the whole batch."""
    C = x.shape[2]
    xt, wt, bt = (Tensor(a.copy(), requires_grad=True) for a in (x, w, b))
    rm, rv = np.zeros(C), np.ones(C)
    with reference_only():
        y = batch_norm(xt, wt, bt, rm, rv, True, per_timestep=per_timestep, scale=scale)
        y.backward(gy)
    return y.data, xt.grad, wt.grad, bt.grad, rm, rv


@settings(max_examples=40)
@given(sharded_cases(), st.floats(0.2, 1.5))
def test_sync_tdbn_over_k_shards_equals_tdbn_on_the_whole_batch(case, scale):
    x, w, b, K, rng = case
    gy = rng.standard_normal(x.shape)
    y, dx, dw, db, rms, rvs = run_ranks(x, w, b, gy, K, scale)
    y_ref, dx_ref, dw_ref, db_ref, rm_ref, rv_ref = whole_batch(x, w, b, gy, scale)
    for got, want in ((y, y_ref), (dx, dx_ref), (dw, dw_ref), (db, db_ref)):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-10)
    for rm, rv in zip(rms, rvs):  # every rank's running statistics are the whole batch's
        np.testing.assert_allclose(rm, rm_ref, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(rv, rv_ref, rtol=1e-12, atol=1e-13)


@settings(max_examples=10)
@given(sharded_cases())
def test_sync_per_timestep_batch_norm_equals_the_whole_batch(case):
    x, w, b, K, rng = case
    if x.shape[1] * int(np.prod(x.shape[3:])) < 2:  # per-timestep statistics need 2 values per step
        return
    gy = rng.standard_normal(x.shape)
    got = run_ranks(x, w, b, gy, K, 1.0, per_timestep=True)
    want = whole_batch(x, w, b, gy, 1.0, per_timestep=True)
    for g, r in zip(got[:4], want[:4]):
        np.testing.assert_allclose(g, r, rtol=1e-9, atol=1e-10)


class SimulatedRanks(Function):
    """SyncBatchNormFunction on the K shards of x along N, the ranks simulated by threads: one Function
    of the whole (x, lambda, beta), so that gradcheck can differentiate it by finite differences."""

    def __init__(self, K, scale):
        self.K, self.scale = K, scale

    def forward(self, x, w, b):
        self.parts = shards(x, self.K)
        self.functions = [SyncBatchNormFunction(None, None, None, self.scale) for _ in range(self.K)]

        def rank_forward(group):
            function, part = self.functions[group.rank], self.parts[group.rank]
            function.group = group
            return function.forward(part.reshape((-1,) + x.shape[2:]), w, b).reshape(part.shape)

        return np.concatenate(ThreadGroup(self.K).run(rank_forward), axis=1)

    def backward(self, gy):
        gys = shards(gy, self.K)

        def rank_backward(group):
            function = self.functions[group.rank]
            function.group, function.needs_input_grad = group, (True, True, True)
            gx, dw, db = function.backward(gys[group.rank].reshape((-1,) + gy.shape[2:]))
            return gx.reshape(gys[group.rank].shape), dw, db

        results = ThreadGroup(self.K).run(rank_backward)
        return (np.concatenate([r[0] for r in results], axis=1), sum(r[1] for r in results),
                sum(r[2] for r in results))


@settings(max_examples=25)
@given(sharded_cases(), st.floats(0.2, 1.5))
def test_sync_tdbn_gradients_match_finite_differences(case, scale):
    x, w, b, K, _ = case
    gradcheck(lambda x, w, b: SimulatedRanks(K, scale)(x, w, b), x, w, b)


def test_sync_norm_attaches_the_group_to_every_norm_layer_and_eval_ignores_it():
    from minisnn.models import resnet_small
    model = resnet_small(width=4, blocks=(1,), in_channels=1)
    group = ThreadGroup(1)
    sync_norm(model, group)
    norms = [m for _, m in model.named_modules() if isinstance(m, BatchNorm)]
    assert norms and all(m.sync_group is group for m in norms)
    bn = TdBN(2)
    bn.sync_group = object()  # in eval mode the running statistics are used; no collective happens
    bn.eval()
    x = np.random.default_rng(0).standard_normal((2, 3, 2, 2, 2)).astype(np.float32)
    np.testing.assert_allclose(bn(Tensor(x)).data, 0.5 * x / np.sqrt(1 + 1e-5), rtol=1e-6)


def test_float32_tdbn_module_on_two_ranks_matches_the_whole_batch():
    rng = np.random.default_rng(3)
    x = rng.normal(1.0, 2.0, (2, 8, 3, 4, 4)).astype(np.float32)
    gy = rng.standard_normal(x.shape).astype(np.float32)

    def rank_program(group):
        bn = TdBN(3, alpha=2 ** -0.5)
        bn.sync_group = group
        xk = Tensor(shards(x, 2)[group.rank], requires_grad=True)
        y = bn(xk)
        y.backward(shards(gy, 2)[group.rank])
        return y.data, xk.grad, bn.running_mean, bn.running_var

    results = ThreadGroup(2).run(rank_program)
    whole = TdBN(3, alpha=2 ** -0.5)
    xt = Tensor(x, requires_grad=True)
    y = whole(xt)
    y.backward(gy)
    np.testing.assert_allclose(np.concatenate([r[0] for r in results], axis=1), y.data, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.concatenate([r[1] for r in results], axis=1), xt.grad, rtol=1e-4, atol=1e-5)
    for r in results:
        assert r[2].dtype == np.float32 and r[1].dtype == np.float32
        np.testing.assert_allclose(r[2], whole.running_mean, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(r[3], whole.running_var, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("frozen", ["input", "parameters"])
def test_a_sync_norm_gives_what_is_asked_for_exactly_as_when_all_is_asked(frozen):
    # a frozen stem in front of it (only lambda and beta asked for), or tdBN's lambda and beta frozen in
    # fine-tuning (only dx): each gradient asked for is the one a full request gives, the others are None
    rng = np.random.default_rng(4)
    x, gy = rng.standard_normal((2, 6, 3, 2, 2)), rng.standard_normal((2, 6, 3, 2, 2))

    def rank_program(group, input_grad, parameter_grad):
        xk = Tensor(shards(x, 2)[group.rank].copy(), requires_grad=input_grad)
        w, b = Tensor(np.ones(3), requires_grad=parameter_grad), Tensor(np.zeros(3), requires_grad=parameter_grad)
        batch_norm(xk, w, b, None, None, True, group=group).backward(shards(gy, 2)[group.rank])
        return xk.grad, w.grad, b.grad

    asked = (frozen != "input", frozen != "parameters")
    partial = ThreadGroup(2).run(lambda group: rank_program(group, *asked))
    full = ThreadGroup(2).run(lambda group: rank_program(group, True, True))
    for rank_partial, rank_full in zip(partial, full):
        for got, whole, wanted in zip(rank_partial, rank_full, (asked[0], asked[1], asked[1])):
            if wanted:
                np.testing.assert_array_equal(got, whole)
            else:
                assert got is None
