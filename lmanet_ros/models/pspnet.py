"""PSPNet (Zhao et al., CVPR 2017): pyramid pooling module and classifier on a dilated ResNet.

Attribute names follow the published LMANet PSPNet-101 checkpoint (``ppm.features.N``,
``decoder.cls.N``; the encoder is :class:`~lmanet_ros.models.resnet.DilatedResNet`). The
segmenter registers the pyramid pooling module as its top-level ``ppm`` between the temporal
parts and the decoder, so that the keys come in the checkpoint's order.

Sizes. The released network computes on inputs whose sides are 8k + 1 pixels (1025 x 2049 in
the release): the features then have k + 1 pixels, feature pixel i lies on input pixel 8i, and
bilinear up-sampling with ``align_corners=True`` to 8k + 1 pixels maps the feature grid exactly
onto the input grid. The segmenter pads other sizes up to the next such size (see
:class:`~lmanet_ros.models.segmenter.Segmenter`) and crops the logits back.

Normalisation. semseg, whose PSPNet weights the release starts from, subtracts the ImageNet mean
(123.675, 116.28, 103.53) and divides by the ImageNet std (58.395, 57.12, 57.375) of 0..255 RGB.
The release's own data code never applies its normaliser to PSPNet inputs (and its PSPNet image
transform is broken), so what the released LMANet PSPNet weights saw is not recoverable from the
code. The PSPNet models here therefore use semseg's normalisation by default, expressed on
[0, 1] RGB inputs as :data:`IMAGENET_MEAN` / :data:`IMAGENET_STD` (the same affine map:
``(255 x - 255 m) / (255 s) = (x - m) / s``), applied inside the model's ``step``.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "PyramidPooling", "PSPNetDecoder"]

#: ImageNet mean of RGB in [0, 1] (semseg's 123.675, 116.28, 103.53 on 0..255, divided by 255).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
#: ImageNet std of RGB in [0, 1] (semseg's 58.395, 57.12, 57.375 on 0..255, divided by 255).
IMAGENET_STD = (0.229, 0.224, 0.225)


class PyramidPooling(nn.Module):
    """Pyramid pooling module: the input and its pooled-and-projected context, concatenated.

    For each bin size b: adaptive average pooling to b x b, 1x1 conv (no bias) to
    ``branch_channels``, BN, ReLU, bilinear up-sampling (``align_corners=True``) back to the
    input size. Output: (B, in_channels + len(bins) * branch_channels, h, w) (4096 for PSPNet).

    Args:
        in_channels: input channels (2048).
        bins: pooled grid sizes (1, 2, 3, 6).
        branch_channels: channels of each branch (512).
    """

    def __init__(self, in_channels: int = 2048, bins: Sequence[int] = (1, 2, 3, 6),
                 branch_channels: int = 512) -> None:
        super().__init__()
        bins = tuple(bins)
        if not bins or min(bins) < 1:
            raise ValueError(f"bins must be positive grid sizes, got {bins}")
        if in_channels < 1 or branch_channels < 1:
            raise ValueError(f"in_channels and branch_channels must be >= 1, got {in_channels}, "
                             f"{branch_channels}")
        self.features = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(size), nn.Conv2d(in_channels, branch_channels, 1,
                                                                bias=False),
                          nn.BatchNorm2d(branch_channels), nn.ReLU(inplace=True))
            for size in bins)
        self.out_channels = in_channels + len(bins) * branch_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        context = [F.interpolate(branch(x), size=size, mode="bilinear", align_corners=True)
                   for branch in self.features]
        return torch.cat([x, *context], dim=1)


class PSPNetDecoder(nn.Module):
    """PSPNet's classifier, up-sampling and the appended void channel.

    ``cls``: 3x3 conv (no bias) ``in_channels`` -> 512, BN (eps 1e-5), ReLU, dropout 0.1 (whole
    channels, training only), 1x1 conv 512 -> ``num_classes - 1``. The logits are up-sampled
    bilinearly with ``align_corners=True`` from (h, w) to (8(h - 1) + 1, 8(w - 1) + 1) and an
    all-zero last channel (void, Cityscapes index 19) is appended, so that the output has
    ``num_classes`` channels like ERFNet's (the published classifier has 19 outputs).

    (B, in_channels, h, w) -> (B, num_classes, 8(h - 1) + 1, 8(w - 1) + 1).

    Args:
        num_classes: output channels including the void channel (20 for Cityscapes), >= 2.
        in_channels: input channels (4096: the pyramid pooling module's output).
        dropout: dropout probability before the last convolution.
    """

    #: Up-sampling factor of the feature grid (the encoder's output stride).
    upsampling = 8

    def __init__(self, num_classes: int = 20, in_channels: int = 4096,
                 dropout: float = 0.1) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (classes plus the void channel), got "
                             f"{num_classes}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.cls = nn.Sequential(
            nn.Conv2d(in_channels, 512, 3, padding=1, bias=False), nn.BatchNorm2d(512),
            nn.ReLU(inplace=True), nn.Dropout2d(dropout),
            nn.Conv2d(512, num_classes - 1, 1, bias=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[2:]
        size = (self.upsampling * (height - 1) + 1, self.upsampling * (width - 1) + 1)
        logits = F.interpolate(self.cls(x), size=size, mode="bilinear", align_corners=True)
        return F.pad(logits, (0, 0, 0, 0, 0, 1))  # the void channel: zeros
