"""Insightface-style IResNet (the ``arcface_torch`` backbones), with a width multiplier.

Layout for a 112x112 input (channels at ``width=1``)::

    stem   conv3x3(3->64, stride 1) + BN + PReLU            112x112x64
    stage1 IBasicBlock x n1, first block stride 2            56x56x64
    stage2 IBasicBlock x n2, first block stride 2            28x28x128
    stage3 IBasicBlock x n3, first block stride 2            14x14x256
    stage4 IBasicBlock x n4, first block stride 2             7x7x512
    head   BN2d -> Dropout -> flatten -> Linear(512*7*7 -> E) -> BN1d(E)

The output is the raw embedding (not L2-normalised): margin losses and
evaluation normalise it themselves where they need to. Under autocast the
head's Linear and BN1d run in float32 (``embedding_fp32``), as arcface_torch's
fp16 IResNet does (``self.fc(x.float())`` outside its autocast block).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from engine.models.registry import model_info, register_model

BASE_CHANNELS = (64, 128, 256, 512)


def scaled_channels(channels: int, width: float) -> int:
    """``channels * width`` rounded to an int, never below 1."""
    if width <= 0:
        raise ValueError(f"width must be positive, got {width}")
    return max(1, int(round(channels * width)))


def feature_map_size(input_size: int, num_stride2: int) -> int:
    """Spatial size after ``num_stride2`` stride-2 convs that keep ``ceil(n / 2)``.

    A 3x3 conv with padding 1 and a 1x1 conv with padding 0 both map n -> ceil(n/2)
    at stride 2, so any input size works (112 -> 7, 64 -> 4, 56 -> 4).
    """
    size = input_size
    for _ in range(num_stride2):
        size = math.ceil(size / 2)
    return size


def conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False)


def embedding_fp32(fc: nn.Module, features: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``features(fc(x))`` with autocast off, on ``x`` cast to the FC's dtype (float32 under AMP).

    TorchScript cannot compile this (module arguments, autocast contexts): scripted models take
    the plain ``features(fc(x))`` path, which is the same computation outside autocast.

    insightface's arcface_torch runs its backbones' trunk under autocast but the embedding FC and
    BN1d outside it on ``x.float()``: the FC's long dot products (25088 inputs at 112 px) and the
    BN1d batch statistics are what half precision rounds the most, and the output is the
    embedding every loss and evaluation reads. The trainer's autocast wraps the whole model, so
    it is switched off here explicitly. The cast follows the weights rather than forcing
    ``.float()``, so a model converted as a whole (``model.half()``) still runs.
    """
    with torch.autocast(device_type=x.device.type, enabled=False):
        return features(fc(x.to(fc.weight.dtype)))


class IBasicBlock(nn.Module):
    """Pre-activation residual block: BN -> conv3x3 -> BN -> PReLU -> conv3x3(stride) -> BN.

    Unlike torchvision's block there is no activation after the addition; the
    stride sits on the second conv, as in insightface.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = conv3x3(in_ch, out_ch)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.prelu = nn.PReLU(out_ch)
        self.conv2 = conv3x3(out_ch, out_ch, stride)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(conv1x1(in_ch, out_ch, stride), nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn1(x)
        out = self.conv1(out)
        out = self.bn2(out)
        out = self.prelu(out)
        out = self.conv2(out)
        out = self.bn3(out)
        identity = x if self.downsample is None else self.downsample(x)
        return out + identity


class IResNet(nn.Module):
    """IResNet backbone producing an ``embedding_size``-d face embedding.

    Args:
        layers: blocks per stage, e.g. ``(3, 4, 6, 3)`` for r34.
        embedding_size: output dimension.
        width: channel multiplier (0.25 gives 16/32/64/128 channels).
        dropout: dropout probability in the head (insightface default 0).
        input_size: side of the square input; the FC size depends on it.
        zero_init_residual: zero the last BN of every block so that each block
            starts as the identity (insightface leaves this off).
        fix_embedding_scale: freeze the final BatchNorm1d's weight at 1, as
            insightface does: the embedding's scale is then set by the batch
            statistics alone, not learnt.
    """

    def __init__(
        self,
        layers: tuple[int, ...] | list[int],
        embedding_size: int = 512,
        width: float = 1.0,
        dropout: float = 0.0,
        input_size: int = 112,
        zero_init_residual: bool = False,
        fix_embedding_scale: bool = True,
    ) -> None:
        super().__init__()
        if len(layers) != 4:
            raise ValueError(f"IResNet needs 4 stage depths, got {list(layers)}")
        if embedding_size < 1:
            raise ValueError(f"embedding_size must be positive, got {embedding_size}")
        if input_size < 16:
            raise ValueError(f"input_size must be at least 16, got {input_size}")
        self.input_size = input_size
        self.embedding_size = embedding_size
        chans = [scaled_channels(c, width) for c in BASE_CHANNELS]

        self.conv1 = conv3x3(3, chans[0])
        self.bn1 = nn.BatchNorm2d(chans[0])
        self.prelu = nn.PReLU(chans[0])

        stages: list[nn.Sequential] = []
        in_ch = chans[0]
        for out_ch, depth in zip(chans, layers, strict=True):
            blocks = [IBasicBlock(in_ch, out_ch, stride=2)]
            blocks += [IBasicBlock(out_ch, out_ch) for _ in range(depth - 1)]
            stages.append(nn.Sequential(*blocks))
            in_ch = out_ch
        self.layer1, self.layer2, self.layer3, self.layer4 = stages

        self.final_size = feature_map_size(input_size, 4)
        self.bn2 = nn.BatchNorm2d(in_ch)
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(in_ch * self.final_size**2, embedding_size)
        self.features = nn.BatchNorm1d(embedding_size)

        self._init_weights(zero_init_residual)
        if fix_embedding_scale:
            self.features.weight.requires_grad_(False)

    def _init_weights(self, zero_init_residual: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, IBasicBlock):
                    nn.init.zeros_(m.bn3.weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The trunk: N x 3 x H x W -> N x C x h x w feature map."""
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        x = self.dropout(self.bn2(x))
        # flatten (not .view) so channels_last inputs work: it copies when needed.
        x = torch.flatten(x, 1)
        if torch.jit.is_scripting():
            return self.features(self.fc(x))
        return self._embedding_fp32(x)

    @torch.jit.unused
    def _embedding_fp32(self, x: torch.Tensor) -> torch.Tensor:
        return embedding_fp32(self.fc, self.features, x)


# The stage depths are those declared in engine.models.registry (r18/r34/r50/r100 all use the basic
# block), so the listing and the network cannot disagree.
@register_model("iresnet18")
def iresnet18(**kwargs) -> IResNet:
    return IResNet(model_info("iresnet18").layers, **kwargs)


@register_model("iresnet34")
def iresnet34(**kwargs) -> IResNet:
    return IResNet(model_info("iresnet34").layers, **kwargs)


@register_model("iresnet50")
def iresnet50(**kwargs) -> IResNet:
    return IResNet(model_info("iresnet50").layers, **kwargs)


@register_model("iresnet100")
def iresnet100(**kwargs) -> IResNet:
    return IResNet(model_info("iresnet100").layers, **kwargs)
