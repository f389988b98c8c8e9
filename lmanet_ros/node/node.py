"""``lmanet_node``: the ROS 2 node, a thin layer between camera topics and the pipeline.

Data flow (one way): an image message is taken by its subscription callback into a per-camera
intake (:class:`FrameIntake`: a latest-frame slot in ``latest`` mode, a bounded FIFO that throttles
the input in ``all`` mode); a worker thread takes what is ready (one frame per camera, batched),
decodes it (:mod:`lmanet_ros.imaging`), runs :meth:`SegmentationPipeline.process` (the memory and
its reset rules live there, one per camera) and publishes labels, confidence, colour mask and
overlay with the input header copied unchanged. Inference never runs on an executor thread, so
parameter services, reset services and diagnostics answer while a frame is being inferred.

Topics (relative, so namespaces and remaps work; camera ``front`` of ``cameras`` uses
``front/image`` and ``~/front/...``):

- in: ``image`` (sensor_msgs/Image) or ``image/compressed`` (sensor_msgs/CompressedImage);
- out: ``~/labels`` (mono8 class ids), ``~/color`` (rgb8), ``~/overlay`` (rgb8), ``~/confidence``
  (mono8), ``~/label_info`` (lmanet_ros/LabelInfo, latched: the readiness signal), also
  ``~/vision_label_info`` (vision_msgs/LabelInfo) where vision_msgs is installed, and
  ``/diagnostics``;
- services: ``~/reset_memory`` (all cameras), ``~/<camera>/reset_memory`` (std_srvs/Trigger).
"""
from __future__ import annotations

import array
import functools
import os
import sys
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_srvs.srv import Trigger

from lmanet_ros import demo_models, imaging
from lmanet_ros.params import (INPUT_PARAMS, MEMORY_PARAMS, SPEC_BY_NAME, SPECS, Settings,
                               descriptor, is_default_classes, validate)

try:  # Iron and later
    from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import PublisherEventCallbacks, SubscriptionEventCallbacks

try:  # Iron and later pass a MessageInfo (DDS source timestamp) to two-argument callbacks
    from rclpy.subscription import MessageInfo  # noqa: F401
    _HAS_MESSAGE_INFO = True
except ImportError:  # Humble
    _HAS_MESSAGE_INFO = False

try:  # generated from msg/ by colcon; absent on a machine that only has the Python sources
    from lmanet_ros.msg import ClassInfo, LabelInfo
except ImportError:  # pragma: no cover - depends on the installation
    ClassInfo = LabelInfo = None

try:  # robots with vision_msgs installed
    from vision_msgs.msg import LabelInfo as VisionLabelInfo
    from vision_msgs.msg import VisionClass
except ImportError:
    VisionLabelInfo = VisionClass = None

__all__ = ["LmanetNode", "FrameIntake", "StartupError", "main"]

NODE_NAME = "lmanet"
#: Frames a camera may have waiting in ``all`` mode before its subscription callback waits.
ALL_MODE_CAPACITY = 3
#: Seconds without any input after which a camera's diagnostics turn WARN.
NO_INPUT_WARN_S = 5.0
#: Smallest interval between two log lines of one kind (bad input, resets) per camera.
LOG_THROTTLE_S = 2.0
#: Output QoS: reliable, a few messages of history for late or slow readers.
OUTPUT_QOS = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.VOLATILE, history=HistoryPolicy.KEEP_LAST)
#: Class metadata: reliable and transient local (latched), so late subscribers get it.
LATCHED_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL,
                         history=HistoryPolicy.KEEP_LAST)
#: Warm-up size when the network input size is not fixed (first-call costs do not depend much
#: on the size; a small one keeps start-up short on a CPU).
WARMUP_SIZE = (64, 128)
OUTPUTS = ("labels", "color", "overlay", "confidence")
#: Seconds to wait at shutdown for the inference in progress to finish.
STOP_TIMEOUT_S = 4.0


def memory_frames(settings: Settings) -> int:
    """The memory length in force: ``memory.length``, or the model's own T when it is 0."""
    if settings.memory_length:
        return settings.memory_length
    from lmanet_ros.models.registry import model_entry
    return model_entry(settings.model).default_memory_length


class StartupError(RuntimeError):
    """The node cannot start as configured; the message is one line, fit for the user."""


# ------------------------------------------------------------------------------------- helpers
def image_message(header, pixels: np.ndarray, encoding: str) -> Image:
    """A sensor_msgs/Image of ``pixels`` ((H, W) or (H, W, C) uint8) with ``header`` copied.

    The bytes are copied once into an ``array.array('B')``, which every distribution's
    generated setter accepts without checking element by element (Humble checks ``bytes``).
    """
    pixels = np.ascontiguousarray(pixels)
    msg = Image()
    msg.header = header
    msg.height, msg.width = int(pixels.shape[0]), int(pixels.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(pixels.strides[0])
    data = array.array("B")
    data.frombytes(pixels.data.cast("B"))
    msg.data = data
    return msg


def stamp_seconds(stamp) -> float:
    """A builtin_interfaces/Time as float seconds."""
    return stamp.sec + stamp.nanosec * 1e-9


def _policy_name(kind: Any) -> str:
    """The name of a QoS policy kind (RELIABILITY, DURABILITY...) of a QoS event."""
    try:
        from rclpy.qos import QoSPolicyKind
        return QoSPolicyKind(kind).name
    except (ImportError, ValueError, TypeError):
        return str(getattr(kind, "name", kind))


class _Throttle:
    """At most one log line per key and period; tells how many were held back."""

    def __init__(self, period: float) -> None:
        self._period = period
        self._last: dict[Any, float] = {}
        self._held: Counter = Counter()
        self._lock = threading.Lock()

    def allow(self, key: Any) -> int | None:
        """None if this line is to be held back, else the count held back since the last."""
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._period:
                self._held[key] += 1
                return None
            self._last[key] = now
            return self._held.pop(key, 0)


class FrameIntake:
    """Frames waiting for the worker, per camera (no ROS here).

    ``latest`` mode: one slot per camera; a new frame replaces the one waiting (a drop), so the
    worker always gets the newest frame and latency stays bounded. ``all`` mode: a FIFO of
    ``capacity`` frames per camera; :meth:`put` waits while it is full, which stops the executor
    from taking more messages of that camera (DDS keeps them; a reliable KEEP_ALL publisher is
    throttled instead of the node queueing without bound).
    """

    def __init__(self, mode: str = "latest", capacity: int = ALL_MODE_CAPACITY) -> None:
        if mode not in ("latest", "all"):
            raise ValueError(f"mode must be latest or all, got {mode!r}")
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._mode = mode
        self._capacity = capacity
        self._queues: dict[str, deque] = {}
        self._cond = threading.Condition()
        self._closed = False

    @property
    def mode(self) -> str:
        """``latest`` or ``all``."""
        return self._mode

    def add(self, key: str) -> None:
        """Start accepting frames of camera ``key``."""
        with self._cond:
            self._queues.setdefault(key, deque())

    def remove(self, key: str) -> None:
        """Stop accepting frames of ``key``; its waiting frames are discarded."""
        with self._cond:
            self._queues.pop(key, None)
            self._cond.notify_all()

    def set_mode(self, mode: str) -> int:
        """Switch mode; going to ``latest`` keeps only the newest frame of each camera.

        Returns the number of frames discarded.
        """
        if mode not in ("latest", "all"):
            raise ValueError(f"mode must be latest or all, got {mode!r}")
        discarded = 0
        with self._cond:
            self._mode = mode
            if mode == "latest":
                for queue in self._queues.values():
                    while len(queue) > 1:
                        queue.popleft()
                        discarded += 1
            self._cond.notify_all()
        return discarded

    def put(self, key: str, item: Any) -> int:
        """Hand a frame of camera ``key`` to the worker; returns the frames dropped for it.

        In ``all`` mode this waits while the camera's FIFO is full (until the worker takes a
        frame, the mode changes, the camera is removed or the intake is closed).
        """
        with self._cond:
            while True:
                queue = self._queues.get(key)
                if queue is None or self._closed:
                    return 1  # not accepted: counted as a drop
                if self._mode == "latest":
                    dropped = len(queue)
                    queue.clear()
                    queue.append(item)
                    self._cond.notify_all()
                    return dropped
                if len(queue) < self._capacity:
                    queue.append(item)
                    self._cond.notify_all()
                    return 0
                self._cond.wait(0.1)

    def take(self, timeout: float) -> list[tuple[str, Any]]:
        """The oldest waiting frame of every camera that has one (empty after ``timeout`` s)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._closed:
                batch = [(key, queue.popleft()) for key, queue in self._queues.items() if queue]
                if batch:
                    self._cond.notify_all()  # room for callbacks waiting in ``all`` mode
                    return batch
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
        return []

    def waiting(self, key: str) -> int:
        """Frames of ``key`` waiting now."""
        with self._cond:
            queue = self._queues.get(key)
            return len(queue) if queue is not None else 0

    def close(self) -> None:
        """Release every waiting caller; nothing is accepted or handed out afterwards."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class CameraStats:
    """Counters of one camera for /diagnostics (written by callbacks and the worker)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received = 0
        self.dropped = 0
        self.processed = 0
        self.bad_inputs = 0
        self.errors = 0
        self.duplicates = 0
        self.memory_fill = 0
        self.batch_size = 0
        self.batched = 0
        self.rendered = 0
        self.incompatible_qos = 0
        self.last_bad_input = ""
        self.last_error = ""
        self.resets: Counter = Counter()
        self.last_received: float | None = None
        # since the last diagnostics message
        self.period_received = 0
        self.period_processed = 0
        self.period_bad = 0
        self.period_errors = 0
        self.period_processing_ms: list[float] = []
        self.period_inference_ms: list[float] = []
        self.period_latency_ms: list[float] = []
        self.period_input_delay_ms: list[float] = []

    def on_received(self, now: float, input_delay_ms: float | None = None) -> None:
        """A message arrived (``input_delay_ms``: since its publisher wrote it)."""
        with self.lock:
            self.received += 1
            self.period_received += 1
            self.last_received = now
            if input_delay_ms is not None:
                self.period_input_delay_ms.append(input_delay_ms)

    def on_dropped(self, count: int) -> None:
        """Frames replaced before they were processed."""
        with self.lock:
            self.dropped += count

    def on_bad_input(self, reason: str) -> None:
        """A message that could not be decoded."""
        with self.lock:
            self.bad_inputs += 1
            self.period_bad += 1
            self.last_bad_input = reason

    def on_error(self, reason: str) -> None:
        """A frame that decoded but could not be processed."""
        with self.lock:
            self.errors += 1
            self.period_errors += 1
            self.last_error = reason

    def on_processed(self, result, processing_ms: float, latency_ms: float) -> None:
        """A frame was segmented and its outputs published."""
        with self.lock:
            self.processed += 1
            self.period_processed += 1
            self.duplicates += int(result.duplicate)
            self.memory_fill = result.memory_fill
            self.batch_size = result.batch_size
            self.batched += int(result.batch_size > 1)
            if result.reset_reason:
                self.resets[result.reset_reason] += 1
            self.period_processing_ms.append(processing_ms)
            self.period_inference_ms.append(result.timings.inference_ms)
            self.period_latency_ms.append(latency_ms)

    def roll(self) -> dict[str, Any]:
        """A snapshot for one diagnostics message; the per-period counters restart."""
        with self.lock:
            snapshot = {
                "received": self.received, "dropped": self.dropped, "processed": self.processed,
                "bad_inputs": self.bad_inputs, "errors": self.errors,
                "duplicates": self.duplicates, "memory_fill": self.memory_fill,
                "batch_size": self.batch_size, "batched": self.batched,
                "rendered": self.rendered,
                "incompatible_qos": self.incompatible_qos,
                "last_bad_input": self.last_bad_input, "last_error": self.last_error,
                "resets": dict(self.resets), "last_received": self.last_received,
                "period_received": self.period_received,
                "period_processed": self.period_processed, "period_bad": self.period_bad,
                "period_errors": self.period_errors,
                "processing_ms": list(self.period_processing_ms),
                "inference_ms": list(self.period_inference_ms),
                "latency_ms": list(self.period_latency_ms),
                "input_delay_ms": list(self.period_input_delay_ms),
            }
            self.period_received = self.period_processed = 0
            self.period_bad = self.period_errors = 0
            self.period_processing_ms.clear()
            self.period_inference_ms.clear()
            self.period_latency_ms.clear()
            self.period_input_delay_ms.clear()
        return snapshot


@dataclass
class CameraPort:
    """The ROS side of one camera: its subscription, publishers, reset service and counters.

    Attributes:
        name: the camera name ('' for the single camera on ``image``).
        key: the pipeline stream name (the camera name, or 'image').
    """

    name: str
    key: str
    stats: CameraStats = field(default_factory=CameraStats)
    group: MutuallyExclusiveCallbackGroup = field(default_factory=MutuallyExclusiveCallbackGroup)
    subscription: Any = None
    publishers: dict[str, Any] = field(default_factory=dict)
    reset_service: Any = None

    @property
    def input_topic(self) -> str:
        """Relative input topic of raw images."""
        return f"{self.name}/image" if self.name else "image"

    def output_topic(self, output: str) -> str:
        """Private output topic, e.g. ``~/front/labels``."""
        return f"~/{self.name}/{output}" if self.name else f"~/{output}"


# ---------------------------------------------------------------------------------------- node
class LmanetNode(Node):
    """Semantic segmentation of one or more camera streams with LMANet (see module docstring)."""

    def __init__(self, node_name: str = NODE_NAME, *, pipeline_factory: Callable | None = None,
                 **kwargs: Any) -> None:
        """Declare parameters, load and warm up the model, wire topics; publish label_info last.

        Args:
            node_name: the default node name (a ``__node:=`` remap wins).
            pipeline_factory: builds the pipeline (default
                :meth:`SegmentationPipeline.from_pretrained`); for tests.
            kwargs: passed to :class:`rclpy.node.Node`.

        Raises:
            StartupError: bad parameters, missing or mismatched checkpoint, absent device,
                unknown model. The reason has already been logged (one line).
        """
        super().__init__(node_name, **kwargs)
        self._declaring = True
        self._settings = Settings()
        self._num_classes: int | None = None
        self._pipeline = None
        self._stopping = threading.Event()
        self._config_lock = threading.RLock()
        self._ports_lock = threading.RLock()
        self._ports: dict[str, CameraPort] = {}
        self._throttle = _Throttle(LOG_THROTTLE_S)
        self._worker: threading.Thread | None = None
        self._ready_time: float | None = None
        self._label_info_pub = None
        self._vision_label_info_pub = None
        self._diagnostics_timer = None
        self._threads_applied = 0
        self._random_weights = False
        self._inferring_since: float | None = None
        try:
            self._declare_parameters()
            self._load_pipeline(pipeline_factory)
            self._wire()
        except StartupError as exc:
            self._stopping.set()
            self.get_logger().fatal(str(exc))
            raise

    # ------------------------------------------------------------------------------ parameters
    def _declare_parameters(self) -> None:
        """Declare every parameter of :data:`SPECS`; validate the whole set once declared."""
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._apply_in_on_set = not hasattr(self, "add_post_set_parameters_callback")
        if not self._apply_in_on_set:  # Iron and later; Humble applies in the on-set callback
            self.add_post_set_parameters_callback(self._after_set_parameters)
        values = {}
        for spec in SPECS:
            try:
                param = self.declare_parameter(spec.name, spec.default, descriptor(spec))
            except Exception as exc:  # InvalidParameterTypeException, ...ValueException
                raise StartupError(f"parameter {spec.name}: {_one_line(exc)}") from None
            if param.type_ == Parameter.Type.NOT_SET:  # typed but unset (an empty list)
                self.set_parameters([Parameter(spec.name, spec.default, [])])
                param = self.get_parameter(spec.name)
            values[spec.name] = param.value
        reason = validate(values, {})
        if reason:
            raise StartupError(f"invalid parameters: {reason}")
        self._settings = Settings().updated(values)
        self._declaring = False
        self._warn_unknown_overrides()

    def _warn_unknown_overrides(self) -> None:
        """Log parameters given on the command line or in a file that the node does not have."""
        overrides = getattr(self, "_parameter_overrides", None) or {}
        known = set(SPEC_BY_NAME) | {"use_sim_time", "start_type_description_service"}
        for name in sorted(overrides):
            if name not in known and not name.startswith("qos_overrides."):
                self.get_logger().warning(f"parameter '{name}' is set but {self.get_name()} "
                                          f"has no such parameter (a typo?); it is ignored")

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Validate a change (rclpy has already checked type, range and read-only)."""
        changes = {p.name: p.value for p in params if p.name in SPEC_BY_NAME}
        if not changes or self._declaring:
            return SetParametersResult(successful=True)
        with self._config_lock:
            reason = validate(changes, self._settings.as_dict(), num_classes=self._num_classes)
            if reason:
                self.get_logger().warning(f"parameter change refused: {reason}")
                return SetParametersResult(successful=False, reason=reason)
            if self._apply_in_on_set:
                self._apply(changes)
        return SetParametersResult(successful=True)

    def _after_set_parameters(self, params: list[Parameter]) -> None:
        """Apply an accepted change (Iron and later)."""
        changes = {p.name: p.value for p in params if p.name in SPEC_BY_NAME}
        if changes and not self._declaring:
            with self._config_lock:
                self._apply(changes)

    def _apply(self, changes: dict[str, Any]) -> None:
        """Make accepted parameter values take effect."""
        old = self._settings
        new = old.updated(changes)
        self._settings = new
        pipeline = self._pipeline
        if pipeline is None:
            return
        changed = {name for name in changes if old.value(name) != new.value(name)}
        if changed & MEMORY_PARAMS:
            if memory_frames(old) != memory_frames(new):
                self.get_logger().info(f"memory.length {memory_frames(old)} -> "
                                       f"{memory_frames(new)}: every camera's memory is reset")
            pipeline.set_policy(self._policy(new))
        if {"input_height", "input_width"} & changed:
            if new.input_size != pipeline.input_size:
                pipeline.set_input_size(new.input_size)
                self.get_logger().info(f"network input size now {self._size_text(new)}; "
                                       f"memories reset")
            if (new.input_height > 0) != (new.input_width > 0):
                self.get_logger().info(
                    f"input_height {new.input_height}, input_width {new.input_width}: the "
                    f"network input stays each frame's size until both are set")
        if {"class_names", "palette"} & changed:
            pipeline.set_classes(self._class_set(new))
            self._publish_label_info()
        if {f"publish.{output}" for output in OUTPUTS} & changed:
            with self._ports_lock:
                for port in self._ports.values():
                    self._ensure_publishers(port)
        if "processing_mode" in changed:
            discarded = self._intake.set_mode(new.processing_mode)
            self.get_logger().info(f"processing_mode now '{new.processing_mode}'"
                                   + (f" ({discarded} queued frames dropped)" if discarded
                                      else ""))
        if changed & INPUT_PARAMS:
            self._rebuild_cameras()
        if {"processing_mode", "input.depth"} & changed:
            self._hint_replay_memory(new)
        if "diagnostics_period" in changed:
            self._start_diagnostics_timer()

    # ---------------------------------------------------------------------------------- model
    @staticmethod
    def _policy(settings: Settings):
        from lmanet_ros.streams import MemoryPolicy
        return MemoryPolicy(max_gap=settings.memory_max_gap, stride=settings.memory_stride,
                            memory_length=memory_frames(settings))

    @staticmethod
    def _class_set(settings: Settings):
        from lmanet_ros.classes import ClassSet
        return ClassSet.from_flat(settings.class_names, settings.palette)

    @staticmethod
    def _size_text(settings: Settings) -> str:
        height, width = settings.input_size
        return f"{height}x{width}" if height else "each frame's size"

    def _load_pipeline(self, factory: Callable | None) -> None:
        """Check the cheap things first, then load the model, resolve classes, warm up."""
        settings = self._settings
        from lmanet_ros import pipeline as pipeline_module
        from lmanet_ros.models import list_models

        if settings.model not in list_models():
            raise StartupError(f"unknown model '{settings.model}'; known models: "
                               f"{', '.join(list_models())}")
        try:
            device = pipeline_module.resolve_device(settings.device)
        except pipeline_module.PipelineError as exc:
            raise StartupError(_one_line(exc)) from None
        checkpoint = settings.checkpoint.strip()
        if checkpoint == demo_models.DEMO:
            try:
                checkpoint = str(demo_models.demo_checkpoint(settings.model))
            except FileNotFoundError as exc:
                raise StartupError(f"{exc} (parameter checkpoint)") from None
        if checkpoint:
            checkpoint = os.path.expanduser(checkpoint)
            if not os.path.isfile(checkpoint):
                raise StartupError(f"checkpoint not found: '{checkpoint}' (parameter checkpoint)")
            if not os.access(checkpoint, os.R_OK):
                raise StartupError(f"checkpoint not readable: '{checkpoint}'")

        log = self.get_logger()
        log.info(f"loading {settings.model} on {device} ({settings.precision}) from "
                 + (f"'{checkpoint}'" if checkpoint else "random weights") + " ...")
        start = time.monotonic()
        factory = factory or pipeline_module.SegmentationPipeline.from_pretrained
        try:
            pipeline = factory(settings.model, checkpoint or None, device=settings.device,
                               precision=settings.precision, num_threads=settings.num_threads,
                               input_size=settings.input_size, policy=self._policy(settings))
        except Exception as exc:  # the loader's errors name the problem; no traceback
            # ValueError (CheckpointError), RuntimeError (PipelineError), OSError speak for
            # themselves; anything else (a pickle failing on a file that is no checkpoint) gets
            # its type named.
            known = isinstance(exc, (ValueError, RuntimeError, OSError))
            raise StartupError(f"cannot load {settings.model}"
                               + (f" from '{checkpoint}'" if checkpoint else "")
                               + ": " + ("" if known else f"{type(exc).__name__}: ")
                               + _one_line(exc)) from None
        self._threads_applied = settings.num_threads
        info = pipeline.info
        report = getattr(pipeline, "load_report", None)
        log.info(f"loaded {info.name} in {time.monotonic() - start:.1f} s: "
                 f"{info.num_classes} outputs, memory {info.memory_length if info.temporal else 0}"
                 f" frames, checkpoint id {pipeline.checkpoint_id}"
                 + (f", memory attention {self._attention_text(pipeline)}" if info.temporal
                    else ""))
        if report is not None:
            for what in ("initialised", "missing", "unexpected", "ignored"):
                keys = getattr(report, what, ())
                if keys:
                    log.warning(f"checkpoint: {len(keys)} {what} "
                                f"{'part' if what == 'initialised' else 'key'}(s): "
                                f"{', '.join(list(keys)[:6])}{' ...' if len(keys) > 6 else ''}")
        if not checkpoint:
            self._random_weights = True
            log.warning("checkpoint is empty: the network runs with RANDOM WEIGHTS and its "
                        "labels are noise. Set the checkpoint parameter (e.g. checkpoint:="
                        "/path/lmanet_erf_best.pth) for real use.")

        self._num_classes = info.num_classes
        self._resolve_classes(pipeline, settings)
        self._pipeline = pipeline
        height, width = settings.input_size if settings.input_size[0] else WARMUP_SIZE
        start = time.monotonic()
        try:
            pipeline.warmup(height, width)
        except Exception as exc:
            raise StartupError(f"warm-up of {info.name} at {height}x{width} failed: "
                               f"{_one_line(exc)}") from None
        log.info(f"warmed up at {height}x{width} in {time.monotonic() - start:.1f} s")

    def _resolve_classes(self, pipeline, settings: Settings) -> None:
        """Class names and colours: explicit parameter > checkpoint metadata > Cityscapes."""
        from lmanet_ros.classes import ClassSet
        log = self.get_logger()
        from_checkpoint = pipeline.classes  # the checkpoint's, or the Cityscapes default
        if is_default_classes(settings.class_names, settings.palette):
            effective = from_checkpoint
            if effective != ClassSet.cityscapes():
                log.info(f"classes from the checkpoint's metadata: {len(effective)} classes "
                         f"({', '.join(effective.names[:4])}, ...)")
        else:
            reason = validate({"class_names": list(settings.class_names)},
                              settings.as_dict(), num_classes=pipeline.info.num_classes)
            if reason:
                raise StartupError(f"invalid parameters: {reason}")
            effective = self._class_set(settings)
            if from_checkpoint != effective and from_checkpoint != ClassSet.cityscapes():
                log.warning("class_names/palette parameters differ from the class metadata "
                            "stored in the checkpoint; the parameters win")
        if len(effective) > pipeline.info.num_classes:
            raise StartupError(f"{len(effective)} classes but {pipeline.info.name} has "
                               f"{pipeline.info.num_classes} outputs")
        pipeline.set_classes(effective)
        if list(effective.names) != list(settings.class_names) or \
                effective.flat_palette() != list(settings.palette):
            # Show the classes in use as the parameter values (ros2 param get tells the truth).
            self._declaring = True
            try:
                self.set_parameters([
                    Parameter("class_names", Parameter.Type.STRING_ARRAY, list(effective.names)),
                    Parameter("palette", Parameter.Type.INTEGER_ARRAY, effective.flat_palette())])
            finally:
                self._declaring = False
            self._settings = self._settings.updated({"class_names": list(effective.names),
                                                     "palette": effective.flat_palette()})

    # ----------------------------------------------------------------------------------- wiring
    def _wire(self) -> None:
        """Publishers, cameras, services, diagnostics and the worker; label_info last."""
        self._service_group = ReentrantCallbackGroup()
        self._intake = FrameIntake(self._settings.processing_mode)
        if LabelInfo is not None:
            self._label_info_pub = self.create_publisher(LabelInfo, "~/label_info", LATCHED_QOS)
        else:
            self.get_logger().warning("lmanet_ros messages are not built: ~/label_info is off")
        if VisionLabelInfo is not None:
            self._vision_label_info_pub = self.create_publisher(
                VisionLabelInfo, "~/vision_label_info", LATCHED_QOS)
        self.create_service(Trigger, "~/reset_memory", self._on_reset_all,
                            callback_group=self._service_group)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._start_diagnostics_timer()
        self._worker = threading.Thread(target=self._run_worker, name="lmanet-worker",
                                        daemon=True)
        self._worker.start()
        self._rebuild_cameras()
        self._ready_time = time.monotonic()
        self._publish_label_info()
        settings = self._settings
        self._hint_replay_memory(settings)
        cameras = ", ".join(self._ports) if settings.cameras else "one camera"
        self.get_logger().info(
            f"ready: {cameras}, {settings.input_transport} input "
            f"({settings.input_reliability}, depth {settings.input_depth or 'all'}), "
            f"processing_mode {settings.processing_mode}, network input "
            f"{self._size_text(settings)}")

    def _hint_replay_memory(self, settings: Settings) -> None:
        """Say where a backlog waits in lossless replay (once per configuration)."""
        if settings.processing_mode == "all" and settings.input_depth == 0:
            self.get_logger().info(
                "processing_mode all with a keep-all input: frames not taken yet wait in the "
                "DDS reader, which keeps them all unless a Fast DDS profile limits it (see "
                "config/fastdds_shm.xml); the node itself queues at most "
                f"{ALL_MODE_CAPACITY} frames per camera")

    @property
    def executor_threads(self) -> int:
        """Executor threads: one per camera callback that may wait (``all`` mode) + services."""
        return max(4, len(self._settings.cameras) + 3)

    def _start_diagnostics_timer(self) -> None:
        if self._diagnostics_timer is not None:
            self.destroy_timer(self._diagnostics_timer)
        self._diagnostics_timer = self.create_timer(
            self._settings.diagnostics_period, self._publish_diagnostics,
            callback_group=self._service_group)

    def _rebuild_cameras(self) -> None:
        """Create, re-create or remove camera ports to match the parameters."""
        settings = self._settings
        wanted = list(settings.cameras) or [""]
        with self._ports_lock:
            for name in [n for n, port in self._ports.items() if port.name not in wanted]:
                self._remove_port(self._ports.pop(name))
            for name in wanted:
                key = name or "image"
                port = self._ports.get(key)
                if port is None:
                    port = self._ports[key] = CameraPort(name=name, key=key)
                    self._intake.add(key)
                    self._ensure_publishers(port)
                    if name:
                        port.reset_service = self.create_service(
                            Trigger, port.output_topic("reset_memory"),
                            functools.partial(self._on_reset_camera, port),
                            callback_group=self._service_group)
                self._subscribe(port, settings)

    def _remove_port(self, port: CameraPort) -> None:
        self._intake.remove(port.key)
        if port.subscription is not None:
            self.destroy_subscription(port.subscription)
        for publisher in port.publishers.values():
            self.destroy_publisher(publisher)
        if port.reset_service is not None:
            self.destroy_service(port.reset_service)
        if self._pipeline is not None:
            self._pipeline.reset(port.key, reason="parameter")
        self.get_logger().info(f"camera '{port.key}' removed")

    def _subscribe(self, port: CameraPort, settings: Settings) -> None:
        """(Re-)create the input subscription of ``port`` with the input parameters."""
        if port.subscription is not None:
            self.destroy_subscription(port.subscription)
            port.subscription = None
        compressed = settings.input_transport == "compressed"
        topic = port.input_topic + ("/compressed" if compressed else "")
        keep_all = settings.input_depth == 0
        qos = QoSProfile(
            history=HistoryPolicy.KEEP_ALL if keep_all else HistoryPolicy.KEEP_LAST,
            depth=max(settings.input_depth, 1),
            reliability=(ReliabilityPolicy.RELIABLE if settings.input_reliability == "reliable"
                         else ReliabilityPolicy.BEST_EFFORT),
            durability=DurabilityPolicy.VOLATILE)
        events = SubscriptionEventCallbacks(
            incompatible_qos=functools.partial(self._on_incompatible_input_qos, port))
        callback = self._on_image_with_info if _HAS_MESSAGE_INFO else self._on_image
        port.subscription = self.create_subscription(
            CompressedImage if compressed else Image, topic,
            functools.partial(callback, port), qos,
            callback_group=port.group, event_callbacks=events)

    def _ensure_publishers(self, port: CameraPort) -> None:
        """Create the publishers of enabled outputs (kept once created)."""
        settings = self._settings
        publishers = dict(port.publishers)
        for output in OUTPUTS:
            if output not in publishers and getattr(settings, f"publish_{output}"):
                events = PublisherEventCallbacks(incompatible_qos=functools.partial(
                    self._on_incompatible_output_qos, output))
                publishers[output] = self.create_publisher(
                    Image, port.output_topic(output), OUTPUT_QOS, event_callbacks=events)
        port.publishers = publishers  # replaced whole: the worker reads it without a lock

    # -------------------------------------------------------------------------------- callbacks
    def _on_image(self, port: CameraPort, msg, input_delay_ms: float | None = None) -> None:
        """Subscription callback: hand the message to the worker (may wait in ``all`` mode)."""
        now = time.monotonic()
        port.stats.on_received(now, input_delay_ms)
        dropped = self._intake.put(port.key, (msg, now))
        if dropped:
            port.stats.on_dropped(dropped)

    def _on_image_with_info(self, port: CameraPort, msg, info) -> None:
        """As :meth:`_on_image`, measuring the delay from the publisher's write to here."""
        delay = None
        source = info.get("source_timestamp") if isinstance(info, dict) else None
        if source:
            delay = (time.time_ns() - source) * 1e-6
        self._on_image(port, msg, delay)

    def _on_incompatible_input_qos(self, port: CameraPort, event) -> None:
        """A publisher of our input topic offers QoS this subscription cannot match."""
        with port.stats.lock:
            port.stats.incompatible_qos += 1
        policy = _policy_name(getattr(event, "last_policy_kind", "?"))
        topic = port.subscription.topic_name if port.subscription is not None else "?"
        hint = ""
        if "RELIABILITY" in policy:
            hint = (" The subscription is reliable and the publisher best effort: set "
                    "input.reliability to best_effort.")
        elif "DURABILITY" in policy:
            hint = " The publisher is volatile: subscriptions here are volatile too (check it)."
        self.get_logger().warning(
            f"a publisher on {topic} offers QoS incompatible with this node's subscription "
            f"(policy {policy}); no frames arrive from it.{hint}")

    def _on_incompatible_output_qos(self, output: str, event) -> None:
        """A subscription to one of our outputs asks for QoS we do not offer."""
        policy = _policy_name(getattr(event, "last_policy_kind", "?"))
        self.get_logger().warning(
            f"a subscription to ~/{output} asks for QoS this publisher does not offer (policy "
            f"{policy}); outputs are reliable and volatile", throttle_duration_sec=5.0)

    def _on_reset_all(self, request, response):
        """~/reset_memory: clear every camera's memory before its next frame."""
        names = self._pipeline.reset(None, reason="request") if self._pipeline else []
        keys = set(names) | set(self._ports)
        for key in keys - set(names):
            self._pipeline.reset(key, reason="request")
        response.success = True
        response.message = f"memory reset requested for {len(keys)} camera(s): " + \
            ", ".join(sorted(keys))
        return response

    def _on_reset_camera(self, port: CameraPort, request, response):
        """~/<camera>/reset_memory: clear this camera's memory before its next frame."""
        self._pipeline.reset(port.key, reason="request")
        response.success = True
        response.message = f"memory reset requested for camera '{port.key}'"
        return response

    # ----------------------------------------------------------------------------------- worker
    def _run_worker(self) -> None:
        """Take ready frames (one per camera), segment them in one batch, publish."""
        while not self._stopping.is_set():
            batch = self._intake.take(timeout=0.2)
            if not batch or self._stopping.is_set():
                continue
            try:
                self._process_batch(batch)
            except Exception as exc:  # never let the worker die; say what happened
                if self._stopping.is_set() or not rclpy.ok(context=self.context):
                    break
                if self._throttle.allow(("worker", type(exc).__name__)) is not None:
                    self.get_logger().error(f"processing failed: {_one_line(exc)}")

    def _process_batch(self, batch: list[tuple[str, Any]]) -> None:
        from lmanet_ros.pipeline import Frame

        settings = self._settings
        if settings.num_threads != self._threads_applied:
            self._set_threads(settings.num_threads)
        entries = []
        for key, (msg, received) in batch:
            port = self._ports.get(key)
            if port is None:
                continue
            start = time.perf_counter()
            try:
                image = self._decode(msg)
            except ValueError as exc:  # imaging.ImageError: a one-line reason
                self._bad_input(port, msg, _one_line(exc))
                continue
            header = msg.header
            frame = Frame(key, image, stamp_seconds(header.stamp), header.frame_id)
            entries.append((port, msg, frame, received, start))
        if not entries:
            return
        want_confidence = settings.publish_confidence and any(
            _subscribed(port.publishers.get("confidence")) for port, *_ in entries)
        frames = [entry[2] for entry in entries]
        self._inferring_since = time.monotonic()
        try:
            results = self._pipeline.process(frames, want_confidence=want_confidence)
        except Exception as exc:
            if len(entries) == 1:
                self._frame_error(entries[0][0], entries[0][2], exc)
                return
            results = []  # isolate the failing frame: process the batch one by one
            for entry in entries:
                try:
                    results.append(self._pipeline.process([entry[2]],
                                                          want_confidence=want_confidence)[0])
                except Exception as single_exc:
                    self._frame_error(entry[0], entry[2], single_exc)
                    results.append(None)
        finally:
            self._inferring_since = None
        for (port, msg, frame, received, start), result in zip(entries, results):
            if result is None:
                continue
            self._publish_outputs(port, msg.header, frame.image, result, settings)
            done = time.perf_counter()
            port.stats.on_processed(result, (done - start) * 1e3,
                                    (time.monotonic() - received) * 1e3)
            if result.reset_reason:
                self._log_reset(port, result.reset_reason)

    def _set_threads(self, count: int) -> None:
        import torch
        if not hasattr(self, "_default_threads"):
            self._default_threads = torch.get_num_threads()
        torch.set_num_threads(count if count > 0 else self._default_threads)
        self._threads_applied = count

    @staticmethod
    def _decode(msg) -> np.ndarray:
        if isinstance(msg, CompressedImage):
            return imaging.decode_compressed(msg.format, msg.data)
        return imaging.decode_image(msg.encoding, msg.height, msg.width, msg.step, msg.data,
                                    bool(msg.is_bigendian))

    def _publish_outputs(self, port: CameraPort, header, image: np.ndarray, result,
                         settings: Settings) -> None:
        """Labels first (lowest latency), then confidence, then colour and overlay if wanted."""
        publishers = port.publishers
        with self._ports_lock:
            if port.key not in self._ports:
                return
            labels_pub = publishers.get("labels")
            if settings.publish_labels and labels_pub is not None:
                labels_pub.publish(image_message(header, result.labels, "mono8"))
            confidence_pub = publishers.get("confidence")
            if settings.publish_confidence and confidence_pub is not None and \
                    result.confidence is not None:
                confidence_pub.publish(image_message(
                    header, imaging.confidence_to_mono8(result.confidence), "mono8"))
            color_pub = publishers.get("color") if settings.publish_color else None
            overlay_pub = publishers.get("overlay") if settings.publish_overlay else None
            want_color, want_overlay = _subscribed(color_pub), _subscribed(overlay_pub)
            if want_color or want_overlay:
                with port.stats.lock:
                    port.stats.rendered += 1
                color = imaging.colorize(result.labels, self._pipeline.classes.colors)
                if want_color:
                    color_pub.publish(image_message(header, color, "rgb8"))
                if want_overlay:
                    blended = imaging.overlay(image, color, settings.overlay_alpha)
                    overlay_pub.publish(image_message(header, blended, "rgb8"))

    def _bad_input(self, port: CameraPort, msg, reason: str) -> None:
        port.stats.on_bad_input(reason)
        held = self._throttle.allow((port.key, "bad_input"))
        if held is not None:
            topic = port.subscription.topic_name if port.subscription is not None else "?"
            self.get_logger().error(
                f"bad input on {topic}: {reason}; frame skipped"
                + (f" ({held} more since the last message)" if held else ""))

    def _frame_error(self, port: CameraPort, frame, exc: Exception) -> None:
        reason = f"{type(exc).__name__}: {_one_line(exc)}"
        port.stats.on_error(reason)
        held = self._throttle.allow((port.key, "error"))
        if held is not None:
            self.get_logger().error(
                f"camera '{port.key}': frame {frame.image.shape[1]}x{frame.image.shape[0]} "
                f"could not be processed: {reason}"
                + (f" ({held} more since the last message)" if held else ""))

    def _log_reset(self, port: CameraPort, reason: str) -> None:
        held = self._throttle.allow((port.key, "reset", reason))
        if held is not None:
            self.get_logger().info(
                f"camera '{port.key}': memory reset ({reason})"
                + (f", {held} more since the last message" if held else ""))

    # ------------------------------------------------------------------------- label info, diag
    def _publish_label_info(self) -> None:
        """Publish the class metadata (latched); called when ready and when classes change."""
        pipeline = self._pipeline
        if pipeline is None or self._ready_time is None:
            return
        classes = pipeline.classes
        stamp = self.get_clock().now().to_msg()
        if self._label_info_pub is not None:
            msg = LabelInfo()
            msg.header.stamp = stamp
            msg.model_name = pipeline.info.name
            msg.checkpoint_id = pipeline.checkpoint_id
            msg.memory_length = memory_frames(self._settings) if pipeline.info.temporal else 0
            msg.classes = [ClassInfo(id=index, name=name, r=int(rgb[0]), g=int(rgb[1]),
                                     b=int(rgb[2]))
                           for index, (name, rgb) in enumerate(zip(classes.names,
                                                                   classes.colors))]
            self._label_info_pub.publish(msg)
        if self._vision_label_info_pub is not None:
            vision = VisionLabelInfo()
            vision.header.stamp = stamp
            vision.class_map = [VisionClass(class_id=index, class_name=name)
                                for index, name in enumerate(classes.names)]
            self._vision_label_info_pub.publish(vision)

    def _publish_diagnostics(self) -> None:
        """/diagnostics: one status for the model, one per camera."""
        if self._pipeline is None:
            return
        settings = self._settings
        period = settings.diagnostics_period
        array_msg = DiagnosticArray()
        array_msg.header.stamp = self.get_clock().now().to_msg()
        array_msg.status.append(self._model_status(settings))
        with self._ports_lock:
            ports = list(self._ports.values())
        now = time.monotonic()
        for port in ports:
            array_msg.status.append(self._camera_status(port, port.stats.roll(), settings,
                                                        period, now))
        self._diagnostics_pub.publish(array_msg)

    @staticmethod
    def _attention_text(pipeline) -> str:
        """Which memory attention implementation runs ('' for single-frame models)."""
        if not pipeline.info.temporal:
            return ""
        if pipeline.device.type != "cpu":
            return f"torch ({pipeline.device.type})"
        if pipeline.precision != "fp32":
            return f"torch ({pipeline.precision})"
        from lmanet_ros.models.attention import attention_backend
        return attention_backend()

    def _model_status(self, settings: Settings) -> DiagnosticStatus:
        pipeline = self._pipeline
        status = DiagnosticStatus(name=f"{self.get_fully_qualified_name()}: model",
                                  hardware_id=str(pipeline.device))
        status.level = DiagnosticStatus.WARN if self._random_weights else DiagnosticStatus.OK
        status.message = ("RANDOM WEIGHTS (no checkpoint)" if self._random_weights else
                          f"{pipeline.info.name} ready")
        values = {
            "model": pipeline.info.name, "checkpoint": settings.checkpoint or "(none)",
            "checkpoint_id": pipeline.checkpoint_id, "device": str(pipeline.device),
            "precision": settings.precision, "classes": len(pipeline.classes),
            "memory_length": memory_frames(settings) if pipeline.info.temporal else 0,
            "memory_max_gap_s": settings.memory_max_gap, "memory_stride": settings.memory_stride,
            "processing_mode": settings.processing_mode,
            "input_size": self._size_text(settings),
            "normalisation": ("none (RGB in [0, 1])" if pipeline.info.mean is None else
                              f"mean {pipeline.info.mean} std {pipeline.info.std}"),
            "attention": self._attention_text(pipeline),
            "inferring_for_s": ("" if self._inferring_since is None
                                else f"{time.monotonic() - self._inferring_since:.2f}"),
        }
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        return status

    def _camera_status(self, port: CameraPort, snap: dict, settings: Settings, period: float,
                       now: float) -> DiagnosticStatus:
        topic = port.subscription.topic_name if port.subscription is not None else port.input_topic
        status = DiagnosticStatus(name=f"{self.get_fully_qualified_name()}: camera {port.key}",
                                  hardware_id=topic)
        processing = snap["processing_ms"]
        inference = snap["inference_ms"]
        latency = snap["latency_ms"]
        resets = snap["resets"]
        values = {
            "topic": topic,
            "input_rate_hz": f"{snap['period_received'] / period:.2f}",
            "processed_rate_hz": f"{snap['period_processed'] / period:.2f}",
            "processing_ms_mean": _mean_text(processing),
            "processing_ms_max": f"{max(processing):.1f}" if processing else "",
            "inference_ms_mean": _mean_text(inference),
            "latency_ms_mean": _mean_text(latency),
            "latency_ms_max": f"{max(latency):.1f}" if latency else "",
            "input_delay_ms_mean": _mean_text(snap["input_delay_ms"]),
            "input_delay_ms_max": (f"{max(snap['input_delay_ms']):.1f}"
                                   if snap["input_delay_ms"] else ""),
            "frames_received": snap["received"], "frames_processed": snap["processed"],
            "drops": snap["dropped"], "queued": self._intake.waiting(port.key),
            "bad_inputs": snap["bad_inputs"], "last_bad_input": snap["last_bad_input"],
            "processing_errors": snap["errors"], "last_error": snap["last_error"],
            "duplicates": snap["duplicates"],
            "memory_fill": snap["memory_fill"],
            "memory_length": memory_frames(settings),
            "last_batch_size": snap["batch_size"],
            "frames_batched": snap["batched"],
            "frames_rendered": snap["rendered"],
            "resets": sum(resets.values()),
        }
        values.update({f"resets.{reason}": count for reason, count in sorted(resets.items())})
        values["incompatible_qos_events"] = snap["incompatible_qos"]
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]

        last = snap["last_received"]
        waited = now - (last if last is not None else (self._ready_time or now))
        if snap["period_errors"]:
            status.level = DiagnosticStatus.ERROR
            status.message = f"{snap['period_errors']} frame(s) failed: {snap['last_error']}"
        elif snap["period_bad"]:
            status.level = DiagnosticStatus.WARN
            status.message = f"{snap['period_bad']} bad input(s): {snap['last_bad_input']}"
        elif waited > NO_INPUT_WARN_S:
            status.level = DiagnosticStatus.WARN
            status.message = (f"no images on {topic} for {waited:.0f} s"
                              + (" (incompatible QoS: see the log)" if snap["incompatible_qos"]
                                 else ""))
        else:
            status.level = DiagnosticStatus.OK
            status.message = (f"{values['input_rate_hz']} Hz in, {values['processed_rate_hz']} "
                              f"Hz processed, memory {snap['memory_fill']}/"
                              f"{memory_frames(settings)}")
        return status

    # --------------------------------------------------------------------------------- shutdown
    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking frames and wait for the frame in progress (at most ``timeout`` s)."""
        self._stopping.set()
        intake = getattr(self, "_intake", None)
        if intake is not None:
            intake.close()
        worker = self._worker
        if worker is not None and worker.is_alive() and worker is not threading.current_thread():
            worker.join(timeout)

    def worker_alive(self) -> bool:
        """Whether the worker thread still runs (an inference outlived :meth:`stop`)."""
        return self._worker is not None and self._worker.is_alive()

    def destroy_node(self) -> None:
        """Stop the worker (unless already asked to), then destroy the node."""
        self.stop(timeout=0.0 if self._stopping.is_set() else STOP_TIMEOUT_S)
        super().destroy_node()


def _subscribed(publisher) -> bool:
    return publisher is not None and publisher.get_subscription_count() > 0


def _mean_text(values: list[float]) -> str:
    return f"{sum(values) / len(values):.1f}" if values else ""


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def main(args: list[str] | None = None) -> int:
    """Run the node until SIGINT/SIGTERM; exit codes: 0 clean, 1 startup failure."""
    try:
        rclpy.init(args=args)
    except Exception as exc:  # malformed --ros-args, unreadable parameter file
        print(f"lmanet_node: cannot initialise ROS: {_one_line(exc)}", file=sys.stderr)
        return 2
    node = None
    executor = None
    code = 0
    try:
        node = LmanetNode()
        executor = MultiThreadedExecutor(num_threads=node.executor_threads)
        executor.add_node(node)
        executor.spin()
    except StartupError:
        code = 1  # already logged, one line
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.stop(timeout=STOP_TIMEOUT_S)
        if executor is not None:
            executor.shutdown(timeout_sec=1.0)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
        if node is not None and node.worker_alive():
            # An inference longer than STOP_TIMEOUT_S is still running in native code; leave
            # without finalising the interpreter under it (ros2 launch escalates to SIGTERM
            # after 5 s).
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
