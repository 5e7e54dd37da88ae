"""Optimizers and schedules: known first steps, convergence on a quadratic, exact resume from state."""
import math

import numpy as np
import pytest

from minisnn.nn import Parameter
from minisnn.backend import get_array_module
from minisnn.optim import SGD, Adam, CosineSchedule, Optimizer


def quadratic_step(opt, p, target):
    opt.zero_grad()
    p.grad = 2 * (p.data - target)  # d/dp |p - target|^2
    opt.step()


def test_sgd_momentum_and_weight_decay_match_the_update_rule():
    p = Parameter(np.array([1.0]))
    opt = SGD([p], lr=0.1, momentum=0.9, weight_decay=0.5)
    p.grad = np.array([2.0])
    opt.step()                      # g = 2 + 0.5*1 = 2.5; v = 2.5; p = 1 - 0.25
    assert p.data[0] == pytest.approx(0.75)
    p.grad = np.array([2.0])
    opt.step()                      # g = 2 + 0.375 = 2.375; v = 0.9*2.5 + 2.375 = 4.625
    assert p.data[0] == pytest.approx(0.75 - 0.4625)


def test_adam_follows_its_update_rule_over_several_steps_with_weight_decay():
    """The docstring's equations, written out again; one coordinate's gradients are so small that eps matters."""
    lr, b1, b2, eps, wd = 0.01, 0.9, 0.999, 1e-8, 0.1
    p = Parameter(np.array([1.0, -3.0, 2.0]))
    opt = Adam([p], lr=lr, weight_decay=wd)
    w, m, v = p.data.copy(), np.zeros(3), np.zeros(3)
    grads = np.random.default_rng(0).standard_normal((6, 3)) * np.array([1.0, 30.0, 1e-9])
    for t, grad in enumerate(grads, start=1):
        p.grad = grad.copy()
        opt.step()
        g = grad + wd * w
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        w = w - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
        np.testing.assert_allclose(p.data, w, rtol=1e-13, atol=0)


def test_the_documented_defaults():
    p = Parameter(np.ones(1))
    sgd, adam = SGD([p]), Adam([p])
    assert (sgd.lr, sgd.momentum, sgd.weight_decay) == (0.1, 0.9, 0.0)
    assert (adam.lr, adam.beta1, adam.beta2, adam.eps, adam.weight_decay) == (1e-3, 0.9, 0.999, 1e-8, 0.0)


def test_adam_first_step_moves_each_coordinate_by_lr():
    p = Parameter(np.array([1.0, -3.0, 2.0]))
    opt = Adam([p], lr=0.01)
    p.grad = np.array([1e-3, -50.0, 7.0])
    opt.step()
    np.testing.assert_allclose(p.data, [1.0 - 0.01, -3.0 + 0.01, 2.0 - 0.01], rtol=1e-6)


@pytest.mark.parametrize("make", [lambda ps: SGD(ps, lr=0.05, momentum=0.9), lambda ps: Adam(ps, lr=0.05)])
def test_optimizers_minimise_a_quadratic(make):
    target = np.array([3.0, -1.0], dtype=np.float32)
    p = Parameter(np.zeros(2, dtype=np.float32))
    opt = make([p])
    for _ in range(500):
        quadratic_step(opt, p, target)
    np.testing.assert_allclose(p.data, target, atol=1e-2)
    assert p.dtype == np.float32


@pytest.mark.parametrize("make", [lambda ps: SGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-3),
                                  lambda ps: Adam(ps, lr=0.05)])
def test_state_dict_resume_is_exact(make):
    target = np.array([3.0, -1.0])
    p = Parameter(np.zeros(2))
    opt = make([p])
    for _ in range(5):
        quadratic_step(opt, p, target)
    saved_p, saved_state = p.data.copy(), opt.state_dict()
    for _ in range(5):
        quadratic_step(opt, p, target)
    q = Parameter(saved_p)
    resumed = make([q])
    resumed.load_state_dict(saved_state)
    for _ in range(5):
        quadratic_step(resumed, q, target)
    np.testing.assert_array_equal(q.data, p.data)


@pytest.mark.parametrize("make", [lambda ps: SGD(ps, lr=0.1, momentum=0.9),
                                  lambda ps: SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01),
                                  lambda ps: Adam(ps, lr=0.1), lambda ps: Adam(ps, lr=0.1, weight_decay=0.01)],
                         ids=["sgd", "sgd with weight decay", "adam", "adam with weight decay"])
def test_parameters_sharing_one_gradient_array_are_updated_as_if_apart(make):
    """In y = a + b the engine hands both a and b the same gradient array: the optimizer must neither
    keep that array as its own state (momentum) nor change it in place."""
    def train(shared):
        a, b = Parameter(np.array([1.0, -2.0])), Parameter(np.array([0.5, 3.0]))
        opt = make([a, b])
        for step in range(4):
            opt.zero_grad()
            ((a + b) * np.array([1.0, -2.0]) * (step + 1)).sum().backward()
            if not shared:
                b.grad = b.grad.copy()
            assert (a.grad is b.grad) == shared
            given = a.grad.copy()
            opt.step()
            np.testing.assert_array_equal(a.grad, given)  # the gradient is read, not changed
        return np.concatenate([a.data, b.data])

    np.testing.assert_array_equal(train(shared=True), train(shared=False))


def test_an_optimizer_needs_parameters_and_a_subclass_needs_an_update():
    with pytest.raises(ValueError, match="empty parameter list"):
        SGD([], lr=0.1)

    class Bare(Optimizer):
        pass

    p = Parameter(np.ones(2))
    p.grad = np.ones(2)
    bare = Bare([p], lr=0.1)
    assert bare.state_dict() == {"lr": 0.1, "steps": 0}  # no slots
    with pytest.raises(NotImplementedError):
        bare.step()


def test_loading_a_state_restores_the_learning_rate_and_clears_the_slots_it_lacks():
    def fresh():
        p = Parameter(np.array([1.0, -1.0]))
        return p, SGD([p], lr=0.1, momentum=0.9)

    p, opt = fresh()
    before = opt.state_dict()  # no velocity yet
    for _ in range(3):
        quadratic_step(opt, p, np.zeros(2))
    single = Parameter(np.ones(2, np.float32))
    wide = SGD([single], lr=0.1)
    wide.load_state_dict({"lr": 0.1, "steps": 1, "velocity.0": np.array([0.5, 1.5])})  # float64 state
    assert wide.velocity[0].dtype == np.float32  # takes the parameter's dtype
    with pytest.raises(ValueError, match=r"optimizer state velocity\.0: shape \(3,\) != \(2,\)"):
        opt.load_state_dict(dict(before, **{"velocity.0": np.zeros(3)}))
    opt.load_state_dict(dict(before, lr=0.05))
    assert opt.lr == 0.05 and opt.steps == 0 and opt.velocity == [None]
    p.data[...] = [1.0, -1.0]
    quadratic_step(opt, p, np.zeros(2))
    q, other = fresh()
    other.lr = 0.05
    quadratic_step(other, q, np.zeros(2))
    np.testing.assert_array_equal(p.data, q.data)


def test_nonfinite_flags_a_nan_or_infinity_in_any_parameter():
    p, q = Parameter(np.ones(3)), Parameter(np.ones((2, 2)))
    assert not SGD([p], lr=0.1).nonfinite() and not SGD([p, q], lr=0.1).nonfinite()
    for bad in (np.nan, np.inf, -np.inf):
        q.data[1, 0] = bad
        assert SGD([q], lr=0.1).nonfinite() and SGD([p, q], lr=0.1).nonfinite()


@pytest.mark.parametrize("make", [lambda ps: SGD(ps, lr=0.1, momentum=0.9), lambda ps: Adam(ps, lr=0.1)],
                         ids=["sgd", "adam"])
def test_the_slots_follow_their_parameter_to_the_gpu_and_back(gpu, make):
    """After ``model.to(device)`` the parameters live elsewhere: the next step moves the slots there too,
    and the updates are those a run that never moved makes."""
    def run(move):
        p = Parameter(np.array([1.0, -2.0, 0.5]))
        opt = make([p])
        for step in range(4):
            if move and step in (1, 3):
                p.data = gpu.asarray(p.data) if step == 1 else gpu.asnumpy(p.data)
            xp = get_array_module(p.data)
            p.grad = 2 * (p.data - xp.asarray([3.0, -1.0, 0.0]))
            opt.step()
            assert all(get_array_module(slot) is xp for name in opt.slot_names() for slot in getattr(opt, name))
        return p.data

    np.testing.assert_allclose(run(move=True), run(move=False), rtol=1e-15)


def test_cosine_schedule_with_warmup():
    opt = SGD([Parameter(np.zeros(1))], lr=1.0)
    sched = CosineSchedule(opt, total_steps=12, warmup_steps=2, min_lr=0.0)
    lrs = [opt.lr]
    for _ in range(12):
        sched.step()
        lrs.append(opt.lr)
    assert lrs[0] == pytest.approx(0.5) and lrs[1] == pytest.approx(1.0)
    assert lrs[2 + 5] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lrs[12] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(lrs[1:], lrs[2:]))
    other = CosineSchedule(SGD([Parameter(np.zeros(1))], lr=1.0), total_steps=12, warmup_steps=2)
    other.load_state_dict(sched.state_dict())
    assert other.optimizer.lr == opt.lr


def test_cosine_schedule_defaults_refusals_and_state():
    opt = SGD([Parameter(np.zeros(1))], lr=1.0)
    sched = CosineSchedule(opt, total_steps=4)  # no warm-up, decays to 0
    lrs = [opt.lr]
    for _ in range(4):
        sched.step()
        lrs.append(opt.lr)
    assert lrs == pytest.approx([1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5, 0.5 * (1 + math.cos(3 * math.pi / 4)),
                                 0.0], abs=1e-15)
    for warmup in (4, 5):
        with pytest.raises(ValueError, match=f"total_steps \\(4\\) must exceed warmup_steps \\({warmup}\\)"):
            CosineSchedule(opt, total_steps=4, warmup_steps=warmup)
    other = CosineSchedule(SGD([Parameter(np.zeros(1))], lr=0.5), total_steps=4)
    other.load_state_dict(sched.state_dict() | {"position": 1})
    assert other.base_lr == 1.0 and other.optimizer.lr == pytest.approx(lrs[1])  # the saved curve, not its own


def test_cosine_schedule_stays_at_min_lr_past_its_end():
    opt = SGD([Parameter(np.zeros(1))], lr=1.0)
    sched = CosineSchedule(opt, total_steps=10, warmup_steps=3, min_lr=0.1)
    lrs = [opt.lr]
    for _ in range(30):  # a run extended, or stepped after its last epoch
        sched.step()
        lrs.append(opt.lr)
    assert lrs[9] > 0.1 and lrs[10:] == [pytest.approx(0.1, abs=1e-15)] * 21
