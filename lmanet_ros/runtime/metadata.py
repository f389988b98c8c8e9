"""What an exported graph says about itself: the ONNX ``metadata_props`` it carries.

Every key starts with ``lmanet.``; every value is JSON (read back with ``json.loads``, never
evaluated):

==============================  ==========================================================
``lmanet.format``               graph convention version (:data:`GRAPH_FORMAT`)
``lmanet.model``                registry name of the network
``lmanet.checkpoint_sha256``    sha256 of the weights file, or ``state:<sha256>`` of the
                                state_dict's tensors when the weights were not a file
``lmanet.classes``              K class names of the first K logits
``lmanet.palette``              K (r, g, b) colours, 0..255
``lmanet.normalisation``        ``{"mean", "std"}`` the graph applies to x itself, or null
``lmanet.input``                ``{"name", "shape", "range": [0, 1], "layout": "NCHW RGB"}``
``lmanet.input_size``           [H, W] in pixels: the fixed size the graph takes
``lmanet.num_classes``          C, the logits' channels (K named + void)
``lmanet.memory_length``        T, the memory length the graphs were exported for
``lmanet.fill_level``           k, the memory frames this graph reads
``lmanet.fill_levels``          [0, ..., T]: the graphs of the set, one per fill level
``lmanet.memory_type``          the memory's type (``Memory``, ``FeatureMemory``, null)
``lmanet.memory_inputs``        [{"name", "shape"}]: the k frames of each column, oldest first
``lmanet.memory_outputs``       [{"name", "shape"}]: the new frame's entry, one per column
``lmanet.logits``               ``{"name", "shape"}`` of the logits output
``lmanet.output_delay_frames``  0 (causal), 1 (logits of the newest frame the memory held)
``lmanet.opset``, ``lmanet.torch``  the ONNX opset and the torch version that exported it
==============================  ==========================================================

A graph of the split layout (:mod:`.split`) has the set's entries but ``memory_length`` and
the fill levels (it serves any), and instead: ``lmanet.layout`` (``"split"``), ``lmanet.graphs``
(the set's graph names), ``lmanet.graph`` (this one's), ``lmanet.inputs`` and
``lmanet.outputs`` (``[{"name", "shape"}]``).
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import require
from .graphs import GraphSpec

if TYPE_CHECKING:
    from .split import SplitSpec

__all__ = ["GRAPH_FORMAT", "PREFIX", "graph_metadata", "split_graph_metadata", "read_metadata"]

#: Version of the graph convention (inputs, outputs, metadata): part of the cache key.
GRAPH_FORMAT = 1
#: Prefix of every metadata key.
PREFIX = "lmanet."


def graph_metadata(set_metadata: Mapping[str, Any], spec: GraphSpec) -> dict[str, str]:
    """The ``metadata_props`` of one graph: the set's entries and this fill level's.

    Args:
        set_metadata: what every graph of the set shares (model, checkpoint_sha256, classes,
            palette, normalisation, input_size, memory_length, ...), keys without the prefix.
        spec: the graph's inputs and outputs.
    """
    entries = {**set_metadata, "format": GRAPH_FORMAT, "fill_level": spec.fill,
               "input": {**spec.image.to_json(), "range": [0, 1], "layout": "NCHW RGB"},
               "memory_inputs": [tensor.to_json() for tensor in spec.memory_inputs],
               "memory_outputs": [tensor.to_json() for tensor in spec.memory_outputs],
               "logits": spec.logits.to_json()}
    return _props(entries)


def split_graph_metadata(set_metadata: Mapping[str, Any], spec: SplitSpec) -> dict[str, str]:
    """The ``metadata_props`` of one graph of the split layout: the set's entries and this
    graph's name, inputs and outputs."""
    entries = {**set_metadata, "format": GRAPH_FORMAT, "graph": spec.name,
               "inputs": [tensor.to_json() for tensor in spec.inputs],
               "outputs": [tensor.to_json() for tensor in spec.outputs]}
    return _props(entries)


def _props(entries: Mapping[str, Any]) -> dict[str, str]:
    """``lmanet.<key>`` -> JSON of the value."""
    return {PREFIX + key: json.dumps(value) for key, value in entries.items()}


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The ``lmanet.*`` metadata of an ONNX file, prefix removed, values decoded from JSON.

    Raises:
        BackendUnavailable: the ``onnx`` package is missing.
        ValueError: a value that is not JSON.
    """
    onnx = require("onnx", "reading an ONNX graph's metadata")
    proto = onnx.load(str(path), load_external_data=False)
    return {entry.key[len(PREFIX):]: json.loads(entry.value)
            for entry in proto.metadata_props if entry.key.startswith(PREFIX)}
