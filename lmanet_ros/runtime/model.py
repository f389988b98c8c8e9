"""A network run by exported graphs, as a drop-in for the PyTorch model in the pipeline.

:class:`RuntimeModel` has what :class:`~lmanet_ros.pipeline.SegmentationPipeline` uses of a
model: ``info``, ``step(x, memory, update_memory=)``, a settable ``memory_length``,
``output_delay_frames``, ``to(device, dtype)`` and ``eval()``. Its memory is the PyTorch model's
own memory type holding CPU float32 tensors (LMANet: :class:`~lmanet_ros.models.memory.Memory`),
with the same semantics, so batching (``cat_batch``/``split_batch``), statistics and resets work
unchanged and a memory made by one can be stepped by the other.

A step: the memory is truncated to the newest T frames; layout ``fill``: the graph of its fill
level k runs (one run per stream of the batch: the graphs are batch 1); layout ``split``
(:mod:`.split`, LMANet; ``auto`` picks it where the model has it): the ``encode`` graph runs,
then, with a memory, the local attention in PyTorch's kernel (the whole batch at once) and
``decode_fused``, without one ``decode``. The new entry is appended and frames beyond T are
dropped, as :meth:`~lmanet_ros.models.temporal.FIFOModule.step` does. Only float32 on the CPU,
only the input size the graphs were exported for.
"""
from __future__ import annotations

import numpy as np
import torch

from lmanet_ros.models import FrameFIFO, ModelInfo, Segmenter

from .cache import CachedGraphs, GraphCache
from .errors import BackendError
from .graphs import INPUT_NAME, graph_specs, memory_columns, memory_input_names
from .loading import LoadedModel
from .sessions import GraphSession, backend_version, open_session
from .split import resolve_layout, split_specs

__all__ = ["RuntimeModel"]


def _array(tensor: torch.Tensor) -> np.ndarray:
    """A float32 CPU tensor as a C-contiguous numpy array (no copy when it is one already)."""
    return np.ascontiguousarray(tensor.detach().numpy())


def _batch(rows: tuple[np.ndarray, ...] | list[np.ndarray]) -> torch.Tensor:
    """The per-stream outputs (each batch 1) as one (B, ...) tensor (no copy for one)."""
    return torch.from_numpy(rows[0] if len(rows) == 1 else np.concatenate(rows))


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
        layout: ``fill``, ``split`` or ``auto`` (split where the model has it), see
            :mod:`.split`.

    Raises:
        BackendError: a layout the model does not have; the cache's errors.
    """

    def __init__(self, loaded: LoadedModel, *, backend: str, input_size: tuple[int, int],
                 threads: int, cache: GraphCache, built_info: ModelInfo | None = None,
                 layout: str = "auto") -> None:
        self.backend = backend
        #: ``fill`` or ``split``: the graphs a step runs (:mod:`.split`).
        self.layout = resolve_layout(loaded.model, layout)
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
        self._sessions: dict[int | str, GraphSession] = {}
        self._open()
        self._entry_shapes = self._memory_entry_shapes()

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

    @property
    def runs_per_step(self) -> int:
        """Runtime calls per stream and step: 1 (``fill``), 2 (``split``: encode, decode)."""
        return 2 if self.layout == "split" else 1

    @property
    def attention(self) -> str:
        """Where the memory attention runs, in words ('' for a single-frame model)."""
        if not self._columns:
            return ""
        if self.layout == "fill":
            return f"exported graph ({self.backend})"
        from lmanet_ros.models.attention import attention_backend
        return f"{attention_backend()} between {self.backend} graphs"

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
        if self.layout == "split":
            logits, entry = self._step_split(x, held)
        else:
            logits, entry = self._step_fill(x, held)
        if not self._columns or not update_memory:
            return logits, memory
        base = held if held is not None else self._torch.temporal_module.empty_memory()
        return logits, base.append(entry, self.memory_length)

    # ------------------------------------------------------------------ internals
    def _open(self) -> None:
        """Graphs (exported on a miss) and sessions for the model's current T (the split
        layout's serve every T: a cache hit)."""
        graphs = self.cache.graphs(self._loaded, self.input_size, self.layout)
        sessions = {key: open_session(self.backend, path, self.threads)
                    for key, path in graphs.paths.items()}
        self.graphs, self._sessions = graphs, sessions

    def _memory_entry_shapes(self) -> dict[str, tuple[int, ...]]:
        """Memory column -> the shape (1, ...) of a frame's entry (the same for every T)."""
        if not self._columns:
            return {}
        if self.layout == "split":
            outputs = split_specs(self._torch, self.input_size)["encode"].outputs
        else:
            outputs = graph_specs(self._torch, self.input_size)[0].memory_outputs
        return {spec.name[:-len("_new")]: spec.shape for spec in outputs
                if spec.name.endswith("_new")}

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
        for column in self._columns:
            shape = self._entry_shapes[column][1:]
            for index, tensor in enumerate(getattr(held, column)):
                if (tensor.shape[0] != batch or tuple(tensor.shape[1:]) != shape
                        or tensor.dtype != torch.float32 or tensor.device.type != "cpu"):
                    raise ValueError(f"memory tensor {column}_{index} is "
                                     f"{tuple(tensor.shape)} {tensor.dtype} on {tensor.device}, "
                                     f"the graphs take ({batch}, {', '.join(map(str, shape))}) "
                                     f"float32 on the CPU (a new input size needs a fresh "
                                     f"memory)")
        return held

    def _step_fill(self, x: torch.Tensor, held: FrameFIFO | None
                   ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Layout ``fill``: the graph of the memory's fill level, stream by stream; (logits,
        the new entry's tensors)."""
        fill = len(held) if held is not None else 0
        session = self._sessions[fill]
        names = memory_input_names(self._columns, fill)
        tensors = [t for column in self._columns for t in getattr(held, column)] if fill else []
        rows = []
        for row in range(x.shape[0]):
            inputs = {INPUT_NAME: _array(x[row:row + 1])}
            inputs.update({name: _array(t[row:row + 1]) for name, t in zip(names, tensors)})
            rows.append(session.run(inputs))
        outputs = [_batch(parts) for parts in zip(*rows)]
        return outputs[0], outputs[1:]

    def _step_split(self, x: torch.Tensor, held: FrameFIFO | None
                    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Layout ``split``: ``encode`` per stream, the attention over the batch in PyTorch,
        then ``decode_fused`` (``decode`` without a memory) per stream."""
        encode = self._sessions["encode"]
        rows = [encode.run({INPUT_NAME: _array(x[row:row + 1])}) for row in range(x.shape[0])]
        features, keys, values, query_key, query_value = (_batch(parts) for parts in zip(*rows))
        if held is None:
            decode = self._sessions["decode"]
            logits = [decode.run({"features": _array(features[row:row + 1])})[0]
                      for row in range(x.shape[0])]
        else:
            with torch.no_grad():
                readout = _array(self._torch.temporal_module.attend(query_key, held))
            decode = self._sessions["decode_fused"]
            logits = [decode.run({"query_value": _array(query_value[row:row + 1]),
                                  "readout": readout[row:row + 1]})[0]
                      for row in range(x.shape[0])]
        return _batch(logits), [keys, values]
