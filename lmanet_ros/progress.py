"""The progress of every long job (evaluation, training, bag writing, replay): one place, one look.

On a terminal it is a tqdm bar on stderr. Elsewhere (a CI log, ``nohup``, a pipe, ``ros2 launch``'s
output) a bar would be invisible or garble the log, and minutes of silence look like a hang: a
plain line is printed instead when the job starts, then every :data:`DEFAULT_INTERVAL_S`
seconds (``LMANET_PROGRESS_INTERVAL`` in seconds overrides it; 0 disables the periodic lines),
and once at the end::

    eval: 120/400 frames (30 %), 3.2 frames/s, 37 s elapsed, about 1 min 27 s left
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any, TextIO

__all__ = ["DEFAULT_INTERVAL_S", "INTERVAL_ENV", "PlainProgress", "progress"]

#: Seconds between two plain progress lines when stderr is not a terminal.
DEFAULT_INTERVAL_S = 10.0
#: Environment variable that overrides :data:`DEFAULT_INTERVAL_S` (seconds; 0: start and end
#: lines only).
INTERVAL_ENV = "LMANET_PROGRESS_INTERVAL"


def _duration(seconds: float) -> str:
    """Seconds in words: ``42 s``, ``3 min 05 s``, ``1 h 02 min``."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class PlainProgress:
    """Progress as plain lines (the interface of the tqdm bars used here: ``update``,
    ``set_postfix``, ``close``, a context manager).

    Args:
        total: items expected, or None when unknown.
        desc: what is running (the line's prefix).
        unit: the item's name (``frame``, ``batch``); ``s`` is added for counts other than one.
        interval: seconds between two periodic lines (0: none between the first and the last).
        stream: where lines go (default: stderr).
        clock: seconds of a monotonic clock (tests give their own).
    """

    def __init__(self, total: int | None, desc: str, unit: str = "frame", *,
                 interval: float = DEFAULT_INTERVAL_S, stream: TextIO | None = None,
                 clock: Any = time.monotonic) -> None:
        self.total = total
        self.desc = desc
        self.unit = unit
        self.interval = interval
        self.n = 0
        self._stream = stream if stream is not None else sys.stderr
        self._clock = clock
        self._start = clock()
        self._last = self._start
        self._postfix = ""
        self._closed = False
        self._emit("started")

    def _units(self, count: int | float) -> str:
        return self.unit if count == 1 else f"{self.unit}s"

    def line(self, final: bool = False) -> str:
        """The progress line now (``final``: the closing one)."""
        elapsed = self._clock() - self._start
        count = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        parts = [f"{self.desc}: {count} {self._units(self.n if not self.total else self.total)}"]
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.0f} %)"
        if elapsed > 0 and self.n:
            parts.append(f"{self.n / elapsed:.1f} {self._units(2)}/s")
        parts.append(f"{_duration(elapsed)} elapsed")
        if not final and self.total and self.n and self.n < self.total:
            parts.append(f"about {_duration(elapsed * (self.total - self.n) / self.n)} left")
        if self._postfix:
            parts.append(self._postfix)
        return ", ".join(parts) + (", done" if final else "")

    def _emit(self, when: str) -> None:
        text = self.line(final=when == "done") if when != "started" else (
            f"{self.desc}: started" + (f", {self.total} {self._units(self.total)}"
                                       if self.total else ""))
        print(text, file=self._stream, flush=True)

    def update(self, n: int = 1) -> None:
        """Count ``n`` more items; print a line when :attr:`interval` has passed since the last."""
        self.n += n
        now = self._clock()
        if self.interval > 0 and now - self._last >= self.interval:
            self._last = now
            self._emit("periodic")

    def set_postfix(self, **values: Any) -> None:
        """Values shown at the end of the next line (e.g. ``loss=0.41``)."""
        self._postfix = ", ".join(f"{key} {value}" for key, value in values.items())

    def close(self) -> None:
        """Print the closing line (once)."""
        if not self._closed:
            self._closed = True
            self._emit("done")

    def __enter__(self) -> "PlainProgress":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def _interval() -> float:
    """The periodic-line interval in seconds (:data:`INTERVAL_ENV`, else the default)."""
    text = os.environ.get(INTERVAL_ENV, "").strip()
    try:
        return max(0.0, float(text)) if text else DEFAULT_INTERVAL_S
    except ValueError:
        return DEFAULT_INTERVAL_S


def progress(total: int | None, desc: str, unit: str = "frame") -> Any:
    """Progress of ``total`` items (None: unknown): a tqdm bar on stderr when it is a terminal,
    else :class:`PlainProgress` lines; use it as a context manager (or call ``close``) and call
    ``update(n)``."""
    if not sys.stderr.isatty():
        return PlainProgress(total, desc, unit, interval=_interval())
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=False)
