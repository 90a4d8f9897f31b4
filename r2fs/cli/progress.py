"""Showing byte counts to a human: `format_size` and the put/get progress bar.

The bar exists so that a multi-gigabyte `r2fs put` on a terminal is not a
silent wait. It must never leak into data or logs, so it draws only when its
stream (stderr) is a terminal, and the caller turns it off when the data
itself goes to that terminal (`r2fs get BUCKET/KEY -`). It redraws at most
ten times a second: a redraw per 1 MiB piece would cost more than the copy.
"""

from __future__ import annotations

import shutil
import sys
import time
from types import TracebackType
from typing import TextIO

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
#: characters of the widest `format_size` result below a PiB ("1023.9 MiB")
SIZE_WIDTH = 10


def format_size(n: float) -> str:
    """`1536` -> `1.5 KiB`: binary units, the same ones `parse_size` accepts."""
    value = float(n)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            if unit == "B":
                return f"{int(value)} B"
            return f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_duration(seconds: float) -> str:
    """`83` -> `1m23s`, `5000` -> `1h23m`."""
    s = max(0, int(seconds + 0.5))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
    """A one-line progress bar on `stream`, or nothing at all.

    `total=None` (e.g. reading stdin) shows the bytes done and the rate
    without a bar. Use as a context manager; `update(n)` after each piece.
    """

    REDRAW_INTERVAL = 0.1  # seconds

    def __init__(self, label: str, total: int | None, *, stream: TextIO | None = None,
                 enabled: bool | None = None, done: int = 0, eta: bool = False) -> None:
        self.label = label
        self.total = total
        self.done = done
        self._first = done  # already done when we started (a resumed scrub): not in the rate
        self.eta = eta
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            enabled = _is_tty(self.stream)
        self.enabled = enabled
        self._start = time.monotonic()
        self._last_draw = 0.0
        self._drawn = False

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close(finished=exc_type is None)

    def update(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last_draw >= self.REDRAW_INTERVAL:
            self._last_draw = now
            self._draw(now)

    def close(self, *, finished: bool = True) -> None:
        """Draw the final state and end the line (or wipe it after a failure,
        so that the one-line error message stands alone)."""
        if not self.enabled:
            return
        if finished:
            self._draw(time.monotonic())
            self.stream.write("\n")
        elif self._drawn:
            self.stream.write("\r\x1b[K")
        self.stream.flush()
        self.enabled = False

    def render(self, now: float, width: int) -> str:
        """The line for the current state, at most `width` characters.

        Every number has a fixed width (`1023.9 MiB` is the widest size), so
        the line never changes length as they grow: the bar does not jitter.
        """
        elapsed = max(now - self._start, 1e-6)
        speed = (self.done - self._first) / elapsed
        rate = f"{format_size(speed):>{SIZE_WIDTH}}/s"
        if self.total:
            frac = min(self.done / self.total, 1.0)
            counts = f"{format_size(self.done):>{SIZE_WIDTH}}/{format_size(self.total)}"
            tail = f" {frac * 100:3.0f}% {counts} {rate}"
            if self.eta:
                eta = format_duration((self.total - self.done) / speed) if speed > 0 else "?"
                tail += f" ETA {eta:>6}"
            bar_width = width - len(self.label) - len(tail) - 4
            if bar_width >= 10:
                filled = int(bar_width * frac)
                bar = "#" * filled + " " * (bar_width - filled)
                return f"{self.label} [{bar}]{tail}"[:width]
            return f"{self.label}{tail}"[:width]
        return f"{self.label} {format_size(self.done):>{SIZE_WIDTH}} {rate}"[:width]

    def _draw(self, now: float) -> None:
        width = shutil.get_terminal_size((80, 24)).columns - 1
        self.stream.write("\r" + self.render(now, width) + "\x1b[K")
        self.stream.flush()
        self._drawn = True


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
