"""Temporal modules: what a temporal segmenter stores per frame and how a step uses its memory.

A temporal module is the swappable component of
:class:`~lmanet_ros.models.segmenter.TemporalSegmenter` between encoder and decoder. The
interface (:class:`TemporalModule`) is general enough for modules whose memory is not a FIFO of
keys and values: each module names its own memory type (:attr:`TemporalModule.memory_type`, a
:class:`~lmanet_ros.models.memory.TemporalMemory`), and one call,
``fused, memory = module.step(features, memory, memory_length=T, update_memory=True)``, reads
the memory and returns its successor. Callers never look inside a memory.

A module owns sub-modules only, no parameters of its own: the segmenter registers those
sub-modules as its own top-level children so that checkpoint names stay those of the published
models (LMANet: ``kv_M_r4.*``, ``kv_Q_r4.*``, ``memory_fusion.*``).

LMANet's module (:class:`LocalMemoryModule`), two published configurations: ERFNet (keys 16 and
values 64 channels from 3x3 convolutions, :class:`SigmoidFusion`) and PSPNet (keys 128 channels,
the 2048-channel features themselves as values, :class:`SigmoidDownFusion`). TMANet's module is
in :mod:`lmanet_ros.models.tmanet`.
"""
from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .attention import DEFAULT_RADIUS, local_memory_attention
from .memory import FrameFIFO, Memory, TemporalMemory

__all__ = ["TemporalModule", "FIFOModule", "KeyValue", "SigmoidFusion", "SigmoidDownFusion",
           "LocalMemoryModule"]


class TemporalModule(nn.Module):
    """Interface of a temporal module (subclasses hold sub-modules only).

    - What a stream's memory is: :attr:`memory_type`; :meth:`empty_memory` is the memory of a
      stream with no past (a fresh stream, or one the caller reset by dropping its memory:
      ``None``; the segmenter turns ``None`` into :meth:`empty_memory`).
    - What a step does: :meth:`step` (read the memory, return the fused features and the
      successor memory: what it stores per frame and what it drops).
    - Cold start (a memory holding fewer than T frames, the empty one included): each module
      documents its behaviour on :meth:`step`.
    - Which memory lengths T the module can run with: :meth:`check_memory_length`.
    """

    #: Channels of the fused features ``step`` returns (what the decoder takes).
    out_channels: int
    #: The type of the memory ``step`` takes and returns.
    memory_type: ClassVar[type[TemporalMemory]]

    def empty_memory(self) -> TemporalMemory:
        """The memory of a stream without a past."""
        return self.memory_type()

    def check_memory_length(self, length: int) -> None:
        """Raise ValueError unless the module can run with memory length ``length`` (>= 1,
        checked by the caller); every length is accepted unless a module says otherwise."""

    def step(self, features: torch.Tensor, memory: TemporalMemory, *, memory_length: int,
             update_memory: bool = True) -> tuple[torch.Tensor, TemporalMemory]:
        """One frame of B streams.

        Args:
            features: (B, C, h, w) encoder features of the current frame.
            memory: the streams' memory, of :attr:`memory_type` (possibly empty); it fits
                ``features`` (the segmenter checked :meth:`~TemporalMemory.check_fits`).
            memory_length: the memory length T in force.
            update_memory: False: the caller keeps ``memory`` (a stride policy); the returned
                memory is then ignored and may be ``memory`` itself.

        Returns:
            (fused features (B, out_channels, h, w) for the decoder, the successor memory).
        """
        raise NotImplementedError

    # ------------------------------------------------------------------ training
    #: Whether training updates the single-frame network's parts around the module (encoder,
    #: decoder) too: False for LMANet, TMANet and STF (their recipes freeze them), True for
    #: TDNet (its release trains the heads with the sub-networks).
    trains_single_frame_parts: ClassVar[bool] = False
    #: Loss weights of the outputs :meth:`training_outputs` returns beside ``"out"`` (the fused
    #: features, weight 1): none for most modules; TDNet's ``"sub"`` (0.5, the release's).
    auxiliary_loss_weights: ClassVar[dict[str, float]] = {}

    @property
    def training_rotation(self) -> int:
        """How many different starting memories :meth:`training_memory` hands out (1: always
        the empty one; TDNet: its m paths, so that every path's last-frame weights train)."""
        return 1

    def training_memory(self, iteration: int, frames_before: int) -> TemporalMemory:
        """The memory a training clip starts from, at training iteration ``iteration``, when
        ``frames_before`` frames precede the labelled one: the empty memory unless a module
        rotates its parts per frame (TDNet chooses which path the labelled frame runs)."""
        del iteration, frames_before
        return self.empty_memory()

    def training_outputs(self, features: torch.Tensor, memory: TemporalMemory, *,
                         memory_length: int) -> dict[str, torch.Tensor]:
        """The labelled frame's outputs for the loss: ``{"out": fused}`` and one entry per
        :attr:`auxiliary_loss_weights` key, each (B, out_channels, h, w) for the decoder."""
        fused, _ = self.step(features, memory, memory_length=memory_length,
                             update_memory=False)
        return {"out": fused}

    def forward(self, features: torch.Tensor, memory: TemporalMemory, *, memory_length: int,
                update_memory: bool = True) -> tuple[torch.Tensor, TemporalMemory]:
        return self.step(features, memory, memory_length=memory_length,
                         update_memory=update_memory)


class FIFOModule(TemporalModule):
    """A module whose memory is a FIFO of per-frame entries (:class:`FrameFIFO`).

    Step: with an empty memory the features pass unchanged (the single-frame network:
    ``decoder(encoder(x))``); otherwise ``read(features, memory)`` over the newest
    ``memory_length`` frames held. Then the frame's :meth:`memory_entry` (computed from the raw
    encoder features, never from the fused ones) is appended and frames beyond
    ``memory_length`` are dropped, oldest first.
    """

    memory_type: ClassVar[type[FrameFIFO]]

    def memory_entry(self, features: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """What the memory stores for a frame with these raw encoder features, one tensor per
        column of :attr:`memory_type`."""
        raise NotImplementedError

    def read(self, features: torch.Tensor, memory: FrameFIFO) -> torch.Tensor:
        """The fused features (B, out_channels, h, w) given a non-empty memory."""
        raise NotImplementedError

    def step(self, features: torch.Tensor, memory: FrameFIFO, *, memory_length: int,
             update_memory: bool = True) -> tuple[torch.Tensor, FrameFIFO]:
        held = memory.truncate(memory_length)
        fused = self.read(features, held) if len(held) else features
        if not update_memory:
            return fused, memory
        return fused, held.append(self.memory_entry(features), memory_length)


class KeyValue(nn.Module):
    """Key and value projections (3x3 convolutions with bias, padding 1).

    Args:
        in_channels: feature channels.
        key_channels: key width.
        value_channels: value width; None: no ``Value`` convolution, the features themselves
            are the values (LMANet on PSPNet).
    """

    def __init__(self, in_channels: int, key_channels: int, value_channels: int | None) -> None:
        super().__init__()
        self.Key = nn.Conv2d(in_channels, key_channels, 3, padding=1, bias=True)
        self.Value = (nn.Conv2d(in_channels, value_channels, 3, padding=1, bias=True)
                      if value_channels is not None else None)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, in, h, w) -> (key (B, key_channels, h, w), value (B, value_channels or in, h, w))."""
        return self.Key(x), (x if self.Value is None else self.Value(x))


class SigmoidFusion(nn.Module):
    """LMANet's "sigmoid-do1" fusion of the query value and the memory read-out.

    ``a = ReLU(dropout(BN1(vQ)))``, ``b = ReLU(dropout(BN2(mem)))``; two sigmoid gates from
    ``cat[a, b]`` weight ``conv1(a)`` and ``conv2(b)``; ``out = ReLU(BN(sum))``.
    Dropout (p = 0.3, element-wise) is active in training only. The batch norms use eps 1e-3
    like ERFNet's (the golden vectors of the published network pin this down).
    """

    def __init__(self, value_channels: int, out_channels: int, dropout: float = 0.3,
                 bn_eps: float = 1e-3) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.bn1 = nn.BatchNorm2d(value_channels, eps=bn_eps)
        self.bn2 = nn.BatchNorm2d(value_channels, eps=bn_eps)
        self.dropout = nn.Dropout(dropout)
        self.conv_layer_1 = nn.Conv2d(value_channels, out_channels, 3, padding=1, bias=True)
        self.conv_layer_2 = nn.Conv2d(value_channels, out_channels, 3, padding=1, bias=True)
        self.conv_layer_3 = nn.Conv2d(2 * value_channels, out_channels, 3, padding=1, bias=True)
        self.conv_layer_4 = nn.Conv2d(2 * value_channels, out_channels, 3, padding=1, bias=True)
        self.bn = nn.BatchNorm2d(out_channels, eps=bn_eps)

    def forward(self, query_value: torch.Tensor, memory_readout: torch.Tensor) -> torch.Tensor:
        a = F.relu(self.dropout(self.bn1(query_value)))
        b = F.relu(self.dropout(self.bn2(memory_readout)))
        both = torch.cat([a, b], dim=1)
        gate_a = torch.sigmoid(self.conv_layer_3(both))
        gate_b = torch.sigmoid(self.conv_layer_4(both))
        fused = self.conv_layer_1(a) * gate_a + self.conv_layer_2(b) * gate_b
        return F.relu(self.bn(fused))


class SigmoidDownFusion(nn.Module):
    """LMANet's "sigmoid-down1" fusion (PSPNet): gates computed in a reduced space.

    ``d = ReLU(BN0(conv1(vQ) + conv1(mem)))`` (1x1 convolutions ``channels`` ->
    ``reduced_channels``; conv1 applied to BOTH inputs, as in the published network),
    ``out = ReLU(BN(vQ * sigmoid(conv3(d)) + mem * sigmoid(conv4(d))))`` (conv3, conv4 1x1
    ``reduced_channels`` -> ``channels``). No dropout. Shapes: (B, channels, h, w) in and out.

    ``conv_layer_2`` exists in the published checkpoints but the published network never uses
    it; it is kept (and never called) so that those checkpoints load strictly. It receives no
    gradient (DistributedDataParallel then needs ``find_unused_parameters=True``). The batch
    norms use eps 1e-3 like the published fusion's.
    """

    def __init__(self, channels: int = 2048, reduced_channels: int = 256,
                 bn_eps: float = 1e-3) -> None:
        super().__init__()
        if channels < 1 or reduced_channels < 1:
            raise ValueError(f"channels and reduced_channels must be >= 1, got {channels}, "
                             f"{reduced_channels}")
        self.bn0 = nn.BatchNorm2d(reduced_channels, eps=bn_eps)
        self.conv_layer_1 = nn.Conv2d(channels, reduced_channels, 1, bias=True)
        self.conv_layer_2 = nn.Conv2d(channels, reduced_channels, 1, bias=True)
        self.conv_layer_3 = nn.Conv2d(reduced_channels, channels, 1, bias=True)
        self.conv_layer_4 = nn.Conv2d(reduced_channels, channels, 1, bias=True)
        self.bn = nn.BatchNorm2d(channels, eps=bn_eps)

    def forward(self, query_value: torch.Tensor, memory_readout: torch.Tensor) -> torch.Tensor:
        reduced = self.conv_layer_1(query_value) + self.conv_layer_1(memory_readout)
        reduced = F.relu(self.bn0(reduced))
        gate_query = torch.sigmoid(self.conv_layer_3(reduced))
        gate_memory = torch.sigmoid(self.conv_layer_4(reduced))
        return F.relu(self.bn(query_value * gate_query + memory_readout * gate_memory))


class LocalMemoryModule(FIFOModule):
    """LMANet's temporal module: key/value projections, local memory attention, fusion.

    Memory: :class:`Memory`, the (key, value) of ``kv_M_r4`` on the raw features of each of the
    last T frames. Cold start: an empty memory runs the single-frame path; 1 <= k < T frames
    are read as they are (the local attention takes any number of frames).

    Args:
        in_channels: encoder feature channels (128 for ERFNet, 2048 for PSPNet); also the
            fused width.
        key_channels: key width (16 for ERFNet, 128 for PSPNet).
        value_channels: value width (64 for ERFNet); None: the features are the values
            (PSPNet).
        fusion: the fusion of query value and memory read-out, ``fusion(vQ, mem)`` ->
            (B, in_channels, h, w); None: :class:`SigmoidFusion` (``value_channels`` ->
            ``in_channels``, ERFNet's).
        radius: attention window radius (10: P = 21).
        tile: tile size of the attention kernel (a speed knob; the result is the same).
    """

    memory_type = Memory

    def __init__(self, in_channels: int = 128, key_channels: int = 16,
                 value_channels: int | None = 64, *, fusion: nn.Module | None = None,
                 radius: int = DEFAULT_RADIUS, tile: tuple[int, int] = (8, 8)) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("key_channels", key_channels),
                            ("value_channels", value_channels)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if radius < 0:
            raise ValueError(f"radius must be >= 0, got {radius}")
        if fusion is None:
            if value_channels is None:
                raise ValueError("value_channels=None (features as values) needs an explicit "
                                 "fusion")
            fusion = SigmoidFusion(value_channels, in_channels)
        self.kv_M_r4 = KeyValue(in_channels, key_channels, value_channels)
        self.kv_Q_r4 = KeyValue(in_channels, key_channels, value_channels)
        self.memory_fusion = fusion
        self.out_channels = in_channels
        self.radius = radius
        self.tile = tuple(tile)

    def memory_entry(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.kv_M_r4(features)

    def attend(self, query_key: torch.Tensor, memory: Memory) -> torch.Tensor:
        """The memory read-out alone (local memory attention)."""
        return local_memory_attention(query_key, memory.keys, memory.values,
                                      radius=self.radius, tile=self.tile)

    def read(self, features: torch.Tensor, memory: Memory) -> torch.Tensor:
        query_key, query_value = self.kv_Q_r4(features)
        return self.memory_fusion(query_value, self.attend(query_key, memory))
