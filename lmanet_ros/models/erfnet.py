"""ERFNet (Romera et al., T-ITS 2018): the encoder and decoder that LMANet builds on.

Attribute names follow the published checkpoints (``encoder.initial_block``,
``encoder.layers.N``, ``decoder.layers.N``, ``decoder.output_conv``; see
``shared/reference/erfnet_single_frame_state_dict.tsv``). Every batch norm uses eps 1e-3 and
every convolution has a bias, as in the published network.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "BN_EPS", "DownsamplerBlock", "NonBottleneck1D", "UpsamplerBlock", "ERFNetEncoder",
    "ERFNetDecoder",
]

#: Batch-norm epsilon of every ERFNet batch norm.
BN_EPS = 1e-3


class DownsamplerBlock(nn.Module):
    """Halve the resolution: concat(3x3 stride-2 conv, 2x2 max-pool) -> BN -> ReLU.

    The convolution produces ``out_channels - in_channels`` channels, the pooled input the rest.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        if out_channels <= in_channels:
            raise ValueError(f"out_channels ({out_channels}) must exceed in_channels "
                             f"({in_channels}) in a downsampler block")
        self.conv = nn.Conv2d(in_channels, out_channels - in_channels, 3, stride=2, padding=1,
                              bias=True)
        self.pool = nn.MaxPool2d(2, stride=2)
        self.bn = nn.BatchNorm2d(out_channels, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.cat([self.conv(x), self.pool(x)], dim=1)
        return F.relu(self.bn(out))


class NonBottleneck1D(nn.Module):
    """Residual block of factorised convolutions: (3x1, 1x3) twice, the second pair dilated."""

    def __init__(self, channels: int, dropout: float, dilation: int) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if dilation < 1:
            raise ValueError(f"dilation must be >= 1, got {dilation}")
        self.conv3x1_1 = nn.Conv2d(channels, channels, (3, 1), padding=(1, 0), bias=True)
        self.conv1x3_1 = nn.Conv2d(channels, channels, (1, 3), padding=(0, 1), bias=True)
        self.bn1 = nn.BatchNorm2d(channels, eps=BN_EPS)
        self.conv3x1_2 = nn.Conv2d(channels, channels, (3, 1), padding=(dilation, 0),
                                   dilation=(dilation, 1), bias=True)
        self.conv1x3_2 = nn.Conv2d(channels, channels, (1, 3), padding=(0, dilation),
                                   dilation=(1, dilation), bias=True)
        self.bn2 = nn.BatchNorm2d(channels, eps=BN_EPS)
        # Identity when p == 0 so that the decoder blocks carry no dropout at all.
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.conv3x1_1(x))
        out = F.relu(self.bn1(self.conv1x3_1(out)))
        out = F.relu(self.conv3x1_2(out))
        out = self.dropout(self.bn2(self.conv1x3_2(out)))
        return F.relu(out + x)


class UpsamplerBlock(nn.Module):
    """Double the resolution: 3x3 stride-2 transposed conv -> BN -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose2d(in_channels, out_channels, 3, stride=2, padding=1,
                                       output_padding=1, bias=True)
        self.bn = nn.BatchNorm2d(out_channels, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class ERFNetEncoder(nn.Module):
    """ERFNet encoder: (B, 3, H, W) -> (B, 128, H/8, W/8); H and W divisible by 8.

    Args:
        num_classes: when given, adds the single-frame network's ``output_conv`` (1x1 conv
            128 -> num_classes, used only to pre-train the encoder alone). It is part of the
            single-frame checkpoints but never used by :meth:`forward`, which returns features.
    """

    out_channels = 128

    def __init__(self, num_classes: int | None = None) -> None:
        super().__init__()
        self.initial_block = DownsamplerBlock(3, 16)
        layers: list[nn.Module] = [DownsamplerBlock(16, 64)]
        layers += [NonBottleneck1D(64, 0.03, 1) for _ in range(5)]
        layers.append(DownsamplerBlock(64, 128))
        for _ in range(2):
            layers += [NonBottleneck1D(128, 0.3, dilation) for dilation in (2, 4, 8, 16)]
        self.layers = nn.Sequential(*layers)
        self.output_conv = (nn.Conv2d(128, num_classes, 1, bias=True)
                            if num_classes is not None else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self.initial_block(x))


class ERFNetDecoder(nn.Module):
    """ERFNet decoder: (B, 128, h, w) -> (B, num_classes, 8h, 8w) logits."""

    in_channels = 128

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            UpsamplerBlock(128, 64),
            NonBottleneck1D(64, 0.0, 1),
            NonBottleneck1D(64, 0.0, 1),
            UpsamplerBlock(64, 16),
            NonBottleneck1D(16, 0.0, 1),
            NonBottleneck1D(16, 0.0, 1),
        )
        self.output_conv = nn.ConvTranspose2d(16, num_classes, 2, stride=2, padding=0,
                                              output_padding=0, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_conv(self.layers(x))
