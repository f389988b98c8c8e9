"""TMANet as released (Wang, Wang & Liu, ICIP 2021): ResNetV1c-50-D8 and the TMA head, streaming.

``tmanet_r50`` is the released network (``shared/docs/temporal-modules.md`` section 1): mmseg's
ResNetV1c-50 dilated to output stride 8 (:func:`~lmanet_ros.models.mmseg_layout.resnet_v1c`), the
TMA head exactly as section 1.3 describes it (per-slot memory key and value stacks, query key
and value stacks, unscaled attention with one softmax over all ``T*h*w`` memory positions,
``[Vq, R]`` -> CBR 3x3 512 -> Dropout2d(0.1) -> 1x1 classifier, bilinear up-sampling); Ck = 64,
Cv = 256, 512 channels (:class:`~lmanet_ros.models.tmanet.TemporalMemoryAttention`'s layers).

- Cityscapes (the registered default): T = 2, 19 classes, ``align_corners=True``:
  ``build_model("tmanet_r50")``. CamVid: T = 4, 12 classes, ``align_corners=False``:
  ``build_tmanet_r50(num_classes=13, memory_length=4, align_corners=False)``.
  ``num_classes`` counts our void channel: the classifier has ``num_classes - 1`` outputs (19,
  12 as released) and an all-zero last channel is appended, as for PSPNet
  (:class:`~lmanet_ros.models.pspnet.PSPNetDecoder`).
- Sizes: the release evaluates 769 x 769 windows on Cityscapes (8k + 1: with ``align_corners``
  the feature grid lies exactly on the input grid) and 640 x 640 on CamVid (8k); the model pads
  other sizes to 8k + 1 (``align_corners=True``) or 8k and crops the logits back.
- Input: RGB in [0, 1], ImageNet-normalised inside (mmseg's mean/std of 0..255 RGB, the same
  affine map).
- Checkpoints: the released mmcv files (``{"meta", "state_dict"}``, keys ``backbone.*``,
  ``decode_head.*``, ``auxiliary_head.*``) load strictly through
  :func:`~lmanet_ros.models.checkpoint.load_checkpoint`: ``backbone.*`` -> ``encoder.*``,
  ``decode_head.conv_seg.*`` -> ``decoder.conv_seg.*``, the rest of ``decode_head.*`` -> the
  top-level TMA parts (``memory_key_conv.{layer}.{slot}.*`` ...); ``auxiliary_head.*`` is
  ignored and reported (:func:`~lmanet_ros.models.mmseg_layout.rename_mmseg_state_dict`).

Streaming (section 1.10, "project ahead"): see :class:`ProjectAheadMemoryAttention` and
:class:`SlotMemory`. The release itself recomputes the backbone on the T memory frames for every
output (:meth:`TMANetSegmenter.offline_logits`); streaming gives the same result with one
backbone pass per frame.
"""
from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .memory import Memory, TemporalMemory
from .mmseg_layout import rename_mmseg_state_dict, resnet_v1c
from .pspnet import IMAGENET_MEAN, IMAGENET_STD
from .registry import register_model
from .segmenter import TemporalSegmenter
from .temporal import TemporalModule
from .tmanet import MAX_AFFINITY_ELEMENTS, TemporalMemoryAttention, global_memory_attention

__all__ = ["SlotMemory", "ProjectAheadMemoryAttention", "TMANetDecoder", "TMANetSegmenter",
           "build_tmanet_r50"]

#: ``decode_head.*`` of the released checkpoints -> our names (mmseg_layout's head_renames).
HEAD_RENAMES = (("conv_seg.", "decoder.conv_seg."), ("", ""))


@dataclass(frozen=True)
class SlotMemory(TemporalMemory):
    """TMANet's streaming memory: the past frames' keys and values, projected ahead per slot.

    ``slots[s]`` is a :class:`~lmanet_ros.models.memory.Memory` (keys (B, Ck, h, w), values
    (B, Cv, h, w), oldest first) of the frames projected with slot ``s``'s weights: the newest
    ``min(T - s, L)`` frames (T slots, memory length L). Slot ``s`` holds the frame of age
    ``T - s`` (slot 0 the oldest, t-T; slot T-1 the newest, t-1), so a frame is read through
    slot ``s`` while it is the OLDEST entry of ``slots[s]``; with fewer frames held (a cold
    start) that entry is the oldest frame held, which thus fills the missing first slots.
    ``len(memory)`` is the number of frames held (``len(slots[0])``); ``SlotMemory()`` is the
    empty memory.

    Held: ``T(T+1)/2`` projections of ``(Ck + Cv) * h * w`` values (L = T).
    """

    slots: tuple[Memory, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "slots", tuple(self.slots))
        if any(not isinstance(slot, Memory) or not len(slot) for slot in self.slots):
            raise ValueError("every slot of a SlotMemory must be a non-empty Memory")
        lengths = [len(slot) for slot in self.slots]
        if lengths != sorted(lengths, reverse=True):
            raise ValueError(f"slot s holds at most as many frames as slot s-1, got {lengths}")
        shapes = {(slot.batch_size, slot.spatial_size, slot.keys[0].dtype, slot.keys[0].device)
                  for slot in self.slots}
        if len(shapes) > 1:
            raise ValueError(f"slots differ in batch, feature size, dtype or device: {shapes}")

    def __len__(self) -> int:
        return len(self.slots[0]) if self.slots else 0

    @property
    def batch_size(self) -> int:
        return self.slots[0].batch_size if self.slots else 0

    @property
    def nbytes(self) -> int:
        """Bytes of the projections held (every slot's keys and values)."""
        return sum(slot.nbytes for slot in self.slots)

    def batch_key(self) -> Hashable:
        """(type, frames held per slot, feature size)."""
        return (type(self), tuple(len(slot) for slot in self.slots),
                self.slots[0].spatial_size if self.slots else None)

    @classmethod
    def cat_batch(cls, memories: Sequence["SlotMemory"]) -> "SlotMemory":
        memories = list(memories)
        if not memories or any(not isinstance(m, cls) for m in memories):
            raise ValueError(f"cat_batch needs one or more {cls.__name__}s")
        if len({memory.batch_key() for memory in memories}) > 1:
            raise ValueError("cat_batch needs memories of one batch key (frames per slot, "
                             "feature size)")
        return cls(tuple(Memory.cat_batch([memory.slots[s] for memory in memories])
                         for s in range(len(memories[0].slots))))

    def split_batch(self) -> list["SlotMemory"]:
        if not len(self):
            raise ValueError("cannot split the empty memory: it has no batch dimension")
        return [type(self)(parts) for parts in zip(*(slot.split_batch() for slot in self.slots))]

    def to(self, device: torch.device | str | None = None,
           dtype: torch.dtype | None = None) -> "SlotMemory":
        return type(self)(tuple(slot.to(device=device, dtype=dtype) for slot in self.slots))

    def check_fits(self, features: torch.Tensor) -> None:
        self.slots[0].check_fits(features)

    def truncate(self, max_length: int) -> "SlotMemory":
        """The memory of the newest ``max_length`` frames (>= 1)."""
        return type(self)(tuple(slot.truncate(max_length) for slot in self.slots))

    def read(self) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        """(keys, values) of the frame each slot reads, slot 0 first (a non-empty memory)."""
        return (tuple(slot.keys[0] for slot in self.slots),
                tuple(slot.values[0] for slot in self.slots))

    def push(self, keys: Sequence[torch.Tensor], values: Sequence[torch.Tensor],
             max_length: int) -> "SlotMemory":
        """The memory with a new frame's per-slot projections (T keys, T values, slot 0 first)
        appended, slot ``s`` keeping its newest ``min(T - s, max_length)`` frames."""
        count = len(keys)
        if len(values) != count or (self.slots and len(self.slots) != count):
            raise ValueError(f"a frame needs one key and one value per slot "
                             f"({len(self.slots) or 'T'}), got {len(keys)} and {len(values)}")
        slots = self.slots or (Memory(),) * count
        return type(self)(tuple(slot.push(key, value, min(count - s, max_length))
                                for s, (slot, key, value) in enumerate(zip(slots, keys, values))))


class ProjectAheadMemoryAttention(TemporalModule):
    """TMANet's temporal memory attention, streamed by projecting each frame ahead.

    The sub-modules, names and computation are :class:`TemporalMemoryAttention`'s (its
    :meth:`~TemporalMemoryAttention.fuse` on the raw features of the T memory frames is the
    release's offline computation: :attr:`offline`, which shares these weights). Streaming
    differs in what the memory keeps: a frame's key and value depend on the slot (its age), so
    when a frame arrives its projections for all T slots are computed (:meth:`project`) and
    each is kept until the step that reads it (:class:`SlotMemory`), instead of keeping the
    frame's 2048-channel features and projecting them again at every step. Same compute (each
    frame is projected T times over its life either way), 4.3x less memory for T = 2 (2.6x for
    T = 4).

    Memory per stream, float32 (half in float16), the 8k + 1 padded sizes: a projection holds
    (64 + 256) x h x w values, T(T+1)/2 are held:

    ========== ======== ============== ============ ============ ====================
    input      features per projection T = 2 (x 3)  T = 4 (x 10) raw features, a frame
    ========== ======== ============== ============ ============ ====================
    512x1024   65x129   10.2 MiB       30.7 MiB     102.4 MiB    65.5 MiB
    1024x2048  129x257  40.5 MiB       121.4 MiB    404.7 MiB    259.0 MiB
    ========== ======== ============== ============ ============ ====================

    (Keeping raw features, T frames: 131 / 262 MiB at 512x1024, 518 MiB / 1.0 GiB at
    1024x2048.)

    Step: the frame's projections are computed first (not at all when the memory is kept,
    ``update_memory=False``, and not empty). Cold start, as the TMANet author advises (copy the
    first frame): an empty memory reads the current frame in every slot; with ``1 <= k < T``
    frames held the oldest fills the missing first slots (:class:`SlotMemory`). A memory length
    below T reads the same way; above T is refused.

    Attention: :func:`~lmanet_ros.models.tmanet.global_memory_attention` in query chunks of at
    most ``max_affinity_elements`` affinity elements (exact; 512x1024, T = 2: the whole
    affinity, 8385 x 16770, would be 536 MiB in float32; 1024x2048, 8.2 GiB).

    Args:
        in_channels: encoder channels (2048).
        slots: T (2 Cityscapes, 4 CamVid).
        key_channels, value_channels: Ck (64), Cv (256).
        out_channels: the bottleneck's width (512).
        dropout: Dropout2d probability after the bottleneck (0.1), training only.
        max_affinity_elements: budget of one query chunk's affinity (elements).
    """

    memory_type = SlotMemory
    #: The release trains backbone and head together (from ImageNet weights).
    trains_single_frame_parts = True

    def __init__(self, in_channels: int = 2048, slots: int = 2, key_channels: int = 64,
                 value_channels: int = 256, out_channels: int = 512, *, dropout: float = 0.1,
                 max_affinity_elements: int = MAX_AFFINITY_ELEMENTS) -> None:
        super().__init__()
        offline = TemporalMemoryAttention(in_channels, slots, key_channels, value_channels,
                                          out_channels, dropout=dropout,
                                          max_affinity_elements=max_affinity_elements)
        for name, child in offline.named_children():
            self.add_module(name, child)
        # Kept outside ``_modules``: it shares the children registered above.
        object.__setattr__(self, "_offline", offline)
        self.out_channels = out_channels

    @property
    def offline(self) -> TemporalMemoryAttention:
        """The same layers as the release computes them: ``offline.fuse(features, [F_0, ..,
        F_{T-1}])`` on the memory frames' raw features, slot 0 the oldest."""
        return self._offline

    @property
    def slots(self) -> int:
        """Memory slots T (fixed by the weights)."""
        return self._offline.slots

    def check_memory_length(self, length: int) -> None:
        self._offline.check_memory_length(length)

    def project(self, features: torch.Tensor
                ) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        """A frame's key and value for every slot: (B, 2048, h, w) -> (T keys (B, Ck, h, w),
        T values (B, Cv, h, w)), slot 0 first."""
        keys = tuple(cbr3(cbr1(features)) for cbr1, cbr3 in zip(*self.memory_key_conv))
        values = tuple(cbr3(cbr1(features)) for cbr1, cbr3 in zip(*self.memory_value_conv))
        return keys, values

    def fuse_projected(self, features: torch.Tensor, keys: Sequence[torch.Tensor],
                       values: Sequence[torch.Tensor]) -> torch.Tensor:
        """The head on the current frame's features (B, 2048, h, w) and one projected key and
        value per slot (slot 0 first) -> (B, out_channels, h, w) (before the classifier)."""
        if len(keys) != self.slots or len(values) != self.slots:
            raise ValueError(f"need {self.slots} keys and values, got {len(keys)}, "
                             f"{len(values)}")
        rows = self._offline.chunk_rows(features.shape[0],
                                        sum(key.shape[2] * key.shape[3] for key in keys))
        readout = global_memory_attention(self.query_key_conv(features), keys, values,
                                          chunk_rows=rows)
        query_value = self.query_value_conv(features)
        return self.dropout(self.bottleneck(torch.cat([query_value, readout], dim=1)))

    def step(self, features: torch.Tensor, memory: SlotMemory, *, memory_length: int,
             update_memory: bool = True) -> tuple[torch.Tensor, SlotMemory]:
        held = memory.truncate(memory_length)
        projected = self.project(features) if update_memory or not len(held) else None
        fused = self.fuse_projected(features, *(held.read() if len(held) else projected))
        if not update_memory:
            return fused, memory
        return fused, held.push(*projected, memory_length)


class TMANetDecoder(nn.Module):
    """TMANet's classifier, up-sampling and our appended void channel.

    ``conv_seg``: 1x1 convolution with bias, ``in_channels`` -> ``num_classes - 1`` (weights
    N(0, 0.01), bias 0 as mmseg initialises it); bilinear up-sampling by 8 with
    ``align_corners``: (h, w) -> (8(h - 1) + 1, 8(w - 1) + 1) with True (exact on 8k + 1
    inputs), (8h, 8w) with False; then an all-zero last channel (void).

    (B, in_channels, h, w) -> (B, num_classes, H', W').
    """

    #: Up-sampling factor (the encoder's output stride).
    upsampling = 8

    def __init__(self, num_classes: int = 20, in_channels: int = 512, *,
                 align_corners: bool = True) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (classes plus the void channel), got "
                             f"{num_classes}")
        self.conv_seg = nn.Conv2d(in_channels, num_classes - 1, 1, bias=True)
        nn.init.normal_(self.conv_seg.weight, 0.0, 0.01)
        nn.init.zeros_(self.conv_seg.bias)
        self.align_corners = bool(align_corners)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[2:]
        size = ((self.upsampling * (height - 1) + 1, self.upsampling * (width - 1) + 1)
                if self.align_corners else (self.upsampling * height, self.upsampling * width))
        logits = F.interpolate(self.conv_seg(x), size=size, mode="bilinear",
                               align_corners=self.align_corners)
        return F.pad(logits, (0, 0, 0, 0, 0, 1))  # the void channel: zeros


class TMANetSegmenter(TemporalSegmenter):
    """A TemporalSegmenter that reads the released mmseg checkpoints and computes the release's
    offline protocol too (:meth:`offline_logits`)."""

    def from_published_state_dict(self, state: dict[str, torch.Tensor]
                                  ) -> tuple[dict[str, torch.Tensor], tuple[str, ...], str] | None:
        """The released mmseg layout in our names (see :mod:`lmanet_ros.models.mmseg_layout`);
        None for another layout."""
        return rename_mmseg_state_dict(state, HEAD_RENAMES)

    def offline_logits(self, x: torch.Tensor, memory_frames: Sequence[torch.Tensor]
                       ) -> torch.Tensor:
        """The release's computation: the backbone on ``x`` and on each of the T memory frames
        (B, 3, H, W), oldest first, then the head. -> (B, num_classes, H, W)."""
        self._check_input(x)
        for frame in memory_frames:
            self._check_input(frame)
        slot_features = [self.encoder(self._prepare(frame)) for frame in memory_frames]
        fused = self.temporal_module.offline.fuse(self.encoder(self._prepare(x)), slot_features)
        return self._decode(fused)[:, :, :x.shape[2], :x.shape[3]]


@register_model("tmanet_r50", temporal=True, default_memory_length=2,
                description="TMANet as released (Wang et al. 2021): ResNetV1c-50-D8 and the TMA "
                            "head over T past frames (T=2 Cityscapes), mmseg checkpoints load, "
                            "ImageNet-normalised input")
def build_tmanet_r50(*, num_classes: int = 20, memory_length: int = 2,
                     align_corners: bool = True) -> TMANetSegmenter:
    """TMANet R50 with T = ``memory_length`` slots and ``num_classes - 1`` learnt classes.

    Cityscapes release: the defaults (T = 2, 19 classes, ``align_corners=True``: 8k + 1
    sizes). CamVid release: ``num_classes=13, memory_length=4, align_corners=False`` (12 learnt
    classes; 8k sizes).
    """
    encoder = resnet_v1c(50)
    temporal = ProjectAheadMemoryAttention(encoder.out_channels, memory_length, 64, 256, 512)
    return TMANetSegmenter("tmanet_r50", encoder, temporal,
                           TMANetDecoder(num_classes, 512, align_corners=align_corners),
                           num_classes=num_classes, memory_length=memory_length,
                           mean=IMAGENET_MEAN, std=IMAGENET_STD, output_stride=8,
                           size_offset=1 if align_corners else 0)
