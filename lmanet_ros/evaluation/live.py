"""Passive live scoring: a running node's labels against a bag's label topic, while someone else
plays the bag (``ros2 bag play --clock``, or a replay without scoring).

:func:`score_live` subscribes to the node's labels topic, pairs every labels image with the
bag's ground truth of the same header stamp (:class:`~.scoring.LiveScorer`) and writes the same
``metrics.json`` / ``report.md`` / plots as the offline evaluation. It stops once every labelled
frame of the bag was scored, after ``idle_timeout`` seconds without labels, after ``timeout``,
or on Ctrl-C (then the report is flagged partial). Latency is not known here (the publish time
is the player's).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from lmanet_ros.ros_env import teardown
from lmanet_ros.streams import MemoryPolicy

from .replay import ReplayError, spin_until
from .scoring import LiveScorer

__all__ = ["score_live"]


def score_live(bag: Path, node_labels_topic: str, out: Path, *, label_topic: str | None,
               label_ids: bool = False, max_gap: float = 1.0, idle_timeout: float = 10.0,
               timeout: float = 0.0,
               ready: Callable[[], None] | None = None) -> tuple[LiveScorer, bool]:
    """Score labels on ``node_labels_topic`` until done (see module doc); times in seconds, 0 =
    no limit. Returns (scorer, complete: every labelled frame of the bag was scored).

    ``ready`` is called once the labels subscription exists (tests use it to start a player).
    """
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    from .replay_node import Pending, ReplayNode

    scorer = LiveScorer(bag, label_topic, label_ids=label_ids, policy=MemoryPolicy(max_gap=max_gap))
    rclpy.init(args=["lmanet_score"])
    node = None
    executor = SingleThreadedExecutor()
    complete = False
    interrupted = False
    try:
        node = ReplayNode({}, reliable=True, depth=10, clock=False,
                          labels_topics=[node_labels_topic], scorer=scorer, pending=Pending())
        executor.add_node(node)
        complete = _score_until_done(node, executor, scorer, idle_timeout, timeout, ready)
    except (KeyboardInterrupt, ExternalShutdownException):
        interrupted = True
    finally:
        if node is not None:  # the latched label_info may still be on its way
            spin_until(executor, lambda: node.model_info is not None, time.monotonic() + 0.5)
        scorer.write(out, partial=interrupted or (bool(scorer.gt) and not complete),
                     source={"labels_topics": [node_labels_topic], "frames_in_bag": None,
                             "lockstep": False, "scorer": "lmanet score"},
                     parameters={})
        teardown([node], executor=executor)
    return scorer, complete


def _score_until_done(node, executor, scorer: LiveScorer, idle_timeout: float, timeout: float,
                      ready: Callable[[], None] | None) -> bool:
    """Spin until every labelled stamp was scored (True) or a timeout passed (False)."""
    start = time.monotonic()
    subscribed = False
    last_count, last_change = 0, time.monotonic()
    while True:
        executor.spin_once(timeout_sec=0.05)
        if node.errors:
            raise ReplayError(node.errors[0])
        if not subscribed and node.subscribe_labels():
            subscribed = True
            if ready is not None:
                ready()
        now = time.monotonic()
        count = scorer.run.frames
        if count != last_count:
            last_count, last_change = count, now
        if scorer.gt and all(s in scorer.scored_stamps for s in scorer.gt):
            return True
        if count and idle_timeout > 0 and now - last_change > idle_timeout:
            return False
        if timeout > 0 and now - start > timeout:
            return False
