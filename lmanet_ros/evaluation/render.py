"""Shared formatting of the evaluation's outputs: numbers and tables for ``report.md``, and the
matplotlib figures of the plots (Agg canvas: no pyplot, no display, thread-safe)."""
from __future__ import annotations

from collections.abc import Sequence

__all__ = ["ABSENT", "figure", "num", "pct", "table"]

#: What the per-class tables and plot show for a class neither in the ground truth nor predicted.
ABSENT = "absent"


def pct(value: float | None, digits: int = 1) -> str:
    """A fraction in percent (``"–"`` for None)."""
    return "–" if value is None else f"{100.0 * value:.{digits}f}"


def num(value: float | None, digits: int = 1) -> str:
    """A number with ``digits`` decimals (``"–"`` for None)."""
    return "–" if value is None else f"{value:.{digits}f}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """The lines of a Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def figure(width: float, height: float):
    """A matplotlib Figure of ``width`` x ``height`` inches at 100 dpi, drawn by the Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    made = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(made)
    return made
