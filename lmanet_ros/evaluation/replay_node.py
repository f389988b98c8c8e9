"""The rclpy node of a replay: publishes bag messages, listens to the segmentation node.

It publishes the serialised bytes of the bag on one publisher per topic (and ``/clock``), and
subscribes to the node's labels (``<node>/labels``, for lock-step and scoring), its overlay (for
the video) and its latched ``label_info`` (what model it runs). Everything it receives is
counted in a :class:`Pending` and handed to the scorer and video it was given. Imports rclpy:
load this module only after the ROS environment is set (:func:`lmanet_ros.ros_env.isolate`).
"""
from __future__ import annotations

import importlib
import time
from collections import Counter
from dataclasses import dataclass, field

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from lmanet_ros.bags import IMAGE, decode_label, decode_message, typestore
from lmanet_ros.stamps import stamp_ns

from .scoring import LiveScorer
from .video import LiveVideo

__all__ = ["Pending", "ReplayNode", "message_class"]


@dataclass
class Pending:
    """Frames sent and labels received, per (labels topic, stamp ns); send times (perf_counter
    seconds) for the latency."""

    sent: Counter = field(default_factory=Counter)
    received: Counter = field(default_factory=Counter)
    sent_at: dict = field(default_factory=dict)


def message_class(msgtype: str) -> type:
    """The rclpy message class of ``pkg/msg/Name``.

    Raises:
        ValueError: not a message type name, or not installed for rclpy.
    """
    package, _, name = msgtype.partition("/msg/")
    if not name:
        raise ValueError(f"'{msgtype}' is not a message type (pkg/msg/Name)")
    try:
        return getattr(importlib.import_module(f"{package}.msg"), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"message type {msgtype} is not installed for rclpy ({exc})") from exc


def _matching_qos(node: Node, topic: str) -> QoSProfile | None:
    """A subscription QoS that matches the publishers of ``topic`` (None: no publisher yet)."""
    infos = node.get_publishers_info_by_topic(topic)
    if not infos:
        return None
    reliable = all(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE for i in infos)
    return QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE if reliable
                      else ReliabilityPolicy.BEST_EFFORT)


class ReplayNode(Node):
    """Publishes bag messages; listens to the node's labels (lock-step and scoring).

    Errors in callbacks are kept in ``errors`` (the replay loop raises the first one).
    """

    def __init__(self, publish_topics: dict[str, str], *, reliable: bool, depth: int,
                 clock: bool, labels_topics: list[str], scorer: LiveScorer | None,
                 pending: Pending, video: LiveVideo | None = None) -> None:
        """One publisher per ``{topic: msgtype}`` (``depth`` 0 = keep all), /clock if
        ``clock``; the labels subscriptions are made by :meth:`subscribe_labels`."""
        super().__init__("lmanet_replay")
        qos = QoSProfile(
            history=HistoryPolicy.KEEP_ALL if depth == 0 else HistoryPolicy.KEEP_LAST,
            depth=max(depth, 1),
            reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT)
        self.pubs = {topic: self.create_publisher(message_class(msgtype), topic, qos)
                     for topic, msgtype in publish_topics.items()}
        self.clock_pub = None
        if clock:
            from rosgraph_msgs.msg import Clock
            self.clock_pub = self.create_publisher(Clock, "/clock", 10)
        self.labels_topics = labels_topics
        self.scorer = scorer
        self.pending = pending
        self.video = video
        self.label_subs: dict = {}
        self.overlay_sub = None
        self.model_info = None
        self.info_sub = None
        self.errors: list[str] = []

    def subscribe_labels(self) -> bool:
        """Subscribe each labels topic once its publisher is known (QoS matched to it)."""
        from sensor_msgs.msg import Image

        for topic in self.labels_topics:
            if topic in self.label_subs:
                continue
            qos = _matching_qos(self, topic)
            if qos is None:
                continue
            self.label_subs[topic] = self.create_subscription(
                Image, topic, lambda raw, t=topic: self.on_labels(t, raw), qos, raw=True)
            if self.info_sub is None:
                self._subscribe_info(topic.rsplit("/", 1)[0] + "/label_info")
        return len(self.label_subs) == len(self.labels_topics)

    def subscribe_overlay(self) -> bool:
        """Subscribe the node's overlay (next to its labels) once its publisher is known;
        subscribing makes the node render it. True when subscribed or not wanted."""
        from sensor_msgs.msg import Image

        if self.video is None or self.overlay_sub is not None:
            return True
        topic = self.labels_topics[0].rsplit("/", 1)[0] + "/overlay"
        qos = _matching_qos(self, topic)
        if qos is None:
            return False
        self.overlay_sub = self.create_subscription(Image, topic, self.on_overlay, qos, raw=True)
        return True

    def on_overlay(self, raw: bytes) -> None:
        """An overlay image arrived: hand it to the video."""
        try:
            msg = typestore().deserialize_cdr(raw, IMAGE)
            self.video.add_overlay(stamp_ns(msg.header), decode_message(IMAGE, msg)[0])
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
        """Keep the node's model name, checkpoint id and memory length for the report."""
        self.model_info = msg
        if self.scorer is not None:
            self.scorer.set_model_info(msg.model_name, msg.checkpoint_id, int(msg.memory_length))

    def on_labels(self, topic: str, raw: bytes) -> None:
        """A labels image arrived: count it for lock-step, score it."""
        now = time.perf_counter()
        try:
            msg = typestore().deserialize_cdr(raw, IMAGE)
            key = (topic, stamp_ns(msg.header))
            self.pending.received[key] += 1
            sent_at = self.pending.sent_at.get(key)
            latency = (now - sent_at) * 1e3 if sent_at is not None else None
            if self.scorer is not None:
                self.scorer.add(topic, key[1], msg.header.frame_id, decode_label(IMAGE, msg),
                                latency)
        except Exception as exc:  # noqa: BLE001 - reported by the replay loop, not lost
            self.errors.append(f"labels on {topic}: {exc}")
