"""`lmanet replay`: publish a rosbag2's image topics (and /clock) into a live ROS graph.

``--lockstep`` publishes the next frame only once the node's labels for the previous one arrived
(matched by header stamp); ``--score-out DIR`` scores the node's labels (``--node-labels-topic``)
against the bag's ground truth (``--label-topic``) while it replays, writing the same
``metrics.json`` / ``report.md`` as the offline ``lmanet eval``, and (``--video``)
``overlay.mp4``: each input frame beside the overlay the node published for it. The engine is
:func:`lmanet_ros.evaluation.replay_bag`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lmanet_ros.bags import BagError
from lmanet_ros.evaluation import (ReplayError, ReplayOptions, ReplayOutcome, parse_remaps,
                                   replay_bag)
from lmanet_ros.node.launch_args import dds_transport
from lmanet_ros.tools.common import add_node_labels_argument, add_scoring_arguments


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
        add_node_labels_argument(node, many=True)
    node.add_argument("--timeout", type=float, default=30.0,
                      help="seconds to wait for the labels of one frame before failing")
    node.add_argument("--startup-timeout", type=float, default=120.0,
                      help="seconds to wait for the node to appear and label the first frame")
    if not for_eval:
        score = parser.add_argument_group("scoring")
        score.add_argument("--score-out", type=Path, metavar="DIR",
                           help="score the node's labels against --label-topic; write "
                           "metrics.json, report.md and plots to DIR")
        add_scoring_arguments(score, live=True)
        score.add_argument("--video", action="store_true",
                           help="also write overlay.mp4 (input | the node's overlay) to DIR")


def options_from_args(args: argparse.Namespace) -> ReplayOptions:
    """The :class:`ReplayOptions` of parsed ``lmanet replay`` arguments."""
    return ReplayOptions(
        bag=args.bag, topics=args.topics, remap=parse_remaps(args.remap), rate=args.rate,
        loop=args.loop, lockstep=args.lockstep, node_labels_topics=list(args.node_labels_topic),
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


def replay_and_report(options: ReplayOptions, command: str) -> int:
    """Run :func:`replay_bag`; errors are printed as ``lmanet COMMAND: error: ...`` (exit 2)."""
    try:
        with dds_transport():  # the launch file's transports: camera-sized images arrive
            outcome = replay_bag(options)
    except (ReplayError, BagError) as exc:
        print(f"lmanet {command}: error: {exc}", file=sys.stderr)
        return 2
    return report_outcome(outcome, options)


def run(args: argparse.Namespace) -> int:
    """Run ``lmanet replay``."""
    try:
        options = options_from_args(args)
    except ReplayError as exc:
        print(f"lmanet replay: error: {exc}", file=sys.stderr)
        return 2
    if options.score_out and not options.label_topic:
        print("note: --score-out without --label-topic scores consistency and latency only",
              file=sys.stderr)
    return replay_and_report(options, "replay")
