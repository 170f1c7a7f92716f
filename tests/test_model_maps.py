"""forward_with_maps: RepDistiller's intermediate feature maps from one pass, state dicts unchanged."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rrdtui.train.models import CIFAR_ARCHS, build_model, map_shapes
from rrdtui.train.models.shufflenet import channel_shuffle

REFERENCE = json.loads((Path(__file__).parent / "data" / "cifar_state_dicts.json").read_text())

_NARROW = [(16, 32, 32), (16, 32, 32), (32, 16, 16), (64, 8, 8)]
_WIDE = [(32, 32, 32), (64, 32, 32), (128, 16, 16), (256, 8, 8)]
_VGG = [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4), (512, 4, 4)]

# (C, H, W) of RepDistiller's is_feat list minus its pooled last entry, for 32x32 inputs.
EXPECTED_SHAPES: dict[str, list[tuple[int, int, int]]] = {
    **{f"resnet{d}": _NARROW for d in (8, 14, 20, 32, 44, 56, 110)},
    "resnet8x4": _WIDE,
    "resnet32x4": _WIDE,
    "ResNet50": [(64, 32, 32), (256, 32, 32), (512, 16, 16), (1024, 8, 8), (2048, 4, 4)],
    "wrn_16_1": [(16, 32, 32), (16, 32, 32), (32, 16, 16), (64, 8, 8)],
    "wrn_40_1": [(16, 32, 32), (16, 32, 32), (32, 16, 16), (64, 8, 8)],
    "wrn_16_2": [(16, 32, 32), (32, 32, 32), (64, 16, 16), (128, 8, 8)],
    "wrn_40_2": [(16, 32, 32), (32, 32, 32), (64, 16, 16), (128, 8, 8)],
    **{name: _VGG for name in ("vgg8", "vgg11", "vgg13", "vgg16", "vgg19")},
    # conv1 (stride 2), then stages blocks[1], blocks[2], blocks[4], blocks[6]
    "MobileNetV2": [(16, 16, 16), (12, 16, 16), (16, 8, 8), (48, 4, 4), (160, 2, 2)],
    "ShuffleV1": [(24, 32, 32), (240, 16, 16), (480, 8, 8), (960, 4, 4)],
    "ShuffleV2": [(24, 32, 32), (116, 16, 16), (232, 8, 8), (464, 4, 4)],
}


def _family(name: str) -> str:
    for prefix in ("resnet", "wrn", "vgg"):
        if name.startswith(prefix):
            return prefix
    return name  # ResNet50, MobileNetV2, ShuffleV1, ShuffleV2


def _post_relu_indices(name: str, n_maps: int) -> range:
    """Indices of the (preact=False) maps that are the output of a ReLU."""
    family = _family(name)
    if family == "wrn":  # raw conv / residual sums; the final BN+ReLU comes after f3
        return range(0)
    if family == "MobileNetV2":  # only the stem; the stages end in linear bottlenecks
        return range(1)
    return range(n_maps)


@functools.cache
def _eval_model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return build_model(name, 100).eval()


def _x(channels: int = 3, size: int = 32) -> torch.Tensor:
    return torch.randn(2, channels, size, size, generator=torch.Generator().manual_seed(1))


def _close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-6)


def test_expected_table_covers_every_cifar_arch():
    assert set(EXPECTED_SHAPES) == set(CIFAR_ARCHS)


@pytest.mark.parametrize("name", CIFAR_ARCHS)
def test_cifar_maps_match_reference_layout_and_forward(name):
    model = _eval_model(name)
    x = _x()
    with torch.no_grad():
        logits = model(x)
        feat_ref, _ = model.forward_with_features(x)
        maps, feat, logits_maps = model.forward_with_maps(x)
        pre_maps, pre_feat, pre_logits = model.forward_with_maps(x, preact=True)

    _close(logits_maps, logits)
    _close(feat, feat_ref)
    _close(pre_logits, logits)
    _close(pre_feat, feat_ref)

    expected = EXPECTED_SHAPES[name]
    assert [tuple(t.shape) for t in maps] == [(2, *s) for s in expected]
    assert [tuple(t.shape) for t in pre_maps] == [(2, *s) for s in expected]
    assert map_shapes(model, 3) == expected

    for i in _post_relu_indices(name, len(maps)):
        assert maps[i].min() >= 0, f"map {i} follows a ReLU"
    # The stem map never changes with preact (the reference returns the same f0).
    torch.testing.assert_close(pre_maps[0], maps[0], rtol=0, atol=0)
    if name == "MobileNetV2":  # the reference defines no preact variant
        for pre, post in zip(pre_maps, maps):
            torch.testing.assert_close(pre, post, rtol=0, atol=0)
    else:
        for i in range(1, len(maps)):
            assert not torch.equal(pre_maps[i], maps[i]), f"preact map {i} equals the post-activation one"
        assert pre_maps[-1].min() < 0  # taken before a ReLU


@pytest.mark.parametrize("name", ["resnet8", "resnet8x4", "ResNet50", "vgg8", "vgg13", "ShuffleV1"])
def test_preact_maps_are_the_tensors_the_last_relu_sees(name):
    model = _eval_model(name)
    with torch.no_grad():
        maps, _, _ = model.forward_with_maps(_x())
        pre_maps, _, _ = model.forward_with_maps(_x(), preact=True)
    for pre, post in zip(pre_maps[1:], maps[1:]):
        torch.testing.assert_close(F.relu(pre), post, rtol=0, atol=0)


def test_shufflev2_preact_is_the_unshuffled_concat():
    # Reference: preact = cat([kept half, branch before ReLU]); the output is its ReLU, channel-shuffled.
    model = _eval_model("ShuffleV2")
    with torch.no_grad():
        maps, _, _ = model.forward_with_maps(_x())
        pre_maps, _, _ = model.forward_with_maps(_x(), preact=True)
    for pre, post in zip(pre_maps[1:], maps[1:]):
        torch.testing.assert_close(channel_shuffle(F.relu(pre), 2), post, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["wrn_16_1", "wrn_40_2"])
def test_wrn_preact_maps_are_the_following_batchnorms(name):
    # Reference: f1 -> block2.layer[0].bn1(f1), f2 -> block3.layer[0].bn1(f2), f3 -> bn1(f3).
    model = _eval_model(name)
    x = _x()
    with torch.no_grad():
        maps, feat, _ = model.forward_with_maps(x)
        pre_maps, _, _ = model.forward_with_maps(x, preact=True)
        _close(pre_maps[1], model.block2.layer[0].bn1(maps[1]))
        _close(pre_maps[2], model.block3.layer[0].bn1(maps[2]))
        _close(pre_maps[3], model.bn1(maps[3]))
        _close(model.conv1(x), maps[0])
    _close(F.relu(pre_maps[3]).mean((2, 3)), feat)


@pytest.mark.parametrize("name", CIFAR_ARCHS)
def test_state_dict_layout_unchanged(name):
    model = _eval_model(name)
    with torch.no_grad():
        model.forward_with_maps(_x(), preact=True)
    assert [[k, list(v.shape)] for k, v in model.state_dict().items()] == REFERENCE[name]["state_dict"]


@pytest.mark.parametrize(
    "name", ["resnet8", "resnet8x4", "ResNet50", "wrn_16_1", "vgg8", "MobileNetV2", "ShuffleV1", "ShuffleV2"]
)
def test_one_pass_in_train_mode(name):
    """forward_with_maps updates every BN's running statistics exactly as one plain forward does."""
    torch.manual_seed(0)
    a = build_model(name, 100).train()
    b = build_model(name, 100).train()
    b.load_state_dict(a.state_dict())
    x = _x()
    with torch.no_grad():
        a(x)
        b.forward_with_maps(x, preact=True)
    for (key, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(vb, va, rtol=1e-6, atol=1e-6, msg=key)


def test_gradient_from_a_map_reaches_the_stem():
    torch.manual_seed(0)
    for name, stem in (("resnet8", "conv1"), ("wrn_16_1", "conv1"), ("vgg8", "block0.0"), ("MobileNetV2", "conv1.0")):
        model = build_model(name, 10).train()
        for preact in (False, True):
            model.zero_grad(set_to_none=True)
            maps, _, _ = model.forward_with_maps(_x(), preact=preact)
            maps[2].square().mean().backward()
            grad = model.get_submodule(stem).weight.grad
            assert grad is not None and grad.abs().sum() > 0, (name, preact)
            head = model.get_submodule(REFERENCE[name]["state_dict"][-1][0].rsplit(".", 1)[0])
            assert head.weight.grad is None  # the loss used maps only


def test_map_shapes_other_sizes_and_channels_and_restores_modes():
    resnet = build_model("resnet8", 10, in_channels=1)
    assert map_shapes(resnet, 1, image_size=28) == [(16, 28, 28), (16, 28, 28), (32, 14, 14), (64, 7, 7)]
    # The reference pools after block3 only for 64-pixel inputs, so block4 stays at 4x4.
    vgg = build_model("vgg8", 10)
    assert map_shapes(vgg, 3, image_size=64) == [(64, 64, 64), (128, 32, 32), (256, 16, 16), (512, 8, 8), (512, 4, 4)]

    model = build_model("wrn_16_1", 10).train()
    model.block2.eval()  # a mixed state must survive as it was
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    assert map_shapes(model, 3) == EXPECTED_SHAPES["wrn_16_1"]
    assert [m.training for m in model.modules()] == modes
    for key, value in model.state_dict().items():  # eval + no_grad: BN statistics untouched
        torch.testing.assert_close(value, before[key], rtol=0, atol=0, msg=key)


def _no_hooks_left(model: nn.Module) -> bool:
    return not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # stem (conv1/bn1/relu/maxpool), layer1..layer4
        ("resnet18", [(64, 8, 8), (64, 8, 8), (128, 4, 4), (256, 2, 2), (512, 1, 1)]),
        # last output of `features` at each resolution (the final 1x1 conv is the last map)
        ("mobilenet_v2", [(16, 16, 16), (24, 8, 8), (32, 4, 4), (96, 2, 2), (1280, 1, 1)]),
    ],
)
def test_torchvision_maps(name, expected):
    model = build_model(name, 10).eval()
    x = _x()
    with torch.no_grad():
        logits = model(x)
        feat_ref, _ = model.forward_with_features(x)
        maps, feat, logits_maps = model.forward_with_maps(x)
        pre_maps, _, _ = model.forward_with_maps(x, preact=True)
    assert _no_hooks_left(model)
    torch.testing.assert_close(logits_maps, logits, rtol=0, atol=0)
    torch.testing.assert_close(feat, feat_ref, rtol=0, atol=0)
    assert [tuple(t.shape) for t in maps] == [(2, *s) for s in expected]
    assert map_shapes(model, 3) == expected
    assert all(t.min() >= 0 for t in maps[:-1] if name == "resnet18")  # post-ReLU stages
    for pre, post in zip(pre_maps, maps):  # no clean preact in torchvision: documented as equal
        torch.testing.assert_close(pre, post, rtol=0, atol=0)


def test_torchvision_gradient_and_stem_map():
    torch.manual_seed(0)
    model = build_model("resnet18", 10).train()
    maps, _, _ = model.forward_with_maps(_x())
    maps[2].square().mean().backward()
    assert model.conv1.weight.grad is not None and model.conv1.weight.grad.abs().sum() > 0
    assert model.fc.weight.grad is None
    assert _no_hooks_left(model)
    model.eval()
    x = _x()
    with torch.no_grad():
        stem = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        maps, _, _ = model.forward_with_maps(x)
    torch.testing.assert_close(maps[0], stem, rtol=0, atol=0)
