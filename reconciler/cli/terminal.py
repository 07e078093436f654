"""What a terminal gets that a pipe or CI log does not: colour (never with NO_COLOR set or TERM=dumb) and one
progress line on stderr, redrawn in place, for a long apply."""

from __future__ import annotations

import os
import threading
from typing import Callable, TextIO

_CODES = {"+": "32", "-": "31", "~": "33", "+/-": "33", "!": "1;31", "ok": "32", "FAILED": "1;31"}


def wants_colour(stream: TextIO) -> bool:
    """https://no-color.org: any non-empty NO_COLOR turns colour off."""
    return stream.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def paint(text: str, key: str, on: bool) -> str:
    """text coloured as `key` (a change's symbol, ok or FAILED) is; as it is when colour is off."""
    code = _CODES.get(key)
    return f"\033[{code}m{text}\033[0m" if on and code else text


class Progress:
    """`12/1000 done, 0 failed` on stderr, kept below the outcome lines: each line clears it and draws it again."""

    MIN_CHANGES = 20  # below this the outcome lines are progress enough

    def __init__(self, total: int, out: Callable[[str], None], err: Callable[[str], None], *, enabled: bool):
        self.total, self.out, self.err = total, out, err
        self.enabled = enabled and total >= self.MIN_CHANGES
        self.done = self.failed = 0
        self._lock = threading.Lock()  # outcomes arrive from apply's worker threads

    def line(self, text: str, ok: bool) -> None:
        with self._lock:
            self.done += 1
            self.failed += not ok
            if self.enabled:
                self.err("\r\033[K")
            self.out(text)
            if self.enabled:
                self.err(f"{self.done}/{self.total} done, {self.failed} failed")

    def close(self) -> None:
        if self.enabled:
            self.err("\r\033[K")
