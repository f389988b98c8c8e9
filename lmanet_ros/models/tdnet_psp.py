"""TDNet's released models, TD4-PSP18 and TD2-PSP50 (Hu et al., CVPR 2020), as streaming models.

``td4_psp18``: 4 paths, each a dilated multi-grid ResNet-18 + pyramid pooling; ``td2_psp50``: 2
paths on ResNet-50 (``shared/docs/temporal-modules.md`` section 3.1). Both are
:class:`~lmanet_ros.models.tdnet.TemporallyDistributed` (rotation, attention propagation chain,
memory) with the release's parts:

- path p's sub-network (:class:`PSPPath`): :class:`~lmanet_ros.models.resnet_multigrid.
  MultiGridResNet` and :class:`PathPyramidPooling`, which keeps channel group ``p mod 2`` of 2
  of the backbone features and of each pooled branch (TD4: 256 + 4 x 64 = 512 channels, paths
  1 and 3 the first halves, 2 and 4 the second; TD2: 1024 + 4 x 256 = 2048);
- queries and keys 64, values 512 channels; entries subsampled by s = 4 (the Testing code's);
  softmax scaled by sqrt(64);
- path p's normalisation: the release's ``LayerNorm([97, 193])`` (per-pixel affine, the
  feature size of its 769 x 1537 input), resized bilinearly to other feature sizes
  (:class:`~lmanet_ros.models.tdnet.SpatialNorm` with ``size``);
- path p's head (:class:`PathHead`): 3x3 conv 512 -> 128 (TD4) / 256 (TD2), BN, ReLU, dropout,
  1x1 conv -> 19 classes; the segmenter's decoder (:class:`UpsampleLogits`) only up-samples
  (bilinear, ``align_corners=True``, as the release) and appends the void channel.

Inputs: RGB in [0, 1], ImageNet-normalised inside (the release's ``(x - mean) / std``), sides
8k + 1 (769 x 1537 in the release; other sizes are replicate-padded up, 512 x 1024 to
513 x 1025: 65 x 129 features). Rotation as the release's test loop: frame t of a stream (since
its reset) runs path ``t mod m``; the first m-1 frames give the "sub" output.

Released checkpoints (``td4-psp18.pkl``, ``td2-psp50.pkl``: raw state_dicts of the Testing
models, torch-saved) load with :func:`~lmanet_ros.models.checkpoint.load_checkpoint`:
:meth:`TDNetSegmenter.from_published_state_dict` renames their keys to ours
(:meth:`TDNetSegmenter.published_name` is the map, e.g. ``pretrained1.layer1.0.conv1.weight``
= ``subnets.0.backbone.layer1.0.conv1.weight``, ``atn2_3.fc.0.conv.weight`` =
``hops.1.0.weight``), then the strict match runs. Inside each part the names are the
release's (backbone, pyramid pooling, head indices).

Memory per stream (float32): m-1 entries of ``(64 + 64 + 512) x hs x ws`` values, at 512 x 1024
(17 x 33 subsampled positions) 1.37 MiB per entry: TD4 4.1 MiB, TD2 1.4 MiB.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from .pspnet import IMAGENET_MEAN, IMAGENET_STD
from .registry import register_model
from .resnet_multigrid import MultiGridResNet
from .segmenter import Segmenter, TemporalSegmenter
from .tdnet import FrameInput, SpatialNorm, TemporallyDistributed

__all__ = ["PathPyramidPooling", "PSPPath", "PathHead", "UpsampleLogits", "TDNetSegmenter",
           "RELEASE_FEATURE_SIZE", "RELEASED", "tdnet_psp"]

#: Feature size the released LayerNorms are shaped for (769 x 1537 input, stride 8).
RELEASE_FEATURE_SIZE = (97, 193)
#: Channel groups of the pyramid pooling output (TD4 and TD2 both split in halves).
GROUPS = 2
#: Our names of a sub-network's parts -> the release's (``pretrained{p}``, ``psp{p}``).
_SUBNET_NAMES = {"backbone": "pretrained", "ppm": "psp"}
#: Our names of an encoding's parts -> the release's (``enc{p}.*``).
_ENCODING_NAMES = {"query.0": "w_qs.0.conv", "query.1": "w_qs.0.bn", "query.3": "w_qs.1.conv",
                   "key.0": "w_ks.0.conv", "key.1": "w_ks.0.bn", "key.3": "w_ks.1.conv",
                   "value": "w_vs.0.conv"}
#: Keys of the release's training checkpoints that the test models lack (auxiliary heads).
_TRAINING_ONLY = re.compile(r"^auxlayer\d+\.")


class PathPyramidPooling(nn.Module):
    """One path's pyramid pooling: the features and 4 pooled branches, channel group ``group``.

    Branch i (bins 1, 2, 3, 6): adaptive average pooling, 1x1 conv (no bias) C -> C/4, BN,
    ReLU, bilinear up-sampling (``align_corners=True``); names ``conv{1..4}.{0,1}`` as the
    release's ``psp{p}``. The output concatenates group ``group`` of ``groups`` equal channel
    groups of the features and of each branch (the release computes whole branches and slices
    them; slicing before up-sampling is the same).

    (B, C, h, w) -> (B, 2C / groups, h, w).
    """

    bins = (1, 2, 3, 6)

    def __init__(self, in_channels: int, group: int, groups: int = GROUPS) -> None:
        super().__init__()
        if not 0 <= group < groups or in_channels % (4 * groups):
            raise ValueError(f"need 0 <= group < groups and in_channels divisible by 4 x groups, "
                             f"got group {group}, groups {groups}, in_channels {in_channels}")
        branch = in_channels // 4
        self.conv1, self.conv2, self.conv3, self.conv4 = (
            nn.Sequential(nn.Conv2d(in_channels, branch, 1, bias=False),
                          nn.BatchNorm2d(branch), nn.ReLU(inplace=True)) for _ in self.bins)
        self.group, self.groups = group, groups
        self.out_channels = 2 * in_channels // groups

    def _part(self, x: torch.Tensor) -> torch.Tensor:
        width = x.shape[1] // self.groups
        return x[:, self.group * width:(self.group + 1) * width]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        convs = (self.conv1, self.conv2, self.conv3, self.conv4)
        branches = [F.interpolate(self._part(conv(F.adaptive_avg_pool2d(x, bins))), size=size,
                                  mode="bilinear", align_corners=True)
                    for bins, conv in zip(self.bins, convs)]
        return torch.cat([self._part(x), *branches], dim=1)


class PSPPath(nn.Module):
    """Path p's sub-network: ``z = ppm(backbone(x))``, (B, 3, H, W) -> (B, out_channels, h, w).

    Args:
        depth: backbone depth (18: z 512 channels; 50: 2048).
        path: p; its pyramid pooling keeps channel group ``p mod 2``.
    """

    def __init__(self, depth: int, path: int) -> None:
        super().__init__()
        self.backbone = MultiGridResNet(depth)
        self.ppm = PathPyramidPooling(self.backbone.out_channels, path % GROUPS)
        self.out_channels = self.ppm.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ppm(self.backbone(x))


class PathHead(nn.Sequential):
    """One path's classifier (the release's ``head{p}.conv5``): 3x3 conv (no bias) ->
    ``inter_channels``, BN, ReLU, Dropout2d (training only), 1x1 conv -> ``classes`` (bias).

    (B, in_channels, h, w) -> (B, classes, h, w).
    """

    def __init__(self, in_channels: int, inter_channels: int, classes: int,
                 dropout: float = 0.1) -> None:
        super().__init__(nn.Conv2d(in_channels, inter_channels, 3, padding=1, bias=False),
                         nn.BatchNorm2d(inter_channels), nn.ReLU(), nn.Dropout2d(dropout),
                         nn.Conv2d(inter_channels, classes, 1))
        self.out_channels = classes


class UpsampleLogits(nn.Module):
    """The segmenter's decoder: logits (B, K, h, w) up-sampled bilinearly with
    ``align_corners=True`` to the padded input, (8(h - 1) + 1, 8(w - 1) + 1), and an all-zero
    void channel appended: (B, K + 1, ...). No parameters."""

    upsampling = 8

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        height, width = logits.shape[2:]
        size = (self.upsampling * (height - 1) + 1, self.upsampling * (width - 1) + 1)
        upsampled = F.interpolate(logits, size=size, mode="bilinear", align_corners=True)
        return F.pad(upsampled, (0, 0, 0, 0, 0, 1))


class TDNetSegmenter(TemporalSegmenter):
    """A :class:`TemporalSegmenter` on :class:`TemporallyDistributed` with per-path heads that
    knows the release's checkpoint layout (``td4_psp18``, ``td2_psp50``)."""

    def published_name(self, key: str) -> str:
        """The release's name of our state_dict key ``key`` (KeyError for another key)."""
        part, index, rest = key.split(".", 2)
        path, paths = int(index) + 1, self.temporal_module.paths
        if part == "subnets":
            child, rest = rest.split(".", 1)
            return f"{_SUBNET_NAMES[child]}{path}.{rest}"
        if part == "encodings":
            inner, leaf = rest.rsplit(".", 1)
            return f"enc{path}.{_ENCODING_NAMES[inner]}.{leaf}"
        if part == "hops":  # hop j of path p reads keys of a frame of path p + j + 1 (mod m)
            hop, leaf = rest.split(".", 1)
            source = "" if paths == 2 else f"_{(path + int(hop)) % paths + 1}"
            return f"atn{path}{source}.fc.0.conv.{leaf}"
        prefixes = {"norms": "layer_norm{}.ln", "heads": "head{}.conv5"}
        return f"{prefixes[part].format(path)}.{rest}"

    def from_published_state_dict(self, state: Mapping[str, torch.Tensor]
                                  ) -> tuple[dict[str, torch.Tensor], tuple[str, ...], str] | None:
        """A state_dict in the release's layout (keys ``pretrained1.*`` ...) in our names, for
        :func:`~lmanet_ros.models.checkpoint.load_checkpoint`: (renamed state, the training
        checkpoints' auxiliary heads ``auxlayer{p}.*`` ignored on purpose, ``"tdnet"``); keys
        the release's test model does not have keep their names (the strict match names
        them). None for a state_dict in another layout."""
        if (not any(key.startswith("pretrained1.") for key in state)
                or any(key.startswith("subnets.") for key in state)):
            return None
        ours = {self.published_name(key): key for key in self.state_dict()}
        ignored = tuple(key for key in state if _TRAINING_ONLY.match(key))
        renamed = {ours.get(key, key): tensor for key, tensor in state.items()
                   if key not in ignored}
        return renamed, ignored, "tdnet"


def tdnet_psp(name: str, depth: int, paths: int, head_channels: int, *, num_classes: int,
              memory_length: int) -> Segmenter:
    """A released TDNet: ``paths`` PSP paths on ResNet-``depth``, heads 512 ->
    ``head_channels`` -> ``num_classes - 1`` (the void channel is appended by the decoder)."""
    temporal = TemporallyDistributed(
        paths, partial(PSPPath, depth), key_channels=64, value_channels=512, subsample=4,
        norm=partial(SpatialNorm, size=RELEASE_FEATURE_SIZE),
        head=partial(PathHead, 512, head_channels, num_classes - 1))
    return TDNetSegmenter(name, FrameInput(), temporal, UpsampleLogits(),
                          num_classes=num_classes, memory_length=memory_length,
                          mean=IMAGENET_MEAN, std=IMAGENET_STD,
                          output_stride=MultiGridResNet.output_stride, size_offset=1)


#: The released models: name -> (backbone depth, paths, head width, description).
RELEASED = {
    "td4_psp18": (18, 4, 128, "TDNet TD4-PSP18 as released (Hu et al. 2020): 4 ResNet-18 PSP "
                              "paths in rotation, attention propagation over 3 frames; loads "
                              "td4-psp18.pkl; ImageNet-normalised input"),
    "td2_psp50": (50, 2, 256, "TDNet TD2-PSP50 as released (Hu et al. 2020): 2 ResNet-50 PSP "
                              "paths in rotation, attention over the previous frame; loads "
                              "td2-psp50.pkl; ImageNet-normalised input"),
}
for _name, (_depth, _paths, _head_channels, _description) in RELEASED.items():
    register_model(_name, temporal=True, default_memory_length=_paths - 1,
                   description=_description)(partial(tdnet_psp, _name, _depth, _paths,
                                                     _head_channels))
del _name, _depth, _paths, _head_channels, _description
