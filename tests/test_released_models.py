"""The paper-code ResNets against the released network, and the fp32 embedding head under AMP.

Reference: hurricanelx/LRFR ``model/resnet.py`` (the paper's released code; its training script
``train_webface_pair.py`` builds ``ResNet34()`` from it). ``_Released*`` below is an independent,
compact transcription of that file (same module names, so its ``state_dict`` has the released
keys): a conv3x3(3->64, stride 1) + BN + ReLU + max-pool(3, 2, 1) stem, torchvision's
post-activation blocks, and ``output_layer = Sequential(BN2d(512*exp), Dropout(0.4), Flatten,
Linear(512*exp*7*7, 512), BN1d(512))``, followed by ``l2_norm``. The numbers it implies at 112 px
with a 512-d embedding: ResNet34 34.13 M parameters and 3.58 GMACs, ResNet50 74.9 M parameters.

The AMP reference is insightface's arcface_torch ``backbones/iresnet.py`` (fp16 variant): the
trunk under ``autocast(self.fp16)``, then ``self.fc(x.float())`` and ``self.features`` outside it.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from engine.models import convert_released_state_dict, get_model


@pytest.fixture(autouse=True)
def _leave_global_rng_alone():
    """These tests seed torch's global RNG; restore it so later test files draw what they did before."""
    with torch.random.fork_rng(devices=[]):
        yield

# ----------------------------------------------------------------------------------------------
# Transcription of hurricanelx/LRFR model/resnet.py
# ----------------------------------------------------------------------------------------------


class _ReleasedBasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class _ReleasedBottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class _Flatten(nn.Module):
    def forward(self, x):
        return x.view(x.size(0), -1)


class _ReleasedResNet(nn.Module):
    def __init__(self, block, layers, feature_dim=512, drop_ratio=0.4):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.output_layer = nn.Sequential(nn.BatchNorm2d(512 * block.expansion), nn.Dropout(drop_ratio), _Flatten(),
                                          nn.Linear(512 * block.expansion * 7 * 7, feature_dim),
                                          nn.BatchNorm1d(feature_dim))

    def _make_layer(self, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                                       nn.BatchNorm2d(planes * block.expansion))
        mods = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        mods += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*mods)

    def trunk(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x):
        x = self.output_layer(self.trunk(x))
        return torch.div(x, torch.norm(x, 2, 1, True))  # released l2_norm


RELEASED = {
    "resnet34": lambda: _ReleasedResNet(_ReleasedBasicBlock, [3, 4, 6, 3]),
    "resnet50": lambda: _ReleasedResNet(_ReleasedBottleneck, [3, 4, 6, 3]),
}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def macs(model: nn.Module, size: int = 112) -> float:
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    return counter.get_total_flops() / 2


def images(n: int, size: int = 112, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


def randomise_norms(model: nn.Module, seed: int = 1) -> None:
    """Non-trivial BN affine parameters and running statistics, so eval mode tests them too."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            n = m.num_features
            m.weight.data = 0.5 + torch.rand(n, generator=g)
            m.bias.data = 0.1 * torch.randn(n, generator=g)
            m.running_mean = 0.1 * torch.randn(n, generator=g)
            m.running_var = 0.5 + torch.rand(n, generator=g)


# ----------------------------------------------------------------------------------------------
# Architecture
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "millions"), [("resnet34", 34.13), ("resnet50", 74.9)])
def test_parameter_count_is_the_released_networks(name: str, millions: float) -> None:
    ours = get_model(name)
    count = n_params(ours)
    # The quoted figure within its last printed digit (34,124,608 is quoted as 34.13 M, 74,886,208 as
    # 74.9 M), and, exactly, the transcription's count.
    assert abs(count / 1e6 - millions) <= (0.01 if millions < 50 else 0.05), count
    assert count == n_params(RELEASED[name]())
    assert ours.fc.in_features == 512 * (1 if name == "resnet34" else 4) * 7 * 7


def test_resnet34_macs_are_the_released_networks() -> None:
    ours = macs(get_model("resnet34"))
    assert round(ours / 1e9, 2) == 3.58, ours
    assert ours == macs(RELEASED["resnet34"]())


@pytest.mark.parametrize("name", ["resnet34", "resnet50"])
def test_final_feature_map_is_7x7_at_112px(name: str) -> None:
    model = get_model(name, width=0.25).eval()
    assert model.final_size == 7
    with torch.no_grad():
        assert model.forward_features(images(1)).shape[-2:] == (7, 7)


@pytest.mark.parametrize("name", ["resnet34", "resnet50"])
def test_forward_equals_the_released_module_with_the_same_weights(name: str) -> None:
    torch.manual_seed(0)
    released = RELEASED[name]()
    randomise_norms(released)
    ours = get_model(name, normalize_output=True)
    ours.load_state_dict(convert_released_state_dict(released.state_dict()), strict=True)
    x = images(2)
    released.eval()
    ours.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), released(x), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ours.forward_features(x), released.trunk(x), rtol=1e-5, atol=1e-5)


def test_training_forward_equals_the_released_module_dropout_included() -> None:
    torch.manual_seed(0)
    released = RELEASED["resnet34"]().train()
    ours = get_model("resnet34", normalize_output=True).train()
    ours.load_state_dict(convert_released_state_dict(released.state_dict()), strict=True)
    x = images(3, seed=5)
    torch.manual_seed(123)
    expected = released(x)
    torch.manual_seed(123)  # the same dropout mask: both draw it at the same point, on the same shape
    got = ours(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_released_checkpoint_keys_load_from_a_dataparallel_save() -> None:
    released = RELEASED["resnet34"]()
    wrapped = {f"module.{k}": v for k, v in released.state_dict().items()}
    ours = get_model("resnet34")
    missing, unexpected = ours.load_state_dict(convert_released_state_dict(wrapped), strict=True)
    assert not missing and not unexpected


@pytest.mark.parametrize(("size", "final"), [(112, 7), (64, 4), (96, 6), (48, 3)])
def test_input_size_sets_the_head_size(size: int, final: int) -> None:
    model = get_model("resnet34", width=0.25, input_size=size)
    assert model.final_size == final
    assert model.fc.in_features == 128 * final * final  # width 0.25: 512 -> 128 channels
    assert model(images(2, size)).shape == (2, 512)


def test_width_scales_the_released_layout() -> None:
    model = get_model("resnet50", width=0.25, embedding_size=128)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1) and model.conv1.out_channels == 16
    assert model.fc.in_features == 128 * 4 * 7 * 7 and model.fc.out_features == 128
    assert model(images(2)).shape == (2, 128)


# ----------------------------------------------------------------------------------------------
# AMP: the embedding FC and BN1d stay in float32
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["iresnet18", "resnet34"])
def test_embedding_head_is_float32_under_autocast(name: str) -> None:
    model = get_model(name, width=0.25, input_size=32).train()
    seen: dict[str, torch.dtype] = {}
    model.layer4.register_forward_hook(lambda m, i, o: seen.__setitem__("trunk", o.dtype))
    model.fc.register_forward_hook(lambda m, i, o: seen.update(fc_in=i[0].dtype, fc_out=o.dtype))
    model.features.register_forward_hook(lambda m, i, o: seen.__setitem__("bn_in", i[0].dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(images(4, 32))
    assert seen["trunk"] == torch.bfloat16  # autocast was on for the trunk
    assert (seen["fc_in"], seen["fc_out"], seen["bn_in"]) == (torch.float32,) * 3
    assert out.dtype == torch.float32
    out.float().pow(2).mean().backward()
    assert model.fc.weight.grad is not None and model.fc.weight.grad.dtype == torch.float32
