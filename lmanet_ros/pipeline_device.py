"""The device side of :class:`~lmanet_ros.pipeline.SegmentationPipeline`: transfers, stage clocks,
batched memories kept across steps and CUDA graphs of the network step.

- :class:`HostStaging`: frames go up through reused pinned host buffers (CUDA; one pool per
  frame shape, a buffer reused once its copy has completed) with ``non_blocking`` copies;
  outputs come down into pinned tensors of torch's caching host allocator (one copy each,
  asynchronous); :meth:`HostStaging.wait` on a :meth:`HostStaging.fence` is the one
  synchronisation, where the results are read. Resize, normalisation, argmax, confidence,
  colour and overlay (:mod:`lmanet_ros.device_imaging`) run on the device. On the
  CPU a frame is wrapped without a copy and outputs are the tensors themselves.
- :class:`StageClock`: stage marks, host ``perf_counter`` on the CPU, CUDA events on a GPU (read
  after the read-out's synchronisation).
- :class:`BatchedMemories`: the joined memory of a group of streams is kept after a step and
  reused when the same streams batch together again with the memories it was split into, so
  that streams batched step after step are joined (``cat_batch``: a copy of all T frames) once.
- :class:`StepGraphs`: CUDA graphs of ``model.step``, one per input shape, memory layout (fill
  level and tensor shapes) and store flag, captured on first use.
"""
from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lmanet_ros.models.memory import FrameFIFO, TemporalMemory

__all__ = ["step_context", "HostStaging", "StageClock", "Readout", "Submitted",
           "BatchedMemories", "StepGraphs"]

_LOG = logging.getLogger(__name__)


@contextlib.contextmanager
def step_context(device_type: str, autocast_dtype: torch.dtype | None, capturing: bool
                 ) -> Iterator[None]:
    """The context of a network step: inference mode, and ``torch.autocast`` to
    ``autocast_dtype`` (None: none) with its weight cache off while ``capturing`` a CUDA graph
    (cached casts made inside a capture would outlive it)."""
    with torch.inference_mode():
        if autocast_dtype is None:
            yield
            return
        with torch.autocast(device_type, dtype=autocast_dtype, cache_enabled=not capturing):
            yield


@dataclass(eq=False)  # compared by identity (a pool's list.remove): not by their tensors
class _Staged:
    """One pinned upload buffer and the event of its last copy (None: never used)."""

    buffer: torch.Tensor
    event: torch.cuda.Event | None = None

    def free(self) -> bool:
        return self.event is None or self.event.query()


class HostStaging:
    """Frames to the device and outputs back (see the module docstring).

    Attributes:
        allocations: pinned upload buffers made so far (tests check that they are reused).
    """

    def __init__(self, device: torch.device, buffers_per_shape: int = 4) -> None:
        """``buffers_per_shape``: pinned upload buffers per frame shape before an upload waits
        for the oldest copy to complete (CUDA only)."""
        self.device = device
        self.cuda = device.type == "cuda"
        self._buffers_per_shape = buffers_per_shape
        self._pools: dict[tuple[int, ...], list[_Staged]] = {}
        self.allocations = 0

    def upload(self, image: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 frame -> the same (H, W, 3) uint8 tensor on the device.

        CPU: a view of ``image`` (a copy only when it is not contiguous and writable: torch
        cannot wrap read-only views). CUDA: copied into a free pinned buffer of its shape, then
        uploaded with ``non_blocking`` (the caller's array is free when this returns).
        """
        if not self.cuda:
            if not (image.flags.c_contiguous and image.flags.writeable):
                image = image.copy()
            return torch.from_numpy(image)
        staged = self._free_buffer(image.shape)
        np.copyto(staged.buffer.numpy(), image)
        on_device = staged.buffer.to(self.device, non_blocking=True)
        staged.event = torch.cuda.Event()
        staged.event.record(torch.cuda.current_stream(self.device))
        return on_device

    def _free_buffer(self, shape: tuple[int, ...]) -> _Staged:
        """A pinned buffer of ``shape`` whose last copy is done: a free one, a new one (at most
        ``buffers_per_shape``), else the least recently used once its copy completes."""
        pool = self._pools.setdefault(tuple(shape), [])
        staged = next((entry for entry in pool if entry.free()), None)
        if staged is None and len(pool) < self._buffers_per_shape:
            staged = _Staged(torch.empty(shape, dtype=torch.uint8, pin_memory=True))
            self.allocations += 1
        elif staged is None:
            staged = pool[0]
            staged.event.synchronize()
        if staged in pool:
            pool.remove(staged)
        pool.append(staged)  # most recently used last
        return staged

    def download(self, tensor: torch.Tensor) -> torch.Tensor:
        """A host tensor that holds ``tensor`` once :meth:`wait` returned: on CUDA a pinned
        tensor filled by one asynchronous copy, on the CPU ``tensor`` itself."""
        if not self.cuda:
            return tensor
        host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
        host.copy_(tensor, non_blocking=True)
        return host

    def fence(self) -> torch.cuda.Event | None:
        """An event after the work queued so far on the device (CUDA), else None."""
        if not self.cuda:
            return None
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(self.device))
        return event

    def wait(self, fence: torch.cuda.Event | None) -> None:
        """Block until the work before ``fence`` (downloads included) is done (CUDA)."""
        if fence is not None:
            fence.synchronize()


class StageClock:
    """Marks between the pipeline's stages and the milliseconds between two marks.

    CPU: a mark is ``time.perf_counter()``, host wall time. CUDA: a mark is a CUDA event recorded
    on the current stream, i.e. the moment the device reaches that point of its queue; read
    after :meth:`HostStaging.wait`. The stream runs in order and is idle when a pipeline call
    starts (the previous one waited), so consecutive marks split the wall time from the call's
    start into stages, each ending when its device work is done (host launch time the device
    waited for included).
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"

    def mark(self) -> float | torch.cuda.Event:
        """A mark now (CPU seconds or a recorded CUDA event)."""
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record(torch.cuda.current_stream(self.device))
        return event

    @staticmethod
    def elapsed_ms(start: float | torch.cuda.Event, end: float | torch.cuda.Event) -> float:
        """Milliseconds from ``start`` to ``end`` (CUDA: both events completed)."""
        if isinstance(start, float):
            return (end - start) * 1e3
        return float(start.elapsed_time(end))


@dataclass
class Readout:
    """A result waiting for its synchronisation: its other fields, its outputs (host tensors
    filled by asynchronous copies, or arrays) and its stage marks (preprocess, inference,
    postprocess: pairs of :meth:`StageClock.mark`)."""

    fields: dict[str, Any]
    outputs: dict[str, Any]
    marks: tuple[tuple[Any, Any], ...]

    def arrays(self) -> dict[str, np.ndarray]:
        """The outputs as numpy arrays (views of the host tensors), once their copies are done."""
        return {name: value.numpy() if isinstance(value, torch.Tensor) else value
                for name, value in self.outputs.items()}

    def stage_ms(self) -> tuple[float, ...]:
        """Milliseconds of each stage, once the marks' events completed."""
        return tuple(StageClock.elapsed_ms(*pair) for pair in self.marks)


@dataclass(frozen=True)
class Submitted:
    """Frames submitted to a pipeline, for its ``collect``: their readouts by frame index, how
    many frames, and the event after their device work (:meth:`HostStaging.fence`)."""

    readouts: list[tuple[int, Readout]]
    count: int
    fence: torch.cuda.Event | None


class BatchedMemories:
    """The joined memory of each group of streams stepped together, kept for the next step.

    :meth:`join` returns the kept memory when the streams bring exactly (``is``) the memories
    that :meth:`split` gave them, else ``cat_batch`` of theirs; :meth:`split` keeps the group's
    new memory and forgets every other kept group that shares a stream with it (its pieces are
    stale). Used by the pipeline's worker thread only.

    Attributes:
        joins: ``cat_batch`` calls made (tests check that kept groups make none).
    """

    def __init__(self) -> None:
        self._kept: dict[tuple[str, ...], tuple[TemporalMemory, tuple[Any, ...]]] = {}
        self.joins = 0

    def join(self, streams: tuple[str, ...], memories: Sequence[TemporalMemory | None]
             ) -> TemporalMemory | None:
        """The batched memory of ``streams`` (in this order), whose memories are ``memories``
        (all None, or all of one type and batch key)."""
        first = memories[0]
        if first is None or len(memories) == 1:
            return first
        kept = self._kept.get(streams)
        if kept is not None and all(a is b for a, b in zip(kept[1], memories)):
            return kept[0]
        self.joins += 1
        return type(first).cat_batch(memories)

    def split(self, streams: tuple[str, ...], memory: TemporalMemory | None
              ) -> list[TemporalMemory | None]:
        """One memory per stream of the group's new ``memory`` (views); keeps it for
        :meth:`join`. None or empty: that memory for every stream."""
        for key in [key for key in self._kept if set(key) & set(streams)]:
            del self._kept[key]
        if memory is None or not len(memory):
            return [memory] * len(streams)
        if len(streams) == 1:
            return [memory]
        pieces = memory.split_batch()
        self._kept[streams] = (memory, tuple(pieces))
        return pieces


@dataclass
class _Captured:
    """One CUDA graph of ``model.step`` and its static tensors."""

    graph: torch.cuda.CUDAGraph
    x: torch.Tensor
    inputs: tuple[torch.Tensor, ...]   # the static memory's tensors, in ``tensors()`` order
    logits: torch.Tensor
    successor: FrameFIFO | None

    def run(self, x: torch.Tensor, memory: FrameFIFO | None
            ) -> tuple[torch.Tensor, FrameFIFO | None]:
        """Copy the inputs in, replay, and return (logits, the new memory).

        The logits are the graph's static output: valid until this graph replays again, which
        the device's in-order stream makes safe for work queued before that. The new memory's
        tensors that are static inputs are mapped back to the caller's tensors; the new
        entry (a static output) is cloned, since the stream keeps it for T steps.
        """
        self.x.copy_(x)
        given = memory.tensors() if memory is not None else ()
        for static, tensor in zip(self.inputs, given):
            static.copy_(tensor)
        self.graph.replay()
        if self.successor is None:
            return self.logits, None
        caller = {id(static): tensor for static, tensor in zip(self.inputs, given)}
        return self.logits, self.successor.map_tensors(
            lambda t: caller[id(t)] if id(t) in caller else t.clone())


class StepGraphs:
    """``model.step`` through CUDA graphs, one per (input shape and dtype, memory layout, store).

    A graph is captured the first time its key comes (two warm-up steps on a side stream, which
    also compile Triton kernels, then the capture), and replayed afterwards: each replay copies
    the batch and the memory into the graph's static tensors (device copies of the T frames:
    the graph's inputs are fixed addresses) and clones the new memory entry out. Memories of
    other types than :class:`~lmanet_ros.models.memory.FrameFIFO`, keys beyond
    ``max_graphs`` and keys whose capture failed (logged once, with the reason) run eagerly.

    Attributes:
        captured: graphs captured; replays: graph replays; eager: steps run without a graph.
    """

    def __init__(self, model: torch.nn.Module,
                 context: Callable[[bool], AbstractContextManager], max_graphs: int = 64
                 ) -> None:
        """``context(capturing)``: the context the step runs in (inference mode, autocast;
        ``capturing``: inside a capture or its warm-up, where autocast's weight cache is off)."""
        self._model = model
        self._context = context
        self._max_graphs = max_graphs
        self._graphs: dict[Hashable, _Captured] = {}
        self._failed: set[Hashable] = set()
        self.captured = self.replays = self.eager = 0

    def step(self, x: torch.Tensor, memory: TemporalMemory | None, store: bool
             ) -> tuple[torch.Tensor, TemporalMemory | None]:
        """``model.step(x, memory, update_memory=store)``, through a graph where one applies."""
        if memory is not None and not isinstance(memory, FrameFIFO):
            return self._eager(x, memory, store)
        layout = None if memory is None else (type(memory), tuple(
            (tuple(t.shape), t.dtype) for t in memory.tensors()))
        key = (tuple(x.shape), x.dtype, x.device, layout, store)
        captured = self._graphs.get(key)
        if captured is None:
            if key in self._failed or len(self._graphs) >= self._max_graphs:
                return self._eager(x, memory, store)
            try:
                captured = self._capture(x, memory, store)
            except Exception as error:  # a step that cannot be captured (a host sync, ...)
                self._failed.add(key)
                _LOG.warning("CUDA graph capture failed for input %s, memory fill %d; this "
                             "case runs without a graph: %s: %s", tuple(x.shape),
                             len(memory) if memory is not None else 0, type(error).__name__,
                             error)
                return self._eager(x, memory, store)
            self._graphs[key] = captured
            self.captured += 1
        self.replays += 1
        return captured.run(x, memory)

    def _eager(self, x: torch.Tensor, memory: TemporalMemory | None, store: bool
               ) -> tuple[torch.Tensor, TemporalMemory | None]:
        self.eager += 1
        with self._context(False):
            return self._model.step(x, memory, update_memory=store)

    def _capture(self, x: torch.Tensor, memory: FrameFIFO | None, store: bool) -> _Captured:
        static_x = x.clone()
        static_memory = memory.map_tensors(torch.clone) if memory is not None else None
        current = torch.cuda.current_stream(x.device)
        side = torch.cuda.Stream(device=x.device)
        side.wait_stream(current)
        with torch.cuda.stream(side), self._context(True):
            for _ in range(2):
                self._model.step(static_x, static_memory, update_memory=store)
        current.wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), self._context(True):
            logits, successor = self._model.step(static_x, static_memory, update_memory=store)
        inputs = static_memory.tensors() if static_memory is not None else ()
        return _Captured(graph, static_x, inputs, logits, successor)
