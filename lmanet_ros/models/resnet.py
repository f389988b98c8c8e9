"""Dilated ResNet with a deep stem: the PSPNet encoder (output stride 8, 2048 channels).

The layout is the one of the semantic-segmentation ResNets that PSPNet's published weights use
(``layer0`` .. ``layer4``; see ``shared/reference/lmanet_pspnet101_state_dict.tsv``):

- ``layer0``, the deep stem, one Sequential: 3x3 conv stride 2 (3 -> 64), BN, ReLU, 3x3 conv
  (64 -> 64), BN, ReLU, 3x3 conv (64 -> 128), BN, ReLU, 3x3 max-pool stride 2 (indices 0 .. 9;
  the convolutions at 0, 3, 6, the batch norms at 1, 4, 7). Output 128 channels at 1/4.
- ``layer1`` .. ``layer4``: bottleneck blocks (1x1, 3x3, 1x1, expansion 4) with the stride on
  the 3x3 convolution; widths 64, 128, 256, 512, outputs 256, 512, 1024, 2048 channels.
  ``layer2`` halves the resolution (1/8). ``layer3`` and ``layer4`` keep it and dilate instead:
  EVERY 3x3 convolution of ``layer3`` has dilation 2 and of ``layer4`` dilation 4 (the first
  block's too, unlike torchvision's ``replace_stride_with_dilation``), and their downsampling
  1x1 convolutions have stride 1.

No convolution has a bias; batch norms use PyTorch's default eps (1e-5).

Two options give mmseg's ``ResNetV1c`` dilated to output stride 8 (TMANet's and mmseg PSPNet's
backbone, ``shared/docs/temporal-modules.md`` section 1.2) under the same names:
``stem_channels=64`` (stem 3 -> 32 (stride 2) -> 32 -> 64, then the max-pool; ``layer1`` takes 64
channels) and ``contract_dilation=True`` (the first block of a dilated stage uses half the
stage's dilation: 1 in ``layer3``, 2 in ``layer4``). :mod:`lmanet_ros.models.mmseg_layout` builds
it and renames mmseg's keys.
"""
from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["RESNET_BLOCKS", "Bottleneck", "DilatedResNet", "deep_stem"]

#: Bottleneck blocks per stage (layer1 .. layer4) of the ResNet depths PSPNet is built on.
RESNET_BLOCKS: dict[int, tuple[int, int, int, int]] = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


class Bottleneck(nn.Module):
    """Residual bottleneck: 1x1 (-> width), 3x3 (stride, dilation), 1x1 (-> 4 * width).

    Args:
        in_channels: input channels.
        width: channels of the inner convolutions; the output has ``4 * width``.
        stride: stride of the 3x3 convolution (and of the shortcut projection).
        dilation: dilation (and padding) of the 3x3 convolution.

    The shortcut is a projection (``downsample``: 1x1 conv with ``stride``, BN) when the
    input channels or the resolution change, the identity otherwise.
    """

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("width", width), ("stride", stride),
                            ("dilation", dilation)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=dilation,
                               dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.downsample = (nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride,
                                                   bias=False),
                                         nn.BatchNorm2d(out_channels))
                           if stride != 1 or in_channels != out_channels else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


def deep_stem(out_channels: int = 128) -> nn.Sequential:
    """The deep stem ``layer0``: three 3x3 convs (the first stride 2), then a 3x3 max-pool.

    Widths 3 -> out_channels / 2 -> out_channels / 2 -> out_channels (128: semseg's stem;
    64: mmseg ResNetV1c's). (B, 3, H, W) -> (B, out_channels, ceil(ceil(H / 2) / 2), ...);
    for H = 8k + 1: 2k + 1.
    """
    half = out_channels // 2
    return nn.Sequential(
        nn.Conv2d(3, half, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(half),
        nn.ReLU(inplace=True),
        nn.Conv2d(half, half, 3, padding=1, bias=False), nn.BatchNorm2d(half),
        nn.ReLU(inplace=True),
        nn.Conv2d(half, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2, padding=1),
    )


class DilatedResNet(nn.Module):
    """Deep-stem ResNet dilated to output stride 8: (B, 3, H, W) -> (B, 2048, h, w).

    For H = 8k + 1 (PSPNet's valid sizes) h = k + 1, so that feature pixel i sits on input
    pixel 8i; in general h = ceil(H / 8).

    Args:
        depth: 50 or 101 (bottleneck blocks per stage from :data:`RESNET_BLOCKS`).
        stem_channels: output channels of the deep stem (128: semseg's; 64: mmseg
            ResNetV1c's), the input channels of ``layer1``.
        contract_dilation: False: every block of ``layer3`` / ``layer4`` has dilation 2 / 4
            (semseg's); True: their first block has half of it, 1 / 2 (mmseg's).
    """

    out_channels = 2048
    output_stride = 8

    def __init__(self, depth: int = 101, *, stem_channels: int = 128,
                 contract_dilation: bool = False) -> None:
        super().__init__()
        if depth not in RESNET_BLOCKS:
            raise ValueError(f"depth must be one of {sorted(RESNET_BLOCKS)}, got {depth!r}")
        if stem_channels < 2 or stem_channels % 2:
            raise ValueError(f"stem_channels must be even and >= 2, got {stem_channels!r}")
        blocks = RESNET_BLOCKS[depth]
        stage = partial(self._stage, contract_dilation=contract_dilation)
        self.layer0 = deep_stem(stem_channels)
        self.layer1 = stage(stem_channels, 64, blocks[0], stride=1, dilation=1)
        self.layer2 = stage(256, 128, blocks[1], stride=2, dilation=1)
        self.layer3 = stage(512, 256, blocks[2], stride=1, dilation=2)
        self.layer4 = stage(1024, 512, blocks[3], stride=1, dilation=4)

    @staticmethod
    def _stage(in_channels: int, width: int, count: int, *, stride: int, dilation: int,
               contract_dilation: bool) -> nn.Sequential:
        """``count`` bottlenecks; the first one strides and projects (and, with
        ``contract_dilation``, has half the dilation where it is above 1); the others have
        ``dilation``."""
        out_channels = width * Bottleneck.expansion
        first = dilation // 2 if contract_dilation and dilation > 1 else dilation
        return nn.Sequential(
            Bottleneck(in_channels, width, stride=stride, dilation=first),
            *(Bottleneck(out_channels, width, dilation=dilation) for _ in range(count - 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer0(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)
