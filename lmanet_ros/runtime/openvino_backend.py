"""The ``openvino`` backend: a graph compiled by OpenVINO for its CPU plugin.

Configuration: ``INFERENCE_NUM_THREADS`` = threads, ``PERFORMANCE_HINT`` LATENCY with one
stream, and ``INFERENCE_PRECISION_HINT`` f32: on CPUs with bf16 support (AVX512-BF16, AMX)
OpenVINO otherwise computes in bf16 by default, which would not match PyTorch's float32.
"""
from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .errors import require
from .sessions import GraphSession

__all__ = ["Session"]


@functools.cache
def _core() -> Any:
    """One OpenVINO Core per process."""
    return require("openvino", "the openvino backend").Core()


class Session(GraphSession):
    """A graph file compiled by OpenVINO (CPU)."""

    def __init__(self, path: Path, threads: int) -> None:
        super().__init__()
        config = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32",
                  "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
        #: The OpenVINO CompiledModel.
        self.compiled = _core().compile_model(str(path), "CPU", config)
        self._request = self.compiled.create_infer_request()

    def _run(self, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        # share_outputs=False (the default): the results are copies the next call keeps intact.
        results = self._request.infer(dict(inputs), share_inputs=True)
        return [results[port] for port in self.compiled.outputs]
