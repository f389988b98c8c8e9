"""A network run by exported graphs, as a drop-in for the PyTorch model in the pipeline.

:class:`RuntimeModel` has what :class:`~lmanet_ros.pipeline.SegmentationPipeline` uses of a
model: ``info``, ``step(x, memory, update_memory=)``, a settable ``memory_length``,
``output_delay_frames``, ``to(device, dtype)`` and ``eval()``. Its memory is the PyTorch model's
own memory type holding CPU float32 tensors (LMANet: :class:`~lmanet_ros.models.memory.Memory`),
with the same semantics, so batching (``cat_batch``/``split_batch``), statistics and resets work
unchanged and a memory made by one can be stepped by the other.

A step: the memory is truncated to the newest T frames; the graph of its fill level k runs (one
run per stream of the batch: the graphs are batch 1); the new entry is appended and frames beyond
T are dropped, as :meth:`~lmanet_ros.models.temporal.FIFOModule.step` does. Only float32 on the
CPU, only the input size the graphs were exported for.
"""
from __future__ import annotations

import numpy as np
import torch

from lmanet_ros.models import FrameFIFO, ModelInfo, Segmenter

from .cache import CachedGraphs, GraphCache
from .errors import BackendError
from .graphs import GraphSpec, graph_specs, memory_columns
from .loading import LoadedModel
from .sessions import GraphSession, backend_version, open_session

__all__ = ["RuntimeModel"]


def _array(tensor: torch.Tensor) -> np.ndarray:
    """A float32 CPU tensor as a C-contiguous numpy array (no copy when it is one already)."""
    return np.ascontiguousarray(tensor.detach().numpy())


class RuntimeModel:
    """``loaded.model``'s step run by ``backend`` on graphs from ``cache`` (exported on a miss).

    Args:
        loaded: the PyTorch model with its weights (kept: another memory length needs graphs
            exported from it).
        backend: a graph backend (``onnxruntime``, ``openvino``).
        input_size: (height, width) in pixels the graphs take.
        threads: CPU threads of the runtime.
        cache: where the graphs are kept.
        built_info: the PyTorch model's info as built, before the memory length in force was
            set on it (None: its info now); see :attr:`built_info`.
    """

    def __init__(self, loaded: LoadedModel, *, backend: str, input_size: tuple[int, int],
                 threads: int, cache: GraphCache, built_info: ModelInfo | None = None) -> None:
        self.backend = backend
        #: The installed version of the backend's package (reports, diagnostics).
        self.backend_version = backend_version(backend)
        #: (height, width) in pixels of every frame stepped.
        self.input_size = tuple(int(v) for v in input_size)
        self.threads = threads
        self.cache = cache
        self._loaded = loaded
        self._torch = loaded.model
        #: The model as built (its own T): what the pipeline's "memory length not given"
        #: returns to, as for the PyTorch model it wraps before setting T.
        self.built_info = built_info if built_info is not None else self._torch.info
        self._columns = memory_columns(self._torch)
        #: Frames by which the logits lag the frame stepped (the PyTorch model's).
        self.output_delay_frames = int(self._torch.output_delay_frames)
        #: The cache's answer for the graphs in use (folder, files, what was exported).
        self.graphs: CachedGraphs | None = None
        self._specs: dict[int, GraphSpec] = {}
        self._sessions: dict[int, GraphSession] = {}
        self._open()

    # ------------------------------------------------------------------ what the pipeline uses
    @property
    def info(self) -> ModelInfo:
        """The PyTorch model's info (its memory length the one in force)."""
        return self._torch.info

    @property
    def memory_length(self) -> int:
        """Frames T the memory holds (0: single frame)."""
        return self._torch.memory_length

    @memory_length.setter
    def memory_length(self, value: int) -> None:
        """Set T (the PyTorch model's rules); graphs for a new T come from the cache, exported
        on a miss (seconds per fill level)."""
        previous = self._torch.memory_length
        if value == previous:
            return
        self._torch.memory_length = value  # raises for lengths the model refuses
        try:
            self._open()
        except BaseException:
            self._torch.memory_length = previous
            raise

    @property
    def torch_model(self) -> Segmenter:
        """The PyTorch model the graphs are exported from (:meth:`step` never runs it)."""
        return self._torch

    @property
    def session_runs(self) -> int:
        """Runtime calls made by the sessions of the current T (each returned)."""
        return sum(session.runs for session in self._sessions.values())

    def to(self, device: torch.device | str | None = None,
           dtype: torch.dtype | None = None) -> "RuntimeModel":
        """Accept the CPU and float32 only (what the graphs compute in)."""
        if device is not None and torch.device(device).type != "cpu":
            raise BackendError(f"the {self.backend} backend runs on the CPU, not {device}: use "
                               f"device cpu (or the torch backend)")
        if dtype is not None and dtype != torch.float32:
            raise BackendError(f"the {self.backend} backend computes in float32, not {dtype}: "
                               f"use precision fp32 (or the torch backend)")
        return self

    def eval(self) -> "RuntimeModel":
        """The graphs are inference graphs: nothing to switch."""
        return self

    def step(self, x: torch.Tensor, memory: FrameFIFO | None = None, *,
             update_memory: bool = True) -> tuple[torch.Tensor, FrameFIFO | None]:
        """One frame of B streams, as the PyTorch model's ``step``.

        Args:
            x: (B, 3, H, W) float32 CPU in [0, 1], (H, W) = :attr:`input_size`.
            memory: the streams' memory (the PyTorch model's memory type), None or empty for
                the first frame; a single-frame model hands it back untouched.
            update_memory: False returns ``memory`` unchanged.

        Returns:
            (logits (B, num_classes, H, W) float32, the new memory).

        Raises:
            ValueError: a bad input, a memory of another type or one that does not fit.
        """
        self._check_input(x)
        held = self._held(memory, x.shape[0])
        fill = len(held) if held is not None else 0
        rows = [self._run_row(x, held, fill, row) for row in range(x.shape[0])]
        outputs = [torch.from_numpy(parts[0] if len(parts) == 1 else np.concatenate(parts))
                   for parts in zip(*rows)]
        if not self._columns or not update_memory:
            return outputs[0], memory
        base = held if held is not None else self._torch.temporal_module.empty_memory()
        return outputs[0], base.append(outputs[1:], self.memory_length)

    # ------------------------------------------------------------------ internals
    def _open(self) -> None:
        """Graphs (exported on a miss) and sessions for the model's current T."""
        graphs = self.cache.graphs(self._loaded, self.input_size)
        sessions = {fill: open_session(self.backend, path, self.threads)
                    for fill, path in graphs.paths.items()}
        self._specs = graph_specs(self._torch, self.input_size)
        self.graphs, self._sessions = graphs, sessions

    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 3 or not x.shape[0]:
            raise ValueError(f"x must be a (B, 3, H, W) tensor, got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x)}")
        if x.dtype != torch.float32 or x.device.type != "cpu":
            raise ValueError(f"the {self.backend} backend takes float32 CPU input, got "
                             f"{x.dtype} on {x.device}")
        if tuple(x.shape[2:]) != self.input_size:
            height, width = self.input_size
            raise ValueError(
                f"the {self.backend} backend runs graphs exported for {height}x{width} input, "
                f"got {x.shape[2]}x{x.shape[3]}: set the pipeline's input size to "
                f"{height}x{width} (input_size, --input-size, the node's input_height/"
                f"input_width), or build the backend for the size you need")

    def _held(self, memory: FrameFIFO | None, batch: int) -> FrameFIFO | None:
        """The memory the graphs read: the newest T frames, checked; None when empty."""
        if not self._columns or memory is None:
            return None
        memory_type = self._torch.temporal_module.memory_type
        if not isinstance(memory, memory_type):
            raise ValueError(f"memory must be a {memory_type.__name__} or None, got "
                             f"{type(memory).__name__}")
        if not len(memory):
            return None
        held = memory.truncate(self.memory_length)
        expected = self._specs[len(held)].memory_inputs
        tensors = [tensor for column in self._columns for tensor in getattr(held, column)]
        for spec, tensor in zip(expected, tensors):
            if (tensor.shape[0] != batch or tuple(tensor.shape[1:]) != spec.shape[1:]
                    or tensor.dtype != torch.float32 or tensor.device.type != "cpu"):
                raise ValueError(f"memory tensor {spec.name} is {tuple(tensor.shape)} "
                                 f"{tensor.dtype} on {tensor.device}, the graphs take "
                                 f"({batch}, {', '.join(map(str, spec.shape[1:]))}) float32 on "
                                 f"the CPU (a new input size needs a fresh memory)")
        return held

    def _run_row(self, x: torch.Tensor, held: FrameFIFO | None, fill: int, row: int
                 ) -> list[np.ndarray]:
        """Run the graph of ``fill`` frames on stream ``row`` of the batch."""
        spec = self._specs[fill]
        inputs = {spec.image.name: _array(x[row:row + 1])}
        if held is not None:
            tensors = [t for column in self._columns for t in getattr(held, column)]
            inputs.update({s.name: _array(t[row:row + 1])
                           for s, t in zip(spec.memory_inputs, tensors)})
        return self._sessions[fill].run(inputs)
