"""One entry point for the pipeline: the model of a backend, from a model name and a checkpoint.

``load_model(name, checkpoint, backend="torch" | "onnxruntime" | "openvino", ...)`` returns a
:class:`~lmanet_ros.runtime.loading.LoadedModel` whose ``model`` is what
:class:`~lmanet_ros.pipeline.SegmentationPipeline` wraps: the PyTorch network, or a
:class:`~lmanet_ros.runtime.model.RuntimeModel` running graphs exported from it (cached by
:class:`~lmanet_ros.runtime.cache.GraphCache`). A graph backend needs a fixed input size (given,
or the one the weights were trained at) and its package; either missing is a
:class:`~lmanet_ros.runtime.errors.BackendError` naming the fix, never a fall-back to PyTorch.

``backend="auto"`` (the node's default) is a choice made in the open, not a fall-back: the first
installed backend of :data:`AUTO_PREFERENCE` (the fastest measured on a CPU) where a graph
backend can run these weights as asked, else ``torch``; :func:`auto_backend` says which and why,
and the pipeline keeps the reason (``backend_reason``) for the start-up log.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from lmanet_ros.threads import resolve_cpu_threads

from .cache import GraphCache
from .errors import BackendError, require
from .graphs import check_exportable
from .loading import Checkpoint, LoadedModel, load_torch_model, with_model
from .model import RuntimeModel
from .sessions import BACKENDS, GRAPH_BACKENDS

__all__ = ["AUTO", "AUTO_PREFERENCE", "BACKEND_CHOICES", "auto_backend", "load_model",
           "build_backend_model", "check_backend"]

#: The backend value that lets the package choose (:func:`auto_backend`).
AUTO = "auto"
#: Every value a ``backend`` setting takes.
BACKEND_CHOICES = (AUTO, *BACKENDS)
#: The graph backends ``auto`` takes on the CPU, fastest first as measured for LMANet-ERFNet
#: (``benchmarks/eval_backends.py --rounds 3``: p50 of ``lmanet eval``, demo lmanet_erfnet at
#: 256x512, one thread: onnxruntime 0.67x torch with the compiled attention, openvino 0.70x;
#: the PSPNet models were not timed on a graph backend).
AUTO_PREFERENCE = ("onnxruntime", "openvino")

#: Graph backend -> (module to import, pip package) checked before anything is exported.
_PACKAGES = {"onnxruntime": ("onnxruntime", "onnxruntime"), "openvino": ("openvino", "openvino")}


def check_backend(backend: str) -> None:
    """Raise BackendError for an unknown backend name, BackendUnavailable when its package is
    not installed (``torch`` is always there; ``auto`` chooses among the installed ones)."""
    if backend == AUTO:
        return
    if backend not in BACKENDS:
        raise BackendError(f"backend must be one of {', '.join(BACKEND_CHOICES)}; got "
                           f"{backend!r}")
    if backend in _PACKAGES:
        module, package = _PACKAGES[backend]
        require(module, f"the {backend} backend", package)


def _installed(backend: str) -> bool:
    module, _ = _PACKAGES[backend]
    try:
        require(module, f"the {backend} backend")
    except BackendError:
        return False
    return True


def auto_backend(loaded: LoadedModel, *, device_type: str, precision: str,
                 input_size: tuple[int, int] | None) -> tuple[str, str]:
    """What ``backend="auto"`` runs ``loaded`` with, and why: ``(backend, reason in words)``.

    A graph backend (the first installed of :data:`AUTO_PREFERENCE`) when the device is the CPU,
    the precision fp32, the model's memory has a graph form, the weights are a checkpoint (random
    weights would be exported again at every start) and the input size is fixed (``input_size``
    or the checkpoint's trained size); otherwise ``torch``.
    """
    name = loaded.model.info.name
    if device_type != "cpu":
        return "torch", f"auto: torch on {device_type} (the graph backends run on the CPU)"
    if precision != "fp32":
        return "torch", f"auto: torch for {precision} (the graph backends compute in fp32)"
    try:
        check_exportable(loaded.model)
    except BackendError:
        return "torch", f"auto: torch ({name}'s memory has no graph form)"
    if loaded.report is None:
        return "torch", "auto: torch for random weights (graphs are made from a checkpoint)"
    try:
        loaded.fixed_input_size(input_size, "auto")
    except BackendError:
        return "torch", ("auto: torch at each frame's own size (the graph backends need a fixed "
                         "input size: input_height/input_width or a trained size)")
    for backend in AUTO_PREFERENCE:
        if _installed(backend):
            return backend, (f"auto: {backend}, the fastest installed backend on the CPU (a "
                             f"fixed input size: change it with a restart, or set backend "
                             f"torch)")
    return "torch", f"auto: torch (none of {', '.join(AUTO_PREFERENCE)} is installed)"


def build_backend_model(model_name: str, checkpoint: Checkpoint, *, backend: str,
                        input_size: tuple[int, int] | None = None,
                        memory_length: int | None = None, num_threads: int = 0,
                        cache_dir: str | Path | None = None, layout: str = "auto"
                        ) -> LoadedModel:
    """``model_name`` with ``checkpoint``'s weights as a graph backend's model.

    Args:
        model_name: a registry name (``lmanet_erfnet``).
        checkpoint: a weights file, a tag (``demo``), a state_dict mapping or None (random).
        backend: ``onnxruntime`` or ``openvino``.
        input_size: (height, width) in pixels; None or (0, 0): the trained size of the
            checkpoint's metadata (an error when it states none).
        memory_length: T; None or 0: the metadata's, else the model's own.
        num_threads: the runtime's CPU threads; 0: :func:`~lmanet_ros.threads.
            default_cpu_threads`.
        cache_dir: the graph cache's folder; None: :func:`~lmanet_ros.runtime.cache.
            default_cache_dir`.
        layout: the graphs, ``auto`` (``split`` where the model has it: LMANet, faster),
            ``fill`` or ``split`` (:mod:`.split`).

    Raises:
        BackendError: unknown backend or layout, no input size, a model whose memory the
        graphs cannot carry; BackendUnavailable: the backend's (or, on a cache miss, the
        exporter's) package is missing; ExportError; the loader's errors.
    """
    return _graph_model(load_torch_model(model_name, checkpoint), backend=backend,
                        input_size=input_size, memory_length=memory_length,
                        num_threads=num_threads, cache_dir=cache_dir, layout=layout)


def _graph_model(loaded: LoadedModel, *, backend: str, input_size: tuple[int, int] | None,
                 memory_length: int | None, num_threads: int, cache_dir: str | Path | None,
                 layout: str) -> LoadedModel:
    """``loaded`` (the PyTorch model) as a graph backend's model: see
    :func:`build_backend_model`."""
    if backend not in GRAPH_BACKENDS:
        raise BackendError(f"build_backend_model runs the graph backends "
                           f"{', '.join(GRAPH_BACKENDS)}; got {backend!r}")
    check_backend(backend)
    threads = resolve_cpu_threads(num_threads)
    check_exportable(loaded.model)
    size = loaded.fixed_input_size(input_size, f"the {backend} backend")
    built = loaded.model.info  # its own T, before the one in force is set
    loaded.apply_memory_length(memory_length)
    runtime = RuntimeModel(loaded, backend=backend, input_size=size, threads=threads,
                           cache=GraphCache(cache_dir), built_info=built, layout=layout)
    return with_model(loaded, runtime)


def load_model(model_name: str, checkpoint: Checkpoint, *, backend: str = "torch",
               input_size: tuple[int, int] | None = None, memory_length: int | None = None,
               num_threads: int = 0, cache_dir: str | Path | None = None,
               layout: str = "auto", device_type: str = "cpu", precision: str = "fp32"
               ) -> LoadedModel:
    """The model :class:`~lmanet_ros.pipeline.SegmentationPipeline` wraps, for ``backend``.

    ``torch``: the PyTorch network with the checkpoint loaded (``input_size``,
    ``memory_length``, ``num_threads`` are the pipeline's business then, ``layout`` unused); a
    graph backend: :func:`build_backend_model`; ``auto``: the backend :func:`auto_backend`
    chooses for ``device_type`` and ``precision`` (the LoadedModel's ``backend_reason`` says
    which and why).
    """
    check_backend(backend)
    loaded = load_torch_model(model_name, checkpoint)
    reason = ""
    if backend == AUTO:
        backend, reason = auto_backend(loaded, device_type=device_type, precision=precision,
                                       input_size=input_size)
    if backend == "torch":
        return dataclasses.replace(loaded, backend_reason=reason)
    graph = _graph_model(loaded, backend=backend, input_size=input_size,
                         memory_length=memory_length, num_threads=num_threads,
                         cache_dir=cache_dir, layout=layout)
    return dataclasses.replace(graph, backend_reason=reason)
