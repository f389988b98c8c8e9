"""LMANet's step as three graphs around the package's own attention kernel (the split layout).

The fill-level graphs (:mod:`.graphs`) carry the whole step, the local memory attention
included; a runtime then runs the attention as ONNX ops (an unfold of the window regions, two
7-D Transposes, batched products), in onnxruntime about twice as slowly as the compiled kernel
(:mod:`lmanet_ros.models.attention`; measured in :mod:`lmanet_ros.runtime`). The split layout
runs everything else in the runtime and the attention, between two graphs, in PyTorch with the
kernel :func:`~lmanet_ros.models.attention.attention_backend` picks (compiled C++ on the CPU):

===================  ====================================================  =================
graph                inputs -> outputs                                     runs
===================  ====================================================  =================
``encode``           ``x`` (1, 3, H, W) -> ``features`` (1, C, h, w),      every frame
                     ``keys_new``, ``values_new`` (the frame's memory
                     entry), ``query_key``, ``query_value``
``decode``           ``features`` -> ``logits`` (1, K, H, W)               empty memory
``decode_fused``     ``query_value``, ``readout`` -> ``logits``            memory of k >= 1
===================  ====================================================  =================

``readout`` = ``temporal_module.attend(query_key, memory)``: the (B, Cv, h, w) read-out of the
k frames held, one softmax per pixel jointly over their k * P * P logits, for any k. So the three
graphs serve every memory length and fill level (they do not depend on T: changing it exports
nothing), and the memory is the same FIFO of :class:`~lmanet_ros.models.memory.Memory` entries
as in the fill layout. Only models whose temporal module is a
:class:`~lmanet_ros.models.temporal.LocalMemoryModule` (LMANet on ERFNet or PSPNet) have it;
:func:`supports_split` says which.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lmanet_ros.models import FIFOModule, LocalMemoryModule, Segmenter, TemporalSegmenter

from .errors import BackendError
from .graphs import INPUT_NAME, LOGITS_NAME, TensorSpec

__all__ = ["LAYOUTS", "SPLIT_GRAPHS", "SplitSpec", "supports_split", "resolve_layout",
           "split_modules", "split_specs", "split_example_inputs"]

#: Graph layouts: ``fill`` (one self-contained graph per fill level), ``split`` (this module).
LAYOUTS = ("fill", "split")
#: The split layout's graphs, in the order a step runs them.
SPLIT_GRAPHS = ("encode", "decode", "decode_fused")


def supports_split(model: Segmenter) -> bool:
    """Whether ``model``'s step has the split layout: a temporal model whose module is a
    :class:`LocalMemoryModule` stepped as a FIFO."""
    if not isinstance(model, TemporalSegmenter):
        return False
    module = model.temporal_module
    return isinstance(module, LocalMemoryModule) and type(module).step is FIFOModule.step


def resolve_layout(model: Segmenter, layout: str) -> str:
    """``auto`` -> ``split`` where the model has it, else ``fill``; a named layout checked.

    Raises:
        BackendError: an unknown layout, or ``split`` for a model without it.
    """
    if layout == "auto":
        return "split" if supports_split(model) else "fill"
    if layout not in LAYOUTS:
        raise BackendError(f"graph layout must be auto or one of {', '.join(LAYOUTS)}; got "
                           f"{layout!r}")
    if layout == "split" and not supports_split(model):
        raise BackendError(f"model '{model.info.name}' has no split layout (only LMANet's local "
                           f"memory attention runs between graphs): use layout fill")
    return layout


class _Encode(nn.Module):
    """x (1, 3, H, W) in [0, 1] -> (features, keys_new, values_new, query_key, query_value)."""

    def __init__(self, model: TemporalSegmenter) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = self.model.encoder(self.model._prepare(x))
        module = self.model.temporal_module
        keys, values = module.memory_entry(features)
        query_key, query_value = module.kv_Q_r4(features)
        return features, keys, values, query_key, query_value


class _Decode(nn.Module):
    """features (1, C, h, w) -> logits (1, K, H, W): the single-frame path."""

    def __init__(self, model: TemporalSegmenter, input_size: tuple[int, int]) -> None:
        super().__init__()
        self.model = model
        self.input_size = input_size

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        height, width = self.input_size
        return self.model._decode(features)[:, :, :height, :width]


class _DecodeFused(_Decode):
    """(query_value, readout) -> logits (1, K, H, W): the fusion, then the decoder."""

    def forward(self, query_value: torch.Tensor, readout: torch.Tensor) -> torch.Tensor:
        return super().forward(self.model.temporal_module.memory_fusion(query_value, readout))


@dataclass(frozen=True)
class SplitSpec:
    """The inputs and outputs of one graph of the split layout."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def input_names(self) -> list[str]:
        return [spec.name for spec in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [spec.name for spec in self.outputs]


def split_modules(model: TemporalSegmenter, input_size: tuple[int, int]
                  ) -> dict[str, nn.Module]:
    """Graph name -> the module the graph is exported from."""
    return {"encode": _Encode(model), "decode": _Decode(model, input_size),
            "decode_fused": _DecodeFused(model, input_size)}


def split_example_inputs(model: TemporalSegmenter, input_size: tuple[int, int], seed: int = 0
                         ) -> dict[str, tuple[torch.Tensor, ...]]:
    """Graph name -> example inputs: a random frame, its features, and the read-out of the
    memory two other random frames leave (what the graphs see in a stream)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        memory = None
        for _ in range(2):
            _, memory = model.step(torch.rand(1, 3, *input_size, generator=generator), memory)
        x = torch.rand(1, 3, *input_size, generator=generator)
        features, _, _, query_key, query_value = _Encode(model)(x)
        readout = model.temporal_module.attend(query_key, memory)
    return {"encode": (x,), "decode": (features,), "decode_fused": (query_value, readout)}


def split_specs(model: TemporalSegmenter, input_size: tuple[int, int]
                ) -> dict[str, SplitSpec]:
    """Graph name -> its inputs and outputs (static shapes at ``input_size``), from one encoder
    pass on a blank frame (the read-out has the shape of the values it reads)."""
    height, width = input_size
    with torch.no_grad():
        features, keys, values, query_key, query_value = (
            tuple(t.shape) for t in _Encode(model)(torch.zeros(1, 3, height, width)))
    logits = TensorSpec(LOGITS_NAME, (1, model.info.num_classes, height, width))
    return {
        "encode": SplitSpec("encode", (TensorSpec(INPUT_NAME, (1, 3, height, width)),), (
            TensorSpec("features", features), TensorSpec("keys_new", keys),
            TensorSpec("values_new", values), TensorSpec("query_key", query_key),
            TensorSpec("query_value", query_value))),
        "decode": SplitSpec("decode", (TensorSpec("features", features),), (logits,)),
        "decode_fused": SplitSpec("decode_fused", (TensorSpec("query_value", query_value),
                                                   TensorSpec("readout", values)), (logits,)),
    }
