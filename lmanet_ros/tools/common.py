"""Argument helpers shared by the `lmanet` subcommands."""
from __future__ import annotations

import argparse


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``HxW`` (e.g. ``256x512``) into (height, width) pixels for argparse."""
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 256x512, got '{text}'") from None
    if height <= 0 or width <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, got '{text}'")
    return height, width
