"""The ROS-free inference pipeline: frames of named streams in, class ids (and confidence) out.

One model serves many streams (cameras); each stream has its own temporal memory and reset rules
(:mod:`lmanet_ros.streams`). The node, the evaluation tool, the benchmarks and the tests all call
this, so what is measured offline is what runs on the robot.

Stages, each timed separately (:class:`StageTimes`):

1. preprocess: uint8 RGB (H, W, 3) -> float tensor (1, 3, h, w) in [0, 1] on the device, resized
   to the network input size when one is set (normalisation and padding to a size the network
   takes are the model's business: ``model.info`` states both);
2. inference: ``model.step`` on a batch of streams whose memories have the same batch key;
3. postprocess: logits back to (H, W) when resized, argmax over the first K (named) classes, the
   optional max-softmax confidence, copy to host memory.

Which frame the labels belong to (:attr:`Result.source`): the frame processed, except for a model
whose output lags its input (:attr:`SegmentationPipeline.output_delay_frames` 1: the delayed STF,
:class:`lmanet_ros.models.stf.STFSegmenter`). Its step returns the logits of the newest frame its
memory holds, so per stream the pipeline keeps the newest frame stored in the memory and:

- memory not empty: the labels belong to that stored frame (the previous frame at stride 1);
- memory empty (a new stream, any reset): the labels are those of the frame processed (the
  single-frame network; for ``stf_mar_delayed_pspnet50``, which has none, its window filled with
  that frame), at once;
- the labels of a frame are returned once: a step whose labels belong to the same frame as the
  stream's previous result (the one right after a cold start gives the fused labels of the frame
  just labelled single-frame; with a stride, the steps between two stored frames) is marked
  :attr:`Result.repeat`; the node does not publish it and the evaluation does not score it, so a
  consumer that takes one result per frame gets exactly one. The last frame before a reset (or
  the end of a stream) never gets labels: no later frame fused it.

Causal models (every other one): the labels are always the frame processed's, never a repeat.

The GPU data path (uploads, device stages, one copy back per output, one wait where results are
read, batched memories kept, CUDA graphs, autocast) is :mod:`lmanet_ros.pipeline_device`'s.
"""
from __future__ import annotations

import functools
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lmanet_ros.classes import ClassSet
from lmanet_ros.devices import DeviceError, resolve_device
from lmanet_ros.models.attention import attention_backend
from lmanet_ros.models.checkpoint import LoadReport
from lmanet_ros.models.weights import (Weights, memory_length_origin, resolve_memory_length,
                                       trained_input_size)
from lmanet_ros.pipeline_device import (BatchedMemories, HostStaging, Readout, StageClock,
                                        StepGraphs, Submitted, step_context)
from lmanet_ros.runtime import BackendError, check_backend, load_model
from lmanet_ros.streams import MemoryPolicy, ResetReason, StreamState, StreamStats
from lmanet_ros.threads import apply_cpu_threads

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
        stamp_ns: capture time in integer nanoseconds (the header stamp; compared exactly).
        frame_id: the header frame_id (a change resets the memory).
        context: whatever the caller needs back with this frame's labels (the node: its input
            message and arrival time); never read by the pipeline, handed back in
            ``Result.source.context`` by the result that labels this frame, which for a delayed
            model is a later call's.
    """

    stream: str
    image: np.ndarray
    stamp_ns: int
    frame_id: str = ""
    context: Any = None


@dataclass(frozen=True)
class StageTimes:
    """Wall time of each stage for one frame, in milliseconds (inference shared by a batch).

    preprocess: upload and resize; inference: the batched step (joining the memories
    included); postprocess: resize back, argmax, confidence, colour, overlay, copies to the
    host. CPU: host wall time. CUDA: from the stage's start until its device work is done
    (CUDA events, :class:`~lmanet_ros.pipeline_device.StageClock`). The call's host time after
    its last stage (the one wait, building the results) is in none of them.
    """

    preprocess_ms: float
    inference_ms: float
    postprocess_ms: float

    @property
    def total_ms(self) -> float:
        """Sum of the three stages in milliseconds."""
        return self.preprocess_ms + self.inference_ms + self.postprocess_ms


@dataclass(frozen=True)
class Result:
    """The result of processing one :class:`Frame`: the labels of ``source`` (the frame itself,
    or an earlier frame of its stream for a delayed model: see the module docstring).

    Attributes:
        stream: the frame's stream.
        labels: class ids of ``source``, (H, W) uint8 at its size, in 0..K-1 (K named classes).
        confidence: max softmax probability over the K classes, (H, W) float32 in [0, 1], or
            None when not asked for.
        reset_reason: why the stream's memory was cleared before the frame processed, or None.
        duplicate: the frame processed had the same stamp as the stream's previous frame.
        memory_fill: frames in the stream's memory after this frame.
        batch_size: how many streams shared the inference call.
        timings: the stage times of this call (milliseconds).
        source: the frame the labels belong to (the very :class:`Frame` object given, so its
            ``stamp_ns`` in ns, ``frame_id``, ``image`` and ``context`` are the labels'): the
            frame processed, or for a delayed model the newest frame its memory held. Always
            set by the pipeline; None only in results built by hand (test stand-ins), read as
            the frame processed.
        repeat: the labels belong to the same frame as the stream's previous result (delayed
            models only): a consumer that takes one result per frame skips it.
        color: the labels in the classes' colours, (H, W, 3) uint8 RGB
            (:func:`~lmanet_ros.imaging.colorize`), or None when not asked for.
        overlay: ``color`` blended over ``source.image``, (H, W, 3) uint8 RGB
            (:func:`~lmanet_ros.imaging.overlay`), or None when not asked for.
    """

    stream: str
    labels: np.ndarray
    confidence: np.ndarray | None
    reset_reason: str | None
    duplicate: bool
    memory_fill: int
    batch_size: int
    timings: StageTimes
    source: Frame | None = None
    repeat: bool = False
    color: np.ndarray | None = None
    overlay: np.ndarray | None = None


@dataclass(frozen=True)
class _Wanted:
    """The optional outputs of a call (``alpha``: the overlay's colour weight)."""

    confidence: bool = False
    color: bool = False
    overlay: bool = False
    alpha: float = 0.5


@dataclass
class _Prepared:
    """One admitted frame: its state, the frame on the device (H, W, 3) uint8, the network
    input (1, 3, h, w) and its preprocess marks."""

    index: int
    frame: Frame
    state: StreamState
    admission: Any
    rgb: torch.Tensor
    x: torch.Tensor
    marks: tuple[Any, Any]


@dataclass
class _Labelled:
    """One stream's bookkeeping for a delayed model (see the module docstring).

    Attributes:
        stored: the newest frame stepped with its entry stored in the memory, or None.
        stored_rgb: that frame on the device, (H, W, 3) uint8 (the overlay's background).
        last: the frame the stream's previous result labelled, or None.
    """

    stored: Frame | None = None
    stored_rgb: torch.Tensor | None = field(default=None, repr=False)
    last: Frame | None = None


def _device(spec: str) -> torch.device:
    """:func:`~lmanet_ros.devices.resolve_device`, its error raised as a PipelineError."""
    try:
        return resolve_device(spec)
    except DeviceError as exc:
        raise PipelineError(str(exc)) from exc


def _backend_device(backend: str, device: str, precision: str) -> torch.device:
    """Where ``backend`` runs for the ``device`` asked (auto: the CPU for a graph backend),
    checked before anything is loaded or exported.

    Raises:
        PipelineError: an unknown backend or one whose package is missing; a device other than
        the CPU or a precision other than fp32 for a graph backend.
    """
    try:
        check_backend(backend)
    except BackendError as exc:
        raise PipelineError(str(exc)) from exc
    if backend in ("torch", "auto"):  # auto: a graph backend only where this is the CPU
        return _device(device)
    spec = device.strip().lower()
    if spec.partition(":")[0] not in ("auto", "cpu"):  # before resolving: no CUDA check first
        raise PipelineError(f"the {backend} backend runs on the CPU, not {device}: use device "
                            f"cpu (or auto), or backend torch for {device}")
    if precision != "fp32":
        raise PipelineError(f"the {backend} backend computes in fp32, not {precision}: use "
                            f"precision fp32, or backend torch for {precision}")
    return torch.device("cpu")


#: The checkpoint id of a pipeline without weights (random initialisation), in reports and
#: ``LabelInfo``.
RANDOM_WEIGHTS_ID = "random-init"


class SegmentationPipeline:
    """Many streams through one model, each with its own memory and reset rules.

    ``process`` runs on one thread at a time (the caller's worker); ``reset`` and the setters may
    be called from any other thread and never wait for an inference.
    """

    def __init__(self, model: torch.nn.Module, *, device: torch.device | str = "cpu",
                 precision: str = "fp32", input_size: tuple[int, int] | None = None,
                 memory_length: int | None = None, policy: MemoryPolicy | None = None,
                 classes: ClassSet | None = None, checkpoint_id: str = RANDOM_WEIGHTS_ID,
                 metadata: Mapping[str, Any] | None = None, autocast: bool | None = None,
                 cuda_graphs: bool = False) -> None:
        """Wrap ``model`` (moved to ``device`` and ``precision``, put in eval mode).

        Args:
            model: a network of :mod:`lmanet_ros.models` (has ``info`` and ``step``).
            device: where to run; a string is resolved with :func:`resolve_device`.
            precision: ``fp32``, ``fp16`` or ``bf16``: how the network computes.
            autocast: for fp16/bf16, compute by ``torch.autocast`` (weights and inputs stay
                float32; convolutions and matrix products run in fp16/bf16, softmax and
                normalisation statistics in fp32 as autocast does; the attention's softmax is
                fp32 in every backend) instead of casting the model (weights, activations and
                memory all in fp16/bf16). None: autocast on CUDA, the cast elsewhere.
            cuda_graphs: run the step through CUDA graphs (:meth:`set_cuda_graphs`).
            input_size: (height, width) the network sees in pixels; (0, 0) = each frame's own
                size; None = the trained size the metadata states, else (0, 0).
            memory_length: frames T the memory holds; None or 0 = not given (the metadata's,
                else the T ``model`` was built with:
                :func:`~lmanet_ros.models.weights.resolve_memory_length`).
            policy: the memory policy (gap and stride rules); None = the defaults.
            classes: class names and colours; the first K logits are used (default Cityscapes).
            checkpoint_id: identifies the weights in reports and metadata.
            metadata: the checkpoint's metadata (trained input size, memory length), or None.
        """
        if precision not in PRECISIONS:
            raise PipelineError(f"precision '{precision}' is not one of {sorted(PRECISIONS)}")
        self.device = _device(device) if isinstance(device, str) else device
        self.precision = precision
        #: The precision the network computes in (fp16/bf16 by cast or by autocast).
        self.compute_dtype = PRECISIONS[precision]
        #: Whether fp16/bf16 comes from ``torch.autocast`` (the model kept in float32).
        self.autocast = precision != "fp32" and (
            autocast if autocast is not None else self.device.type == "cuda")
        #: The dtype of the model's weights and of its input tensors.
        self.dtype = torch.float32 if self.autocast else self.compute_dtype
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self._staging = HostStaging(self.device)
        self._clock = StageClock(self.device)
        self._batched = BatchedMemories()
        self._graphs: StepGraphs | None = None
        self._render_on_device = self.device.type == "cuda"  # colour/overlay by torch, not cv2
        self._renderers: tuple[Any, Any] = (None, None)  # imaging, device_imaging when used
        #: context(capturing) of a step: inference mode, autocast where it applies.
        self._context = functools.partial(step_context, self.device.type,
                                          self.compute_dtype if self.autocast else None)
        self.info = model.info
        self.classes = classes if classes is not None else ClassSet.cityscapes()
        if len(self.classes.names) > self.info.num_classes:
            raise PipelineError(f"{len(self.classes.names)} class names given but model "
                                f"'{self.info.name}' has {self.info.num_classes} outputs")
        self.checkpoint_id = checkpoint_id
        #: The inference backend that runs ``model`` (``torch``, ``onnxruntime``, ``openvino``:
        #: a :class:`~lmanet_ros.runtime.RuntimeModel` says which) and its package's version.
        self.backend: str = getattr(model, "backend", "torch")
        self.backend_version: str = getattr(model, "backend_version", torch.__version__)
        self.backend_reason = ""  #: why, when ``backend="auto"`` chose it (from_pretrained)
        #: The loader's report (None for random weights); the file's sha256 is in it.
        self.load_report: LoadReport | None = None
        #: The weights file that was loaded (None: random weights or a state_dict mapping).
        self.checkpoint_path: Path | None = None
        #: The packaged weights' record when the checkpoint was a tag such as ``demo``.
        self.weights: Weights | None = None
        #: The checkpoint's metadata ({} for random weights): what was not given comes from it.
        self.metadata: Mapping[str, Any] = dict(metadata or {})
        #: (height, width) the weights were trained at (metadata), or None.
        self.trained_size = trained_input_size(self.metadata)
        # the model as built: its own T (a backend model built with a T says what it was)
        self._built = getattr(model, "built_info", model.info)
        #: T when none is given: the metadata's, else the model's own (0: single frame).
        self.default_memory_length = resolve_memory_length(self._built, None, self.metadata)
        #: Where the T in force came from (``explicit``, ``checkpoint metadata``...), for logs.
        self.memory_length_origin = memory_length_origin(self._built, None, self.metadata)
        self._streams: dict[str, StreamState] = {}
        self._streams_lock = threading.Lock()
        #: Frames by which the labels lag the frame processed: 1 for the delayed STF, 0 for
        #: causal models (those without an ``output_delay_frames`` attribute included).
        self.output_delay_frames = int(getattr(model, "output_delay_frames", 0))
        self._labelled: dict[str, _Labelled] = {}  # per stream, delayed models only; process()'s
        self._policy = policy if policy is not None else MemoryPolicy()
        self._memory_length = 0
        self.set_memory_length(memory_length)
        self._input_size = (0, 0)
        self.set_input_size(input_size)
        self.set_cuda_graphs(cuda_graphs)

    @classmethod
    def from_pretrained(cls, model_name: str,
                        checkpoint: str | Path | Mapping[str, Any] | None = None, *,
                        device: str = "auto", precision: str = "fp32", num_threads: int = 0,
                        input_size: tuple[int, int] | None = None,
                        memory_length: int | None = None, policy: MemoryPolicy | None = None,
                        classes: ClassSet | None = None, backend: str = "torch",
                        cache_dir: str | Path | None = None) -> "SegmentationPipeline":
        """Build the named model, load ``checkpoint`` and wrap it.

        ``checkpoint``: a file, a state_dict mapping, None (random weights) or a weights tag
        (``demo``: the packaged demo weights of the model, :mod:`lmanet_ros.models.weights`). It
        is resolved, read and hashed once, here. ``num_threads``: PyTorch's CPU threads (and a
        graph backend's), 0 for the package default
        (:func:`~lmanet_ros.threads.default_cpu_threads`: the physical cores this process may
        use, at most 4).

        ``backend``: ``torch`` runs the PyTorch network; ``onnxruntime`` and ``openvino`` run
        graphs exported from it (:mod:`lmanet_ros.runtime`: on the first use of a checkpoint
        and input size, then read from the graph cache ``cache_dir``, default
        ``$LMANET_CACHE`` or ``~/.cache/lmanet_ros/onnx``) on the CPU (``device`` auto means
        the CPU for them) in fp32, at a fixed input size (``input_size``, else the trained
        size) that the pipeline keeps; ``auto``: :func:`~lmanet_ros.runtime.auto_backend`'s
        choice, its reason kept as ``self.backend_reason``.

        What is not given comes from the checkpoint's metadata, then from the model: the memory
        length (:func:`~lmanet_ros.models.weights.resolve_memory_length`), the input size (the
        trained size; else each frame's own), the classes. The load report is kept as
        ``self.load_report`` (None for random weights), the backend as ``self.backend`` (with
        ``self.backend_version``).

        Raises:
            PipelineError: bad device or precision; an unknown backend or what a named one
            cannot run (package, device, precision, no input size, a failed export: never a
            fall-back); ValueError: unknown model or bad metadata; the loader's errors.
        """
        target = _backend_device(backend, device, precision)
        apply_cpu_threads(num_threads)
        try:
            loaded = load_model(model_name, checkpoint, backend=backend, input_size=input_size,
                                memory_length=memory_length, num_threads=num_threads,
                                cache_dir=cache_dir, device_type=target.type,
                                precision=precision)
        except BackendError as exc:
            raise PipelineError(str(exc)) from exc
        report = loaded.report
        metadata = report.metadata if report is not None else {}
        if classes is None and metadata.get("classes"):
            classes = ClassSet.from_metadata(metadata["classes"])
        if report is None:
            checkpoint_id = RANDOM_WEIGHTS_ID
        else:
            checkpoint_id = report.sha256[:16] if report.sha256 else "state-dict"
        fixed = getattr(loaded.model, "input_size", None)  # a graph backend's only size
        pipeline = cls(loaded.model, device=target, precision=precision,
                       input_size=fixed or input_size, memory_length=memory_length,
                       policy=policy, classes=classes, checkpoint_id=checkpoint_id,
                       metadata=metadata)
        pipeline.load_report = report
        pipeline.weights = loaded.weights
        pipeline.backend_reason = loaded.backend_reason
        if report is not None and report.sha256:
            pipeline.checkpoint_path = Path(loaded.source)
        return pipeline

    # ----------------------------------------------------------------- configuration (any thread)
    @property
    def policy(self) -> MemoryPolicy:
        """The memory policy in force."""
        return self._policy

    def set_policy(self, policy: MemoryPolicy) -> None:
        """Change the gap and stride rules (the memories are kept)."""
        self._policy = policy

    @property
    def memory_length(self) -> int:
        """Frames T the memory holds now (0 for a single-frame model): the value in force."""
        return self._memory_length

    def set_memory_length(self, length: int | None) -> None:
        """Set T by :func:`~lmanet_ros.models.weights.resolve_memory_length` (None or 0: the
        metadata's, else the model's own); a change resets every stream (``parameter``).
        Single-frame models keep T = 0.

        Raises:
            ValueError: a negative length.
        """
        if length is not None and length < 0:
            raise ValueError(f"memory length must be >= 0, got {length}")
        new = resolve_memory_length(self._built, length, self.metadata)
        self.memory_length_origin = memory_length_origin(self._built, length, self.metadata)
        if new != self._memory_length:
            first = self._memory_length == 0
            if self.info.temporal:
                self.model.memory_length = new  # first: a model may refuse the length
            self._memory_length = new
            if not first:
                self.reset(reason=ResetReason.PARAMETER.value)

    @property
    def input_size(self) -> tuple[int, int]:
        """Network input (height, width) in pixels in force; (0, 0) = each frame's own size."""
        return self._input_size

    def set_input_size(self, size: tuple[int, int] | None) -> None:
        """Set the network input size (None: the trained size when known, else (0, 0) = each
        frame's own); the memories are cleared (``parameter``) on a change."""
        if size is None:
            size = self.trained_size or (0, 0)
        height, width = (int(v) for v in size)
        if (height == 0) != (width == 0) or height < 0 or width < 0:
            raise ValueError(f"input size must be (0, 0) or two positive ints, got {size}")
        if height == 0 and self._graphs is not None:
            raise ValueError("CUDA graphs need a fixed input size, not each frame's own")
        if (height, width) != self._input_size:
            self._input_size = (height, width)
            self.reset(reason=ResetReason.PARAMETER.value)

    @property
    def attention(self) -> str:
        """The memory attention that runs, in words ('' for a single-frame model): a graph
        backend's, else ``attention_backend``'s choice for the device and compute dtype."""
        if not self.info.temporal:
            return ""
        if self.backend != "torch":
            return self.model.attention
        return attention_backend(self.device, self.compute_dtype)

    @property
    def cuda_graphs(self) -> bool:
        """Whether the step runs through CUDA graphs."""
        return self._graphs is not None

    def set_cuda_graphs(self, enabled: bool) -> None:
        """Run the step through CUDA graphs (:class:`~lmanet_ros.pipeline_device.StepGraphs`:
        one per batch size, fill level and store flag, captured on first use) or eagerly.

        Raises:
            PipelineError: graphs asked on a device other than CUDA, or without a fixed input
            size (each frame's own size would capture a graph per frame size).
        """
        if not enabled:
            self._graphs = None
            return
        if self.device.type != "cuda":
            raise PipelineError(f"CUDA graphs need a CUDA device; this pipeline runs on "
                                f"{self.device}")
        if not self._input_size[0]:
            raise PipelineError("CUDA graphs need a fixed input size (input_size), not each "
                                "frame's own")
        if self._graphs is None:
            self._graphs = StepGraphs(self.model, self._context)

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
        """Run the network on a blank (height, width) frame: first-frame and memory paths (with
        CUDA graphs: their capture for batch 1)."""
        x = torch.zeros(1, 3, *self._network_size(height, width), device=self.device,
                        dtype=self.dtype)
        _, memory = self._step(x, None, True)
        self._step(x, memory, True)
        self._staging.wait(self._staging.fence())

    def process(self, frames: Sequence[Frame], *, want_confidence: bool = False,
                want_color: bool = False, want_overlay: bool = False,
                overlay_alpha: float = 0.5) -> list[Result]:
        """Segment ``frames`` (any streams, any sizes) and return one Result each, in order.

        Frames of one stream are processed in the order given; frames of different streams
        whose memories have the same batch key (fill, and whatever else the memory type needs) and
        size are batched into one ``step``. ``want_color`` / ``want_overlay``: also return the
        labels in the classes' colours and blended over the labelled frame with colour weight
        ``overlay_alpha`` in [0, 1] (:attr:`Result.color`, :attr:`Result.overlay`; on CUDA
        computed on the device, byte for byte what :mod:`lmanet_ros.imaging` gives). On CUDA
        the call waits for the device once, at the end: ``collect(submit(...))``.
        """
        return self.collect(self.submit(frames, want_confidence=want_confidence,
                                        want_color=want_color, want_overlay=want_overlay,
                                        overlay_alpha=overlay_alpha))

    def submit(self, frames: Sequence[Frame], *, want_confidence: bool = False,
               want_color: bool = False, want_overlay: bool = False,
               overlay_alpha: float = 0.5) -> Submitted:
        """:meth:`process` up to the wait: every stream's state is updated and the device work
        queued now; :meth:`collect` returns the results. On CUDA the next frames may be
        submitted before these are collected: their host work overlaps this device work (their
        stage times then start when the device reaches them)."""
        if want_color or want_overlay:  # OpenCV (and the torch renderers) only when asked for
            from lmanet_ros import device_imaging, imaging
            self._renderers = (imaging, device_imaging)
            overlay_alpha = imaging.check_alpha(overlay_alpha)
        wanted = _Wanted(want_confidence, want_color, want_overlay, overlay_alpha)
        readouts: list[tuple[int, Readout]] = []
        pending = list(enumerate(frames))
        while pending:
            seen: set[str] = set()
            this_round, later = [], []
            for item in pending:
                (later if item[1].stream in seen else this_round).append(item)
                seen.add(item[1].stream)
            readouts.extend(self._process_round(this_round, wanted))
            pending = later
        return Submitted(readouts, len(frames), self._staging.fence())

    def collect(self, submitted: Submitted) -> list[Result]:
        """The results of a :meth:`submit`, in order, once its device work is done (CUDA: the
        one wait, for that work only)."""
        self._staging.wait(submitted.fence)
        results: list[Result | None] = [None] * submitted.count
        for index, readout in submitted.readouts:
            arrays = readout.arrays()
            results[index] = Result(
                labels=arrays["labels"], confidence=arrays.get("confidence"),
                color=arrays.get("color"), overlay=arrays.get("overlay"),
                timings=StageTimes(*readout.stage_ms()), **readout.fields)
        return results  # type: ignore[return-value]

    def _process_round(self, items: list[tuple[int, Frame]],
                       wanted: _Wanted) -> list[tuple[int, Readout]]:
        """Process frames of distinct streams: admit, preprocess, batched step, postprocess
        (queued on the device; read out by :meth:`process`)."""
        prepared = []
        for index, frame in items:
            if frame.image.ndim != 3 or frame.image.shape[2] != 3 or frame.image.dtype != np.uint8:
                raise ValueError(f"frame of stream '{frame.stream}' must be (H, W, 3) uint8, got "
                                 f"{frame.image.shape} {frame.image.dtype}")
            with self._streams_lock:
                state = self._state(frame.stream)
            size = frame.image.shape[:2]
            admission = state.admit(frame.stamp_ns, size, frame.frame_id, self._policy)
            start = self._clock.mark()
            rgb = self._staging.upload(frame.image)
            x = self._preprocess(rgb)
            prepared.append(_Prepared(index, frame, state, admission, rgb, x,
                                      (start, self._clock.mark())))

        groups: dict[tuple, list[_Prepared]] = {}
        for entry in prepared:
            memory = entry.state.memory
            memory_key = memory.batch_key() if memory is not None else None
            key = (tuple(entry.x.shape[2:]), memory_key, entry.admission.store)
            groups.setdefault(key, []).append(entry)

        out = []
        table = self._renderers[1].palette_table(self.classes.colors, self.device) if (
            self._render_on_device and (wanted.color or wanted.overlay)) else None
        for (_, _, store), group in groups.items():
            streams = tuple(entry.frame.stream for entry in group)
            start = self._clock.mark()
            batch = torch.cat([entry.x for entry in group]) if len(group) > 1 else group[0].x
            memory = self._batched.join(streams, [entry.state.memory for entry in group])
            logits, memory = self._step(batch, memory, store)
            inference = (start, self._clock.mark())
            memories = self._batched.split(streams, memory)
            for row, entry in enumerate(group):
                frame, state, admission = entry.frame, entry.state, entry.admission
                source, source_rgb, repeat = self._source(frame, entry.rgb, state.memory, store)
                state.memory = memories[row]
                state.stats.memory_fill = len(state.memory) if state.memory is not None else 0
                start = self._clock.mark()
                outputs = self._postprocess(logits[row:row + 1], frame.image.shape[:2],
                                            source_rgb, source.image, wanted, table)
                fields = dict(stream=frame.stream, reset_reason=admission.reset_reason,
                              duplicate=admission.duplicate, memory_fill=state.stats.memory_fill,
                              batch_size=len(group), source=source, repeat=repeat)
                out.append((entry.index, Readout(fields, outputs, (
                    entry.marks, inference, (start, self._clock.mark())))))
        return out

    def _step(self, batch: torch.Tensor, memory: Any, store: bool) -> tuple[torch.Tensor, Any]:
        """``model.step`` on a batch (through its CUDA graph when graphs are on)."""
        graphs = self._graphs
        if graphs is not None:
            return graphs.step(batch, memory, store)
        with self._context(False):
            return self.model.step(batch, memory, update_memory=store)

    def _source(self, frame: Frame, rgb: torch.Tensor, memory: Any, store: bool
                ) -> tuple[Frame, torch.Tensor, bool]:
        """Which frame the labels of stepping ``frame`` (``rgb`` on the device) on ``memory``
        (the memory given to the step) belong to, that frame on the device, and whether the
        stream's previous result labelled it too (a repeat); ``store``: the step keeps
        ``frame``'s entry. Updates the stream's bookkeeping."""
        if not self.output_delay_frames:
            return frame, rgb, False
        labelled = self._labelled.setdefault(frame.stream, _Labelled())
        if memory is None or not len(memory):
            source, source_rgb = frame, rgb
        else:
            source, source_rgb = labelled.stored, labelled.stored_rgb
        repeat = source is labelled.last
        labelled.last = source
        if store:
            labelled.stored, labelled.stored_rgb = frame, rgb
        return source, source_rgb, repeat

    def _network_size(self, height: int, width: int) -> tuple[int, int]:
        return self._input_size if self._input_size[0] else (height, width)

    def _preprocess(self, rgb: torch.Tensor) -> torch.Tensor:
        """(H, W, 3) uint8 RGB on the device -> (1, 3, h, w) in [0, 1] at the network size."""
        x = rgb.permute(2, 0, 1).unsqueeze(0).to(self.dtype).div_(255.0)
        size = self._network_size(*rgb.shape[:2])
        if size != tuple(rgb.shape[:2]):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        return x

    def _postprocess(self, logits: torch.Tensor, size: tuple[int, int], rgb: torch.Tensor,
                     image: np.ndarray, wanted: _Wanted, table: torch.Tensor | None
                     ) -> dict[str, Any]:
        """(1, C, h, w) logits -> host outputs: ``labels`` (H, W) uint8 ids over the first K
        classes and, as ``wanted``, ``confidence`` (H, W) float32, ``color`` and ``overlay``
        (H, W, 3) uint8 over the labelled frame (``rgb`` on the device, ``image`` on the host).
        Device outputs come as host tensors whose copies are queued (CUDA); ``table``: the
        palette on the device, when colours are rendered there."""
        logits = logits[:, :len(self.classes.names)]
        if tuple(logits.shape[2:]) != tuple(size):
            logits = F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False)
        outputs: dict[str, Any] = {}
        if wanted.confidence:
            confidence, labels = torch.softmax(logits.float(), dim=1).max(dim=1)
            outputs["confidence"] = confidence[0]
        else:  # max(...).indices equals argmax (first maximum on ties), ~4x faster on CPU here
            labels = logits.max(dim=1).indices
        labels = outputs["labels"] = labels[0].to(torch.uint8)
        imaging, device_imaging = self._renderers
        if table is not None:
            color = device_imaging.colorize_tensor(labels, table)
        elif wanted.color or wanted.overlay:
            color = imaging.colorize(labels.numpy(), self.classes.colors)
        if wanted.color:
            outputs["color"] = color
        if wanted.overlay:
            outputs["overlay"] = (
                device_imaging.overlay_tensor(rgb, color, wanted.alpha) if table is not None
                else imaging.overlay(image, color, wanted.alpha))
        return {name: self._staging.download(value) if isinstance(value, torch.Tensor)
                else value for name, value in outputs.items()}
