"""Spiking ResNets: the paper's architecture, alpha at residual joins, depth, direct encoding."""
import numpy as np
import pytest

from minisnn import Tensor
from minisnn.functions.loss import softmax_cross_entropy
from minisnn.models import PlainSpikingNet, build_model, resnet19, resnet34, resnet50, resnet_small
from minisnn.models.resnet import RESIDUAL_ALPHA, BasicBlock
from minisnn.nn import LIF, Conv2d, Linear, TdBN


def count(model, cls):
    return sum(isinstance(m, cls) for _, m in model.named_modules())


def weight_layers(model):
    """Conv and FC layers on the main path (1x1 shortcut convs are not counted as depth)."""
    return [name for name, m in model.named_modules()
            if isinstance(m, (Conv2d, Linear)) and "shortcut" not in name]


def test_resnet19_matches_the_paper():
    model = resnet19(T=2)
    # conv3x3 stem + 8 BasicBlocks x 2 convs + FC256 + FC10 = 19 weight layers
    assert len(weight_layers(model)) == 19
    widths = [b.branch[0].conv.weight.shape[0] for b in model.layers]
    assert widths == [128] * 3 + [256] * 3 + [512] * 2
    strides = [b.branch[0].conv.stride for b in model.layers]
    assert [s if isinstance(s, int) else s[0] for s in strides] == [1, 1, 1, 2, 1, 1, 2, 1]
    assert model.head[0].weight.shape == (256, 512) and model.head[2].weight.shape == (10, 256)
    assert isinstance(model.head[1], LIF)
    assert 12.5e6 < model.num_parameters() < 12.8e6


def test_alpha_is_one_over_sqrt2_exactly_where_branches_meet():
    model = resnet19(T=1)
    for block in model.layers:
        assert block.branch[0].bn.alpha == 1.0
        assert block.branch[2].bn.alpha == pytest.approx(RESIDUAL_ALPHA)
        if block.shortcut is not None:
            assert block.shortcut.bn.alpha == pytest.approx(RESIDUAL_ALPHA)
    assert model.stem[0].bn.alpha == 1.0


def test_deep_resnets_reach_34_and_50_layers():
    assert len(weight_layers(resnet34(T=1))) == 34
    assert len(weight_layers(resnet50(T=1))) == 50


def test_direct_encoding_equals_repeating_the_image_over_time():
    model = resnet_small(width=4, blocks=(1, 1), T=3, seed=1).astype(np.float64)
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8))
    y_fast = model(Tensor(x))
    y_repeat = model(Tensor(np.broadcast_to(x, (3,) + x.shape).copy()))
    np.testing.assert_allclose(y_fast.data, y_repeat.data, rtol=1e-12, atol=1e-12)


def test_forward_backward_shapes_and_dtype():
    model = resnet_small(width=4, blocks=(1, 1), T=2, num_classes=5)
    x = np.random.default_rng(0).standard_normal((3, 3, 8, 8)).astype(np.float32)
    logits = model(Tensor(x))
    assert logits.shape == (3, 5) and logits.dtype == np.float32
    softmax_cross_entropy(logits, np.array([0, 1, 4])).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.shape == p.shape and p.grad.dtype == np.float32, name


def test_resnet_small_strides_set_where_each_stage_halves_the_image():
    def first_strides(model):
        return [block.branch[0].conv.stride[0] for block in model.layers]

    assert first_strides(resnet_small(width=4, blocks=(1, 1, 1))) == [1, 2, 2]
    model = resnet_small(width=4, blocks=(1, 2, 1), strides=(2, 2, 2), T=2)
    assert first_strides(model) == [2, 2, 1, 2]
    frames = Tensor(np.zeros((2, 3, 3, 16, 16), dtype=np.float32))
    assert model.layers(model.stem(frames)).shape == (2, 3, 16, 2, 2)  # 16 / 2**3, width 4 * 2**2
    assert model(frames).shape == (3, 10)
    with pytest.raises(ValueError, match="strides"):
        resnet_small(width=4, blocks=(1, 1, 1), strides=(2, 2))


def test_frames_input_and_bad_shapes():
    model = resnet_small(width=4, blocks=(1,), T=2, in_channels=2)
    frames = np.zeros((5, 2, 2, 8, 8), dtype=np.float32)  # [T, N, C, H, W]: T comes from the data
    assert model(Tensor(frames)).shape == (2, 10)
    with pytest.raises(ValueError, match="expects"):
        model(Tensor(np.zeros((2, 8, 8), dtype=np.float32)))


def test_plain_net_norm_choices():
    assert count(PlainSpikingNet(depth=3, norm="tdbn"), TdBN) == 3
    assert count(PlainSpikingNet(depth=3, norm="none"), TdBN) == 0
    with pytest.raises(ValueError, match="norm"):
        PlainSpikingNet(depth=3, norm="layer")
    with pytest.raises(ValueError, match="unknown model"):
        build_model("vgg")


def test_tdbn_scales_by_the_neurons_own_threshold():
    for model in (resnet_small(width=4, blocks=(1, 1), neuron={"v_th": 1.0}),
                  PlainSpikingNet(depth=2, neuron={"v_th": 1.0})):
        bns = [m for _, m in model.named_modules() if isinstance(m, TdBN)]
        assert bns and all(m.v_th == 1.0 for m in bns)


def test_same_seed_same_weights():
    a, b = resnet_small(width=4, seed=3), resnet_small(width=4, seed=3)
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)
    assert isinstance(a.layers[0], BasicBlock)
