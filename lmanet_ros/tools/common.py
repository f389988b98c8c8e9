"""Argument helpers shared by the `lmanet` subcommands."""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from collections.abc import Callable

from lmanet_ros.sizes import size_type


#: An argparse type: ``HxW`` (e.g. ``256x512``) as (height, width) pixels
#: (:func:`lmanet_ros.sizes.parse_size`; its message is what argparse prints).
parse_size = size_type()


def int_at_least(minimum: int, *, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum`` (and <= ``maximum`` when given), refused with
    a message otherwise."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got '{text}'") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"expected an integer <= {maximum}, got {value}")
        return value
    return parse


def float_in(low: float, high: float = math.inf) -> Callable[[str], float]:
    """An argparse type: a number in (``low``, ``high``], refused with a message otherwise."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
        if not low < value <= high:
            upper = "" if math.isinf(high) else f" and <= {high:g}"
            raise argparse.ArgumentTypeError(f"expected a number > {low:g}{upper}, got {value}")
        return value
    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)
positive_float = float_in(0.0)


def add_scoring_arguments(labels: argparse._ActionsContainer,
                          memory: argparse._ActionsContainer | None = None, *,
                          live: bool = False) -> None:
    """The flags that say how labels are scored, the same on ``eval``, ``replay`` and ``score``:
    ``--label-topic`` and ``--label-ids`` (the bag's ground truth, into ``labels``) and
    ``--max-gap`` (into ``memory``, default ``labels``; ``live``: the running node's value,
    from which its memory resets are inferred)."""
    labels.add_argument("--label-topic", metavar="TOPIC",
                        help="the bag's ground truth: mono8 Cityscapes trainIds (255 void), "
                        "matched to the frames by header stamp")
    labels.add_argument("--label-ids", action="store_true",
                        help="the label topic holds Cityscapes labelIds: map them to trainIds")
    (memory or labels).add_argument(
        "--max-gap", type=float, default=1.0, metavar="SEC",
        help="the node's memory.max_gap, to infer memory resets in the report" if live else
        "seconds between frames beyond which the memory is cleared (0: off)")


def add_node_labels_argument(parser: argparse._ActionsContainer, *, many: bool) -> None:
    """``--node-labels-topic``: the topic(s) a running node publishes its labels on (not the
    bag's ground truth, ``--label-topic``)."""
    kwargs = {"nargs": "+", "default": ["/lmanet/labels"]} if many else \
        {"default": "/lmanet/labels"}
    parser.add_argument("--node-labels-topic", metavar="TOPIC", dest="node_labels_topic",
                        help="the node's labels topic" + ("(s): one, or one per image topic"
                                                          if many else " (mono8 class ids)"),
                        **kwargs)


def add_bag_command(subparsers: argparse._SubParsersAction, name: str, doc: str, *,
                    out_help: str) -> argparse.ArgumentParser:
    """Register ``lmanet NAME BAG --out DIR``, a command that reads a rosbag2 and writes its
    results into a folder. ``doc`` is the command module's docstring: its first line (after the
    command's name and a colon) is the one-line help, its first paragraph the description."""
    summary = doc.split("\n", 1)[0].split(":", 1)[-1].strip().rstrip(".").replace("``", "")
    parser = subparsers.add_parser(name, allow_abbrev=False, help=summary,
                                   description=doc.split("\n\n")[0])
    parser.add_argument("bag", type=Path, help="rosbag2 directory (sqlite3 or mcap)")
    parser.add_argument("--out", type=Path, required=True, help=out_help)
    return parser
