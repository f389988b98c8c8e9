"""Check an exported graph against PyTorch before it is written: memory inputs there and used.

A tracer can export a graph that looks right and is not: the legacy TorchScript exporter
(``torch.onnx.export(..., dynamo=False)``) under ``torch.no_grad`` does not record the
``torch.bmm(..., out=buffer)`` of the tiled attention (:mod:`lmanet_ros.models.attention`), so
it drops the memory inputs and bakes the attention read-out of the example memory in as a
constant. :func:`verify_graph` refuses such graphs:

1. every input the graph convention names (:class:`~lmanet_ros.runtime.graphs.GraphSpec`) is
   an input of the graph, and nothing else is;
2. onnxruntime runs the graph on the example inputs and on the same frame with another memory;
   when PyTorch's logits change with the memory and the graph's do not, the graph ignores its
   memory; and every output must be within :data:`TOLERANCE` (relative to the output's largest
   magnitude, at least 1) of PyTorch's on both.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from lmanet_ros.models import Segmenter

from .errors import ExportError, require
from .graphs import GraphSpec, StepGraph, example_inputs

__all__ = ["TOLERANCE", "verify_graph", "max_error"]

#: Largest error of an exported graph's outputs, relative to max(1, largest |PyTorch output|).
TOLERANCE = 1e-4


def max_error(reference: torch.Tensor, value: np.ndarray | torch.Tensor) -> float:
    """max |reference - value| / max(1, max |reference|)."""
    value = torch.as_tensor(value)
    scale = max(1.0, float(reference.abs().max()))
    return float((reference - value).abs().max()) / scale


def _run_torch(model: Segmenter, fill: int, inputs: Sequence[torch.Tensor]
               ) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        return StepGraph(model, fill)(*inputs)


def verify_graph(graph: bytes, model: Segmenter, spec: GraphSpec, input_size: tuple[int, int]
                 ) -> None:
    """Raise ExportError unless ``graph`` (a serialised ONNX model) computes ``model``'s step
    for ``spec.fill`` memory frames at ``input_size`` (see the module docstring).

    Raises:
        ExportError: inputs missing or extra, outputs off PyTorch's, or a memory that does not
            change the logits; BackendUnavailable: onnxruntime is not installed.
    """
    ort = require("onnxruntime", "checking an exported graph")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    names = [value.name for value in session.get_inputs()]
    missing = sorted(set(spec.input_names) - set(names))
    if missing:
        raise ExportError(f"the graph of fill level {spec.fill} lacks the inputs {missing} (the "
                          f"exporter dropped them: the memory would be baked in as constants)")
    if sorted(names) != sorted(spec.input_names):
        raise ExportError(f"the graph of fill level {spec.fill} has inputs {names}, expected "
                          f"{spec.input_names}")
    first = example_inputs(model, spec.fill, input_size, seed=0)
    second = (first[0], *example_inputs(model, spec.fill, input_size, seed=1)[1:])
    runs = []
    for inputs in (first, second) if spec.fill else (first,):
        feeds = {name: tensor.numpy() for name, tensor in zip(spec.input_names, inputs)}
        runs.append((_run_torch(model, spec.fill, inputs), session.run(spec.output_names, feeds)))
    if len(runs) == 2:
        (torch_a, graph_a), (torch_b, graph_b) = runs
        if not torch.equal(torch_a[0], torch_b[0]) and np.array_equal(graph_a[0], graph_b[0]):
            raise ExportError(f"the memory inputs of the graph of fill level {spec.fill} do not "
                              f"change the graph's logits (PyTorch's change): the graph ignores "
                              f"its memory (baked in as constants)")
    for expected, got in runs:
        for name, reference, value in zip(spec.output_names, expected, got):
            error = max_error(reference, value)
            if not error <= TOLERANCE:
                raise ExportError(f"output '{name}' of the graph of fill level {spec.fill} is "
                                  f"off PyTorch's by {error:.3g} (relative; at most "
                                  f"{TOLERANCE:g})")
