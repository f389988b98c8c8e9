"""The network step as a graph: which models can be exported, the graph's inputs and outputs.

One graph per memory fill level k (0..T): it computes ``model.step(x, memory)`` for a memory
holding exactly k frames (fill 0: the empty memory, the single-frame path). Its inputs are
``x`` (1, 3, H, W), RGB in [0, 1] (the model's normalisation and padding are inside the graph),
then the memory's columns, each frame on its own, oldest first: ``keys_0 .. keys_{k-1}``,
``values_0 .. values_{k-1}`` for LMANet's :class:`~lmanet_ros.models.memory.Memory` (the field
names of the model's memory type, so TMANet's and STF's
:class:`~lmanet_ros.models.memory.FeatureMemory` gives ``features_0 ..``). Its outputs are
``logits`` (1, C, H, W) and, for a temporal model, the frame's new memory entry, one tensor per
column (``keys_new``, ``values_new``). The FIFO bookkeeping (keep the newest T, append the entry)
stays in Python on the model's own memory type, exactly as
:meth:`~lmanet_ros.models.temporal.FIFOModule.step` does it.

Models whose temporal module is a :class:`~lmanet_ros.models.temporal.FIFOModule` with its step
(LMANet, TMANet, STF) and single-frame models can be exported; others (TDNet's path memory) are
refused with a :class:`~lmanet_ros.runtime.errors.BackendError`.

Batch 1, fixed size: the graphs are exported for one stream at one input size (a batch of B
streams is B runs): static shapes are what TensorRT and OpenVINO optimise best, and the tiled
attention's chunking depends on the batch, which would make a dynamic batch axis a guard.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from lmanet_ros.models import FIFOModule, FrameFIFO, Segmenter, TemporalSegmenter

from .errors import BackendError

__all__ = ["TensorSpec", "GraphSpec", "StepGraph", "memory_columns", "check_exportable",
           "memory_input_names", "graph_specs", "example_inputs"]

#: Name of the image input.
INPUT_NAME = "x"
#: Name of the logits output.
LOGITS_NAME = "logits"


@dataclass(frozen=True)
class TensorSpec:
    """A graph input or output: its name and static shape."""

    name: str
    shape: tuple[int, ...]

    def to_json(self) -> dict[str, object]:
        """``{"name": ..., "shape": [...]}`` for the graph's metadata."""
        return {"name": self.name, "shape": list(self.shape)}


@dataclass(frozen=True)
class GraphSpec:
    """The inputs and outputs of the graph of one fill level.

    Attributes:
        fill: frames k in the memory the graph reads (0: the single-frame path).
        image: the image input ``x`` (1, 3, H, W).
        memory_inputs: the k frames of every memory column, column by column, oldest first.
        logits: the ``logits`` output (1, C, H, W).
        memory_outputs: the new frame's entry, one tensor per column (none: single frame).
    """

    fill: int
    image: TensorSpec
    memory_inputs: tuple[TensorSpec, ...]
    logits: TensorSpec
    memory_outputs: tuple[TensorSpec, ...]

    @property
    def input_names(self) -> list[str]:
        """Names of every input, in the graph's order."""
        return [self.image.name, *(spec.name for spec in self.memory_inputs)]

    @property
    def output_names(self) -> list[str]:
        """Names of every output, in the graph's order."""
        return [self.logits.name, *(spec.name for spec in self.memory_outputs)]


def memory_columns(model: Segmenter) -> tuple[str, ...]:
    """The field names of the model's memory type (``("keys", "values")`` for LMANet), ()
    for a single-frame model."""
    if not isinstance(model, TemporalSegmenter):
        return ()
    return tuple(field.name for field in dataclasses.fields(model.temporal_module.memory_type))


def check_exportable(model: Segmenter) -> None:
    """Raise BackendError unless the model's step can be exported as fill-level graphs."""
    if not isinstance(model, Segmenter):
        raise BackendError(f"only models of lmanet_ros.models can be exported, got "
                           f"{type(model).__name__}")
    if not isinstance(model, TemporalSegmenter):
        return
    module = model.temporal_module
    fifo = isinstance(module, FIFOModule) and type(module).step is FIFOModule.step
    if not fifo or not issubclass(module.memory_type, FrameFIFO):
        raise BackendError(f"model '{model.info.name}' keeps a {module.memory_type.__name__}: "
                           f"only single-frame models and FIFO memories of per-frame tensors "
                           f"(LMANet, TMANet, STF) run on an exported-graph backend")


class StepGraph(nn.Module):
    """``model.step`` for a memory of exactly ``fill`` frames, with the memory as tensors.

    ``forward(x, *memory)``: x (1, 3, H, W); ``memory``: the ``fill`` frames of each column,
    column by column, oldest first. Returns ``(logits, *entry)``: logits (1, C, H, W) and, for
    a temporal model, the stepped frame's memory entry (one tensor per column).
    """

    def __init__(self, model: Segmenter, fill: int) -> None:
        super().__init__()
        self.model = model
        self.fill = fill
        self.columns = memory_columns(model)

    def forward(self, x: torch.Tensor, *memory: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if not self.columns:
            return (self.model.step(x, None)[0],)
        held = None
        if self.fill:
            groups = [memory[i * self.fill:(i + 1) * self.fill]
                      for i in range(len(self.columns))]
            held = self.model.temporal_module.memory_type(*groups)
        logits, successor = self.model.step(x, held)
        return (logits, *(getattr(successor, column)[-1] for column in self.columns))


def _memory_after(model: Segmenter, frames: int, input_size: tuple[int, int],
                  generator: torch.Generator | None = None) -> FrameFIFO | None:
    """The memory after stepping ``frames`` random frames (None for 0 frames)."""
    memory = None
    for _ in range(frames):
        x = torch.rand(1, 3, *input_size, generator=generator)
        _, memory = model.step(x, memory)
    return memory


def memory_input_names(columns: tuple[str, ...], fill: int) -> list[str]:
    """Names of the memory inputs of the graph of ``fill`` frames, in the graph's order."""
    return [f"{column}_{index}" for column in columns for index in range(fill)]


def graph_specs(model: Segmenter, input_size: tuple[int, int]) -> dict[int, GraphSpec]:
    """The inputs and outputs of the graphs of every fill level 0..T at ``input_size`` (H, W)."""
    columns = memory_columns(model)
    height, width = input_size
    with torch.no_grad():
        entry = _memory_after(model, 1, input_size) if columns else None
    shapes = {column: tuple(getattr(entry, column)[0].shape) for column in columns}
    outputs = tuple(TensorSpec(f"{column}_new", shapes[column]) for column in columns)
    specs = {}
    for fill in range(model.memory_length + 1):
        names = memory_input_names(columns, fill)
        specs[fill] = GraphSpec(
            fill=fill, image=TensorSpec(INPUT_NAME, (1, 3, height, width)),
            memory_inputs=tuple(TensorSpec(name, shapes[name.rpartition("_")[0]])
                                for name in names),
            logits=TensorSpec(LOGITS_NAME, (1, model.info.num_classes, height, width)),
            memory_outputs=outputs)
    return specs


def example_inputs(model: Segmenter, fill: int, input_size: tuple[int, int],
                   seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Inputs of the graph of ``fill`` frames: a random frame and the memory that ``fill``
    random frames leave (so the memory holds what the network really stores)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        memory = _memory_after(model, fill, input_size, generator)
        x = torch.rand(1, 3, *input_size, generator=generator)
    columns = [getattr(memory, column) for column in memory_columns(model)] if memory else []
    return (x, *(tensor for column in columns for tensor in column))
