"""The multi-grid dilated ResNets of TDNet's sub-networks (ResNet-18 and ResNet-50, stride 8).

TDNet's released models (feinanshan/TDNet, ``Testing/model/pspnet/resnet.py``, PyTorch-Encoding's
dilated ResNet) build their backbones with these names (see
``shared/reference/td4_psp18_state_dict.tsv`` and ``td2_psp50_state_dict.tsv``): ``conv1``,
``bn1``, ``layer1`` .. ``layer4`` (blocks ``conv*``, ``bn*``, ``downsample.{0,1}``) and ``fc``.

- Stem: ResNet-18 ``conv1`` 7x7 stride 2 (3 -> 64), ``bn1``; ResNet-50 the deep stem
  ``conv1`` = (3x3 stride 2 3 -> 64, BN, ReLU, 3x3 64 -> 64, BN, ReLU, 3x3 64 -> 128), ``bn1``
  (128). Then ReLU and a 3x3 max-pool stride 2.
- ``layer1`` stride 1, ``layer2`` stride 2 (1/8), ``layer3`` and ``layer4`` stride 1, dilated:
  ``layer3``'s first block dilation 1, the others 2; ``layer4``'s blocks 4, 8, 16 (multi-grid).
  The dilation sits on the first 3x3 convolution of a basic block (its second has the stage's
  dilation: 1, 1, 2, 4, as the release's ``previous_dilation``) and on the 3x3 convolution of a
  bottleneck (:class:`~lmanet_ros.models.resnet.Bottleneck`, whose names the release shares).
  This differs from :class:`~lmanet_ros.models.resnet.DilatedResNet` (semseg's: every block of
  ``layer3`` dilation 2, of ``layer4`` 4), so the two are separate networks.
- ``fc`` (512 x expansion -> 1000) is the ImageNet classifier the released checkpoints carry:
  kept so that they load strictly, never used (the forward stops at ``layer4``).

(B, 3, H, W) -> (B, 512 x expansion, h, w); for H = 8k + 1, h = k + 1 (the release's 769 x 1537
gives 97 x 193). No convolution has a bias; batch norms use PyTorch's default eps (1e-5).
"""
from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from .resnet import Bottleneck, deep_stem

__all__ = ["BasicBlock", "MultiGridResNet", "MULTIGRID_DEPTHS"]


class BasicBlock(nn.Module):
    """Residual basic block: 3x3 (stride, ``dilation``), 3x3 (``second_dilation``), expansion 1.

    Args:
        in_channels: input channels.
        width: output channels of both convolutions.
        stride: stride of the first convolution (and of the shortcut projection).
        dilation: dilation (and padding) of the first convolution.
        second_dilation: dilation (and padding) of the second convolution; None: ``dilation``.

    The shortcut is a projection (``downsample``: 1x1 conv with ``stride``, BN) when the
    channels or the resolution change, the identity otherwise.
    """

    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int = 1, dilation: int = 1,
                 second_dilation: int | None = None) -> None:
        super().__init__()
        second = dilation if second_dilation is None else second_dilation
        for name, value in (("in_channels", in_channels), ("width", width), ("stride", stride),
                            ("dilation", dilation), ("second_dilation", second)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=stride, padding=dilation,
                               dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=second, dilation=second, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.downsample = (nn.Sequential(nn.Conv2d(in_channels, width, 1, stride=stride,
                                                   bias=False), nn.BatchNorm2d(width))
                           if stride != 1 or in_channels != width else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


def _basic(in_channels: int, width: int, stride: int, dilation: int,
           stage_dilation: int) -> nn.Module:
    return BasicBlock(in_channels, width, stride, dilation, second_dilation=stage_dilation)


def _bottleneck(in_channels: int, width: int, stride: int, dilation: int,
                stage_dilation: int) -> nn.Module:
    del stage_dilation  # a bottleneck has one 3x3 convolution, dilated by ``dilation``
    return Bottleneck(in_channels, width, stride=stride, dilation=dilation)


#: depth -> (block builder, its expansion, blocks per stage, deep stem).
MULTIGRID_DEPTHS: dict[int, tuple[Callable[..., nn.Module], int, tuple[int, ...], bool]] = {
    18: (_basic, BasicBlock.expansion, (2, 2, 2, 2), False),
    50: (_bottleneck, Bottleneck.expansion, (3, 4, 6, 3), True),
}
#: Dilation of the blocks of layer4 (multi-grid), in order.
LAYER4_DILATIONS = (4, 8, 16)


class MultiGridResNet(nn.Module):
    """TDNet's dilated multi-grid ResNet-18 / ResNet-50: (B, 3, H, W) -> (B, C, h, w), stride 8.

    Args:
        depth: 18 (basic blocks, 7x7 stem, C = 512) or 50 (bottlenecks, deep stem, C = 2048).
    """

    output_stride = 8

    def __init__(self, depth: int = 18) -> None:
        super().__init__()
        if depth not in MULTIGRID_DEPTHS:
            raise ValueError(f"depth must be one of {sorted(MULTIGRID_DEPTHS)}, got {depth!r}")
        block, expansion, blocks, deep = MULTIGRID_DEPTHS[depth]
        if deep:
            stem = deep_stem(128)  # conv, BN, ReLU, conv, BN, ReLU, conv | BN, ReLU, max-pool
            self.conv1, self.bn1 = stem[:7], stem[7]
        else:
            self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
        self._in_channels = self.bn1.num_features
        stage = partial(self._stage, block, expansion)
        self.layer1 = stage(64, 1, (1,) * blocks[0], 1)
        self.layer2 = stage(128, 2, (1,) * blocks[1], 1)
        self.layer3 = stage(256, 1, (1,) + (2,) * (blocks[2] - 1), 2)
        self.layer4 = stage(512, 1, LAYER4_DILATIONS[:blocks[3]], 4)
        self.out_channels = 512 * expansion
        self.fc = nn.Linear(self.out_channels, 1000)  # the checkpoints' classifier, unused

    def _stage(self, block: Callable[..., nn.Module], expansion: int, width: int, stride: int,
               dilations: tuple[int, ...], stage_dilation: int) -> nn.Sequential:
        """One block per entry of ``dilations``; the first one strides (and projects)."""
        layers = []
        for index, dilation in enumerate(dilations):
            layers.append(block(self._in_channels, width, stride if index == 0 else 1, dilation,
                                stage_dilation))
            self._in_channels = width * expansion
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, stride=2, padding=1)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))
