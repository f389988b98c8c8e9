"""TMANet's temporal memory attention (Wang, Wang & Liu, ICIP 2021) as a streaming temporal module.

What it computes (``shared/docs/temporal-modules.md`` section 1.3), for the current frame's
encoder features ``F`` and the features ``F_0 .. F_{T-1}`` of the T past frames, slot 0 the
oldest (t-T), slot T-1 the newest (t-1):

- memory key and value of slot ``i``: ``K_i = key_i(F_i)``, ``V_i = value_i(F_i)``, separate
  weights per slot (a frame's projection depends on its age);
- query key and value: ``Q = query_key(F)``, ``Vq = query_value(F)``;
- every stack is CBR 1x1 then CBR 3x3 (CBR = convolution without bias, batch norm, ReLU);
- attention over all ``T*h*w`` memory positions, no ``1/sqrt(Ck)`` scaling, one softmax jointly
  over frames and positions: ``S = Q^T K``, ``A = softmax(S)``, ``R = A V``
  (:func:`global_memory_attention`);
- fusion: ``dropout(CBR3x3(cat[Vq, R]))`` (Dropout2d, p = 0.1, training only).

On ERFNet (``tmanet_erfnet``) the module sits between the 128-channel encoder and ERFNet's
decoder, so the bottleneck maps ``2*Cv`` channels back to 128 (the paper's bottleneck feeds its own
classifier instead).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .memory import FeatureMemory
from .temporal import FIFOModule

__all__ = ["ConvBNReLU", "global_memory_attention", "TemporalMemoryAttention"]

#: Default budget of one query chunk's affinity, in elements (2**24: 64 MiB in fp32).
MAX_AFFINITY_ELEMENTS = 1 << 24


class ConvBNReLU(nn.Module):
    """CBR: ``kernel_size`` convolution without bias (padding ``kernel_size // 2``), batch norm
    (PyTorch's eps 1e-5), ReLU. (B, in, h, w) -> (B, out, h, w)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size,
                              padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)))


def global_memory_attention(query_key: torch.Tensor, memory_keys: Sequence[torch.Tensor],
                            memory_values: Sequence[torch.Tensor], *,
                            chunk_rows: int | None = None) -> torch.Tensor:
    """TMANet's read-out ``R = softmax(Q^T K) V`` over all memory frames and positions.

    Args:
        query_key: Q (B, Ck, h, w).
        memory_keys: T tensors K_i (B, Ck, hm, wm), in slot order.
        memory_values: T tensors V_i (B, Cv, hm, wm), in slot order.
        chunk_rows: query positions per chunk; None: all ``h*w`` at once. The softmax is per
            query row, so chunking rows is exact; a chunk's affinity holds
            ``B * chunk_rows * T*hm*wm`` elements.

    Returns:
        R (B, Cv, h, w). Unscaled scores; the softmax runs in at least float32.
    """
    if not memory_keys or len(memory_keys) != len(memory_values):
        raise ValueError(f"need as many memory keys as values (>= 1), got {len(memory_keys)} "
                         f"and {len(memory_values)}")
    if chunk_rows is not None and chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1 or None, got {chunk_rows}")
    batch, _, height, width = query_key.shape
    query = query_key.flatten(2).transpose(1, 2)                       # (B, N, Ck)
    keys = torch.cat([key.flatten(2) for key in memory_keys], dim=2)  # (B, Ck, T*M)
    values = torch.cat([value.flatten(2) for value in memory_values], dim=2).transpose(1, 2)
    if keys.shape[1] != query.shape[2] or keys.shape[2] != values.shape[1]:
        raise ValueError(f"query key {tuple(query_key.shape)}, memory keys "
                         f"{tuple(memory_keys[0].shape)} and values "
                         f"{tuple(memory_values[0].shape)} do not match")
    rows = query.shape[1] if chunk_rows is None else chunk_rows
    softmax_dtype = torch.promote_types(query.dtype, torch.float32)
    parts = []
    for start in range(0, query.shape[1], rows):
        scores = torch.bmm(query[:, start:start + rows], keys)         # (B, rows, T*M)
        weights = torch.softmax(scores, dim=-1, dtype=softmax_dtype).to(values.dtype)
        parts.append(torch.bmm(weights, values))                       # (B, rows, Cv)
    readout = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
    return readout.transpose(1, 2).reshape(batch, values.shape[2], height, width)


def _slot_stack(in_channels: int, out_channels: int, slots: int) -> nn.ModuleList:
    """Per-slot CBR 1x1 -> CBR 3x3: ``stack[layer][slot]`` (names ``{layer}.{slot}.conv.*``)."""
    return nn.ModuleList([
        nn.ModuleList([ConvBNReLU(in_channels, out_channels, 1) for _ in range(slots)]),
        nn.ModuleList([ConvBNReLU(out_channels, out_channels, 3) for _ in range(slots)]),
    ])


def _query_stack(in_channels: int, out_channels: int) -> nn.Sequential:
    """CBR 1x1 -> CBR 3x3 for the current frame (names ``{layer}.conv.*``)."""
    return nn.Sequential(ConvBNReLU(in_channels, out_channels, 1),
                         ConvBNReLU(out_channels, out_channels, 3))


class TemporalMemoryAttention(FIFOModule):
    """TMANet's module: per-slot memory projections, global memory attention, concat fusion.

    Memory (:class:`~lmanet_ros.models.memory.FeatureMemory`): the RAW encoder features of the
    last T frames, oldest first; their keys and values are recomputed at every step with the
    weights of the slot each frame occupies then. (The alternative, "project ahead": cache, when
    a frame arrives, the projections for every slot it will occupy. On ERFNet it holds more:
    ``(Ck + Cv) * h*w`` per slot projection, ``T(T+1)/2`` of them resident, against
    ``in_channels * h*w`` per frame for raw features, with the same compute either way.)
    Memory cost at 512x1024 (h x w = 64 x 128) with ``in_channels`` 128: 4 MiB per frame in
    float32 (2 MiB in float16/bfloat16), 8 MiB per stream for T = 2 (project ahead: 3 MiB per
    slot projection, 9 MiB for T = 2).

    Cold start: an empty memory runs the single-frame path (the features pass unchanged to
    ERFNet's decoder: the single-frame network, which exists here, unlike in the paper's
    model). With ``1 <= k < T`` frames held, the newest sits in slot T-1 as always and the
    missing slots ``0 .. T-k-1`` are filled with the oldest frame held (the TMANet author's
    advice for the first frames of a video: copy the first frame), so one stored frame reads
    as a memory whose every slot holds it. A memory length below the number of slots behaves
    the same way (fewer frames held, missing slots filled); above it is refused.

    Attention: :func:`global_memory_attention` in query chunks of at most
    ``max_affinity_elements`` affinity elements (exact; 512x1024, T = 2: the whole affinity
    8192 x 16384 would be 512 MiB in float32, chunks of 1024 rows hold 64 MiB).

    Per-step cost at 512x1024, T = 2, Ck = 32, Cv = 64 (multiply-adds): slot and query
    projections 3 x 0.48 G, bottleneck 1.21 G, attention 4.29 G (``Q^T K``) + 8.59 G (``A V``).

    State_dict names (top-level children of the segmenter; cf. the released
    ``decode_head.*`` keys): ``memory_key_conv.{0,1}.{slot}.{conv,bn}.*``,
    ``memory_value_conv.{0,1}.{slot}.{conv,bn}.*``, ``query_key_conv.{0,1}.{conv,bn}.*``,
    ``query_value_conv.{0,1}.{conv,bn}.*``, ``bottleneck.{conv,bn}.*`` (layer 0 the 1x1 CBR,
    layer 1 the 3x3 one; ``dropout`` holds nothing).

    Args:
        in_channels: encoder feature channels (128 for ERFNet).
        slots: memory slots T, each with its own key and value weights (>= 1).
        key_channels: Ck (32 on ERFNet: a quarter of the features, as LMANet's 16 is an
            eighth; the paper has 64 on 2048 channels).
        value_channels: Cv (64 on ERFNet, LMANet's value width; the paper has 256).
        out_channels: fused width (the decoder's input; 128 for ERFNet).
        dropout: Dropout2d probability after the bottleneck (0.1), training only.
        max_affinity_elements: budget of one query chunk's affinity (elements).
    """

    memory_type = FeatureMemory

    def __init__(self, in_channels: int = 128, slots: int = 2, key_channels: int = 32,
                 value_channels: int = 64, out_channels: int = 128, *, dropout: float = 0.1,
                 max_affinity_elements: int = MAX_AFFINITY_ELEMENTS) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("slots", slots),
                            ("key_channels", key_channels), ("value_channels", value_channels),
                            ("out_channels", out_channels),
                            ("max_affinity_elements", max_affinity_elements)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.memory_key_conv = _slot_stack(in_channels, key_channels, slots)
        self.memory_value_conv = _slot_stack(in_channels, value_channels, slots)
        self.query_key_conv = _query_stack(in_channels, key_channels)
        self.query_value_conv = _query_stack(in_channels, value_channels)
        self.bottleneck = ConvBNReLU(2 * value_channels, out_channels, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.out_channels = out_channels
        self.max_affinity_elements = max_affinity_elements

    @property
    def slots(self) -> int:
        """Memory slots T (fixed by the weights)."""
        return len(self.memory_key_conv[0])

    def check_memory_length(self, length: int) -> None:
        if length > self.slots:
            raise ValueError(f"TMANet's module has per-slot weights for {self.slots} frames: "
                             f"memory length {length} needs a model built with that many")

    def memory_entry(self, features: torch.Tensor) -> tuple[torch.Tensor]:
        """A frame's entry: its raw features (B, in_channels, h, w) themselves."""
        return (features,)

    def slot_frames(self, frames: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The frame of each slot for 1..T frames held (oldest first): the newest in the last
        slot, the missing first slots filled with the oldest frame (cold start)."""
        if not 1 <= len(frames) <= self.slots:
            raise ValueError(f"need 1 to {self.slots} memory frames, got {len(frames)}")
        return [frames[0]] * (self.slots - len(frames)) + list(frames)

    def chunk_rows(self, batch: int, memory_positions: int) -> int:
        """Query rows per chunk so that a chunk's affinity fits ``max_affinity_elements``."""
        return max(1, self.max_affinity_elements // max(1, batch * memory_positions))

    def fuse(self, features: torch.Tensor, slot_features: Sequence[torch.Tensor]
             ) -> torch.Tensor:
        """TMANet on one frame: (B, in, h, w) features and exactly T memory feature maps in
        slot order (slot 0 the oldest) -> fused (B, out_channels, h, w)."""
        if len(slot_features) != self.slots:
            raise ValueError(f"need {self.slots} slot features, got {len(slot_features)}")
        key_layers, value_layers = self.memory_key_conv, self.memory_value_conv
        keys = [key_layers[1][i](key_layers[0][i](f)) for i, f in enumerate(slot_features)]
        values = [value_layers[1][i](value_layers[0][i](f)) for i, f in enumerate(slot_features)]
        positions = sum(key.shape[2] * key.shape[3] for key in keys)
        readout = global_memory_attention(
            self.query_key_conv(features), keys, values,
            chunk_rows=self.chunk_rows(features.shape[0], positions))
        fused = torch.cat([self.query_value_conv(features), readout], dim=1)
        return self.dropout(self.bottleneck(fused))

    def read(self, features: torch.Tensor, memory: FeatureMemory) -> torch.Tensor:
        return self.fuse(features, self.slot_frames(memory.features))
