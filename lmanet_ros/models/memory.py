"""The memory of a temporal model, as an immutable value per stream (or per batch of streams).

A memory belongs to the caller (one per stream, or one per batch of streams), never to the
model: ``model.step(x, memory)`` returns a new memory and leaves the given one untouched; a reset
is the caller dropping it (``None``). Each temporal module has a memory type of its own
(:attr:`~lmanet_ros.models.temporal.TemporalModule.memory_type`); every type implements
:class:`TemporalMemory`, which is all that callers (pipeline, node, evaluation) use:

- ``len(memory)``: frames held (the fill level that statistics report);
- ``memory.batch_key()``: a hashable value; memories with equal keys can be batched;
- ``type(memory).cat_batch(memories)`` / ``memory.split_batch()``: join streams into one batch
  and split a batch back into single streams;
- ``memory.to(device, dtype)``, ``memory.check_fits(features)``.

Types here: :class:`Memory` (LMANet: the keys and values of the last T frames) and
:class:`FeatureMemory` (TMANet: the raw encoder features of the last T frames), both FIFOs of
per-frame tensors (:class:`FrameFIFO`).
"""
from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch

__all__ = ["TemporalMemory", "FrameFIFO", "Memory", "FeatureMemory"]

MemoryT = TypeVar("MemoryT", bound="TemporalMemory")
FIFO = TypeVar("FIFO", bound="FrameFIFO")


class TemporalMemory(ABC):
    """Interface of every memory type: an immutable value, batched along dimension 0."""

    @abstractmethod
    def __len__(self) -> int:
        """Frames held (0: empty; a model treats an empty memory like None)."""

    @property
    @abstractmethod
    def batch_size(self) -> int:
        """Number of streams B (0 for an empty memory that has no tensor yet)."""

    @abstractmethod
    def batch_key(self) -> Hashable:
        """Memories with equal keys can be joined by :meth:`cat_batch` and stepped together.

        The key includes the memory's type and everything that must agree across the streams
        of one batch (for a FIFO: its fill level and feature size).
        """

    @classmethod
    @abstractmethod
    def cat_batch(cls: type[MemoryT], memories: Sequence[MemoryT]) -> MemoryT:
        """Concatenate memories of equal :meth:`batch_key` along the batch (stream) axis."""

    @abstractmethod
    def split_batch(self: MemoryT) -> list[MemoryT]:
        """Split into ``batch_size`` memories of one stream each (views, not copies)."""

    @abstractmethod
    def to(self: MemoryT, device: torch.device | str | None = None,
           dtype: torch.dtype | None = None) -> MemoryT:
        """Return the memory with every tensor moved/cast (``Tensor.to`` semantics)."""

    @abstractmethod
    def check_fits(self, features: torch.Tensor) -> None:
        """Raise ValueError unless this (non-empty) memory fits the encoder features
        (B, C, h, w) of the frame being stepped: batch, device, dtype, spatial size."""


class FrameFIFO(TemporalMemory):
    """A FIFO of per-frame tensors, oldest first: the common part of :class:`Memory` and
    :class:`FeatureMemory`.

    A subclass is a frozen dataclass whose fields are its columns: each a tuple with one
    (B, C, h, w) tensor per frame held. All tensors share batch size, spatial size, device and
    dtype; the tensors of one column share their channel count. The tensors are not copied: do
    not modify them in place. The subclass's ``__post_init__`` calls :meth:`_validate`.
    """

    def _columns(self) -> tuple[tuple[torch.Tensor, ...], ...]:
        return tuple(getattr(self, field.name) for field in dataclasses.fields(self))

    def _validate(self) -> None:
        names = [field.name for field in dataclasses.fields(self)]
        for name in names:
            object.__setattr__(self, name, tuple(getattr(self, name)))
        columns = self._columns()
        if len({len(column) for column in columns}) > 1:
            counts = " but ".join(f"{len(c)} {n}" for n, c in zip(names, columns))
            raise ValueError(f"memory holds {counts}")
        if not columns[0]:
            return
        first = columns[0][0]
        for name, column in zip(names, columns):
            for index, tensor in enumerate(column):
                if not isinstance(tensor, torch.Tensor) or tensor.dim() != 4:
                    raise ValueError(f"memory {name}[{index}] must be a (B, C, h, w) tensor, "
                                     f"got {getattr(tensor, 'shape', type(tensor).__name__)}")
                if tensor.shape[0] != first.shape[0] or tensor.shape[2:] != first.shape[2:]:
                    raise ValueError(f"memory {name}[{index}] has shape {tuple(tensor.shape)}; "
                                     f"batch and spatial size must be those of {names[0]}[0] "
                                     f"{tuple(first.shape)}")
                if tensor.shape[1] != column[0].shape[1]:
                    raise ValueError(f"memory {name} differ in their number of channels")
                if tensor.device != first.device or tensor.dtype != first.dtype:
                    raise ValueError(f"memory {name}[{index}] is {tensor.dtype} on "
                                     f"{tensor.device}, {names[0]}[0] is {first.dtype} on "
                                     f"{first.device}")

    def __len__(self) -> int:
        """Number of frames held."""
        return len(self._columns()[0])

    @property
    def batch_size(self) -> int:
        """Number of streams B (0 for the empty memory)."""
        column = self._columns()[0]
        return int(column[0].shape[0]) if column else 0

    @property
    def nbytes(self) -> int:
        """Bytes of the tensors held: elements x element size, summed over every column and
        frame (0 for the empty memory). A view counts at its own size, not its storage's."""
        return sum(tensor.nbytes for column in self._columns() for tensor in column)

    @property
    def spatial_size(self) -> tuple[int, int] | None:
        """(h, w) of the feature maps held (None for the empty memory)."""
        column = self._columns()[0]
        return (int(column[0].shape[2]), int(column[0].shape[3])) if column else None

    def batch_key(self) -> Hashable:
        """(type, frames held, feature size): what streams batched together must share."""
        return type(self), len(self), self.spatial_size

    def append(self: FIFO, entry: Sequence[torch.Tensor], max_length: int) -> FIFO:
        """Return a memory with ``entry`` (one tensor per column) appended as the newest frame,
        keeping the newest ``max_length``."""
        columns = self._columns()
        if len(entry) != len(columns):
            raise ValueError(f"a frame entry of {type(self).__name__} has {len(columns)} "
                             f"tensors, got {len(entry)}")
        return type(self)(*(c + (t,) for c, t in zip(columns, entry))).truncate(max_length)

    def truncate(self: FIFO, max_length: int) -> FIFO:
        """Return a memory holding only the newest ``max_length`` frames (>= 1)."""
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
            raise ValueError(f"max_length must be an int >= 1, got {max_length!r}")
        if len(self) <= max_length:
            return self
        return type(self)(*(column[-max_length:] for column in self._columns()))

    def to(self: FIFO, device: torch.device | str | None = None,
           dtype: torch.dtype | None = None) -> FIFO:
        return self.map_tensors(lambda t: t.to(device=device, dtype=dtype))

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """Every tensor held, column by column, oldest frame first within a column."""
        return tuple(tensor for column in self._columns() for tensor in column)

    def map_tensors(self: FIFO, function: Callable[[torch.Tensor], torch.Tensor]) -> FIFO:
        """The memory of the same type with ``function(tensor)`` in place of every tensor (the
        results must keep the FIFO's rules: one batch, spatial size, device and dtype)."""
        return type(self)(*(tuple(function(t) for t in column) for column in self._columns()))

    @classmethod
    def cat_batch(cls: type[FIFO], memories: Sequence[FIFO]) -> FIFO:
        """Concatenate memories along the batch: equal lengths and per-frame shapes required."""
        memories = list(memories)
        if not memories:
            raise ValueError("cat_batch needs at least one memory")
        for index, memory in enumerate(memories):
            if not isinstance(memory, cls):
                raise ValueError(f"cat_batch: item {index} is a {type(memory).__name__}, "
                                 f"not a {cls.__name__}")
        length = len(memories[0])
        if any(len(m) != length for m in memories):
            raise ValueError(f"cat_batch needs memories of equal length, got "
                             f"{[len(m) for m in memories]}")
        if len(memories) == 1 or length == 0:
            return memories[0]
        tables = [memory._columns() for memory in memories]
        for table in tables[1:]:
            for mine, first in zip(sum(table, ()), sum(tables[0], ())):
                if mine.shape[1:] != first.shape[1:]:
                    raise ValueError(f"cat_batch: frame shapes differ ({tuple(mine.shape)} vs "
                                     f"{tuple(first.shape)})")
        return cls(*(tuple(torch.cat([table[c][i] for table in tables]) for i in range(length))
                     for c in range(len(tables[0]))))

    def split_batch(self: FIFO) -> list[FIFO]:
        """Split into B memories of batch size 1 (views of this memory's tensors)."""
        if not len(self):
            raise ValueError("cannot split the empty memory: it has no batch dimension")
        pieces = [[tensor.split(1) for tensor in column] for column in self._columns()]
        return [type(self)(*(tuple(parts[b] for parts in column) for column in pieces))
                for b in range(self.batch_size)]

    def check_fits(self, features: torch.Tensor) -> None:
        first = self._columns()[0][0]
        if first.shape[0] != features.shape[0]:
            raise ValueError(f"memory holds {first.shape[0]} streams but x has "
                             f"{features.shape[0]}")
        if first.device != features.device or first.dtype != features.dtype:
            raise ValueError(f"memory is {first.dtype} on {first.device} but the model runs "
                             f"{features.dtype} on {features.device} (use memory.to(...) or a "
                             f"fresh memory)")
        if self.spatial_size != tuple(features.shape[2:]):
            raise ValueError(f"memory feature size {self.spatial_size} does not match the "
                             f"input's {tuple(features.shape[2:])} (a new input size needs a "
                             f"fresh memory)")


@dataclass(frozen=True)
class Memory(FrameFIFO):
    """LMANet's memory: keys and values of the frames held, oldest first; each (B, C, h, w).

    ``keys[i]`` and ``values[i]`` belong to the same frame. ``Memory()`` is the empty memory
    (``len(memory) == 0``); a model treats it like ``None``.
    """

    keys: tuple[torch.Tensor, ...] = ()
    values: tuple[torch.Tensor, ...] = ()

    def __post_init__(self) -> None:
        self._validate()

    def push(self, key: torch.Tensor, value: torch.Tensor, max_length: int) -> "Memory":
        """Return a memory with (key, value) appended as the newest frame, at most max_length."""
        return self.append((key, value), max_length)


@dataclass(frozen=True)
class FeatureMemory(FrameFIFO):
    """TMANet's memory: the raw encoder features (B, C, h, w) of the frames held, oldest first.

    Raw features, not projections: TMANet projects a memory frame with the weights of the slot
    it occupies, i.e. of its age, so a frame's keys and values change as it ages and are
    recomputed at every step (:class:`~lmanet_ros.models.tmanet.TemporalMemoryAttention`).
    """

    features: tuple[torch.Tensor, ...] = ()

    def __post_init__(self) -> None:
        self._validate()
