"""The replay engine: a rosbag2's messages (and /clock) published into a live ROS graph.

``ros2 bag play`` is not pip-installable; this is the part of it the node needs, plus what
``ros2 bag play`` cannot do: lock-step (publish the next frame only once the node's labels for
the previous one arrived, matched by header stamp, so a CPU that runs the network at 2 Hz still
gets every frame of a 17 Hz bag, in order), live scoring of the node's labels against the bag's
label topic (the same ``metrics.json`` / ``report.md`` as the offline evaluation) and an
``overlay.mp4`` of each input frame beside the overlay the node published for it.

Messages are published as the serialised bytes stored in the bag (no decode / encode), reliable
by default so no frame is lost, with ``/clock`` (rosgraph_msgs/Clock) set to each message's
recorded time before it is published, as ``ros2 bag play --clock`` does. rclpy is imported when
a replay starts, not with this module.
"""
from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2

from lmanet_ros.bags import IMAGE_TYPES, BagReader, decode_message, header_of, typestore
from lmanet_ros.progress import progress
from lmanet_ros.ros_env import teardown
from lmanet_ros.stamps import ns_to_seconds, split_ns
from lmanet_ros.streams import MemoryPolicy

from .corruption import camera_topics
from .scoring import LiveScorer
from .video import VIDEO_FILE, LiveVideo

__all__ = ["ReplayError", "ReplayOptions", "ReplayOutcome", "parse_remaps", "replay_bag",
           "spin_until"]


class ReplayError(RuntimeError):
    """A replay cannot start or cannot go on (bad topic, no node, labels that never come)."""


@dataclass
class ReplayOptions:
    """What :func:`replay_bag` does (the ``lmanet replay`` flags, as data; times in seconds)."""

    bag: Path
    topics: list[str] | None = None
    remap: dict[str, str] = field(default_factory=dict)
    rate: float = 1.0
    loop: bool = False
    lockstep: bool = False
    node_labels_topics: list[str] = field(default_factory=lambda: ["/lmanet/labels"])
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
    """What a replay did; ``missing`` lists the (labels topic, stamp ns) that got no labels."""

    published: int = 0
    frames: int = 0
    labels_received: int = 0
    missing: list[tuple[str, int]] = field(default_factory=list)
    interrupted: bool = False
    report: list[Path] = field(default_factory=list)
    video_frames: int = 0


@dataclass
class _Plan:
    """The topics of one replay: what is read, what is published where, what is awaited."""

    topics: list[str]
    publish_topics: dict[str, str]
    image_out: list[str]
    labels_topics: list[str]
    labels_for: dict[str, str]
    total: int
    storage: str


def parse_remaps(items: list[str] | None) -> dict[str, str]:
    """``OLD:=NEW`` strings to a {old: new} topic map."""
    remaps = {}
    for item in items or []:
        old, sep, new = item.partition(":=")
        if not sep or not old or not new:
            raise ReplayError(f"remap '{item}' is not OLD:=NEW")
        remaps[old] = new
    return remaps


def spin_until(executor, condition: Callable[[], bool], deadline: float | None) -> bool:
    """Spin until ``condition()`` holds (True) or ``deadline`` (monotonic) passes (False)."""
    while not condition():
        if deadline is not None and time.monotonic() >= deadline:
            return condition()
        executor.spin_once(timeout_sec=0.02)
    return True


def _check(options: ReplayOptions) -> None:
    if options.loop and options.score_out:
        raise ReplayError("--loop and scoring do not go together (every loop repeats the stamps)")
    if options.video and options.score_out is None:
        raise ReplayError("the overlay video is written next to the scores: give --score-out")
    if options.rate < 0 or math.isnan(options.rate):
        raise ReplayError(f"--rate must be >= 0 (0: as fast as possible), got {options.rate}")


def _plan(reader: BagReader, options: ReplayOptions) -> _Plan:
    by_topic = reader.topics
    if options.topics:
        unknown = [t for t in options.topics if t not in by_topic]
        if unknown:
            raise ReplayError(f"topics {unknown} are not in {options.bag} "
                              f"(topics: {sorted(by_topic)})")
        topics = list(options.topics)
    else:
        # Every camera but the labels; a clean reference X_clean of a camera X is no camera.
        topics = [t for t in camera_topics(reader.image_topics_in_bag_order())
                  if t != options.label_topic]
    if not topics:
        raise ReplayError(f"no image topics to replay in {options.bag}")
    image_out = [options.remap.get(t, t) for t in topics if by_topic[t][0] in IMAGE_TYPES]
    watch_labels = options.lockstep or options.score_out is not None
    labels_topics = list(options.node_labels_topics) if watch_labels else []
    if watch_labels and len(labels_topics) not in (1, len(image_out)):
        raise ReplayError(f"{len(labels_topics)} labels topics for {len(image_out)} image topics: "
                          "give one, or one per image topic in the same order")
    return _Plan(topics=topics,
                 publish_topics={options.remap.get(t, t): by_topic[t][0] for t in topics},
                 image_out=image_out, labels_topics=labels_topics,
                 labels_for={topic: labels_topics[min(i, len(labels_topics) - 1)]
                             for i, topic in enumerate(image_out)} if labels_topics else {},
                 total=sum(by_topic[t][1] for t in topics), storage=reader.storage)


def replay_bag(options: ReplayOptions, *, args: list[str] | None = None) -> ReplayOutcome:
    """Publish the bag (see module doc); rclpy is initialised and shut down here.

    Raises:
        ReplayError: unknown topics, no subscriber / labels publisher in time, labels of a
            frame that never arrive in lock-step mode.
        lmanet_ros.bags.BagError: the bag (or its label topic) cannot be read.
    """
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    from .replay_node import Pending, ReplayNode

    _check(options)
    with BagReader(options.bag) as reader:
        plan = _plan(reader, options)
        scorer = None
        if options.score_out is not None:
            scorer = LiveScorer(reader, options.label_topic, label_ids=options.label_ids,
                                policy=MemoryPolicy(max_gap=options.max_gap))
        video = None
        if options.video:
            if len(plan.image_out) != 1:
                raise ReplayError(f"the overlay video shows one camera; {len(plan.image_out)} "
                                  f"image topics are replayed: choose one with --topics")
            Path(options.score_out).mkdir(parents=True, exist_ok=True)
            video = LiveVideo(Path(options.score_out) / VIDEO_FILE)
        outcome = ReplayOutcome()
        pending = Pending()
        rclpy.init(args=["lmanet_replay", *(args or [])])
        node = None
        executor = SingleThreadedExecutor()
        bar = progress(None if options.loop else plan.total, "replay")
        try:
            try:
                node = ReplayNode(plan.publish_topics, reliable=options.reliable,
                                  depth=options.depth, clock=options.clock,
                                  labels_topics=plan.labels_topics, scorer=scorer,
                                  pending=pending, video=video)
            except ValueError as exc:
                raise ReplayError(str(exc)) from exc
            executor.add_node(node)
            _wait_for_graph(node, executor, options, plan.image_out, plan.labels_topics)
            _publish(reader, node, executor, options, plan, pending, outcome, bar.update)
            if plan.labels_topics:  # let the last labels arrive (not lock-step: they may lag)
                spin_until(executor, lambda: all(pending.received[k] >= n
                                                 for k, n in pending.sent.items()),
                           time.monotonic() + options.timeout)
            if video is not None:  # overlays are published after the labels
                spin_until(executor, lambda: video.pending == 0,
                           time.monotonic() + options.timeout)
        except (KeyboardInterrupt, ExternalShutdownException):
            outcome.interrupted = True
        finally:
            bar.close()
            outcome.labels_received = sum(pending.received.values())
            outcome.missing = sorted(k for k, n in pending.sent.items()
                                     if pending.received[k] < n)
            _finish_outputs(outcome, options, plan, scorer, video)
            teardown([node], executor=executor)
    return outcome


def _publish(reader: BagReader, node, executor, options: ReplayOptions, plan: _Plan,
             pending, outcome: ReplayOutcome, advance: Callable[[int], object]) -> None:
    """Publish the bag's messages in recorded order (again and again with ``loop``)."""
    store = typestore()
    while True:
        previous_log, previous_wall = None, None
        for connection, log_ns, data in reader.raw(plan.topics):
            out_topic = options.remap.get(connection.topic, connection.topic)
            if options.rate > 0 and previous_log is not None:
                target = previous_wall + ns_to_seconds(log_ns - previous_log) / options.rate
                spin_until(executor, lambda: time.perf_counter() >= target, None)
            previous_log, previous_wall = log_ns, time.perf_counter()
            if node.clock_pub is not None:
                _publish_clock(node.clock_pub, log_ns)
            key = None
            if connection.msgtype in IMAGE_TYPES and out_topic in plan.labels_for:
                stamp, _ = header_of(data, connection.msgtype)
                if stamp is not None:  # a message too short for a header is not waited for
                    key = (plan.labels_for[out_topic], stamp)
                    pending.sent[key] += 1
                    pending.sent_at[key] = time.perf_counter()
                if node.video is not None and stamp is not None:
                    msg = store.deserialize_cdr(data, connection.msgtype)
                    node.video.add_input(stamp, decode_message(connection.msgtype, msg)[0])
            node.pubs[out_topic].publish(bytes(data))
            outcome.published += 1
            advance(1)
            if connection.msgtype in IMAGE_TYPES:
                outcome.frames += 1
            if options.lockstep and key is not None:
                limit = options.timeout if outcome.frames > 1 else options.startup_timeout
                if not spin_until(executor, lambda: pending.received[key] >= pending.sent[key],
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
                return
        if not options.loop:
            return


def _finish_outputs(outcome: ReplayOutcome, options: ReplayOptions, plan: _Plan,
                    scorer: LiveScorer | None, video: LiveVideo | None) -> None:
    """Finalise the video and write the scores of what was replayed (also after an error)."""
    if video is not None:
        try:
            video.close()
        except (OSError, cv2.error) as exc:  # the scores are still written below
            print(f"overlay video not written: {exc}", file=sys.stderr)
        outcome.video_frames = video.frames
    if scorer is not None:
        outcome.report = scorer.write(
            options.score_out, partial=outcome.interrupted or bool(outcome.missing),
            source={"storage": plan.storage, "image_topics": plan.topics,
                    "published_topics": list(plan.publish_topics),
                    "labels_topics": plan.labels_topics, "frames_in_bag": plan.total,
                    "frames_published": outcome.frames,
                    "frames_missing_labels": len(outcome.missing),
                    "lockstep": options.lockstep, "rate": options.rate,
                    "video_frames": outcome.video_frames,
                    "video_frames_without_overlay": 0 if video is None else video.missing},
            parameters={"reliable": options.reliable, "depth": options.depth})


def _publish_clock(publisher, log_ns: int) -> None:
    from rosgraph_msgs.msg import Clock

    msg = Clock()
    msg.clock.sec, msg.clock.nanosec = split_ns(log_ns)
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

    if not spin_until(executor, subscribed, deadline):
        missing = [t for t in image_out if node.pubs[t].get_subscription_count() == 0]
        if labels_topics:
            raise ReplayError(f"nobody subscribes {missing} after {wait:g} s: start lmanet_node "
                              f"(remapped onto these topics) first, or use --remap")
        node.get_logger().warning(f"no subscriber on {missing} after {wait:g} s; publishing")
        return
    if labels_topics:
        if not spin_until(executor, node.subscribe_labels, deadline):
            raise ReplayError(f"no publisher of {labels_topics} after {wait:g} s: is the node "
                              f"named as --node-labels-topic says?")
        if not spin_until(executor, lambda: all(
                s.get_publisher_count() > 0 for s in node.label_subs.values()), deadline):
            raise ReplayError(f"the labels subscription of {labels_topics} never matched the "
                              "node's publisher (QoS?)")
        if not spin_until(executor, node.subscribe_overlay, deadline):
            raise ReplayError(f"no publisher of the node's overlay next to {labels_topics[0]} "
                              f"after {wait:g} s (needed for the video)")
        # the latched label_info says the model is loaded and names it (optional)
        spin_until(executor, lambda: node.model_info is not None,
                   min(deadline, time.monotonic() + 2.0))
        delay = getattr(node.model_info, "output_delay_frames", 0)
        if options.lockstep and delay:
            raise ReplayError(f"the node's model {node.model_info.model_name} publishes labels "
                              f"{delay} frame(s) late, so lock-step (waiting for each frame's "
                              "labels before the next frame) cannot run; score it offline with "
                              "`lmanet eval BAG --model ...` (the same pipeline)")
