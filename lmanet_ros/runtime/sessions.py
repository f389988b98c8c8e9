"""A compiled graph of one inference runtime, behind one small interface.

:class:`GraphSession` is what :class:`~lmanet_ros.runtime.model.RuntimeModel` calls: ``run``
takes the graph's inputs by name (float32 numpy arrays) and returns its outputs in the graph's
order, and counts the calls that reached the runtime (:attr:`GraphSession.runs`: incremented
only after the runtime's own run call returned). :func:`open_session` opens a graph file with a
named backend; the backend's package is imported then, and its absence is a
:class:`~lmanet_ros.runtime.errors.BackendUnavailable`, never a fall-back.
"""
from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .errors import BackendError, require

__all__ = ["BACKENDS", "GRAPH_BACKENDS", "GraphSession", "backend_version", "open_session"]

#: Every inference backend: PyTorch itself and the graph runtimes.
BACKENDS = ("torch", "onnxruntime", "openvino")
#: Graph backend -> module of this package that implements it (a ``Session`` class).
_MODULES = {"onnxruntime": "ort_backend", "openvino": "openvino_backend"}
#: The backends that run exported graphs.
GRAPH_BACKENDS = tuple(_MODULES)
#: Backend -> the module whose ``__version__`` is the backend's version.
_VERSION_MODULES = {"torch": "torch", "onnxruntime": "onnxruntime", "openvino": "openvino"}


def backend_version(backend: str) -> str:
    """The installed version of ``backend``'s package (``torch.__version__`` for torch), for
    reports and diagnostics.

    Raises:
        BackendError: an unknown backend name; BackendUnavailable: its package is missing.
    """
    if backend not in _VERSION_MODULES:
        raise BackendError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    module = require(_VERSION_MODULES[backend], f"the {backend} backend")
    return str(getattr(module, "__version__", "unknown"))


class GraphSession(ABC):
    """One graph compiled by a runtime for the CPU, run synchronously."""

    def __init__(self) -> None:
        #: Calls of the runtime's run that returned (a stand-in that never calls it counts 0).
        self.runs = 0

    def run(self, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Run the graph: inputs by name -> outputs in the graph's order (arrays the caller
        owns: the next run does not overwrite them)."""
        outputs = self._run(inputs)
        self.runs += 1
        return outputs

    @abstractmethod
    def _run(self, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """The runtime's own call."""


def open_session(backend: str, path: str | Path, threads: int) -> GraphSession:
    """Compile the graph file ``path`` with ``backend`` for ``threads`` CPU threads.

    Raises:
        BackendError: an unknown backend name; BackendUnavailable: its package is missing.
    """
    if backend not in _MODULES:
        raise BackendError(f"no graph backend '{backend}'; graph backends: "
                           f"{', '.join(GRAPH_BACKENDS)}")
    module = importlib.import_module(f"{__package__}.{_MODULES[backend]}")
    return module.Session(Path(path), threads)
