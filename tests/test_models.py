"""Backbones: shapes, sizes, FLOPs, registry errors, gradients, memory formats."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from engine.errors import ConfigError
from engine.models import MODELS, get_model, list_models

ALL_NAMES = ["iresnet18", "iresnet34", "iresnet50", "iresnet100", "resnet34", "resnet50"]
# Narrow networks keep the suite fast; the architecture is the same at every width.
FAST_WIDTH = 0.25


def images(n: int, size: int = 112) -> torch.Tensor:
    """Random images in the [-1, 1] range the backbones expect."""
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def forward_flops(model: nn.Module, size: int = 112) -> int:
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(images(1, size))
    return counter.get_total_flops()


def test_registry_names() -> None:
    assert list_models() == sorted(ALL_NAMES)
    assert set(MODELS) == set(ALL_NAMES)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_output_shape_train_and_eval(name: str) -> None:
    model = get_model(name, width=FAST_WIDTH)
    model.train()
    out = model(images(2))
    assert out.shape == (2, 512)
    assert torch.isfinite(out).all()
    model.eval()
    with torch.no_grad():
        out = model(images(1))
    assert out.shape == (1, 512)


def test_outputs_are_not_normalised_by_default() -> None:
    for name in ("iresnet18", "resnet34"):
        model = get_model(name, width=FAST_WIDTH).eval()
        with torch.no_grad():
            norms = model(images(4)).norm(dim=1)
        assert not torch.allclose(norms, torch.ones_like(norms), atol=1e-3)


def test_resnet_normalize_output_flag() -> None:
    model = get_model("resnet34", width=FAST_WIDTH, normalize_output=True).eval()
    with torch.no_grad():
        norms = model(images(3)).norm(dim=1)
    torch.testing.assert_close(norms, torch.ones(3))


@pytest.mark.parametrize("name", ["iresnet18", "resnet50"])
def test_custom_embedding_size(name: str) -> None:
    model = get_model(name, embedding_size=128, width=FAST_WIDTH)
    assert model(images(2)).shape == (2, 128)
    assert model.fc.out_features == 128


def test_width_changes_channels_and_parameter_count() -> None:
    narrow = get_model("iresnet18", width=0.25)
    half = get_model("iresnet18", width=0.5)
    full = get_model("iresnet18", width=1.0)
    assert n_params(narrow) < n_params(half) < n_params(full)
    assert narrow.conv1.out_channels == 16
    assert narrow.layer4[0].conv2.out_channels == 128
    # A tiny width still gives at least one channel.
    assert get_model("iresnet18", width=0.001).conv1.out_channels == 1


def test_iresnet34_parameter_count_matches_insightface() -> None:
    # insightface r34 with a 512-d head: 34.1M, of which the 7*7*512 -> 512 FC alone is 12.8M.
    model = get_model("iresnet34")
    assert 33_000_000 < n_params(model) < 36_000_000
    assert model.fc.in_features == 512 * 7 * 7


def test_paper_resnet_trunk_matches_torchvision() -> None:
    tv = pytest.importorskip("torchvision")
    for name, tv_build in (("resnet34", tv.models.resnet34), ("resnet50", tv.models.resnet50)):
        ours = get_model(name)
        reference = tv_build(weights=None)
        trunk = sum(
            p.numel() for n, p in ours.named_parameters() if n.split(".")[0] not in {"bn2", "fc", "features"}
        )
        # The released stem is a conv3x3(3->64), torchvision's a conv7x7: 64*3*(49-9) fewer weights.
        assert trunk == n_params(reference) - n_params(reference.fc) - 64 * 3 * (49 - 9)
        # 112 -> 112 (stem, stride 1) -> 56 (pool) -> 56 -> 28 -> 14 -> 7
        assert ours.final_size == 7
        assert ours.fc.in_features == reference.fc.in_features * 7 * 7


@pytest.mark.parametrize(("name", "gflop"), [("iresnet50", 12.6), ("iresnet34", 8.9)])
def test_iresnet_flops_match_reference(name: str, gflop: float) -> None:
    flops = forward_flops(get_model(name))
    assert abs(flops - gflop * 1e9) < 0.05 * gflop * 1e9, flops


@pytest.mark.parametrize(("size", "final"), [(112, 7), (64, 4), (56, 4), (96, 6)])
def test_iresnet_other_input_sizes(size: int, final: int) -> None:
    model = get_model("iresnet18", width=FAST_WIDTH, input_size=size)
    assert model.final_size == final
    assert model(images(2, size)).shape == (2, 512)


def test_resnet_other_input_size() -> None:
    model = get_model("resnet34", width=FAST_WIDTH, input_size=64)
    assert model.final_size == 4
    assert model(images(2, 64)).shape == (2, 512)


def test_dropout_defaults_per_family_and_override() -> None:
    assert get_model("iresnet18", width=FAST_WIDTH).dropout.p == 0.0
    assert get_model("resnet34", width=FAST_WIDTH).dropout.p == 0.4
    assert get_model("resnet34", width=FAST_WIDTH, dropout=0.1).dropout.p == 0.1
    assert get_model("iresnet18", width=FAST_WIDTH, dropout=0.2).dropout.p == 0.2


def test_unknown_model_raises_config_error_listing_names() -> None:
    with pytest.raises(ConfigError) as info:
        get_model("iresnet99")
    message = str(info.value)
    assert "iresnet99" in message
    for name in ALL_NAMES:
        assert name in message


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [({"width": 0.0}, "width"), ({"embedding_size": 0}, "embedding_size"), ({"input_size": 8}, "input_size")],
)
def test_out_of_range_arguments_raise_config_error(kwargs: dict, needle: str) -> None:
    for name in ("iresnet18", "resnet34"):
        with pytest.raises(ConfigError, match=needle):
            get_model(name, **kwargs)


@pytest.mark.parametrize("name", ["iresnet18", "resnet50"])
def test_gradients_reach_every_trainable_parameter(name: str) -> None:
    model = get_model(name, width=FAST_WIDTH).train()
    model(images(2)).pow(2).sum().backward()
    for pname, p in model.named_parameters():
        if not p.requires_grad:
            continue
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
    assert model.conv1.weight.grad.abs().sum() > 0


def test_iresnet_embedding_scale_is_frozen_like_insightface() -> None:
    model = get_model("iresnet18", width=FAST_WIDTH)
    assert not model.features.weight.requires_grad
    assert model.features.bias.requires_grad
    free = get_model("iresnet18", width=FAST_WIDTH, fix_embedding_scale=False)
    assert free.features.weight.requires_grad


@pytest.mark.parametrize("name", ["iresnet18", "resnet50"])
def test_channels_last_matches_contiguous(name: str) -> None:
    torch.manual_seed(0)  # the same weights whatever ran before
    model = get_model(name, width=FAST_WIDTH).eval()
    x = images(2)
    with torch.no_grad():
        expected = model(x)
        model_cl = model.to(memory_format=torch.channels_last)
        got = model_cl(x.contiguous(memory_format=torch.channels_last))
    # Relative to the embedding's scale: the released ResNet's untrained embeddings reach ~400.
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()))
