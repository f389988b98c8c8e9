"""The runtime package's errors, and the one place that imports a backend's optional package."""
from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["BackendError", "BackendUnavailable", "ExportError", "require"]


class BackendError(RuntimeError):
    """A backend model cannot be built or run as asked (no fixed input size, a model whose
    memory the graphs cannot carry, a precision or device the backend does not run)."""


class BackendUnavailable(BackendError):
    """The package a backend (or the exporter) needs is not installed: never a silent fall-back
    to another backend."""


class ExportError(BackendError):
    """An exported graph does not compute the network's step (checked against PyTorch)."""


def require(module: str, purpose: str, package: str | None = None) -> ModuleType:
    """Import ``module`` or raise :class:`BackendUnavailable` naming ``purpose`` and the fix.

    Args:
        module: the module to import (``onnxruntime``, ``openvino``, ``onnxscript``).
        purpose: what needs it, for the message (``the onnxruntime backend``).
        package: the pip package that provides it (default: ``module``).
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendUnavailable(f"{purpose} needs the '{package or module}' package, which is "
                                 f"not installed ({exc}): pip install {package or module}"
                                 ) from exc
