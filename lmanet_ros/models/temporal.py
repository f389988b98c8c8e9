"""Temporal modules: what a temporal segmenter stores per frame and how it reads its memory.

A temporal module is a swappable component of
:class:`~lmanet_ros.models.segmenter.TemporalSegmenter` (LMANet's local memory attention here;
TMANet's global attention could be another). It owns sub-modules only, no parameters of its own:
the segmenter registers those sub-modules as its own top-level children so that checkpoint names
stay those of the published models
(``kv_M_r4.*``, ``kv_Q_r4.*``, ``memory_fusion.*``).

Two published configurations: ERFNet (keys 16 and values 64 channels from 3x3 convolutions,
:class:`SigmoidFusion`) and PSPNet (keys 128 channels, the 2048-channel features themselves as
values, :class:`SigmoidDownFusion`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .attention import DEFAULT_RADIUS, local_memory_attention
from .memory import Memory

__all__ = ["TemporalModule", "KeyValue", "SigmoidFusion", "SigmoidDownFusion", "LocalMemoryModule"]


class TemporalModule(nn.Module):
    """Interface of a temporal module (subclasses hold sub-modules only).

    ``memory_entry(features)`` returns the (key, value) pushed onto the memory for a frame's raw
    encoder features; ``read(features, memory)`` returns the fused features (``out_channels``)
    given a non-empty memory.
    """

    #: Channels of the fused features ``read`` returns (what the decoder takes).
    out_channels: int

    def memory_entry(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def read(self, features: torch.Tensor, memory: Memory) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, features: torch.Tensor, memory: Memory) -> torch.Tensor:
        return self.read(features, memory)


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


class LocalMemoryModule(TemporalModule):
    """LMANet's temporal module: key/value projections, local memory attention, fusion.

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
