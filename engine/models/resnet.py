"""The paper's released-code "ResNet34" / "ResNet50" (hurricanelx/LRFR ``model/resnet.py``).

A ResNet adapted to 112x112 faces, *not* insightface's IResNet and *not* torchvision's ImageNet
stem: blocks are torchvision's post-activation BasicBlock / Bottleneck, but the stem is a
conv3x3(3->64, stride 1) + BN + ReLU + max-pool(3x3, stride 2), so a 112x112 input ends as a
7x7 map (112 -> 112 -> 56 -> 56 -> 28 -> 14 -> 7). The head is

    BN2d -> Dropout(0.4) -> flatten -> Linear(512 * expansion * 7 * 7 -> E) -> BN1d(E)

(released: ``output_layer``, a Sequential of exactly these). At 112 px and E = 512 that is
34.13 M parameters / 3.58 GMACs for ResNet34 and 74.9 M / 4.04 GMACs for ResNet50; the FC alone
holds 12.8 M (ResNet34) or 51.4 M (ResNet50) of them. Other input sizes give an
``input_size / 16`` map (``ceil`` at every halving) and an FC sized for it.

The released code L2-normalises the embedding inside the network. Here that is
opt-in (``normalize_output=True``) because the trainer normalises where the loss
needs it, and an un-normalised output keeps the norm available for analysis.
Released checkpoints load after ``convert_released_state_dict`` (the head's
``output_layer.{0,3,4}`` are ``bn2`` / ``fc`` / ``features`` here, as in IResNet).

Under autocast the FC and BN1d run in float32 on a float32 input, as insightface's
arcface_torch does for its fp16 backbones: the FC's long dot products (25088 inputs for
ResNet34 at 112 px) and the embedding's batch statistics are where half precision loses the most.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from engine.models.iresnet import (
    BASE_CHANNELS,
    conv1x1,
    conv3x3,
    embedding_fp32,
    feature_map_size,
    scaled_channels,
)
from engine.models.registry import model_info, register_model


class BasicBlock(nn.Module):
    """conv3x3(stride) -> BN -> ReLU -> conv3x3 -> BN, add shortcut, ReLU."""

    expansion = 1

    def __init__(self, in_ch: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_ch = planes * self.expansion
        self.conv1 = conv3x3(in_ch, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, out_ch)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_ch, out_ch, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """conv1x1 -> conv3x3(stride) -> conv1x1(x4), post-activation (torchvision "v1.5")."""

    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_ch = planes * self.expansion
        self.conv1 = conv1x1(in_ch, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, out_ch)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_ch, out_ch, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


def _shortcut(in_ch: int, out_ch: int, stride: int) -> nn.Module | None:
    """Projection shortcut (conv1x1 + BN) when the block changes shape, else identity."""
    if stride == 1 and in_ch == out_ch:
        return None
    return nn.Sequential(conv1x1(in_ch, out_ch, stride), nn.BatchNorm2d(out_ch))


class ResNet(nn.Module):
    """Paper-code ResNet producing an ``embedding_size``-d face embedding.

    Args:
        block: ``BasicBlock`` (ResNet18/34) or ``Bottleneck`` (ResNet50).
        layers: blocks per stage.
        embedding_size: output dimension (released: ``feature_dim=512``).
        width: channel multiplier on 64/128/256/512 (before the bottleneck's x4).
        dropout: dropout probability in the head (released: ``drop_ratio=0.4``).
        input_size: side of the square input; the FC takes ``C * (input_size/16)^2`` inputs.
        normalize_output: L2-normalise the embedding as the released code does.
            Off by default: the trainer and evaluator normalise where needed.
        zero_init_residual: zero the last BN of every residual branch (released option, off).
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: tuple[int, ...] | list[int],
        embedding_size: int = 512,
        width: float = 1.0,
        dropout: float = 0.4,
        input_size: int = 112,
        normalize_output: bool = False,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        if len(layers) != 4:
            raise ValueError(f"ResNet needs 4 stage depths, got {list(layers)}")
        if embedding_size < 1:
            raise ValueError(f"embedding_size must be positive, got {embedding_size}")
        if input_size < 16:
            raise ValueError(f"input_size must be at least 16, got {input_size}")
        self.input_size = input_size
        self.embedding_size = embedding_size
        self.normalize_output = normalize_output
        planes = [scaled_channels(c, width) for c in BASE_CHANNELS]

        # Released stem: 3x3, stride 1 (not torchvision's 7x7 stride 2), then the usual max-pool.
        self.conv1 = conv3x3(3, planes[0])
        self.bn1 = nn.BatchNorm2d(planes[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

        stages: list[nn.Sequential] = []
        in_ch = planes[0]
        for i, (p, depth) in enumerate(zip(planes, layers, strict=True)):
            stride = 1 if i == 0 else 2
            blocks: list[nn.Module] = [block(in_ch, p, stride)]
            in_ch = p * block.expansion
            blocks += [block(in_ch, p) for _ in range(depth - 1)]
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages

        # The max-pool (k3, s2, p1) and every stride-2 conv (3x3 p1 or 1x1 p0) map n -> ceil(n/2):
        # four halvings, 112 -> 7 (the released head hard-codes 7 * 7).
        self.final_size = feature_map_size(input_size, 4)
        self.bn2 = nn.BatchNorm2d(in_ch)
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(in_ch * self.final_size**2, embedding_size)
        self.features = nn.BatchNorm1d(embedding_size)

        self._init_weights(zero_init_residual)

    def _init_weights(self, zero_init_residual: bool) -> None:
        # As released: kaiming(fan_out) convs, BN weight 1 / bias 0; the Linear keeps PyTorch's default.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)
                elif isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The trunk: N x 3 x H x W -> N x C x h x w feature map."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        x = self.dropout(self.bn2(x))
        x = torch.flatten(x, 1)  # not .view: works for channels_last too
        x = self.features(self.fc(x)) if torch.jit.is_scripting() else self._embedding_fp32(x)
        return F.normalize(x, dim=1) if self.normalize_output else x

    @torch.jit.unused
    def _embedding_fp32(self, x: torch.Tensor) -> torch.Tensor:
        return embedding_fp32(self.fc, self.features, x)  # TorchScript: see embedding_fp32


# The released head is one Sequential; its parameter-holding members are ours under IResNet's names.
_RELEASED_HEAD = {"output_layer.0.": "bn2.", "output_layer.3.": "fc.", "output_layer.4.": "features."}


def convert_released_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A released ``model/resnet.py`` state dict (``model.save`` / ``state_dict()``) under our names.

    Strips a ``module.`` prefix (``nn.DataParallel``) and renames ``output_layer.{0,3,4}`` to
    ``bn2`` / ``fc`` / ``features``; every trunk key is the same in both.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        key = key.removeprefix("module.")
        for old, new in _RELEASED_HEAD.items():
            if key.startswith(old):
                key = new + key[len(old):]
                break
        out[key] = value
    return out


# Stage depths from the declarations in engine.models.registry (the released code: 3/4/6/3 for both).
@register_model("resnet34")
def resnet34(**kwargs) -> ResNet:
    return ResNet(BasicBlock, model_info("resnet34").layers, **kwargs)


@register_model("resnet50")
def resnet50(**kwargs) -> ResNet:
    return ResNet(Bottleneck, model_info("resnet50").layers, **kwargs)
