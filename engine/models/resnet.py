"""The paper's released-code "ResNet34" / "ResNet50": torchvision-style ResNets with a face head.

This is *not* insightface's IResNet: blocks are post-activation with ReLU, the
stem is conv7x7(stride 2) + BN + ReLU + max-pool(3x3, stride 2), and stage 1
keeps its resolution. A 112x112 input therefore ends as a 4x4 map
(112 -> 56 -> 28 -> 28 -> 14 -> 7 -> 4). The head is
BN2d -> Dropout(0.4) -> flatten -> Linear -> BN1d(E).

The released code L2-normalises the embedding inside the network. Here that is
opt-in (``normalize_output=True``) because the trainer normalises where the loss
needs it, and an un-normalised output keeps the norm available for analysis.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from engine.models.iresnet import BASE_CHANNELS, conv1x1, conv3x3, scaled_channels


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
        embedding_size: output dimension.
        width: channel multiplier on 64/128/256/512 (before the bottleneck's x4).
        dropout: dropout probability in the head (released code: 0.4).
        input_size: side of the square input; the FC size is measured from it.
        normalize_output: L2-normalise the embedding as the released code does.
            Off by default: the trainer and evaluator normalise where needed.
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
    ) -> None:
        super().__init__()
        if len(layers) != 4:
            raise ValueError(f"ResNet needs 4 stage depths, got {list(layers)}")
        if embedding_size < 1:
            raise ValueError(f"embedding_size must be positive, got {embedding_size}")
        if input_size < 32:
            raise ValueError(f"input_size must be at least 32, got {input_size}")
        self.input_size = input_size
        self.embedding_size = embedding_size
        self.normalize_output = normalize_output
        planes = [scaled_channels(c, width) for c in BASE_CHANNELS]

        self.conv1 = nn.Conv2d(3, planes[0], kernel_size=7, stride=2, padding=3, bias=False)
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

        # The stem and pooling round in ways that are easy to get wrong by hand
        # (112 gives 4x4, not 3x3), so measure the trunk's output once. Eval mode
        # leaves the BN running statistics untouched and accepts a 1x1 map at batch 1.
        self.eval()
        with torch.no_grad():
            probe = self.forward_features(torch.zeros(1, 3, input_size, input_size))
        self.train()
        self.final_size = probe.shape[-1]

        self.bn2 = nn.BatchNorm2d(in_ch)
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(in_ch * probe.shape[-2] * probe.shape[-1], embedding_size)
        self.features = nn.BatchNorm1d(embedding_size)

        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

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
        x = self.features(self.fc(x))
        return F.normalize(x, dim=1) if self.normalize_output else x


def resnet34(**kwargs) -> ResNet:
    return ResNet(BasicBlock, (3, 4, 6, 3), **kwargs)


def resnet50(**kwargs) -> ResNet:
    return ResNet(Bottleneck, (3, 4, 6, 3), **kwargs)
