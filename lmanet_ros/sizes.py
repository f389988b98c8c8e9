"""Image sizes written as text (``HxW``, e.g. ``256x512``): one parser for every tool."""
from __future__ import annotations

import argparse
import re
from collections.abc import Callable

__all__ = ["parse_size", "format_size", "size_type"]

_SIZE_RE = re.compile(r"\s*(\d+)\s*[xX]\s*(\d+)\s*")


def parse_size(text: str, *, multiple_of: int = 1, minimum: int = 1) -> tuple[int, int]:
    """Parse ``HxW`` into (height, width) in pixels.

    Args:
        text: e.g. ``"256x512"`` (``X`` and spaces around the numbers are accepted).
        multiple_of: both sides must be multiples of this (8 for training crops).
        minimum: both sides must be at least this.

    Raises:
        ValueError: the text is not ``HxW`` or a side breaks a rule (the message says which).
    """
    match = _SIZE_RE.fullmatch(text)
    if not match:
        raise ValueError(f"size must look like HxW (e.g. 256x512), got '{text}'")
    height, width = int(match.group(1)), int(match.group(2))
    if height < max(minimum, 1) or width < max(minimum, 1):
        raise ValueError(f"size {height}x{width}: height and width must be positive"
                         + (f" and at least {minimum}" if minimum > 1 else ""))
    if height % multiple_of or width % multiple_of:
        raise ValueError(f"size {height}x{width}: height and width must be multiples of "
                         f"{multiple_of}")
    return height, width


def format_size(size: tuple[int, int]) -> str:
    """(height, width) -> ``HxW``."""
    return f"{int(size[0])}x{int(size[1])}"


def size_type(*, multiple_of: int = 1, minimum: int = 1) -> Callable[[str], tuple[int, int]]:
    """An argparse ``type=`` for ``HxW`` under the rules of :func:`parse_size` (its message is
    what argparse prints)."""
    def parse(text: str) -> tuple[int, int]:
        try:
            return parse_size(text, multiple_of=multiple_of, minimum=minimum)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return parse
