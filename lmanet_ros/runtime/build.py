"""One entry point for the pipeline: the model of a backend, from a model name and a checkpoint.

``load_model(name, checkpoint, backend="torch" | "onnxruntime" | "openvino", ...)`` returns a
:class:`~lmanet_ros.runtime.loading.LoadedModel` whose ``model`` is what
:class:`~lmanet_ros.pipeline.SegmentationPipeline` wraps: the PyTorch network, or a
:class:`~lmanet_ros.runtime.model.RuntimeModel` running graphs exported from it (cached by
:class:`~lmanet_ros.runtime.cache.GraphCache`). A graph backend needs a fixed input size (given,
or the one the weights were trained at) and its package; either missing is a
:class:`~lmanet_ros.runtime.errors.BackendError` naming the fix, never a fall-back to PyTorch.
"""
from __future__ import annotations

from pathlib import Path

from lmanet_ros.threads import resolve_cpu_threads

from .cache import GraphCache
from .errors import BackendError, require
from .graphs import check_exportable
from .loading import Checkpoint, LoadedModel, load_torch_model, with_model
from .model import RuntimeModel
from .sessions import BACKENDS, GRAPH_BACKENDS

__all__ = ["load_model", "build_backend_model", "check_backend"]

#: Graph backend -> (module to import, pip package) checked before anything is exported.
_PACKAGES = {"onnxruntime": ("onnxruntime", "onnxruntime"), "openvino": ("openvino", "openvino")}


def check_backend(backend: str) -> None:
    """Raise BackendError for an unknown backend name, BackendUnavailable when its package is
    not installed (``torch`` is always there)."""
    if backend not in BACKENDS:
        raise BackendError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if backend in _PACKAGES:
        module, package = _PACKAGES[backend]
        require(module, f"the {backend} backend", package)


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
    if backend not in GRAPH_BACKENDS:
        raise BackendError(f"build_backend_model runs the graph backends "
                           f"{', '.join(GRAPH_BACKENDS)}; got {backend!r}")
    check_backend(backend)
    threads = resolve_cpu_threads(num_threads)
    loaded = load_torch_model(model_name, checkpoint)
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
               layout: str = "auto") -> LoadedModel:
    """The model :class:`~lmanet_ros.pipeline.SegmentationPipeline` wraps, for ``backend``.

    ``torch``: the PyTorch network with the checkpoint loaded (``input_size``,
    ``memory_length``, ``num_threads`` are the pipeline's business then, ``layout`` unused); a
    graph backend: :func:`build_backend_model`.
    """
    check_backend(backend)
    if backend == "torch":
        return load_torch_model(model_name, checkpoint)
    return build_backend_model(model_name, checkpoint, backend=backend, input_size=input_size,
                               memory_length=memory_length, num_threads=num_threads,
                               cache_dir=cache_dir, layout=layout)
