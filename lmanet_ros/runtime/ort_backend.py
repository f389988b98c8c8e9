"""The ``onnxruntime`` backend: a graph as an onnxruntime InferenceSession on the CPU.

Session options: ``threads`` intra-op threads, one inter-op thread, sequential execution, every
graph optimisation (``ORT_ENABLE_ALL``), the CPU execution provider only.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .errors import require
from .sessions import GraphSession

__all__ = ["Session"]


class Session(GraphSession):
    """A graph file compiled by onnxruntime."""

    def __init__(self, path: Path, threads: int) -> None:
        super().__init__()
        ort = require("onnxruntime", "the onnxruntime backend")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        #: The onnxruntime InferenceSession.
        self.session = ort.InferenceSession(str(path), options,
                                            providers=["CPUExecutionProvider"])
        self._outputs = [output.name for output in self.session.get_outputs()]

    def _run(self, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(self._outputs, dict(inputs))
