"""Folding tdBN into the conv before it: the folded net emits exactly the same spikes, layer by layer.

Both nets run in float64; the membranes may differ by rounding (~1e-16), which could flip a spike
only for a membrane within that distance of V_th -- the tests measure that margin and warn if tiny.
"""
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minisnn import Tensor, no_grad
from minisnn.fold import fold_pair, fold_tdbn
from minisnn.functions.loss import softmax_cross_entropy
from minisnn.models import PlainSpikingNet, SpikingResNet
from minisnn.monitor import Recorder
from minisnn.models.resnet import Residual
from minisnn.nn import LIF, BatchNorm, Conv2d, Linear, Module, Sequential, TdBN
from minisnn.optim import SGD

V_TH = 0.5


def resnet19_style(seed=1):
    """The ResNet-19 layout (stem, BasicBlocks 3-3-2 with stride-2 conv shortcuts, FC + LIF, FC) at width 4."""
    return SpikingResNet([(4, 3, 1), (8, 3, 2), (16, 2, 2)], stem=4, fc_hidden=8, num_classes=5, T=3, seed=seed)


def randomise_norms(model, rng, warmup_batches=5, shape=(8, 3, 8, 8)):
    """Non-trivial tdBN: random lambda and beta, and running statistics moved by training-mode forwards."""
    for _, m in model.named_modules():
        if isinstance(m, BatchNorm):
            m.weight.data = rng.uniform(0.5, 1.5, m.num_channels).astype(m.weight.dtype)
            m.bias.data = rng.normal(0, 0.2, m.num_channels).astype(m.bias.dtype)
    model.train()
    with no_grad():
        for _ in range(warmup_batches):
            model(Tensor(rng.standard_normal(shape).astype(np.float32)))
    for _, m in model.named_modules():
        if isinstance(m, BatchNorm):
            assert not np.allclose(m.running_mean, 0) and not np.allclose(m.running_var, 1)


def train_briefly(model, rng, steps=4, shape=(8, 3, 8, 8), settle_batches=15):
    """A few SGD steps on random images and labels (float32), so weights, lambda and beta move; then
    training-mode forwards without updates, so the running statistics catch up with the new weights."""
    before = {name: p.data.copy() for name, p in model.named_parameters()}
    optimizer = SGD(model.parameters(), lr=0.02, momentum=0.9)
    model.train()
    for _ in range(steps):
        logits = model(Tensor(rng.standard_normal(shape).astype(np.float32)))
        loss = softmax_cross_entropy(logits, rng.integers(0, logits.shape[1], shape[0]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    moved = [name for name, p in model.named_parameters() if not np.array_equal(p.data, before[name])]
    assert any(name.endswith("bn.weight") for name in moved) and any(name.endswith("bn.bias") for name in moved)
    with no_grad():
        for _ in range(settle_batches):
            model(Tensor(rng.standard_normal(shape).astype(np.float32)))


def record(model, x):
    with no_grad(), Recorder(model) as rec:
        out = model(Tensor(x))
    return rec, out.data


def assert_same_spikes(model, x):
    """Fold ``model`` (eval mode, float64) and compare every LIF layer's spikes at every timestep."""
    model = model.eval().astype(np.float64)
    folded = fold_tdbn(model)
    assert not any(isinstance(m, BatchNorm) for _, m in folded.named_modules())
    assert all(p.dtype == np.float64 for p in folded.parameters())
    ref, ref_out = record(model, x)
    got, got_out = record(folded, x)
    names = ref.order_of_lif()
    assert got.order_of_lif() == names  # the same layer names: nothing renumbered
    assert len(names) == sum(isinstance(m, LIF) for _, m in model.named_modules())
    margin, fired = np.inf, []
    for name in names:
        s_ref, s_got = ref.spikes[name], got.spikes[name]
        assert s_ref.shape == s_got.shape and s_ref.shape[0] == model.T
        assert np.array_equal(s_ref, s_got), f"{name}: {int((s_ref != s_got).sum())} spikes differ"
        u_ref, u_got = ref.membrane[name], got.membrane[name]
        np.testing.assert_allclose(u_got, u_ref, rtol=0, atol=1e-12 * (1 + np.abs(u_ref).max()))
        margin = min(margin, float(np.abs(u_ref - V_TH).min()))
        fired.append(float(s_ref.mean()))
    np.testing.assert_allclose(got_out, ref_out, rtol=1e-12, atol=1e-12)
    if margin < 1e-9:
        warnings.warn(f"a membrane sits {margin:.2e} from V_th: equal spikes there are luck of rounding")
    # a meaningful comparison: every layer fires, none saturates
    assert all(0 < r < 1 for r in fired), fired
    return folded


def test_folded_random_resnet19_style_net_emits_identical_spikes():
    rng = np.random.default_rng(0)
    model = resnet19_style()
    randomise_norms(model, rng)
    folded = assert_same_spikes(model, rng.standard_normal((4, 3, 8, 8)))          # direct encoding
    assert_same_spikes(model, rng.standard_normal((3, 4, 3, 8, 8)))                # frames [T, N, C, H, W]
    assert isinstance(folded.stem[0], Conv2d) and folded.stem[0].bias is not None
    assert isinstance(folded.layers[3].shortcut, Conv2d)                           # conv1x1 + tdBN(alpha) folded


def test_folded_briefly_trained_resnet19_style_net_emits_identical_spikes():
    rng = np.random.default_rng(3)
    model = resnet19_style(seed=3)
    train_briefly(model, rng)
    assert_same_spikes(model, rng.standard_normal((4, 3, 8, 8)))


@pytest.mark.parametrize("norm", ["tdbn", "bn", "none"])
def test_folded_plain_net_emits_identical_spikes(norm):
    rng = np.random.default_rng(2)
    model = PlainSpikingNet(depth=4, width=6, norm=norm, in_channels=3, T=3, seed=3)
    if norm != "none":
        randomise_norms(model, rng)
    folded = assert_same_spikes(model, rng.standard_normal((4, 3, 8, 8)))
    assert len(folded.features) == 8  # Conv2d + LIF per layer
    # the folded conv keeps the conv's name and the batch norm's name goes: the layers keep their names
    original = dict(model.named_modules())
    kept = [name for name, _ in folded.features._modules.items()]
    assert kept == (["0", "2", "3", "5", "6", "8", "9", "11"] if norm != "none" else [str(i) for i in range(8)])
    assert all(type(layer) is type(original[f"features.{name}"]) for name, layer in folded.features._modules.items())


def test_folded_weights_follow_the_formula():
    """W' = W g, b' = beta + (b - mu) g with g = lambda alpha V_th / sqrt(var + eps), computed here by hand."""
    rng = np.random.default_rng(3)
    conv = Conv2d(3, 5, 3, padding=1, bias=True, seed=0)
    conv.bias.data = rng.normal(size=5).astype(np.float32)
    bn = TdBN(5, alpha=2 ** -0.5, v_th=V_TH)
    bn.weight.data = rng.uniform(0.5, 2, 5).astype(np.float32)
    bn.bias.data = rng.normal(size=5).astype(np.float32)
    bn.running_mean = rng.normal(size=5).astype(np.float32)
    bn.running_var = rng.uniform(0.1, 3, 5).astype(np.float32)
    model = Sequential(conv, bn).astype(np.float64)
    g = (bn.weight.data * 2 ** -0.5 * V_TH / np.sqrt(bn.running_var.astype(np.float64) + bn.eps))
    merged = fold_pair(conv, bn)
    np.testing.assert_allclose(merged.weight.data, conv.weight.data * g[:, None, None, None], rtol=1e-14)
    np.testing.assert_allclose(merged.bias.data, bn.bias.data + (conv.bias.data - bn.running_mean) * g,
                               rtol=1e-12, atol=1e-14)
    folded = fold_tdbn(model)
    assert len(folded) == 1 and isinstance(folded[0], Conv2d)
    x = Tensor(rng.standard_normal((2, 3, 3, 6, 6)))
    with no_grad():
        np.testing.assert_allclose(folded(x).data, model.eval()(x).data, rtol=1e-12, atol=1e-12)


def test_linear_followed_by_batch_norm_folds():
    rng = np.random.default_rng(4)
    bn = BatchNorm(4)
    bn.running_mean, bn.running_var = rng.normal(size=4).astype(np.float32), rng.uniform(0.5, 2, 4).astype(np.float32)
    model = Sequential(Linear(6, 4, seed=0), bn, LIF())
    x = rng.standard_normal((2, 5, 6)) * 3
    folded = fold_tdbn(model.astype(np.float64))
    assert [type(m) for m in folded] == [Linear, LIF]
    with no_grad():
        np.testing.assert_array_equal(folded(Tensor(x)).data, model.eval()(Tensor(x)).data)


@settings(max_examples=15)
@given(cin=st.integers(1, 4), cout=st.integers(1, 5), kernel=st.sampled_from([1, 3]), stride=st.integers(1, 2),
       T=st.integers(1, 4), seed=st.integers(0, 2 ** 16))
def test_fold_preserves_spikes_for_random_conv_geometry(cin, cout, kernel, stride, T, seed):
    rng = np.random.default_rng(seed)
    conv = Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, seed=seed)
    model = Sequential(conv, TdBN(cout), LIF()).astype(np.float64)
    bn = model[1]
    bn.weight.data, bn.bias.data = rng.uniform(0.2, 2, cout), rng.normal(0, 0.3, cout)
    bn.running_mean, bn.running_var = rng.normal(0, 1, cout), rng.uniform(0.1, 4, cout)
    x = Tensor(rng.standard_normal((T, 2, cin, 5, 5)))
    folded = fold_tdbn(model)
    with no_grad():
        np.testing.assert_array_equal(folded(x).data, model.eval()(x).data)


def test_fold_keeps_the_dtype_and_leaves_the_model_alone():
    model = resnet19_style()
    state = model.state_dict()
    folded = fold_tdbn(model)
    assert all(p.dtype == np.float32 for p in folded.parameters())
    assert not folded.training and model.training
    assert all(np.array_equal(v, model.state_dict()[k]) for k, v in state.items())
    assert fold_tdbn(model, dtype=np.float64).parameters()[0].dtype == np.float64


class Block(Module):
    """Not a model the fold knows by name: o = LIF(tdBN(conv(x)) + x), as its forward_order says."""

    def __init__(self, channels=3):
        super().__init__()
        self.body = Sequential(Conv2d(channels, channels, 3, padding=1, seed=0), TdBN(channels))
        self.lif = LIF()

    def forward(self, x):
        return self.lif(self.body(x) + x)

    def forward_order(self):
        return [(None, Residual(("body", self.body), ("skip", None))), ("lif", self.lif)]


class ConvBNLIF(Module):
    """conv, batch norm and LIF called by its own forward: the pair cannot be folded in place."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.lif = Conv2d(3, 3, 1, seed=0), TdBN(3), LIF()

    def forward(self, x):
        return self.lif(self.bn(self.conv(x)))

    def forward_order(self):
        return [("conv", self.conv), ("bn", self.bn), ("lif", self.lif)]


def test_fold_walks_any_model_by_its_forward_order():
    rng = np.random.default_rng(6)
    model = Sequential(Block(), Block())
    model.T = 2
    randomise_norms(model, rng, shape=(2, 4, 3, 5, 5))
    folded = assert_same_spikes(model, rng.standard_normal((2, 4, 3, 5, 5)))
    assert [type(m) for m in folded[0].body] == [Conv2d] and list(folded[0].body._modules) == ["0"]
    with pytest.raises(ValueError, match="ConvBNLIF applies a batch norm"):
        fold_tdbn(ConvBNLIF())


def test_batch_norm_without_a_conv_before_it_is_refused():
    with pytest.raises(ValueError, match="cannot fold"):
        fold_tdbn(Sequential(LIF(), TdBN(3)))
    with pytest.raises(TypeError, match="floating"):
        resnet19_style().astype(np.int32)
