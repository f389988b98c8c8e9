"""The progress bar of every long job (evaluation, training, bag writing): one place, one look."""
from __future__ import annotations

import sys

__all__ = ["progress"]


def progress(total: int | None, desc: str, unit: str = "frame"):
    """A tqdm bar on stderr for ``total`` items (None: unknown), disabled when stderr is not a
    terminal; use it as a context manager and call ``update(n)``."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=False,
                disable=not sys.stderr.isatty())
