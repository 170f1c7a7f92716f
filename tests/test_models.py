"""Model zoo: exact checkpoint layout of the CIFAR archs and the feature interface."""

from __future__ import annotations

import copy
import functools
import json
import pickle
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from rrdtui.train.models import CIFAR_ARCHS, build_model

REFERENCE = json.loads((Path(__file__).parent / "data" / "cifar_state_dicts.json").read_text())


@functools.cache
def _eval_model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return build_model(name, 100).eval()


def _x(channels: int = 3) -> torch.Tensor:
    return torch.randn(2, channels, 32, 32, generator=torch.Generator().manual_seed(1))


def _classifier_of(name: str, model: nn.Module) -> nn.Module:
    # The reference's last key is "<classifier path>.bias".
    last_key = REFERENCE[name]["state_dict"][-1][0]
    return model.get_submodule(last_key.rsplit(".", 1)[0])


def _randomize(model: nn.Module) -> None:
    """Give every float entry (incl. BN running stats) non-default values."""
    g = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for key, t in model.state_dict().items():
            if t.is_floating_point():
                noise = torch.rand(t.shape, generator=g) if "running_var" in key else torch.randn(t.shape, generator=g)
                t.copy_(noise * 0.5 + (0.5 if "running_var" in key else 0.0))


def test_cifar_arch_list_matches_reference():
    assert set(CIFAR_ARCHS) == set(REFERENCE)
    assert len(CIFAR_ARCHS) == 22


@pytest.mark.parametrize("name", CIFAR_ARCHS)
def test_state_dict_layout_params_and_feat_dim(name):
    model = _eval_model(name)
    ref = REFERENCE[name]
    assert [[k, list(v.shape)] for k, v in model.state_dict().items()] == ref["state_dict"]
    assert sum(p.numel() for p in model.parameters()) == ref["params"]
    assert model.feat_dim == ref["feat_dim"]


@pytest.mark.parametrize("name", CIFAR_ARCHS)
def test_forward_and_features(name):
    model = _eval_model(name)
    x = _x()
    with torch.no_grad():
        logits = model(x)
        feat, logits2 = model.forward_with_features(x)
        via_classifier = _classifier_of(name, model)(feat)
    assert logits.shape == (2, 100)
    assert feat.shape == (2, REFERENCE[name]["feat_dim"])
    torch.testing.assert_close(logits2, logits, rtol=0, atol=0)
    # feat really is the input of the final Linear
    torch.testing.assert_close(via_classifier, logits, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["resnet8", "wrn_16_1", "vgg8", "ShuffleV1", "MobileNetV2", "ResNet50"])
def test_published_checkpoint_format_roundtrip(name, tmp_path):
    src = build_model(name, 100)
    _randomize(src)
    src.eval()
    path = tmp_path / "ckpt_epoch_240.pth"
    torch.save({"model": src.state_dict(), "epoch": 240}, path)

    ckpt = torch.load(path, weights_only=True)
    dst = build_model(name, 100)
    dst.load_state_dict(ckpt["model"], strict=True)
    dst.eval()
    x = _x()
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src(x), rtol=0, atol=0)


def test_torchvision_resnet18():
    model = build_model("resnet18", 10).eval()
    assert isinstance(model, torchvision.models.ResNet)
    reference = torchvision.models.resnet18(weights=None, num_classes=10)
    assert list(model.state_dict()) == list(reference.state_dict())
    assert model.feat_dim == 512
    x = _x()
    with torch.no_grad():
        feat, logits = model.forward_with_features(x)
        plain = model(x)
    assert feat.shape == (2, 512)
    assert logits.shape == (2, 10)
    torch.testing.assert_close(plain, logits, rtol=0, atol=0)
    torch.testing.assert_close(model.fc(feat), logits, rtol=0, atol=0)
    assert not model.fc._forward_pre_hooks  # the capture hook is temporary
    # torchvision checkpoints load unchanged
    model.load_state_dict(reference.state_dict(), strict=True)


def test_torchvision_model_survives_copy_and_pickle():
    model = build_model("mobilenet_v2", 7).eval()
    x = _x()
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        clone.eval()
        with torch.no_grad():
            feat, logits = clone.forward_with_features(x)
            torch.testing.assert_close(logits, model(x))
        assert feat.shape == (2, model.feat_dim) == (2, 1280)


def test_case_distinguishes_cifar_and_torchvision_resnet50():
    cifar = _eval_model("ResNet50")
    tv = build_model("resnet50", 10)
    assert hasattr(cifar, "linear") and not hasattr(cifar, "fc")
    assert isinstance(tv, torchvision.models.ResNet) and tv.fc.out_features == 10


def test_unknown_name_lists_valid_choices():
    with pytest.raises(ValueError) as info:
        build_model("resnet9000", 10)
    message = str(info.value)
    assert "\n" not in message
    for name in ("resnet8", "ResNet50", "wrn_40_2", "vgg13", "MobileNetV2", "ShuffleV2", "resnet18"):
        assert name in message


@pytest.mark.parametrize("name", ["resnet8", "wrn_16_1", "vgg8", "MobileNetV2", "ShuffleV1", "ShuffleV2", "ResNet50"])
def test_in_channels_changes_only_first_conv(name):
    model = build_model(name, 10, in_channels=1).eval()
    ref = [[k, s] for k, s in REFERENCE[name]["state_dict"]]
    got = [[k, list(v.shape)] for k, v in model.state_dict().items()]
    assert [k for k, _ in got] == [k for k, _ in ref]
    # Only the first conv's input channels and the 10-way classifier differ.
    first_conv = next(k for k, s in ref if len(s) == 4)
    for (key, shape), (_, ref_shape) in zip(got, ref):
        if key == first_conv:
            assert shape == [ref_shape[0], 1, *ref_shape[2:]]
        elif shape != ref_shape:
            assert shape[0] == 10 and shape[1:] == ref_shape[1:], key
    with torch.no_grad():
        feat, logits = model.forward_with_features(_x(channels=1))
    assert feat.shape == (2, model.feat_dim) and logits.shape == (2, 10)


def test_in_channels_torchvision():
    model = build_model("resnet18", 10, in_channels=1).eval()
    assert model.conv1.weight.shape == (64, 1, 7, 7)
    with torch.no_grad():
        feat, logits = model.forward_with_features(_x(channels=1))
    assert feat.shape == (2, 512) and logits.shape == (2, 10)


def test_the_catalog_names_only_real_torchvision_models():
    import torchvision

    from rrdtui.catalog import CIFAR_ARCHS, TORCHVISION_ARCHS

    assert set(TORCHVISION_ARCHS) <= set(torchvision.models.list_models(module=torchvision.models))
    assert not set(TORCHVISION_ARCHS) & set(CIFAR_ARCHS)  # CIFAR names win: none is listed twice
