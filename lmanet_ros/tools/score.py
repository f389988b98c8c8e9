"""`lmanet score`: score a running node's labels against a bag's label topic, passively.

For the robot set-up, where the bag is played by ``ros2 bag play --clock`` (or ``lmanet replay``
without ``--score-out``): this subscribes to the node's labels topic (``--node-labels-topic``),
pairs every labels image with the bag's ground truth (``--label-topic``) of the same header stamp
and writes the same ``metrics.json`` / ``report.md`` / plots as ``lmanet eval``. It stops once
every labelled frame of the bag was scored, after ``--idle-timeout`` seconds without labels,
after ``--timeout``, or on Ctrl-C (then the report is flagged partial). Latency is not known here
(the publish time is the player's); ``lmanet replay --lockstep --score-out`` measures it. The
library function is :func:`lmanet_ros.evaluation.score_live`.
"""
from __future__ import annotations

import argparse
import sys

from lmanet_ros.bags import BagError
from lmanet_ros.evaluation import ReplayError, score_live
from lmanet_ros.tools.common import (add_bag_command, add_node_labels_argument,
                                     add_scoring_arguments)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``lmanet score``."""
    parser = add_bag_command(subparsers, "score", __doc__,
                             out_help="directory for metrics.json, report.md and plots")
    add_node_labels_argument(parser, many=False)
    add_scoring_arguments(parser, live=True)
    parser.add_argument("--idle-timeout", type=float, default=10.0,
                        help="stop after this many seconds without labels (0 = never)")
    parser.add_argument("--timeout", type=float, default=0.0,
                        help="stop after this many seconds in all (0 = never)")
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``lmanet score``."""
    try:
        scorer, complete = score_live(args.bag, args.node_labels_topic, args.out,
                                      label_topic=args.label_topic, label_ids=args.label_ids,
                                      max_gap=args.max_gap, idle_timeout=args.idle_timeout,
                                      timeout=args.timeout)
    except (ReplayError, BagError) as exc:
        print(f"lmanet score: error: {exc}", file=sys.stderr)
        return 2
    labelled = scorer.run.labelled_frames
    print(f"scored {scorer.run.frames} labels images ({labelled} of {len(scorer.gt)} labelled "
          f"frames); report in {args.out}", file=sys.stderr)
    return 0 if complete or not scorer.gt else 1
