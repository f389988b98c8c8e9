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

The graphs of the split layout (:mod:`.split`) are checked the same way by
:func:`verify_module_graph`, each against the module it was exported from, every input varied on
its own.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from lmanet_ros.models import Segmenter

from .errors import ExportError, require
from .graphs import GraphSpec, StepGraph, example_inputs

__all__ = ["TOLERANCE", "verify_graph", "verify_module_graph", "max_error"]

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


def _session(graph: bytes):
    """An onnxruntime session of the serialised graph, one thread."""
    ort = require("onnxruntime", "checking an exported graph")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


def _check_inputs(session, expected: Sequence[str], what: str, missing_means: str) -> None:
    """Raise ExportError unless the session's inputs are exactly ``expected``."""
    names = [value.name for value in session.get_inputs()]
    missing = sorted(set(expected) - set(names))
    if missing:
        raise ExportError(f"{what} lacks the inputs {missing} (the exporter dropped them: "
                          f"{missing_means})")
    if sorted(names) != sorted(expected):
        raise ExportError(f"{what} has inputs {names}, expected {list(expected)}")


def _check_close(what: str, names: Sequence[str], expected: Sequence[torch.Tensor],
                 got: Sequence[np.ndarray]) -> None:
    """Raise ExportError unless every output is within :data:`TOLERANCE` of PyTorch's."""
    for name, reference, value in zip(names, expected, got):
        error = max_error(reference, value)
        if not error <= TOLERANCE:
            raise ExportError(f"output '{name}' of {what} is off PyTorch's by {error:.3g} "
                              f"(relative; at most {TOLERANCE:g})")


def verify_graph(graph: bytes, model: Segmenter, spec: GraphSpec, input_size: tuple[int, int]
                 ) -> None:
    """Raise ExportError unless ``graph`` (a serialised ONNX model) computes ``model``'s step
    for ``spec.fill`` memory frames at ``input_size`` (see the module docstring).

    Raises:
        ExportError: inputs missing or extra, outputs off PyTorch's, or a memory that does not
            change the logits; BackendUnavailable: onnxruntime is not installed.
    """
    session = _session(graph)
    what = f"the graph of fill level {spec.fill}"
    _check_inputs(session, spec.input_names, what,
                  "the memory would be baked in as constants")
    first = example_inputs(model, spec.fill, input_size, seed=0)
    second = (first[0], *example_inputs(model, spec.fill, input_size, seed=1)[1:])
    runs = []
    for inputs in (first, second) if spec.fill else (first,):
        feeds = {name: tensor.numpy() for name, tensor in zip(spec.input_names, inputs)}
        runs.append((_run_torch(model, spec.fill, inputs), session.run(spec.output_names, feeds)))
    if len(runs) == 2:
        (torch_a, graph_a), (torch_b, graph_b) = runs
        if not torch.equal(torch_a[0], torch_b[0]) and np.array_equal(graph_a[0], graph_b[0]):
            raise ExportError(f"the memory inputs of {what} do not change the graph's logits "
                              f"(PyTorch's change): the graph ignores its memory (baked in as "
                              f"constants)")
    for expected, got in runs:
        _check_close(what, spec.output_names, expected, got)


def verify_module_graph(graph: bytes, module: nn.Module, input_names: Sequence[str],
                        output_names: Sequence[str], first: Sequence[torch.Tensor],
                        second: Sequence[torch.Tensor], what: str) -> None:
    """Raise ExportError unless ``graph`` computes ``module`` (a graph of the split layout):
    its inputs are ``input_names``; on the example inputs ``first``, and on ``first`` with any
    one input taken from ``second``, every output is within :data:`TOLERANCE` of the module's;
    and an input that changes the module's first output changes the graph's (an input the
    tracer baked in as a constant is caught).

    Raises:
        ExportError: see above; BackendUnavailable: onnxruntime is not installed.
    """
    session = _session(graph)
    _check_inputs(session, input_names, what, "they would be baked in as constants")
    variants = [list(first)] + [[*first[:i], second[i], *first[i + 1:]]
                                for i in range(len(first))]
    runs = []
    for inputs in variants:
        with torch.no_grad():
            expected = module(*inputs)
        expected = expected if isinstance(expected, tuple) else (expected,)
        feeds = {name: tensor.numpy() for name, tensor in zip(input_names, inputs)}
        got = session.run(list(output_names), feeds)
        _check_close(what, output_names, expected, got)
        runs.append((expected[0], got[0]))
    for name, (expected, got) in zip(input_names, runs[1:]):
        if not torch.equal(expected, runs[0][0]) and np.array_equal(got, runs[0][1]):
            raise ExportError(f"input '{name}' of {what} does not change its output "
                              f"'{output_names[0]}' (PyTorch's changes): the graph ignores it "
                              f"(baked in as a constant)")
