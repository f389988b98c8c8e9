"""`lmanet replay`: publish a rosbag2's image topics (and /clock) into a live ROS graph.

``ros2 bag play`` is not pip-installable; this is the part of it the node needs, plus what
``ros2 bag play`` cannot do: ``--lockstep`` publishes the next frame only once the node's labels
for the previous one arrived (matched by header stamp), so a CPU that runs the network at 2 Hz
still gets every frame of a 17 Hz bag, in order; and ``--score-out DIR`` scores the node's labels
against the bag's label topic while it replays, writing the same ``metrics.json`` / ``report.md``
as the offline ``lmanet eval``, and (``--video``) ``overlay.mp4``: each input frame beside the
overlay the node published for it (``<node>/overlay``, matched by header stamp).

Messages are published as the serialized bytes stored in the bag (no decode / encode), reliable by
default so no frame is lost, with ``/clock`` (rosgraph_msgs/Clock) set to each message's recorded
time before it is published, as ``ros2 bag play --clock`` does.
"""
from __future__ import annotations

import argparse
import importlib
import math
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from lmanet_ros.bags import decode_message
from lmanet_ros.classes import CITYSCAPES_CLASS_NAMES, LABEL_ID_TO_TRAIN_ID
from lmanet_ros.metrics import RunScore
from lmanet_ros.report import (VIDEO_FILE, OverlayVideo, build_metrics, progress, recorded_fps,
                               write_report)
from lmanet_ros.streams import MemoryPolicy, StreamState

#: Message types treated as camera images (the default topics; lock-step waits on them).
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
#: Reset reasons after which two frames are not consecutive views of one scene.
SCENE_CUTS = frozenset({"time_jump_back", "size_change", "frame_id_change"})


class ReplayError(RuntimeError):
    """A replay cannot start or cannot go on (bad topic, no node, labels that never come)."""


# ------------------------------------------------------------------------------ bag helpers
def _typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.LATEST)


def open_reader(path: str | Path):
    """Open a rosbag2 (directory, or a single .mcap/.db3 file inside one) with rosbags."""
    from rosbags.rosbag2 import Reader

    path = Path(path)
    if path.is_file():
        path = path.parent
    if not (path / "metadata.yaml").is_file():
        raise ReplayError(f"{path} is not a rosbag2 directory (no metadata.yaml)")
    return Reader(path)


def bag_storage(reader) -> str:
    """The storage plugin of an open bag: ``mcap`` or ``sqlite3`` (from its files)."""
    directory = Path(reader.path)
    if any(directory.glob("*.mcap")) or any(directory.glob("*.mcap.zstd")):
        return "mcap"
    if any(directory.glob("*.db3")) or any(directory.glob("*.db3.zstd")):
        return "sqlite3"
    text = (directory / "metadata.yaml").read_text(encoding="utf-8", errors="replace")
    for name in ("mcap", "sqlite3"):
        if f"storage_identifier: {name}" in text:
            return name
    return "unknown"


def image_topics(reader) -> list[str]:
    """Topics of the bag whose type is an image type, in the bag's order."""
    seen = []
    for connection in reader.connections:
        if connection.msgtype in IMAGE_TYPES and connection.topic not in seen:
            seen.append(connection.topic)
    return seen


def header_of(data: bytes | memoryview, msgtype: str, typestore=None) -> tuple[int | None, str]:
    """(stamp in ns, frame_id) of a serialized message whose first field is a std_msgs/Header.

    Image and CompressedImage are read straight from the CDR bytes; other types are
    deserialized with rosbags; (None, "") when the type has no header.
    """
    if msgtype in IMAGE_TYPES:
        view = memoryview(data)
        order = "<" if view[1] == 1 else ">"
        sec, nanosec, length = np.frombuffer(view[4:16], dtype=np.dtype(order + "i4")).tolist()
        frame_id = bytes(view[16:16 + max(length - 1, 0)]).decode("utf-8", "replace")
        return sec * 1_000_000_000 + (nanosec & 0xFFFFFFFF), frame_id
    try:
        msg = (typestore or _typestore()).deserialize_cdr(bytes(data), msgtype)
        header = msg.header
    except Exception:  # noqa: BLE001 - any type without a (known) header
        return None, ""
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec, header.frame_id


def mono8_of(msg) -> np.ndarray:
    """(H, W) uint8 class ids of a deserialized mono8 sensor_msgs/Image (rosbags dataclass)."""
    if msg.encoding.lower() not in ("mono8", "8uc1"):
        raise ValueError(f"a label image must be mono8 (class ids), got '{msg.encoding}'")
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    data = np.asarray(msg.data, dtype=np.uint8)
    if step < width or data.size < step * height:
        raise ValueError(f"label image {width}x{height} step {step} holds {data.size} bytes")
    return data[:step * height].reshape(height, step)[:, :width]


def read_labels(path: str | Path, topic: str, *, label_ids: bool = False) -> dict[int, np.ndarray]:
    """Every label image of ``topic`` as {header stamp ns: (H, W) uint8 trainIds}."""
    typestore = _typestore()
    out: dict[int, np.ndarray] = {}
    with open_reader(path) as reader:
        connections = [c for c in reader.connections if c.topic == topic]
        if not connections:
            raise ReplayError(f"label topic '{topic}' is not in {path} (topics: "
                              f"{sorted({c.topic for c in reader.connections})})")
        for connection, _, data in reader.messages(connections=connections):
            msg = typestore.deserialize_cdr(bytes(data), connection.msgtype)
            labels = mono8_of(msg)
            if label_ids:
                labels = LABEL_ID_TO_TRAIN_ID[labels]
            stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            out[stamp] = np.ascontiguousarray(labels)
    return out


def parse_remaps(items: list[str] | None) -> dict[str, str]:
    """``OLD:=NEW`` strings to a {old: new} topic map."""
    remaps = {}
    for item in items or []:
        old, sep, new = item.partition(":=")
        if not sep or not old or not new:
            raise ReplayError(f"remap '{item}' is not OLD:=NEW")
        remaps[old] = new
    return remaps


# ---------------------------------------------------------------------------------- scoring
class LiveScorer:
    """Scores labels images that a node publishes against a bag's label topic, by header stamp.

    Memory resets are not visible in the labels; they are inferred from the stamps with the
    node's rules (:class:`lmanet_ros.streams.StreamState`, same ``max_gap``) and flagged as such.
    """

    def __init__(self, bag: str | Path, label_topic: str | None, *, label_ids: bool = False,
                 policy: MemoryPolicy = MemoryPolicy(), name: str = "node") -> None:
        """Load the bag's labels (if any) into memory, keyed by stamp."""
        self.bag = Path(bag)
        self.label_topic = label_topic
        self.label_ids = label_ids
        self.policy = policy
        self.gt = read_labels(bag, label_topic, label_ids=label_ids) if label_topic else {}
        self.run = RunScore(name, CITYSCAPES_CLASS_NAMES)
        self.model: dict = {"label": name, "model": None, "checkpoint": None,
                            "checkpoint_id": None}
        self._states: dict[str, StreamState] = {}
        self.scored_stamps: Counter = Counter()
        self.unlabelled = 0
        self._started = time.perf_counter()

    def set_model_info(self, model_name: str, checkpoint_id: str, memory_length: int) -> None:
        """Record what the node runs (from its latched ``label_info``)."""
        self.model.update(model=model_name, checkpoint_id=checkpoint_id,
                          memory_length=memory_length)
        if model_name:
            self.model["label"] = self.run.name = model_name

    def add(self, stream: str, stamp_ns: int, frame_id: str, labels: np.ndarray,
            latency_ms: float | None = None) -> None:
        """Score one labels image of ``stream`` (the labels topic) with header ``stamp_ns``."""
        state = self._states.setdefault(stream, StreamState(stream))
        admission = state.admit(stamp_ns * 1e-9, labels.shape[:2], frame_id, self.policy)
        gt = self.gt.get(stamp_ns)
        if gt is not None and gt.shape != labels.shape:
            raise ReplayError(f"labels of stamp {stamp_ns} are {labels.shape}, ground truth "
                              f"{gt.shape}")
        if gt is None:
            self.unlabelled += 1
        self.run.add(stream, labels, gt, stamp=stamp_ns * 1e-9, latency_ms=latency_ms,
                     reset_reason=admission.reset_reason,
                     continuous=admission.reset_reason not in SCENE_CUTS,
                     duplicate=admission.duplicate)
        self.scored_stamps[stamp_ns] += 1
        self.run.wall_s = time.perf_counter() - self._started

    def write(self, out_dir: str | Path, *, partial: bool, source: dict,
              parameters: dict) -> list[Path]:
        """Write metrics.json, report.md and the plots of what was scored so far."""
        source = {"bag": str(self.bag), "label_topic": self.label_topic,
                  "label_ids": self.label_ids, "labelled_frames_in_bag": len(self.gt),
                  "frames_evaluated": self.run.frames, "frames_without_labels": self.unlabelled,
                  **source}
        parameters = {"max_gap": self.policy.max_gap, **parameters}
        model = dict(self.model, memory_resets_inferred=True)
        payload = build_metrics([self.run], [model], source=source, parameters=parameters,
                                partial=partial, mode="live")
        return write_report(out_dir, payload, [self.run])


class LiveVideo:
    """``overlay.mp4`` of a live run: input frames beside the overlays the node published.

    Frames are written in the order they were published, each once its input (given by the
    replay) and the node's overlay of the same stamp are both known; frames of equal stamps are
    matched first in, first out; a frame whose overlay never comes is skipped and counted
    (``missing``). The video's frame rate is the recorded one: 1 / the median step between the
    first input stamps (:data:`FPS_PROBE` of them), whatever the replay speed.
    """

    #: Input stamps from which the frame rate is taken before the first frame is written.
    FPS_PROBE = 16

    def __init__(self, path: Path) -> None:
        self.path = path
        self.video: OverlayVideo | None = None
        self.order: deque[tuple[int, np.ndarray]] = deque()
        self.overlays: dict[int, deque[np.ndarray]] = {}
        self.stamps: list[int] = []
        self.frames = 0
        self.missing = 0

    def add_input(self, stamp_ns: int, rgb: np.ndarray) -> None:
        """A frame about to be published: (H, W, 3) uint8 RGB (grey is widened)."""
        if rgb.ndim == 2:
            rgb = np.repeat(rgb[..., None], 3, axis=2)
        self.order.append((stamp_ns, rgb))
        if len(self.stamps) < self.FPS_PROBE:
            self.stamps.append(stamp_ns)
        self.flush()

    def add_overlay(self, stamp_ns: int, rgb: np.ndarray) -> None:
        """The node's overlay (rgb8) of ``stamp_ns``."""
        self.overlays.setdefault(stamp_ns, deque()).append(rgb)
        self.flush()

    def flush(self, final: bool = False) -> None:
        """Write every frame at the head of the order that is complete (``final``: skip the
        incomplete ones instead of waiting). Waits for :data:`FPS_PROBE` inputs (or the end)
        before the first frame."""
        if self.video is None:
            if len(self.stamps) < self.FPS_PROBE and not final:
                return
            self.video = OverlayVideo(self.path, recorded_fps(self.stamps))
        while self.order:
            stamp, rgb = self.order[0]
            waiting = self.overlays.get(stamp)
            if not waiting and not final:
                return
            self.order.popleft()
            if not waiting:
                self.missing += 1
                continue
            overlay = waiting.popleft()
            if not waiting:
                del self.overlays[stamp]
            if overlay.shape != rgb.shape:
                overlay = cv2.resize(overlay, (rgb.shape[1], rgb.shape[0]),
                                     interpolation=cv2.INTER_NEAREST)
            self.video.write(rgb, overlay)
            self.frames += 1

    @property
    def pending(self) -> int:
        """Frames published whose overlay has not come yet."""
        return len(self.order)

    def close(self) -> None:
        """Write what is complete and finalise the file."""
        try:
            self.flush(final=True)
        finally:
            if self.video is not None:
                self.video.close()


# -------------------------------------------------------------------------------------- node
def _message_class(msgtype: str):
    package, _, name = msgtype.partition("/msg/")
    if not name:
        raise ReplayError(f"'{msgtype}' is not a message type (pkg/msg/Name)")
    try:
        return getattr(importlib.import_module(f"{package}.msg"), name)
    except (ImportError, AttributeError) as exc:
        raise ReplayError(f"message type {msgtype} is not installed for rclpy ({exc})") from exc


@dataclass
class _Pending:
    """Frames sent and labels received, per (labels topic, stamp)."""

    sent: Counter = field(default_factory=Counter)
    received: Counter = field(default_factory=Counter)
    sent_at: dict = field(default_factory=dict)


def _make_node(publish_topics: dict[str, str], *, reliable: bool, depth: int, clock: bool,
               labels_topics: list[str], scorer: LiveScorer | None, pending: _Pending,
               video: LiveVideo | None = None):
    """Build the replay node: one publisher per topic, /clock, label subscriptions."""
    from rclpy.node import Node
    from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy)

    typestore = _typestore()

    class ReplayNode(Node):
        """Publishes bag messages; listens to the node's labels (lock-step and scoring)."""

        def __init__(self) -> None:
            super().__init__("lmanet_replay")
            qos = QoSProfile(
                history=HistoryPolicy.KEEP_ALL if depth == 0 else HistoryPolicy.KEEP_LAST,
                depth=max(depth, 1),
                reliability=ReliabilityPolicy.RELIABLE if reliable else
                ReliabilityPolicy.BEST_EFFORT)
            self.pubs = {topic: self.create_publisher(_message_class(msgtype), topic, qos)
                         for topic, msgtype in publish_topics.items()}
            self.clock_pub = None
            if clock:
                from rosgraph_msgs.msg import Clock
                self.clock_pub = self.create_publisher(Clock, "/clock", 10)
            self.label_subs: dict = {}
            self.overlay_sub = None
            self.model_info = None
            self.info_sub = None
            self.errors: list[str] = []

        def subscribe_labels(self) -> bool:
            """Subscribe each labels topic once its publisher is known (QoS matched to it)."""
            from sensor_msgs.msg import Image

            for topic in labels_topics:
                if topic in self.label_subs:
                    continue
                infos = self.get_publishers_info_by_topic(topic)
                if not infos:
                    continue
                reliable_pub = all(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE
                                   for i in infos)
                qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE
                                 if reliable_pub else ReliabilityPolicy.BEST_EFFORT)
                self.label_subs[topic] = self.create_subscription(
                    Image, topic, lambda raw, t=topic: self.on_labels(t, raw), qos, raw=True)
                info_topic = topic.rsplit("/", 1)[0] + "/label_info"
                if self.info_sub is None and info_topic:
                    self._subscribe_info(info_topic)
            return len(self.label_subs) == len(labels_topics)

        def subscribe_overlay(self) -> bool:
            """Subscribe the node's overlay (next to its labels) once its publisher is known;
            subscribing makes the node render it."""
            from sensor_msgs.msg import Image

            if video is None or self.overlay_sub is not None:
                return True
            topic = labels_topics[0].rsplit("/", 1)[0] + "/overlay"
            infos = self.get_publishers_info_by_topic(topic)
            if not infos:
                return False
            reliable_pub = all(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE
                               for i in infos)
            qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE
                             if reliable_pub else ReliabilityPolicy.BEST_EFFORT)
            self.overlay_sub = self.create_subscription(Image, topic, self.on_overlay, qos,
                                                        raw=True)
            return True

        def on_overlay(self, raw: bytes) -> None:
            """An overlay image arrived: hand it to the video."""
            try:
                msg = typestore.deserialize_cdr(raw, "sensor_msgs/msg/Image")
                stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
                rgb, _ = decode_message("sensor_msgs/msg/Image", msg)
                video.add_overlay(stamp, rgb)
            except Exception as exc:  # noqa: BLE001 - reported by the replay loop, not lost
                self.errors.append(f"overlay: {exc}")

        def _subscribe_info(self, topic: str) -> None:
            try:
                from lmanet_ros.msg import LabelInfo
            except ImportError:
                return
            latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                 durability=DurabilityPolicy.TRANSIENT_LOCAL)
            self.info_sub = self.create_subscription(LabelInfo, topic, self.on_label_info, latched)

        def on_label_info(self, msg) -> None:
            """Keep the node's model name and checkpoint id for the report."""
            self.model_info = msg
            if scorer is not None:
                scorer.set_model_info(msg.model_name, msg.checkpoint_id, int(msg.memory_length))

        def on_labels(self, topic: str, raw: bytes) -> None:
            """A labels image arrived: count it for lock-step, score it."""
            now = time.perf_counter()
            try:
                msg = typestore.deserialize_cdr(raw, "sensor_msgs/msg/Image")
                stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
                key = (topic, stamp)
                pending.received[key] += 1
                sent_at = pending.sent_at.get(key)
                latency = (now - sent_at) * 1e3 if sent_at is not None else None
                if scorer is not None:
                    scorer.add(topic, stamp, msg.header.frame_id, mono8_of(msg), latency)
            except Exception as exc:  # noqa: BLE001 - reported by the replay loop, not lost
                self.errors.append(f"labels on {topic}: {exc}")

    return ReplayNode()


# ------------------------------------------------------------------------------------ replay
@dataclass
class ReplayOptions:
    """What :func:`replay_bag` does (the command-line flags, as data)."""

    bag: Path
    topics: list[str] | None = None
    remap: dict[str, str] = field(default_factory=dict)
    rate: float = 1.0
    loop: bool = False
    lockstep: bool = False
    labels_topics: list[str] = field(default_factory=lambda: ["/lmanet/labels"])
    timeout: float = 30.0
    startup_timeout: float = 120.0
    reliable: bool = True
    depth: int = 10
    clock: bool = True
    wait_for_subscribers: float = 0.0
    max_frames: int = 0
    score_out: Path | None = None
    label_topic: str | None = None
    label_ids: bool = False
    max_gap: float = 1.0
    video: bool = False


@dataclass
class ReplayOutcome:
    """What a replay did."""

    published: int = 0
    frames: int = 0
    labels_received: int = 0
    missing: list[tuple[str, int]] = field(default_factory=list)
    interrupted: bool = False
    report: list[Path] = field(default_factory=list)
    video_frames: int = 0


def _spin_until(executor, condition, deadline: float | None) -> bool:
    """Spin until ``condition()`` holds (True) or ``deadline`` (monotonic) passes (False)."""
    while not condition():
        if deadline is not None and time.monotonic() >= deadline:
            return condition()
        executor.spin_once(timeout_sec=0.02)
    return True


def replay_bag(options: ReplayOptions, *, args: list[str] | None = None) -> ReplayOutcome:
    """Publish the bag (see module doc); rclpy is initialised and shut down here.

    Raises:
        ReplayError: unknown topics, no subscriber / labels publisher in time, labels of a
            frame that never arrive in lock-step mode.
    """
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    if options.loop and options.score_out:
        raise ReplayError("--loop and scoring do not go together (every loop repeats the stamps)")
    if options.video and options.score_out is None:
        raise ReplayError("the overlay video is written next to the scores: give --score-out")
    if options.rate < 0 or math.isnan(options.rate):
        raise ReplayError(f"--rate must be >= 0 (0: as fast as possible), got {options.rate}")
    with open_reader(options.bag) as reader:
        by_topic = {c.topic: c for c in reader.connections}
        if options.topics:
            unknown = [t for t in options.topics if t not in by_topic]
            if unknown:
                raise ReplayError(f"topics {unknown} are not in {options.bag} "
                                  f"(topics: {sorted(by_topic)})")
            topics = list(options.topics)
        else:
            topics = [t for t in image_topics(reader) if t != options.label_topic]
        if not topics:
            raise ReplayError(f"no image topics to replay in {options.bag}")
        publish_topics = {options.remap.get(t, t): by_topic[t].msgtype for t in topics}
        image_out = [options.remap.get(t, t) for t in topics if by_topic[t].msgtype in IMAGE_TYPES]
        total = sum(c.msgcount for c in reader.connections if c.topic in topics)
        storage = bag_storage(reader)
    watch_labels = options.lockstep or options.score_out is not None
    labels_topics = list(options.labels_topics) if watch_labels else []
    if watch_labels and len(labels_topics) not in (1, len(image_out)):
        raise ReplayError(f"{len(labels_topics)} labels topics for {len(image_out)} image topics: "
                          "give one, or one per image topic in the same order")
    labels_for = {topic: labels_topics[min(i, len(labels_topics) - 1)]
                  for i, topic in enumerate(image_out)} if labels_topics else {}
    scorer = None
    if options.score_out is not None:
        scorer = LiveScorer(options.bag, options.label_topic, label_ids=options.label_ids,
                            policy=MemoryPolicy(max_gap=options.max_gap))

    video = None
    if options.video:
        if len(image_out) != 1:
            raise ReplayError(f"the overlay video shows one camera; {len(image_out)} image "
                              f"topics are replayed: choose one with --topics")
        Path(options.score_out).mkdir(parents=True, exist_ok=True)
        video = LiveVideo(Path(options.score_out) / VIDEO_FILE)
    outcome = ReplayOutcome()
    pending = _Pending()
    context_args = ["lmanet_replay", *(args or [])]
    rclpy.init(args=context_args)
    node = None
    executor = SingleThreadedExecutor()
    bar = progress(None if options.loop else total, "replay")
    try:
        node = _make_node(publish_topics, reliable=options.reliable, depth=options.depth,
                          clock=options.clock, labels_topics=labels_topics, scorer=scorer,
                          pending=pending, video=video)
        executor.add_node(node)
        _wait_for_graph(node, executor, options, image_out, labels_topics)
        typestore = _typestore()
        done = False
        while not done:
            with open_reader(options.bag) as reader:
                connections = [c for c in reader.connections if c.topic in topics]
                previous_log, previous_wall = None, None
                for connection, log_ns, data in reader.messages(connections=connections):
                    out_topic = options.remap.get(connection.topic, connection.topic)
                    if options.rate > 0 and previous_log is not None:
                        target = previous_wall + (log_ns - previous_log) * 1e-9 / options.rate
                        _spin_until(executor, lambda: time.perf_counter() >= target, None)
                    previous_log, previous_wall = log_ns, time.perf_counter()
                    if node.clock_pub is not None:
                        _publish_clock(node.clock_pub, log_ns)
                    key = None
                    if connection.msgtype in IMAGE_TYPES and out_topic in labels_for:
                        stamp, _ = header_of(data, connection.msgtype, typestore)
                        key = (labels_for[out_topic], stamp)
                        pending.sent[key] += 1
                        pending.sent_at[key] = time.perf_counter()
                        if video is not None:
                            msg = typestore.deserialize_cdr(data, connection.msgtype)
                            video.add_input(stamp, decode_message(connection.msgtype, msg)[0])
                    node.pubs[out_topic].publish(bytes(data))
                    outcome.published += 1
                    bar.update(1)
                    if connection.msgtype in IMAGE_TYPES:
                        outcome.frames += 1
                    if options.lockstep and key is not None:
                        limit = options.timeout if outcome.frames > 1 else options.startup_timeout
                        if not _spin_until(executor,
                                           lambda: pending.received[key] >= pending.sent[key],
                                           time.monotonic() + limit):
                            raise ReplayError(
                                f"no labels on {key[0]} for frame {outcome.frames} of "
                                f"{connection.topic} (stamp {key[1]} ns) within {limit:g} s; is "
                                f"the node running with processing_mode:=all, "
                                f"input.reliability:=reliable, subscribed to {out_topic}?")
                    else:
                        executor.spin_once(timeout_sec=0)
                    if node.errors:
                        raise ReplayError(node.errors[0])
                    if options.max_frames and outcome.frames >= options.max_frames:
                        break
            done = not options.loop
        if watch_labels:  # let the last labels arrive (not lock-step: they may lag behind)
            _spin_until(executor, lambda: all(pending.received[k] >= n
                                              for k, n in pending.sent.items()),
                        time.monotonic() + options.timeout)
        if video is not None:  # overlays are published after the labels
            _spin_until(executor, lambda: video.pending == 0, time.monotonic() + options.timeout)
    except (KeyboardInterrupt, ExternalShutdownException):
        outcome.interrupted = True
    finally:
        bar.close()
        outcome.labels_received = sum(pending.received.values())
        outcome.missing = sorted(k for k, n in pending.sent.items() if pending.received[k] < n)
        if video is not None:
            try:
                video.close()
            except (OSError, cv2.error) as exc:  # the scores are still written below
                print(f"overlay video not written: {exc}", file=sys.stderr)
            outcome.video_frames = video.frames
        if scorer is not None:
            outcome.report = scorer.write(
                options.score_out, partial=outcome.interrupted or bool(outcome.missing),
                source={"storage": storage, "image_topics": topics,
                        "published_topics": list(publish_topics), "labels_topics": labels_topics,
                        "frames_in_bag": total, "frames_published": outcome.frames,
                        "frames_missing_labels": len(outcome.missing),
                        "lockstep": options.lockstep, "rate": options.rate,
                        "video_frames": outcome.video_frames,
                        "video_frames_without_overlay": 0 if video is None else video.missing},
                parameters={"reliable": options.reliable, "depth": options.depth})
        executor.shutdown(timeout_sec=1.0)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return outcome


def _publish_clock(publisher, log_ns: int) -> None:
    from rosgraph_msgs.msg import Clock

    msg = Clock()
    msg.clock.sec, msg.clock.nanosec = divmod(int(log_ns), 1_000_000_000)
    publisher.publish(msg)


def _wait_for_graph(node, executor, options: ReplayOptions, image_out: list[str],
                    labels_topics: list[str]) -> None:
    """Lock-step / scoring: wait for the node's subscription and labels publisher."""
    wait = options.startup_timeout if labels_topics else options.wait_for_subscribers
    if wait <= 0:
        return
    deadline = time.monotonic() + wait

    def subscribed() -> bool:
        return all(node.pubs[t].get_subscription_count() > 0 for t in image_out)

    if not _spin_until(executor, subscribed, deadline):
        missing = [t for t in image_out if node.pubs[t].get_subscription_count() == 0]
        if labels_topics:
            raise ReplayError(f"nobody subscribes {missing} after {wait:g} s: start lmanet_node "
                              f"(remapped onto these topics) first, or use --remap")
        node.get_logger().warning(f"no subscriber on {missing} after {wait:g} s; publishing")
        return
    if labels_topics:
        if not _spin_until(executor, node.subscribe_labels, deadline):
            raise ReplayError(f"no publisher of {labels_topics} after {wait:g} s: is the node "
                              f"named as --labels-topic says?")
        if not _spin_until(executor, lambda: all(
                s.get_publisher_count() > 0 for s in node.label_subs.values()), deadline):
            raise ReplayError(f"the labels subscription of {labels_topics} never matched the "
                              "node's publisher (QoS?)")
        if not _spin_until(executor, node.subscribe_overlay, deadline):
            raise ReplayError(f"no publisher of the node's overlay next to {labels_topics[0]} "
                              f"after {wait:g} s (needed for the video)")
        # the latched label_info says the model is loaded and names it (optional)
        _spin_until(executor, lambda: node.model_info is not None,
                    min(deadline, time.monotonic() + 2.0))


# ------------------------------------------------------------------------------ command line
def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``lmanet replay``."""
    parser = subparsers.add_parser(
        "replay", allow_abbrev=False, help="publish a rosbag2's images and /clock with rclpy",
        description=__doc__.split("\n\n")[0] + " Lock-step and live scoring: see --lockstep, "
        "--score-out.")
    add_replay_arguments(parser)
    parser.set_defaults(handler=run)
    return parser


def add_replay_arguments(parser: argparse.ArgumentParser, *, for_eval: bool = False) -> None:
    """The replay flags (shared with ``lmanet eval --live``)."""
    if not for_eval:
        parser.add_argument("bag", type=Path, help="rosbag2 directory (sqlite3 or mcap)")
    play = parser.add_argument_group("playback" + (" (--live)" if for_eval else ""))
    if not for_eval:
        play.add_argument("--topics", nargs="+", metavar="TOPIC",
                          help="topics to publish (default: every image topic but --label-topic)")
    play.add_argument("--remap", nargs="+", default=[], metavar="OLD:=NEW",
                      help="publish topic OLD of the bag as NEW")
    play.add_argument("--rate", type=float, default=0.0 if for_eval else 1.0,
                      help="speed factor on the recorded timing; 0 = as fast as possible")
    if not for_eval:
        play.add_argument("--loop", action="store_true", help="start over at the end, until Ctrl-C")
        play.add_argument("--lockstep", action="store_true",
                          help="publish the next frame only once the node's labels of the "
                          "previous one arrived (matched by header stamp)")
    play.add_argument("--best-effort", action="store_true",
                      help="publish best effort instead of reliable")
    play.add_argument("--depth", type=int, default=10,
                      help="publisher history depth; 0 = keep all")
    play.add_argument("--no-clock", action="store_true", help="do not publish /clock")
    if not for_eval:
        play.add_argument("--max-frames", type=int, default=0,
                          help="stop after this many image frames (0 = all)")
        play.add_argument("--wait-for-subscribers", type=float, default=0.0, metavar="SEC",
                          help="without lock-step: wait up to SEC for a subscriber per topic")
    node = parser.add_argument_group("node (lock-step and scoring" +
                                     (", --live)" if for_eval else ")"))
    if not for_eval:
        node.add_argument("--labels-topic", nargs="+", default=["/lmanet/labels"],
                          metavar="TOPIC",
                          help="the node's labels topic(s): one, or one per image topic")
    node.add_argument("--timeout", type=float, default=30.0,
                      help="seconds to wait for the labels of one frame before failing")
    node.add_argument("--startup-timeout", type=float, default=120.0,
                      help="seconds to wait for the node to appear and label the first frame")
    if not for_eval:
        score = parser.add_argument_group("scoring")
        score.add_argument("--score-out", type=Path, metavar="DIR",
                           help="score the node's labels against --label-topic; write "
                           "metrics.json, report.md and plots to DIR")
        score.add_argument("--label-topic", help="the bag's ground-truth topic (mono8 trainIds)")
        score.add_argument("--label-ids", action="store_true",
                           help="the label topic holds Cityscapes labelIds (mapped to trainIds)")
        score.add_argument("--max-gap", type=float, default=1.0,
                           help="the node's memory.max_gap, to infer memory resets in the report")
        score.add_argument("--video", action="store_true",
                           help="also write overlay.mp4 (input | the node's overlay) to DIR")


def options_from_args(args: argparse.Namespace) -> ReplayOptions:
    """The :class:`ReplayOptions` of parsed ``lmanet replay`` arguments."""
    return ReplayOptions(
        bag=args.bag, topics=args.topics, remap=parse_remaps(args.remap), rate=args.rate,
        loop=args.loop, lockstep=args.lockstep, labels_topics=list(args.labels_topic),
        timeout=args.timeout, startup_timeout=args.startup_timeout,
        reliable=not args.best_effort, depth=args.depth, clock=not args.no_clock,
        wait_for_subscribers=args.wait_for_subscribers, max_frames=args.max_frames,
        score_out=args.score_out, label_topic=args.label_topic, label_ids=args.label_ids,
        max_gap=args.max_gap, video=args.video)


def report_outcome(outcome: ReplayOutcome, options: ReplayOptions) -> int:
    """Print a one-paragraph summary; return the exit code."""
    print(f"published {outcome.published} messages ({outcome.frames} image frames)"
          + (f", {outcome.labels_received} labels received" if options.lockstep
             or options.score_out else ""), file=sys.stderr)
    if outcome.missing:
        print(f"{len(outcome.missing)} frames got no labels (first: {outcome.missing[:3]})",
              file=sys.stderr)
    if outcome.report:
        print(f"report: {outcome.report[-1]}", file=sys.stderr)
    if outcome.interrupted:
        return 130
    return 1 if outcome.missing else 0


def run(args: argparse.Namespace) -> int:
    """Run ``lmanet replay``."""
    try:
        options = options_from_args(args)
        if options.score_out and not options.label_topic:
            print("note: --score-out without --label-topic scores consistency and latency only",
                  file=sys.stderr)
        outcome = replay_bag(options)
    except ReplayError as exc:
        print(f"lmanet replay: error: {exc}", file=sys.stderr)
        return 2
    return report_outcome(outcome, options)
