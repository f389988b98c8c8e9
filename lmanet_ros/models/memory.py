"""The memory of a temporal model: a FIFO of per-frame keys and values, as an immutable value.

A :class:`Memory` belongs to the caller (one per stream, or one per batch of streams), never to
the model: ``model.step(x, memory)`` returns a new memory and leaves the given one untouched.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["Memory"]


@dataclass(frozen=True)
class Memory:
    """Keys and values of the frames held, oldest first; each tensor (B, C, h, w).

    ``keys[i]`` and ``values[i]`` belong to the same frame; all frames share batch size, spatial
    size, device and dtype. ``Memory()`` is the empty memory (``len(memory) == 0``); a model
    treats it like ``None``. The tensors are not copied: do not modify them in place.
    """

    keys: tuple[torch.Tensor, ...] = ()
    values: tuple[torch.Tensor, ...] = ()

    def __post_init__(self) -> None:
        keys, values = tuple(self.keys), tuple(self.values)
        object.__setattr__(self, "keys", keys)
        object.__setattr__(self, "values", values)
        if len(keys) != len(values):
            raise ValueError(f"memory has {len(keys)} keys but {len(values)} values")
        if not keys:
            return
        first = keys[0]
        for kind, tensors in (("key", keys), ("value", values)):
            for index, tensor in enumerate(tensors):
                if not isinstance(tensor, torch.Tensor) or tensor.dim() != 4:
                    raise ValueError(f"memory {kind} {index} must be a (B, C, h, w) tensor, got "
                                     f"{getattr(tensor, 'shape', type(tensor).__name__)}")
                if tensor.shape[0] != first.shape[0] or tensor.shape[2:] != first.shape[2:]:
                    raise ValueError(f"memory {kind} {index} has shape {tuple(tensor.shape)}; "
                                     f"batch and spatial size must be those of key 0 "
                                     f"{tuple(first.shape)}")
                if tensor.shape[1] != tensors[0].shape[1]:
                    raise ValueError(f"memory {kind}s differ in their number of channels")
                if tensor.device != first.device or tensor.dtype != first.dtype:
                    raise ValueError(f"memory {kind} {index} is {tensor.dtype} on "
                                     f"{tensor.device}, key 0 is {first.dtype} on {first.device}")

    def __len__(self) -> int:
        """Number of frames held."""
        return len(self.keys)

    @property
    def batch_size(self) -> int:
        """Number of streams B (0 for the empty memory)."""
        return int(self.keys[0].shape[0]) if self.keys else 0

    @property
    def spatial_size(self) -> tuple[int, int] | None:
        """(h, w) of the feature maps held (None for the empty memory)."""
        return (int(self.keys[0].shape[2]), int(self.keys[0].shape[3])) if self.keys else None

    def push(self, key: torch.Tensor, value: torch.Tensor, max_length: int) -> "Memory":
        """Return a memory with (key, value) appended as the newest frame, at most max_length."""
        return Memory(self.keys + (key,), self.values + (value,)).truncate(max_length)

    def truncate(self, max_length: int) -> "Memory":
        """Return a memory holding only the newest ``max_length`` frames (>= 1)."""
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
            raise ValueError(f"max_length must be an int >= 1, got {max_length!r}")
        if len(self) <= max_length:
            return self
        return Memory(self.keys[-max_length:], self.values[-max_length:])

    def to(self, device: torch.device | str | None = None,
           dtype: torch.dtype | None = None) -> "Memory":
        """Return the memory with every tensor moved/cast (``Tensor.to`` semantics)."""
        return Memory(tuple(k.to(device=device, dtype=dtype) for k in self.keys),
                      tuple(v.to(device=device, dtype=dtype) for v in self.values))

    @staticmethod
    def cat_batch(memories: Sequence["Memory"]) -> "Memory":
        """Concatenate memories along the batch: equal lengths and per-frame shapes required."""
        memories = list(memories)
        if not memories:
            raise ValueError("cat_batch needs at least one memory")
        for index, memory in enumerate(memories):
            if not isinstance(memory, Memory):
                raise ValueError(f"cat_batch: item {index} is a {type(memory).__name__}, "
                                 f"not a Memory")
        length = len(memories[0])
        if any(len(m) != length for m in memories):
            raise ValueError(f"cat_batch needs memories of equal length, got "
                             f"{[len(m) for m in memories]}")
        if len(memories) == 1 or length == 0:
            return memories[0]
        for memory in memories[1:]:
            for mine, first in zip(memory.keys + memory.values,
                                   memories[0].keys + memories[0].values):
                if mine.shape[1:] != first.shape[1:]:
                    raise ValueError(f"cat_batch: frame shapes differ ({tuple(mine.shape)} vs "
                                     f"{tuple(first.shape)})")
        keys = tuple(torch.cat([m.keys[i] for m in memories]) for i in range(length))
        values = tuple(torch.cat([m.values[i] for m in memories]) for i in range(length))
        return Memory(keys, values)

    def split_batch(self) -> list["Memory"]:
        """Split into B memories of batch size 1 (views of this memory's tensors)."""
        if not self.keys:
            raise ValueError("cannot split the empty memory: it has no batch dimension")
        keys = [k.split(1) for k in self.keys]
        values = [v.split(1) for v in self.values]
        return [Memory(tuple(k[b] for k in keys), tuple(v[b] for v in values))
                for b in range(self.batch_size)]
