"""`lmanet score`: score a running node's labels against a bag's label topic, passively.

For the robot set-up, where the bag is played by ``ros2 bag play --clock`` (or ``lmanet replay``
without ``--score-out``): this subscribes to the node's labels topic, pairs every labels image with
the bag's ground truth of the same header stamp and writes the same ``metrics.json`` /
``report.md`` / plots as ``lmanet eval``. It stops once every labelled frame of the bag was
scored, after ``--idle-timeout`` seconds without labels, after ``--timeout``, or on Ctrl-C (then
the report is flagged partial). Latency is not known here (the publish time is the player's);
``lmanet replay --lockstep --score-out`` measures it.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

from lmanet_ros.streams import MemoryPolicy
from lmanet_ros.tools.replay import LiveScorer, ReplayError, _make_node, _Pending


def score_live(bag: Path, labels_topic: str, out: Path, *, label_topic: str | None,
               label_ids: bool = False, max_gap: float = 1.0, idle_timeout: float = 10.0,
               timeout: float = 0.0,
               ready: Callable[[], None] | None = None) -> tuple[LiveScorer, bool]:
    """Score labels on ``labels_topic`` until done (see module doc); return (scorer, complete).

    ``ready`` is called once the labels subscription exists (tests use it to start a player).
    """
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    scorer = LiveScorer(bag, label_topic, label_ids=label_ids, policy=MemoryPolicy(max_gap=max_gap))
    pending = _Pending()
    rclpy.init(args=["lmanet_score"])
    node = None
    executor = SingleThreadedExecutor()
    complete = False
    interrupted = False
    start = time.monotonic()
    try:
        node = _make_node({}, reliable=True, depth=10, clock=False, labels_topics=[labels_topic],
                          scorer=scorer, pending=pending)
        executor.add_node(node)
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
                complete = True
                break
            if count and idle_timeout > 0 and now - last_change > idle_timeout:
                break
            if timeout > 0 and now - start > timeout:
                break
    except (KeyboardInterrupt, ExternalShutdownException):
        interrupted = True
    finally:
        if node is not None:
            if node.model_info is None:   # the latched label_info may still be on its way
                deadline = time.monotonic() + 0.5
                while node.model_info is None and time.monotonic() < deadline:
                    executor.spin_once(timeout_sec=0.05)
        scorer.write(out, partial=interrupted or (bool(scorer.gt) and not complete),
                     source={"labels_topics": [labels_topic], "frames_in_bag": None,
                             "lockstep": False, "scorer": "lmanet score"},
                     parameters={})
        executor.shutdown(timeout_sec=1.0)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return scorer, complete


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``lmanet score``."""
    parser = subparsers.add_parser(
        "score", allow_abbrev=False, help="score a running node's labels against a bag's labels",
        description=__doc__.split("\n\n")[0])
    parser.add_argument("bag", type=Path, help="the rosbag2 being played (sqlite3 or mcap)")
    parser.add_argument("--out", type=Path, required=True,
                        help="directory for metrics.json, report.md and plots")
    parser.add_argument("--labels-topic", default="/lmanet/labels",
                        help="the node's labels topic (mono8 class ids)")
    parser.add_argument("--label-topic", help="the bag's ground truth (mono8 trainIds)")
    parser.add_argument("--label-ids", action="store_true",
                        help="the label topic holds Cityscapes labelIds (mapped to trainIds)")
    parser.add_argument("--max-gap", type=float, default=1.0,
                        help="the node's memory.max_gap, to infer memory resets in the report")
    parser.add_argument("--idle-timeout", type=float, default=10.0,
                        help="stop after this many seconds without labels (0 = never)")
    parser.add_argument("--timeout", type=float, default=0.0,
                        help="stop after this many seconds in all (0 = never)")
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``lmanet score``."""
    try:
        scorer, complete = score_live(args.bag, args.labels_topic, args.out,
                                      label_topic=args.label_topic, label_ids=args.label_ids,
                                      max_gap=args.max_gap, idle_timeout=args.idle_timeout,
                                      timeout=args.timeout)
    except ReplayError as exc:
        print(f"lmanet score: error: {exc}", file=sys.stderr)
        return 2
    labelled = scorer.run.labelled_frames
    print(f"scored {scorer.run.frames} labels images ({labelled} of {len(scorer.gt)} labelled "
          f"frames); report in {args.out}", file=sys.stderr)
    return 0 if complete or not scorer.gt else 1
