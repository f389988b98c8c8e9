"""``lmanet_node``: the ROS 2 node, a thin layer between camera topics and the pipeline.

Data flow (one way): an image message is taken by its subscription callback into a per-camera
intake (:class:`~lmanet_ros.node.intake.FrameIntake`: a latest-frame slot in ``latest`` mode, a
bounded FIFO that throttles the input in ``all`` mode); a worker thread takes what is ready (one
frame per camera, batched), decodes it (:mod:`lmanet_ros.imaging`), runs
:meth:`SegmentationPipeline.process` (the memory and its reset rules live there, one per camera)
and publishes labels, confidence, colour mask and overlay with the input header copied
unchanged: the header of the frame the labels belong to (:attr:`Result.source`, whose context is
its input message and arrival time). That is the frame processed, except for a delayed model
(``output_delay_frames`` 1, e.g. ``stf_delayed_erfnet``): its labels are the previous frame's,
published with that frame's header, overlaid on that frame's image, their latency counted from
that frame's arrival (one frame period + compute); a result that labels the same frame again
(:attr:`Result.repeat`) is not published. Inference never runs on an executor thread, so
parameter services, reset services and diagnostics answer while a frame is being inferred.

Topics (relative, so namespaces and remaps work; camera ``front`` of ``cameras`` uses
``front/image`` and ``~/front/...``):

- in: ``image`` (sensor_msgs/Image) or ``image/compressed`` (sensor_msgs/CompressedImage);
- out: ``~/labels`` (mono8 class ids), ``~/color`` (rgb8), ``~/overlay`` (rgb8), ``~/confidence``
  (mono8), ``~/label_info`` (lmanet_ros/LabelInfo, latched: the readiness signal), also
  ``~/vision_label_info`` (vision_msgs/LabelInfo) where vision_msgs is installed, and
  ``/diagnostics``;
- services: ``~/reset_memory`` (all cameras), ``~/<camera>/reset_memory`` (std_srvs/Trigger).

The memory length and network input size in force are the pipeline's (:attr:`SegmentationPipeline.
memory_length`, :attr:`~SegmentationPipeline.input_size`): the parameters at 0 leave them to the
checkpoint's metadata, then to the model (see :mod:`lmanet_ros.models.weights`).
"""
from __future__ import annotations

import functools
import threading
import time
from typing import TYPE_CHECKING, Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.parameter import Parameter
from std_srvs.srv import Trigger

from lmanet_ros.node import diagnostics, graph, messages, process, qos
from lmanet_ros.node.delivery import Delivery, DeliveryWatch, advice
from lmanet_ros.node.events import EventLog
from lmanet_ros.node.intake import ALL_MODE_CAPACITY, FrameIntake
from lmanet_ros.node.launch_args import DDS_PROFILES, DEFAULT_DDS_PROFILE, NODE_NAME, config_file
from lmanet_ros.node.loading import (StartupError, load_pipeline, memory_policy, one_line,
                                     resolve_classes, warm_up)
from lmanet_ros.node.param_types import TypedParameters
from lmanet_ros.node.params import (INPUT_PARAMS, MAX_CAMERAS, POLICY_PARAMS, SPEC_BY_NAME,
                                    SPECS, Settings, descriptor, validate)
from lmanet_ros.node.ports import OUTPUTS, CameraPort, subscribed
from lmanet_ros.stamps import stamp_ns
from lmanet_ros.threads import apply_cpu_threads, cpu_threads_warning

if TYPE_CHECKING:
    from lmanet_ros.pipeline import SegmentationPipeline

try:  # Iron and later pass a MessageInfo (DDS source timestamp) to two-argument callbacks
    from rclpy.subscription import MessageInfo  # noqa: F401
    _HAS_MESSAGE_INFO = True
except ImportError:  # Humble
    _HAS_MESSAGE_INFO = False

__all__ = ["LmanetNode", "StartupError", "main"]

#: Smallest interval between two log lines of one kind (bad input, resets) per camera.
LOG_THROTTLE_S = 2.0
#: Seconds to wait at shutdown for the inference in progress to finish.
STOP_TIMEOUT_S = 4.0


class LmanetNode(TypedParameters, Node):
    """Semantic segmentation of one or more camera streams with LMANet (see module docstring)."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        """Declare parameters, load and warm up the model, wire topics; publish label_info last.

        Args:
            node_name: the default node name (a ``__node:=`` remap wins).
            kwargs: passed to :class:`rclpy.node.Node` (``context``, ``parameter_overrides``...).

        Raises:
            StartupError: bad parameters, missing or mismatched checkpoint, absent device,
                unknown model. The reason has already been logged (one line).
        """
        super().__init__(node_name, **kwargs)
        self._declaring = True
        self._settings = Settings()
        self._pipeline: SegmentationPipeline | None = None
        self._stopping = threading.Event()
        self._config_lock = threading.RLock()
        self._ports_lock = threading.RLock()
        self._ports: dict[str, CameraPort] = {}
        self._delivery: dict[str, DeliveryWatch] = {}  # per camera, renewed with its subscription
        self._events = EventLog(self.get_logger(), LOG_THROTTLE_S)
        self._worker: threading.Thread | None = None
        self._service_group = ReentrantCallbackGroup()
        self._intake = FrameIntake()  # replaced by a fresh one each time processing starts
        self._taking = False  # input subscriptions exist and the worker runs
        self._ready_time: float | None = None
        self._label_info_pub = None
        self._vision_label_info_pub = None
        self._diagnostics_pub = None
        self._diagnostics_timer = None
        self._reset_service = None
        self._threads_applied = 0
        self._inferring_since: float | None = None
        self._steady_clock = Clock(clock_type=ClockType.STEADY_TIME)
        try:
            self._declare_parameters()
            graph.watch(self)
            self._start()
        except StartupError as exc:
            self._stopping.set()
            self.get_logger().fatal(str(exc))
            raise

    @property
    def pipeline(self) -> "SegmentationPipeline | None":
        """The :class:`~lmanet_ros.pipeline.SegmentationPipeline` (the values in force)."""
        return self._pipeline

    # ------------------------------------------------------------------------------ parameters
    def _declare_parameters(self) -> None:
        """Declare every parameter of :data:`SPECS` (an integer given for a double converted,
        :mod:`~lmanet_ros.node.param_types`); validate the whole set once declared."""
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._apply_in_on_set = not hasattr(self, "add_post_set_parameters_callback")
        if not self._apply_in_on_set:  # Iron and later; Humble applies in the on-set callback
            self.add_post_set_parameters_callback(self._after_set_parameters)
        values = {}
        for spec in SPECS:
            try:
                param = self.declare_spec(spec, descriptor(spec))
            except StartupError:
                raise
            except Exception as exc:  # InvalidParameterValueException, ...
                raise StartupError(f"parameter {spec.name}: {one_line(exc)}") from None
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
        """Validate a change (type and range are checked: :class:`TypedParameters`; read-only:
        rclpy)."""
        changes = {p.name: p.value for p in params if p.name in SPEC_BY_NAME}
        if not changes or self._declaring:
            return SetParametersResult(successful=True)
        with self._config_lock:
            pipeline = self._pipeline
            reason = validate(changes, self._settings.as_dict(),
                              num_classes=pipeline.info.num_classes if pipeline else None,
                              running_backend=pipeline.backend if pipeline else None)
            if not reason and "cameras" in changes:
                reason = graph.feedback(self.resolve_topic_name, changes["cameras"] or [])
            if reason:
                return self.refuse(reason)
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
        log = self.get_logger()
        changed = {name for name in changes if old.value(name) != new.value(name)}
        if "memory.length" in changed:
            before = pipeline.memory_length
            pipeline.set_memory_length(new.memory_length)
            if pipeline.memory_length != before:
                log.info(f"memory.length {before} -> {pipeline.memory_length}: every camera's "
                         f"memory is reset")
        if changed & POLICY_PARAMS:
            pipeline.set_policy(memory_policy(new))
        if {"input_height", "input_width"} & changed:
            before = pipeline.input_size
            pipeline.set_input_size(new.pipeline_input_size)
            size = diagnostics.size_text(pipeline.input_size)
            if pipeline.input_size != before:
                log.info(f"network input size now {size}; memories reset")
            if (new.input_height > 0) != (new.input_width > 0):
                log.info(f"input_height {new.input_height}, input_width {new.input_width}: the "
                         f"network input stays {size} until both are set")
        if {"class_names", "palette"} & changed:
            from lmanet_ros.classes import ClassSet
            pipeline.set_classes(ClassSet.from_flat(new.class_names, new.palette))
            self._publish_label_info()
        if {f"publish.{output}" for output in OUTPUTS} & changed:
            with self._ports_lock:
                for port in self._ports.values():
                    port.ensure_publishers(self._create_output_publisher, new,
                                           self._on_incompatible_output_qos)
        if "processing_mode" in changed:
            discarded = self._intake.set_mode(new.processing_mode)
            with self._ports_lock:
                for key, count in discarded.items():
                    if key in self._ports:
                        self._ports[key].stats.on_dropped(count)
            total = sum(discarded.values())
            log.info(f"processing_mode now '{new.processing_mode}'"
                     + (f" ({total} queued frames dropped)" if total else ""))
        if changed & INPUT_PARAMS:
            self._rebuild_cameras()
            self._log_inputs()
        if {"processing_mode", "input.depth"} & changed:
            self._hint_replay_memory(new)
        if "diagnostics_period" in changed:
            self._start_diagnostics_timer()

    # ---------------------------------------------------------------------------------- model
    def _load_pipeline(self) -> None:
        """Load the pipeline, set the classes in force (shown as the parameters), warm up."""
        log = self.get_logger()
        pipeline = load_pipeline(self._settings, log)
        self._threads_applied = self._settings.num_threads
        classes = resolve_classes(pipeline, self._settings, log)
        names, palette = list(classes.names), classes.flat_palette()
        if names != list(self._settings.class_names) or palette != list(self._settings.palette):
            # Show the classes in use as the parameter values (ros2 param get tells the truth).
            self._declaring = True
            try:
                self.set_parameters([
                    Parameter("class_names", Parameter.Type.STRING_ARRAY, names),
                    Parameter("palette", Parameter.Type.INTEGER_ARRAY, palette)])
            finally:
                self._declaring = False
            self._settings = self._settings.updated({"class_names": names, "palette": palette})
        self._pipeline = pipeline
        warm_up(pipeline, log)

    # ----------------------------------------------------------------------------------- wiring
    def _start(self) -> None:
        """Load the model, open the outputs, start processing (the managed node,
        :class:`~lmanet_ros.node.lifecycle.LmanetLifecycleNode`, does each on its transition)."""
        self._load_pipeline()
        self._open()
        self._start_processing()

    def _create_output_publisher(self, msg_type: Any, topic: str, qos_profile: Any,
                                 **kwargs: Any) -> Any:
        """A publisher of an output (``create_publisher``; the managed node's are managed)."""
        return self.create_publisher(msg_type, topic, qos_profile, **kwargs)

    def _open(self) -> None:
        """Publishers, cameras (without input subscriptions), services, diagnostics."""
        if messages.LabelInfo is not None:
            self._label_info_pub = self._create_output_publisher(
                messages.LabelInfo, "~/label_info", qos.LATCHED_QOS)
        else:
            self.get_logger().warning("lmanet_ros messages are not built: ~/label_info is off")
        if messages.VisionLabelInfo is not None:
            self._vision_label_info_pub = self._create_output_publisher(
                messages.VisionLabelInfo, "~/vision_label_info", qos.LATCHED_QOS)
        self._reset_service = self.create_service(Trigger, "~/reset_memory", self._on_reset_all,
                                                  qos_profile=qos.SERVICE_QOS,
                                                  callback_group=self._service_group)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._start_diagnostics_timer()
        self._rebuild_cameras()

    def _start_processing(self) -> None:
        """Take frames: a fresh intake, the worker, the input subscriptions; label_info last."""
        with self._config_lock:
            self._join_worker()  # a frame that outlived the last stop
            self._stopping = threading.Event()
            intake = FrameIntake(self._settings.processing_mode)
            with self._ports_lock:
                for key in self._ports:
                    intake.add(key)
                self._intake = intake
            self._worker = threading.Thread(target=self._run_worker, args=(self._stopping,),
                                            name="lmanet-worker", daemon=True)
            self._worker.start()
            self._taking = True
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
            f"{diagnostics.size_text(self._pipeline.input_size)}, memory "
            f"{self._pipeline.memory_length} frames")

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
        """Executor threads: one per camera callback that may wait (``all`` mode: up to
        :data:`~lmanet_ros.node.params.MAX_CAMERAS`, cameras may be added at run time) plus three
        for services, parameters and diagnostics. The executor's pool starts threads only as
        callbacks need them, so unused ones cost nothing."""
        return MAX_CAMERAS + 3

    def _start_diagnostics_timer(self) -> None:
        """(Re-)start the /diagnostics timer: every ``diagnostics_period`` seconds of steady
        time, so that it runs with ``use_sim_time`` and no ``/clock`` too (the messages are
        stamped with the node's clock)."""
        if self._diagnostics_timer is not None:
            self.destroy_timer(self._diagnostics_timer)
        self._diagnostics_timer = self.create_timer(
            self._settings.diagnostics_period, self._publish_diagnostics,
            callback_group=self._service_group, clock=self._steady_clock)

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
                    port.ensure_publishers(self._create_output_publisher, settings,
                                           self._on_incompatible_output_qos)
                    if name:
                        port.reset_service = self.create_service(
                            Trigger, port.output_topic("reset_memory"),
                            functools.partial(self._on_reset_camera, port),
                            qos_profile=qos.SERVICE_QOS, callback_group=self._service_group)
                if self._taking:
                    self._delivery[key] = DeliveryWatch()
                    port.subscribe(self, settings, self._on_image_with_info
                                   if _HAS_MESSAGE_INFO else self._on_image,
                                   self._on_incompatible_input_qos)

    def _log_inputs(self) -> None:
        """Log what the input subscriptions are now (after a change of the input parameters)."""
        with self._ports_lock:
            inputs = "; ".join(f"camera '{key}': {port.input_text()}"
                               for key, port in self._ports.items())
        self.get_logger().info(f"input now: {inputs}")

    def _remove_port(self, port: CameraPort) -> None:
        """Close a camera that is no longer wanted; its memory is reset (``parameter``)."""
        self._intake.remove(port.key)
        self._delivery.pop(port.key, None)
        port.close(self)
        if self._pipeline is not None:
            self._pipeline.reset(port.key, reason="parameter")
        self.get_logger().info(f"camera '{port.key}' removed")

    # -------------------------------------------------------------------------------- callbacks
    def _on_image(self, port: CameraPort, msg, input_delay_ms: float | None = None,
                  sequence: int | None = None) -> None:
        """Subscription callback: hand the message to the worker (may wait in ``all`` mode);
        ``sequence``: its publication sequence number (for :class:`DeliveryWatch`)."""
        now = time.monotonic()
        port.stats.on_received(now, input_delay_ms)
        watch = self._delivery.get(port.key)
        if watch is not None:
            watch.on_sample(sequence)
        dropped = self._intake.put(port.key, (msg, now))
        if dropped:
            port.stats.on_dropped(dropped)

    def _on_image_with_info(self, port: CameraPort, msg, info) -> None:
        """As :meth:`_on_image`, measuring the delay from the publisher's write to here."""
        delay = None
        info = info if isinstance(info, dict) else {}
        source = info.get("source_timestamp")
        if source:
            delay = (time.time_ns() - source) * 1e-6
        self._on_image(port, msg, delay, info.get("publication_sequence_number") or None)

    def _on_incompatible_input_qos(self, port: CameraPort, event) -> None:
        """A publisher of our input topic offers QoS this subscription cannot match."""
        port.stats.on_incompatible_qos()
        policy = qos.policy_name(getattr(event, "last_policy_kind", "?"))
        topic = port.subscription.topic_name if port.subscription is not None else "?"
        self.get_logger().warning(
            f"a publisher on {topic} offers QoS incompatible with this node's subscription "
            f"(policy {policy}); no frames arrive from it.{qos.incompatible_input_hint(policy)}")

    def _on_incompatible_output_qos(self, output: str, event) -> None:
        """A subscription to one of our outputs asks for QoS we do not offer."""
        policy = qos.policy_name(getattr(event, "last_policy_kind", "?"))
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
        self._events.reset_request("~/reset_memory", response.message)
        return response

    def _on_reset_camera(self, port: CameraPort, request, response):
        """~/<camera>/reset_memory: clear this camera's memory before its next frame."""
        self._pipeline.reset(port.key, reason="request")
        response.success = True
        response.message = f"memory reset requested for camera '{port.key}'"
        self._events.reset_request(port.output_topic("reset_memory"), response.message)
        return response

    # ----------------------------------------------------------------------------------- worker
    def _run_worker(self, stopping: threading.Event) -> None:
        """Take ready frames (one per camera), segment them in one batch, publish; until
        ``stopping`` (this start's) is set."""
        while not stopping.is_set():
            batch = self._intake.take(timeout=0.2)
            if not batch or stopping.is_set():
                continue
            try:
                self._process_batch(batch)
            except Exception as exc:  # never let the worker die; say what happened
                if stopping.is_set() or not rclpy.ok(context=self.context):
                    break
                if self._events.allow(("worker", type(exc).__name__)) is not None:
                    self.get_logger().error(f"processing failed: {one_line(exc)}")

    def _process_batch(self, batch: list[tuple[str, Any]]) -> None:
        """Decode the frames of ``batch`` ((camera, (message, arrival)) pairs), segment them
        in one pipeline call (one by one if that fails), publish the outputs."""
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
                image = messages.decode(
                    msg, messages.FrameBudget.of(settings, self._pipeline.input_size))
            except ValueError as exc:  # imaging.ImageError: a one-line reason
                self._events.bad_input(port, one_line(exc), isinstance(exc, messages.ImageTooLarge))
                continue
            frame = Frame(key, image, stamp_ns(msg.header), msg.header.frame_id,
                          context=(msg, received))
            entries.append((port, frame, start))
        if not entries:
            return
        self._inferring_since = time.monotonic()
        try:
            results = self._segment([entry[1] for entry in entries],
                                    [entry[0] for entry in entries],
                                    self._wanted_outputs(settings, [e[0] for e in entries]))
        finally:
            self._inferring_since = None
        for (port, frame, start), result in zip(entries, results):
            if result is None:
                continue
            latency_ms = None
            if not result.repeat:  # labels of result.source: this frame or a delayed earlier one
                msg, received = result.source.context
                with self._ports_lock:
                    if port.key in self._ports:  # not removed meanwhile
                        port.publish(msg.header, result.source.image, result, settings,
                                     self._pipeline.classes.colors)
                latency_ms = (time.monotonic() - received) * 1e3
            stream = self._pipeline.stats(port.key)
            port.stats.on_processed(result.batch_size, result.timings.inference_ms,
                                    (time.perf_counter() - start) * 1e3, latency_ms, stream)
            if result.reset_reason:
                self._events.reset(port, result.reset_reason, stream.last_gap_s,
                                   settings.memory_max_gap)

    def _wanted_outputs(self, settings: Settings, ports: list[CameraPort]) -> dict[str, Any]:
        """The ``process`` options for a batch of ``ports``' frames: confidence when on and
        subscribed; on CUDA also colour and overlay (rendered on the device, one copy back
        each) when on and subscribed; on the CPU the ports render them."""
        def wanted(output: str) -> bool:
            return getattr(settings, f"publish_{output}") and any(
                subscribed(port.publishers.get(output)) for port in ports)
        options: dict[str, Any] = {"want_confidence": wanted("confidence")}
        if self._pipeline.device.type == "cuda":
            options.update(want_color=wanted("color"), want_overlay=wanted("overlay"),
                           overlay_alpha=settings.overlay_alpha)
        return options

    def _segment(self, frames: list, ports: list[CameraPort], options: dict[str, Any]) -> list:
        """The pipeline's results of ``frames`` (``options``: :meth:`_wanted_outputs`); a
        failing batch is retried frame by frame, a failing frame is counted as its camera's
        error and gives None."""
        try:
            return self._pipeline.process(frames, **options)
        except Exception as exc:
            if len(frames) == 1:
                self._events.frame_error(ports[0], frames[0].image.shape, exc,
                                         self._pipeline.device)
                return [None]
        results = []
        for port, frame in zip(ports, frames):
            try:
                results.append(self._pipeline.process([frame], **options)[0])
            except Exception as exc:
                self._events.frame_error(port, frame.image.shape, exc, self._pipeline.device)
                results.append(None)
        return results

    def _set_threads(self, count: int) -> None:
        """Apply ``num_threads`` (0: :func:`~lmanet_ros.threads.default_cpu_threads`)."""
        threads = apply_cpu_threads(count)
        self._threads_applied = count
        clamped = cpu_threads_warning(count)
        if clamped:
            self.get_logger().warning(clamped)
        else:
            self.get_logger().info(f"num_threads {count}: PyTorch uses {threads} CPU thread(s)")

    # ------------------------------------------------------------------------- label info, diag
    def _publish_label_info(self) -> None:
        """Publish the class metadata (latched); called when ready and when classes change."""
        pipeline = self._pipeline
        if pipeline is None or self._ready_time is None:
            return
        stamp = self.get_clock().now().to_msg()
        if self._label_info_pub is not None:
            self._label_info_pub.publish(messages.label_info_message(
                stamp, pipeline.info.name, pipeline.checkpoint_id, pipeline.memory_length,
                pipeline.classes, pipeline.output_delay_frames))
        if self._vision_label_info_pub is not None:
            self._vision_label_info_pub.publish(
                messages.vision_label_info_message(stamp, pipeline.classes))

    def _publish_diagnostics(self) -> None:
        """/diagnostics: one status for the model, one per camera."""
        pipeline = self._pipeline
        if pipeline is None:
            return
        settings = self._settings
        name = self.get_fully_qualified_name()
        array_msg = DiagnosticArray()
        array_msg.header.stamp = self.get_clock().now().to_msg()
        array_msg.status.append(self._model_status(pipeline))
        now = time.monotonic()
        # under the ports lock: a re-subscription (input parameters) destroys the subscription
        # these read (its topic, its publisher count) while holding it
        with self._ports_lock:
            for port in self._ports.values() if self._taking else ():
                snap = port.stats.roll()
                last = snap.last_received
                waited = now - (last if last is not None else (self._ready_time or now))
                array_msg.status.append(diagnostics.camera_status(
                    name, port.key, port.topic_name, snap, queued=self._intake.waiting(port.key),
                    memory_length=pipeline.memory_length, period=settings.diagnostics_period,
                    waited_s=waited, delivery=self._check_delivery(port, now)))
        self._diagnostics_pub.publish(array_msg)

    def _check_delivery(self, port: CameraPort, now: float) -> Delivery | None:
        """Whether a matched publisher's images reach ``port``; warn when they do not
        (:mod:`lmanet_ros.node.delivery`: once per episode, at most every minute)."""
        watch, subscription = self._delivery.get(port.key), port.subscription
        if watch is None or subscription is None:
            return None
        delivery = watch.update(now, subscription.get_publisher_count())
        if delivery.warn:
            profile_file = config_file(DDS_PROFILES[DEFAULT_DDS_PROFILE][1])
            self.get_logger().warning(advice(subscription.topic_name, delivery, profile_file))
        return delivery

    def _model_status(self, pipeline: "SegmentationPipeline") -> Any:
        """The model's DiagnosticStatus (:func:`~lmanet_ros.node.diagnostics.model_status`)."""
        inferring = self._inferring_since
        return diagnostics.model_status(
            self.get_fully_qualified_name(), pipeline, checkpoint=self._settings.checkpoint,
            processing_mode=self._settings.processing_mode,
            inferring_for_s=None if inferring is None else time.monotonic() - inferring,
            clock=self._clock_text())

    def _clock_text(self) -> str:
        """The node's clock in words for /diagnostics: ``system``, ``sim time`` or ``sim time,
        no /clock received`` (ROS time still 0: the node's own stamps are 0 until it comes)."""
        if not self.get_parameter("use_sim_time").value:
            return "system"
        if self.get_clock().now().nanoseconds == 0:
            return "sim time, no /clock received"
        return "sim time"

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

    def _join_worker(self) -> None:
        """Wait, without a limit, for a worker that outlived :meth:`stop` to end."""
        worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            worker.join()

    def worker_alive(self) -> bool:
        """Whether the worker thread still runs (an inference outlived :meth:`stop`)."""
        return self._worker is not None and self._worker.is_alive()

    def destroy_node(self) -> None:
        """Stop the worker (unless already asked to), then destroy the node."""
        self.stop(timeout=0.0 if self._stopping.is_set() else STOP_TIMEOUT_S)
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """Run the node until SIGINT/SIGTERM (:func:`lmanet_ros.node.process.run`: any number of
    them, at any moment, end it within seconds); exit codes: 0 clean (after a signal too), 1
    startup failure, 2 bad ROS arguments."""
    return process.run(LmanetNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
