"""The ROS-free inference pipeline: frames of named streams in, class ids (and confidence) out.

One model serves many streams (cameras); each stream has its own temporal memory and reset rules
(:mod:`lmanet_ros.streams`). The node, the evaluation tool, the benchmarks and the tests all call
this, so what is measured offline is what runs on the robot.

Stages, each timed separately (:class:`StageTimes`):

1. preprocess: uint8 RGB (H, W, 3) -> float tensor (1, 3, h, w) in [0, 1] on the device, resized
   to the network input size when one is set (normalisation and padding to a size the network
   takes are the model's business: ``model.info`` states both);
2. inference: ``model.step`` on a batch of streams whose memories have the same fill;
3. postprocess: logits back to (H, W) when resized, argmax over the first K (named) classes, the
   optional max-softmax confidence, copy to host memory.
"""
from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lmanet_ros.classes import ClassSet
from lmanet_ros.demo_models import resolve_checkpoint
from lmanet_ros.models import build_model, load_checkpoint
from lmanet_ros.models.memory import Memory
from lmanet_ros.streams import MemoryPolicy, ResetReason, StreamState, StreamStats

PRECISIONS: dict[str, torch.dtype] = {
    "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class PipelineError(RuntimeError):
    """A pipeline cannot be built as asked (device, precision, model or checkpoint problem)."""


@dataclass(frozen=True)
class Frame:
    """One image of one stream.

    Attributes:
        stream: the stream (camera) name; each stream has its own memory.
        image: RGB image, (H, W, 3) uint8.
        stamp: capture time in seconds (the header stamp).
        frame_id: the header frame_id (a change resets the memory).
    """

    stream: str
    image: np.ndarray
    stamp: float
    frame_id: str = ""


@dataclass(frozen=True)
class StageTimes:
    """Wall time of each stage for one frame, in milliseconds (inference shared by a batch)."""

    preprocess_ms: float
    inference_ms: float
    postprocess_ms: float

    @property
    def total_ms(self) -> float:
        """Sum of the three stages in milliseconds."""
        return self.preprocess_ms + self.inference_ms + self.postprocess_ms


@dataclass(frozen=True)
class Result:
    """The segmentation of one :class:`Frame`.

    Attributes:
        stream: the frame's stream.
        labels: class ids, (H, W) uint8 at the frame's size, in 0..K-1 (K named classes).
        confidence: max softmax probability over the K classes, (H, W) float32 in [0, 1], or
            None when not asked for.
        reset_reason: why the stream's memory was cleared before this frame, or None.
        duplicate: the frame had the same stamp as the stream's previous frame.
        memory_fill: frames in the stream's memory after this frame.
        batch_size: how many streams shared the inference call.
        timings: the stage times.
    """

    stream: str
    labels: np.ndarray
    confidence: np.ndarray | None
    reset_reason: str | None
    duplicate: bool
    memory_fill: int
    batch_size: int
    timings: StageTimes


def resolve_device(spec: str) -> torch.device:
    """Turn ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` into a device, failing fast if absent."""
    spec = spec.strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as exc:
        raise PipelineError(
            f"device '{spec}' is not valid (use auto, cpu, cuda or cuda:N)") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise PipelineError(f"device '{spec}' requested but CUDA is not available "
                                f"(torch {torch.__version__}, {torch.cuda.device_count()} GPUs)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise PipelineError(f"device '{spec}' requested but only "
                                f"{torch.cuda.device_count()} CUDA devices exist")
    elif device.type != "cpu":
        raise PipelineError(f"device '{spec}' is not supported (use auto, cpu, cuda or cuda:N)")
    return device


def file_id(path: str | Path) -> str:
    """First 16 hex digits of the sha256 of a file: the checkpoint id in metadata and reports."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


class SegmentationPipeline:
    """Many streams through one model, each with its own memory and reset rules.

    ``process`` runs on one thread at a time (the caller's worker); ``reset`` and the setters may
    be called from any other thread and never wait for an inference.
    """

    def __init__(self, model: torch.nn.Module, *, device: torch.device | str = "cpu",
                 precision: str = "fp32", input_size: tuple[int, int] = (0, 0),
                 policy: MemoryPolicy | None = None, classes: ClassSet | None = None,
                 checkpoint_id: str = "random-init") -> None:
        """Wrap ``model`` (moved to ``device`` and ``precision``, put in eval mode).

        Args:
            model: a network of :mod:`lmanet_ros.models` (has ``info`` and ``step``).
            device: where to run; a string is resolved with :func:`resolve_device`.
            precision: ``fp32``, ``fp16`` or ``bf16`` (weights, activations and memory).
            input_size: (height, width) the network sees in pixels; (0, 0) = the frame's size.
            policy: the memory policy; its memory_length is applied to the model. None: the
                default policy with the model's own memory length.
            classes: class names and colours; the first K logits are used (default Cityscapes).
            checkpoint_id: identifies the weights in reports and metadata.
        """
        if precision not in PRECISIONS:
            raise PipelineError(f"precision '{precision}' is not one of {sorted(PRECISIONS)}")
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.precision = precision
        self.dtype = PRECISIONS[precision]
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self.info = model.info
        self.classes = classes if classes is not None else ClassSet.cityscapes()
        if len(self.classes.names) > self.info.num_classes:
            raise PipelineError(f"{len(self.classes.names)} class names given but model "
                                f"'{self.info.name}' has {self.info.num_classes} outputs")
        self.checkpoint_id = checkpoint_id
        self.load_report = None
        self._streams: dict[str, StreamState] = {}
        self._streams_lock = threading.Lock()
        if policy is None:
            policy = (MemoryPolicy(memory_length=model.memory_length) if self.info.temporal
                      else MemoryPolicy())
        self._policy = policy
        self._input_size = (0, 0)
        self.set_input_size(input_size)
        if self.info.temporal:
            self.model.memory_length = policy.memory_length

    @classmethod
    def from_pretrained(cls, model_name: str, checkpoint: str | Path | None = None, *,
                        device: str = "auto", precision: str = "fp32", num_threads: int = 0,
                        input_size: tuple[int, int] = (0, 0),
                        policy: MemoryPolicy | None = None,
                        classes: ClassSet | None = None) -> "SegmentationPipeline":
        """Build the named model, load ``checkpoint`` (None = random weights; ``demo`` = the
        packaged demo weights of the model, :mod:`lmanet_ros.demo_models`) and wrap it.

        ``policy`` None: the default policy with the model's default memory length (4 for
        ``lmanet_erfnet``, 3 for ``lmanet_pspnet101``).

        Class metadata stored in the checkpoint is used unless ``classes`` is given. The load
        report is kept as ``self.load_report`` (None for random weights).

        Raises:
            PipelineError: bad device or precision; ValueError: unknown model name; the
            checkpoint loader's errors for a missing or mismatched checkpoint.
        """
        target = resolve_device(device)
        if num_threads > 0:
            torch.set_num_threads(num_threads)
        model = build_model(model_name,
                            memory_length=None if policy is None else policy.memory_length)
        report = None
        checkpoint_id = "random-init"
        checkpoint = resolve_checkpoint(model_name, checkpoint)
        if checkpoint:
            report = load_checkpoint(model, checkpoint)
            checkpoint_id = file_id(checkpoint) if Path(checkpoint).is_file() else "state-dict"
            if classes is None and report.metadata.get("classes"):
                classes = ClassSet.from_metadata(report.metadata["classes"])
        pipeline = cls(model, device=target, precision=precision, input_size=input_size,
                       policy=policy, classes=classes, checkpoint_id=checkpoint_id)
        pipeline.load_report = report
        return pipeline

    # ----------------------------------------------------------------- configuration (any thread)
    @property
    def policy(self) -> MemoryPolicy:
        """The memory policy in force."""
        return self._policy

    def set_policy(self, policy: MemoryPolicy) -> None:
        """Change the memory policy; a new memory length resets every stream (``parameter``)."""
        changed_length = policy.memory_length != self._policy.memory_length
        self._policy = policy
        if changed_length and self.info.temporal:
            self.model.memory_length = policy.memory_length
            self.reset(reason=ResetReason.PARAMETER.value)

    @property
    def input_size(self) -> tuple[int, int]:
        """Network input (height, width) in pixels; (0, 0) = each frame's own size."""
        return self._input_size

    def set_input_size(self, size: tuple[int, int]) -> None:
        """Set the network input size; the memories are cleared (``parameter``) on a change."""
        height, width = (int(v) for v in size)
        if (height == 0) != (width == 0) or height < 0 or width < 0:
            raise ValueError(f"input size must be (0, 0) or two positive ints, got {size}")
        if (height, width) != self._input_size:
            self._input_size = (height, width)
            self.reset(reason=ResetReason.PARAMETER.value)

    def set_classes(self, classes: ClassSet) -> None:
        """Change class names and colours (at most the model's number of outputs)."""
        if len(classes.names) > self.info.num_classes:
            raise ValueError(f"{len(classes.names)} classes but the model has "
                             f"{self.info.num_classes} outputs")
        self.classes = classes

    def reset(self, stream: str | None = None,
              reason: str = ResetReason.REQUEST.value) -> list[str]:
        """Clear the memory of ``stream`` (None = all) before its next frame; returns the names.

        Thread-safe and immediate: it never waits for an inference in progress.
        """
        with self._streams_lock:
            states = list(self._streams.values()) if stream is None else [self._state(stream)]
        for state in states:
            state.request_reset(reason)
        return [state.name for state in states]

    def streams(self) -> list[str]:
        """Names of the streams seen so far."""
        with self._streams_lock:
            return list(self._streams)

    def stats(self, stream: str) -> StreamStats:
        """A snapshot of a stream's counters."""
        with self._streams_lock:
            return self._state(stream).stats.copy()

    def _state(self, stream: str) -> StreamState:
        state = self._streams.get(stream)
        if state is None:
            state = self._streams[stream] = StreamState(stream)
        return state

    # --------------------------------------------------------------------- processing (worker)
    def warmup(self, height: int, width: int) -> None:
        """Run the network on a blank (height, width) frame: first-frame and memory paths."""
        with torch.inference_mode():
            x = torch.zeros(1, 3, *self._network_size(height, width), device=self.device,
                            dtype=self.dtype)
            _, memory = self.model.step(x, None)
            self.model.step(x, memory)
        self._synchronize()

    def process(self, frames: Sequence[Frame], *, want_confidence: bool = False) -> list[Result]:
        """Segment ``frames`` (any streams, any sizes) and return one Result each, in order.

        Frames of one stream are processed in the order given; frames of different streams
        whose memories have the same fill and size are batched into one ``step``.
        """
        results: list[Result | None] = [None] * len(frames)
        pending = list(enumerate(frames))
        while pending:
            seen: set[str] = set()
            this_round, later = [], []
            for item in pending:
                (later if item[1].stream in seen else this_round).append(item)
                seen.add(item[1].stream)
            for index, result in self._process_round(this_round, want_confidence):
                results[index] = result
            pending = later
        return results  # type: ignore[return-value]

    def _process_round(self, items: list[tuple[int, Frame]],
                       want_confidence: bool) -> list[tuple[int, Result]]:
        """Process frames of distinct streams: admit, preprocess, batched step, postprocess."""
        prepared = []
        for index, frame in items:
            if frame.image.ndim != 3 or frame.image.shape[2] != 3 or frame.image.dtype != np.uint8:
                raise ValueError(f"frame of stream '{frame.stream}' must be (H, W, 3) uint8, got "
                                 f"{frame.image.shape} {frame.image.dtype}")
            with self._streams_lock:
                state = self._state(frame.stream)
            size = frame.image.shape[:2]
            admission = state.admit(frame.stamp, size, frame.frame_id, self._policy)
            start = time.perf_counter()
            x = self._preprocess(frame.image)
            prep_ms = (time.perf_counter() - start) * 1e3
            prepared.append((index, frame, state, admission, x, prep_ms))

        groups: dict[tuple, list] = {}
        for entry in prepared:
            state, admission, x = entry[2], entry[3], entry[4]
            fill = len(state.memory) if state.memory is not None else 0
            groups.setdefault((tuple(x.shape[2:]), fill, admission.store), []).append(entry)

        out = []
        for (_, fill, store), group in groups.items():
            start = time.perf_counter()
            batch = torch.cat([entry[4] for entry in group])
            memory = Memory.cat_batch([e[2].memory for e in group]) if fill else None
            with torch.inference_mode():
                logits, memory = self.model.step(batch, memory, update_memory=store)
            self._synchronize()
            infer_ms = (time.perf_counter() - start) * 1e3
            memories = memory.split_batch() if memory is not None else [None] * len(group)
            for row, (index, frame, state, admission, _, prep_ms) in enumerate(group):
                state.memory = memories[row]
                state.stats.memory_fill = len(state.memory) if state.memory is not None else 0
                start = time.perf_counter()
                labels, confidence = self._postprocess(logits[row:row + 1], frame.image.shape[:2],
                                                       want_confidence)
                post_ms = (time.perf_counter() - start) * 1e3
                out.append((index, Result(
                    stream=frame.stream, labels=labels, confidence=confidence,
                    reset_reason=admission.reset_reason, duplicate=admission.duplicate,
                    memory_fill=state.stats.memory_fill, batch_size=len(group),
                    timings=StageTimes(prep_ms, infer_ms, post_ms))))
        return out

    def _network_size(self, height: int, width: int) -> tuple[int, int]:
        return self._input_size if self._input_size[0] else (height, width)

    def _preprocess(self, image: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 RGB -> (1, 3, h, w) in [0, 1] on the device at the network size."""
        if not (image.flags.c_contiguous and image.flags.writeable):
            image = image.copy()  # torch cannot wrap read-only views (zero-copy decoded rgb8)
        tensor = torch.from_numpy(image).to(self.device, non_blocking=True)
        x = tensor.permute(2, 0, 1).unsqueeze(0).to(self.dtype).div_(255.0)
        size = self._network_size(*image.shape[:2])
        if size != tuple(image.shape[:2]):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        return x

    def _postprocess(self, logits: torch.Tensor, size: tuple[int, int],
                     want_confidence: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """(1, C, h, w) logits -> (H, W) uint8 ids over the first K classes (+ confidence)."""
        logits = logits[:, :len(self.classes.names)]
        if tuple(logits.shape[2:]) != tuple(size):
            logits = F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False)
        if want_confidence:
            probs = torch.softmax(logits.float(), dim=1)
            confidence, labels = probs.max(dim=1)
            return (labels[0].to(torch.uint8).cpu().numpy(),
                    confidence[0].cpu().numpy().astype(np.float32, copy=False))
        # max(...).indices equals argmax (first maximum on ties) and is ~4x faster on CPU here.
        return logits.max(dim=1).indices[0].to(torch.uint8).cpu().numpy(), None

    def _synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
