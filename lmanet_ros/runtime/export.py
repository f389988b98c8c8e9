"""Export a network's step to ONNX: one verified graph per memory fill level, with metadata.

Why one graph per fill level (0..T) rather than one graph with a fill mask: LMANet's read-out is
ONE softmax per pixel jointly over the T * P * P logits of the frames held, so a memory of k < T
frames is a different computation, not T frames with some zeroed (a zero key still has logit 0
and takes part in the softmax). A mask graph would need a second, masked implementation of the
attention and of each temporal module's cold start (the empty memory runs the single-frame
path); per-fill graphs export the model's own ``step`` as it is, for every FIFO module (LMANet,
TMANet, STF) alike, and each graph is exact for its fill level: the steady state (fill T) pays
for nothing else. The price: T + 1 files, each with its own copy of the weights (ERFNet: 8 MB
each; PSPNet-50: about 200 MB each), and T + 1 exports to make them (about 10 s each for
LMANet-ERFNet on one core).

Exporter: ``torch.onnx.export(..., dynamo=True)`` (torch.export; needs ``onnxscript``), opset
:data:`OPSET`, under ``torch.no_grad``, with the local memory attention's ``torch`` path: the
compiled C++ kernel is a custom op no ONNX runtime has, and ``LMANET_ATTENTION=compiled`` would
refuse the trace, so ``$LMANET_ATTENTION`` is set to ``torch`` for the export's duration (the
process's environment: do not run PyTorch inference that depends on it in another thread
meanwhile). The legacy TorchScript exporter is
not used: under ``no_grad`` it silently drops the memory inputs (:mod:`.verify`). Every graph is
checked against PyTorch (:func:`~lmanet_ros.runtime.verify.verify_graph`) before it is written,
and written atomically (a temporary file in the same folder, then ``os.replace``).

The split layout (:mod:`.split`: LMANet's step as three graphs, the attention between them in
PyTorch's kernel) is exported by :func:`export_split_graphs`, each graph checked against its
module; the backends use it where the model has it (it is faster), ``lmanet export`` writes the
self-contained fill-level graphs (any runtime can stream them alone).

File names (:func:`graph_paths`): a single-frame model's graph is the path given; a temporal
model's graphs are ``<stem>.fill<k><suffix>`` beside it, k = 0..T.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from lmanet_ros.models import Segmenter
from lmanet_ros.models.attention import BACKEND_ENV
from lmanet_ros.models.checkpoint import normalisation_metadata

from .errors import require
from .graphs import GraphSpec, StepGraph, check_exportable, example_inputs, graph_specs
from .loading import Checkpoint, LoadedModel, load_torch_model
from .metadata import graph_metadata, split_graph_metadata
from .split import (SPLIT_GRAPHS, resolve_layout, split_example_inputs, split_modules,
                    split_specs)
from .verify import verify_graph, verify_module_graph

__all__ = ["OPSET", "graph_paths", "set_metadata", "export_graph", "export_graphs",
           "split_set_metadata", "export_split_graphs", "export_onnx"]

#: The ONNX opset of the exported graphs.
OPSET = 18


def graph_paths(path: str | Path, fills: Iterable[int]) -> dict[int, Path]:
    """Fill level -> file: ``path`` itself for a lone fill 0, else ``<stem>.fill<k><suffix>``."""
    path, fills = Path(path), list(fills)
    if fills == [0]:
        return {0: path}
    return {fill: path.with_name(f"{path.stem}.fill{fill}{path.suffix}") for fill in fills}


def set_metadata(loaded: LoadedModel, input_size: tuple[int, int]) -> dict[str, Any]:
    """The metadata every graph of the set carries (keys without prefix: :mod:`.metadata`)."""
    model = loaded.model
    memory_length = model.memory_length
    memory_type = (model.temporal_module.memory_type.__name__
                   if model.info.temporal else None)
    return {"model": model.info.name, "checkpoint_sha256": loaded.weights_id,
            "classes": list(loaded.classes.names),
            "palette": loaded.classes.colors.tolist(),
            "normalisation": normalisation_metadata(model), "input_size": list(input_size),
            "num_classes": model.info.num_classes, "memory_length": memory_length,
            "fill_levels": list(range(memory_length + 1)), "memory_type": memory_type,
            "output_delay_frames": int(model.output_delay_frames), "opset": OPSET,
            "torch": torch.__version__}


@contextlib.contextmanager
def _torch_attention() -> Iterator[None]:
    """``$LMANET_ATTENTION=torch`` while the block runs (the previous value restored)."""
    before = os.environ.get(BACKEND_ENV)
    os.environ[BACKEND_ENV] = "torch"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(BACKEND_ENV, None)
        else:
            os.environ[BACKEND_ENV] = before


def _dynamo_export(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...],
                   input_names: list[str], output_names: list[str]) -> Any:
    """The ONNX ModelProto of ``module`` traced on ``inputs``."""
    require("onnxscript", "the ONNX exporter (torch.onnx.export(dynamo=True))")
    require("onnx", "the ONNX exporter")
    with torch.no_grad(), _torch_attention():
        program = torch.onnx.export(module, inputs, dynamo=True, opset_version=OPSET,
                                    input_names=input_names, output_names=output_names,
                                    verbose=False)
    return program.model_proto


def _serialise(proto: Any, metadata: Mapping[str, str]) -> bytes:
    """``proto`` with ``metadata`` added to its ``metadata_props``, serialised."""
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto.SerializeToString()


def _write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.",
                                         suffix=".tmp", delete=False)
    try:
        with handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


def export_graph(model: Segmenter, spec: GraphSpec, path: str | Path, *,
                 input_size: tuple[int, int], metadata: Mapping[str, Any]) -> Path:
    """Export, verify and write the graph of ``spec.fill`` memory frames; returns ``path``.

    Args:
        model: the network in eval mode, its memory length set (T >= ``spec.fill``).
        spec: the graph's inputs and outputs (:func:`~lmanet_ros.runtime.graphs.graph_specs`).
        path: the file to write (atomically).
        input_size: (height, width) in pixels of the graph's image input.
        metadata: the set's metadata (:func:`set_metadata`).

    Raises:
        ExportError: the graph does not compute the step; BackendUnavailable: onnx,
        onnxscript or onnxruntime missing.
    """
    inputs = example_inputs(model, spec.fill, input_size)
    proto = _dynamo_export(StepGraph(model, spec.fill), inputs, spec.input_names,
                           spec.output_names)
    data = _serialise(proto, graph_metadata(metadata, spec))
    verify_graph(data, model, spec, input_size)
    _write_atomically(Path(path), data)
    return Path(path)


def export_graphs(loaded: LoadedModel, path: str | Path, input_size: tuple[int, int], *,
                  only: Iterable[int] | None = None) -> dict[int, Path]:
    """Export the graphs of the fill levels 0..T of ``loaded.model`` (``only``: just these),
    named by :func:`graph_paths`; returns fill level -> file written."""
    check_exportable(loaded.model)
    specs = graph_specs(loaded.model, input_size)
    metadata = set_metadata(loaded, input_size)
    paths = graph_paths(path, specs)
    wanted = set(specs if only is None else only)
    return {fill: export_graph(loaded.model, specs[fill], target, input_size=input_size,
                               metadata=metadata)
            for fill, target in paths.items() if fill in wanted}


def split_set_metadata(loaded: LoadedModel, input_size: tuple[int, int]) -> dict[str, Any]:
    """What every graph of a split set carries: :func:`set_metadata` without the memory length
    and fill levels (the split graphs serve any), with the layout and its graphs."""
    entries = {key: value for key, value in set_metadata(loaded, input_size).items()
               if key not in ("memory_length", "fill_levels")}
    return {**entries, "layout": "split", "graphs": list(SPLIT_GRAPHS)}


def export_split_graphs(loaded: LoadedModel, folder: str | Path, input_size: tuple[int, int],
                        *, only: Iterable[str] | None = None) -> dict[str, Path]:
    """Export, verify and write the graphs of the split layout (:mod:`.split`) of
    ``loaded.model`` as ``<folder>/<graph>.onnx`` (``only``: just these); returns graph name ->
    file written.

    Raises:
        BackendError: a model without the split layout; ExportError: a graph that does not
        compute its module (:func:`~lmanet_ros.runtime.verify.verify_module_graph`);
        BackendUnavailable: onnx, onnxscript or onnxruntime missing.
    """
    model = loaded.model
    resolve_layout(model, "split")
    specs, modules = split_specs(model, input_size), split_modules(model, input_size)
    first = split_example_inputs(model, input_size, seed=0)
    second = split_example_inputs(model, input_size, seed=1)
    metadata = split_set_metadata(loaded, input_size)
    written = {}
    for name in SPLIT_GRAPHS if only is None else only:
        spec = specs[name]
        proto = _dynamo_export(modules[name], first[name], spec.input_names, spec.output_names)
        data = _serialise(proto, split_graph_metadata(metadata, spec))
        verify_module_graph(data, modules[name], spec.input_names, spec.output_names,
                            first[name], second[name], f"the split graph '{name}'")
        path = Path(folder) / f"{name}.onnx"
        _write_atomically(path, data)
        written[name] = path
    return written


def export_onnx(model_name: str, checkpoint: Checkpoint, path: str | Path,
                input_size: tuple[int, int] | None = None,
                memory_length: int | None = None) -> list[Path]:
    """Export ``model_name`` with ``checkpoint``'s weights as ONNX graphs of its step.

    Args:
        model_name: a registry name (``lmanet_erfnet``).
        checkpoint: a weights file, a tag (``demo``), a state_dict mapping or None (random).
        path: where the graphs go (:func:`graph_paths`: ``path`` itself for a single-frame
            model, ``<stem>.fill<k><suffix>`` for fill levels 0..T of a temporal one).
        input_size: (height, width) in pixels; None: the size the weights were trained at.
        memory_length: T; None: the checkpoint's metadata, else the model's own.

    Returns:
        The files written, by fill level.

    Raises:
        BackendError: no input size known, or a model whose memory cannot be exported;
        ExportError, BackendUnavailable: see :func:`export_graph`; the loader's errors.
    """
    loaded = load_torch_model(model_name, checkpoint)
    size = loaded.fixed_input_size(input_size, "an ONNX export")
    loaded.apply_memory_length(memory_length)
    return list(export_graphs(loaded, path, size).values())
