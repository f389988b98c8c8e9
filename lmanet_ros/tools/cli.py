"""Root of the `lmanet` command: registers the subcommands, parses, dispatches."""
from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

#: Subcommand modules under lmanet_ros.tools, in the order `lmanet --help` lists them.
SUBCOMMANDS: tuple[str, ...] = ("demo", "train", "eval", "replay", "score", "synth", "bag",
                                "export")


def build_parser() -> argparse.ArgumentParser:
    """Return the `lmanet` argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="lmanet", allow_abbrev=False,
        description="LMANet video semantic segmentation: tools around the ROS 2 node.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"lmanet_ros.tools.{name}")
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `lmanet` with ``argv`` (default: the process arguments); return the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
