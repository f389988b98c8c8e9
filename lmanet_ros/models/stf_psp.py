"""STF + MAR on PSPNet-50 as released by ST_Memory, as a one-frame-delayed stream
(``stf_mar_delayed_pspnet50``).

The released network (``shared/docs/temporal-modules.md`` section 2) labels frame t from the
frames t-1, t, t+1: it is non-causal. Here it runs exactly, one frame late: when frame t arrives
its features are computed once, STF + MAR fuse ``(t-2, t-1, t)`` with the decoder's query on
the middle slot and the step returns the labels of frame t-1 (``output_delay_frames`` 1; the
caller's contract is :class:`~lmanet_ros.models.stf.STFSegmenter`'s, honoured by the pipeline,
the node and the evaluation). :meth:`STFPSPNetSegmenter.offline_logits` is the release's own
computation of a frame from its two neighbours.

The parts, as released (section 2.1):

- **Features**: mmseg's ``pspnet_r50-d8`` up to its bottleneck (:class:`PSPNetFeatures`):
  ResNetV1c-50-D8 (:func:`~lmanet_ros.models.mmseg_layout.resnet_v1c`), the PSP head's
  pyramid (pool scales 1, 2, 3, 6: adaptive average pooling, CBR 1x1 2048 -> 512, bilinear
  up-sampling with ``align_corners=False`` as in mmseg's config), concatenation with the input
  (4096 channels) and the bottleneck CBR 3x3 4096 -> 512: 512 channels at stride 8, before
  dropout and classifier. ImageNet mean/std inside the model; valid sizes 8k (others are
  replicate-padded up and the logits cropped, see :class:`~lmanet_ros.models.segmenter.Segmenter`).
- **STF** (:class:`~lmanet_ros.models.stf.SpatioTemporalTransformer`, section 2.2): d 512,
  2 heads, FFN 256, dropout 0.1, block 16 x 16, interlaced sparse attention, one encoder and one
  decoder layer, the decoder's target the raw features of the middle frame. Positional
  embeddings: learned, stored on the release's grid (``pe_enc`` (1, 512, 3, 128, 256) one per
  slot, ``pe_dec`` (1, 512, 1, 128, 256)), resized to the input's feature grid at run time:
  bilinear on each slot's grid (``align_corners=False``; the release's trilinear resize keeps
  the slot axis as it is), none on the stored grid (1024 x 2048 input), cached per feature size
  while inferring (:meth:`~lmanet_ros.models.stf.SpatioTemporalTransformer.embedding`).
- **MAR** (:class:`~lmanet_ros.models.stf.MemoryAugmentedRefinement`, section 2.3): q/k/v
  stacks 512 -> 512 -> 256 -> 256 without bias, unscaled softmax over 190 memory tokens,
  ``Wo`` 256 -> 512, FFN 512 -> 256 -> 512. Its memory is fixed (persistent buffers, in the
  state_dict under the release's names, so one file carries the model): ``MAR.memory_key``
  (1, 190, 512) and ``MAR.memory_value`` (1, 190, 512), class-major (entries 10c .. 10c + 9
  belong to Cityscapes trainId c), the values one prototype per class repeated 10 times. The
  released checkpoint carries both; :func:`read_class_memory` reads the release's
  ``generate_memory/output/key.npy`` (190, 512) and ``value.npy`` (19, 512) for
  :meth:`~lmanet_ros.models.stf.MemoryAugmentedRefinement.set_memory`.
- **Classifier**: Dropout2d(0.1) (the ``dropout`` neck, training only) and ``conv_seg`` 1x1
  512 -> 19 (:class:`~lmanet_ros.models.tmanet_r50.TMANetDecoder`), bilinear up-sampling x8
  with ``align_corners=False``, our all-zero void channel appended (20 outputs).

Checkpoints (section 2.6): the release is a raw ``torch.save(state_dict)`` of ST_Memory's
``SegRefine`` (``module.`` stripped if present);
:meth:`STFPSPNetSegmenter.from_published_state_dict` renames it for the strict match (layout
``"st_memory"``):

==========================================  =========================================
released key                                ours
==========================================  =========================================
``pspnet.backbone.stem.N.*``                ``encoder.backbone.layer0.N.*``
``pspnet.backbone.layerN.*``                ``encoder.backbone.layerN.*``
``pspnet.decode_head.psp_modules.*``        ``encoder.psp_modules.*``
``pspnet.decode_head.bottleneck.*``         ``encoder.bottleneck.*``
``pspnet.decode_head.conv_seg.*``           ``decoder.conv_seg.*``
``pspnet.auxiliary_head.*``                 ignored (training only), reported
``STF.*``, ``MAR.*``                        the same names
==========================================  =========================================

An mmseg single-frame ``pspnet_r50-d8`` checkpoint (``backbone.*``, ``decode_head.*``) loads
too (layout ``"mmseg"``) as a single-frame start: STF and MAR stay as initialised.

Code defects of section 2.7, not reproduced: the embeddings' size check compares the wrong axis,
so the release always interpolates (the identity on its own grid: same numbers, here the resize
is skipped there); feature sides that are not multiples of 16 raise a reshape error in the
release, here they are zero-padded to the block and the padding is masked out of every
attention (:class:`~lmanet_ros.models.stf.InterlacedSparseAttention`), so that any input size
runs (on multiples of 128 pixels the release's computation exactly); the rest (the
``use_checkpoint`` argument, the imports, paths and the scorer's return value) lies in its
scripts, not in the network.

Streaming (section 2.8): the memory is :class:`~lmanet_ros.models.memory.FeatureMemory`, the
512-channel features of the last two frames: 16 MiB per frame at 512 x 1024 in float32 (32 MiB
per stream; 64 MiB per frame at 1024 x 2048); STF runs whole at every step (its encoder is a
joint attention over the three frames). Cold start: the release has no single-frame path (its
classifier was retrained on STF's output), so the window is filled by duplication: a fresh or
reset stream's first step fuses its frame three times (the labels of that frame, at once), the
second fuses (t-1, t-1, t) (the same frame's labels again, fused with its successor: a repeat
that the pipeline does not publish). Memory length 1 fuses (t-1, t-1, t) throughout.

Per frame at 512 x 1024 (section 2.5, analytic): PSPNet-50 368 GMACs, STF 130, MAR 8, i.e.
1.38x PSPNet-50 alone; parameters: PSPNet-50 without its auxiliary head 46.6 M, STF 73.9 M
(67.1 M of them the embeddings), MAR 1.8 M and its memory 0.2 M.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .mmseg_layout import rename_mmseg_state_dict, resnet_v1c
from .pspnet import IMAGENET_MEAN, IMAGENET_STD
from .registry import register_model
from .stf import MemoryAugmentedRefinement, SpatioTemporalFusion, STFSegmenter
from .tmanet import ConvBNReLU
from .tmanet_r50 import TMANetDecoder

__all__ = ["PSPNetFeatures", "STFPSPNetSegmenter", "read_class_memory",
           "stf_mar_delayed_pspnet50"]

#: Pool scales of the PSP head's pyramid.
POOL_SCALES = (1, 2, 3, 6)
#: The release's embedding grid: the 128 x 256 features of its 1024 x 2048 input.
RELEASE_PE_SIZE = (128, 256)
#: The release's prefix of its PSPNet's keys, and its keys ignored on purpose.
RELEASE_PREFIX = "pspnet."
RELEASE_IGNORED_PREFIX = "pspnet.auxiliary_head."
#: ``decode_head.*`` (after the release's prefix) -> our names (mmseg_layout's head_renames).
HEAD_RENAMES = (("conv_seg.", "decoder.conv_seg."), ("", "encoder."))
#: Our prefix of the backbone's keys.
BACKBONE_PREFIX = "encoder.backbone."


class PSPNetFeatures(nn.Module):
    """mmseg's PSPNet up to its bottleneck: (B, 3, H, W) normalised -> (B, 512, h, w),
    h = ceil(H / 8).

    ``backbone`` (ResNetV1c-D8, 2048 channels) -> ``[x, up(psp_modules[i](x)) ...]``
    (``psp_modules[i]``: adaptive average pooling to ``pool_scales[i]``, CBR 1x1; ``up``:
    bilinear to (h, w), ``align_corners=False``) -> ``bottleneck`` (CBR 3x3). Names as mmseg's
    (``psp_modules.{i}.1.{conv,bn}``, ``bottleneck.{conv,bn}``).

    Args:
        depth: the ResNet depth (50).
        channels: the branches' and the bottleneck's width (512).
        pool_scales: the pyramid's grid sizes.
    """

    def __init__(self, depth: int = 50, channels: int = 512,
                 pool_scales: Sequence[int] = POOL_SCALES) -> None:
        super().__init__()
        self.backbone = resnet_v1c(depth)
        width = self.backbone.out_channels
        self.psp_modules = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(scale), ConvBNReLU(width, channels, 1))
            for scale in pool_scales)
        self.bottleneck = ConvBNReLU(width + len(pool_scales) * channels, channels, 3)
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)
        size = features.shape[2:]
        pyramid = [F.interpolate(branch(features), size=size, mode="bilinear",
                                 align_corners=False) for branch in self.psp_modules]
        return self.bottleneck(torch.cat([features, *pyramid], dim=1))


class STFPSPNetSegmenter(STFSegmenter):
    """The released STF + MAR network: reads its checkpoints and computes its offline
    protocol too (:meth:`offline_logits`)."""

    def from_published_state_dict(self, state: dict[str, torch.Tensor]
                                  ) -> tuple[dict[str, torch.Tensor], tuple[str, ...], str] | None:
        """The release's layout (``pspnet.*``, ``STF.*``, ``MAR.*``; see the module docstring)
        or mmseg's single-frame one in our names: (state, keys ignored, layout); None for any
        other layout (our own names)."""
        if not any(key.startswith(RELEASE_PREFIX + "backbone.") for key in state):
            return rename_mmseg_state_dict(state, HEAD_RENAMES, encoder=BACKBONE_PREFIX)
        ignored = tuple(key for key in state if key.startswith(RELEASE_IGNORED_PREFIX))
        inner = {(key[len(RELEASE_PREFIX):]
                  if key.startswith((RELEASE_PREFIX + "backbone.",
                                     RELEASE_PREFIX + "decode_head.")) else key): tensor
                 for key, tensor in state.items() if key not in ignored}
        renamed, _, _ = rename_mmseg_state_dict(inner, HEAD_RENAMES, encoder=BACKBONE_PREFIX)
        return renamed, ignored, "st_memory"

    def offline_logits(self, frames: Sequence[torch.Tensor]) -> torch.Tensor:
        """The release's computation of the middle frame's logits: PSPNet on each of the three
        frames ``(x_{t-1}, x_t, x_{t+1})`` (B, 3, H, W) in [0, 1], STF with the query on
        ``x_t``, MAR, classifier. -> (B, num_classes, H, W)."""
        for frame in frames:
            self._check_input(frame)
        module = self.temporal_module
        if len(frames) != module.STF.frames:
            raise ValueError(f"the release fuses {module.STF.frames} frames, got {len(frames)}")
        fused = module.fuse([self.encoder(self._prepare(frame)) for frame in frames])
        height, width = frames[0].shape[2:]
        return self._decode(fused)[:, :, :height, :width]


def read_class_memory(key_file: str | Path, value_file: str | Path
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """The release's MAR memory files as (keys (190, 512), prototypes (19, 512)) float32, for
    :meth:`~lmanet_ros.models.stf.MemoryAugmentedRefinement.set_memory`.

    ``key.npy``: float32 (190, 512), class-major; ``value.npy``: float32 (19, 512), one
    prototype per class. Read with ``allow_pickle=False`` (plain arrays only, never code).

    Raises:
        ValueError: a file that is not a float32 2-D array of those widths (or a pickle).
    """
    arrays = []
    for path, rows in ((key_file, 190), (value_file, 19)):
        array = np.load(Path(path), allow_pickle=False)
        if array.dtype != np.float32 or array.shape != (rows, 512):
            raise ValueError(f"{path}: expected a float32 ({rows}, 512) array, got "
                             f"{array.dtype} {array.shape}")
        arrays.append(torch.from_numpy(array))
    return arrays[0], arrays[1]


@register_model("stf_mar_delayed_pspnet50", temporal=True, default_memory_length=2,
                output_delay_frames=1,
                description="STF + MAR on PSPNet-50 as released (ST_Memory, mmseg "
                            "pspnet_r50-d8): non-causal (t-1, t, t+1), run one frame late: "
                            "the labels are for the PREVIOUS frame")
def stf_mar_delayed_pspnet50(*, num_classes: int = 20,
                             memory_length: int = 2) -> STFPSPNetSegmenter:
    """The released network with ``num_classes - 1`` learnt classes (19) and the void channel;
    memory length 2 (the release's window) or 1."""
    encoder = PSPNetFeatures(50)
    channels = encoder.out_channels
    temporal = SpatioTemporalFusion(
        channels, past_frames=2, mar=MemoryAugmentedRefinement(channels, fixed_memory=True),
        delayed=True, duplicate_cold_start=True, heads=2, ffn_channels=256, block=16,
        pe_size=RELEASE_PE_SIZE, dropout=0.1)
    return STFPSPNetSegmenter("stf_mar_delayed_pspnet50", encoder, temporal,
                              TMANetDecoder(num_classes, channels, align_corners=False),
                              num_classes=num_classes, memory_length=memory_length,
                              mean=IMAGENET_MEAN, std=IMAGENET_STD, output_stride=8,
                              size_offset=0, neck={"dropout": nn.Dropout2d(0.1)})
