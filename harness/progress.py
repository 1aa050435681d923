"""A progress bar over cells, on stderr. On a terminal the current cell is shown while it runs; in
a log (CI) each finished cell is one line, so the log reads as a record of the sweep."""

from __future__ import annotations

import threading
import time
from typing import TextIO


class Progress:
    def __init__(self, total: int, stream: TextIO, width: int = 20):
        self.total, self.stream, self.width = total, stream, width
        self.done_count = 0
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.started = time.monotonic()
        self.lock = threading.Lock()  # device workers report from their threads

    def _bar(self, count: int) -> str:
        filled = round(self.width * count / self.total) if self.total else self.width
        return f"[{'#' * filled}{'.' * (self.width - filled)}] {count:>{len(str(self.total))}}/{self.total}"

    def start(self, label: str) -> None:
        with self.lock:
            self._start(label)

    def _start(self, label: str) -> None:
        if self.tty:
            self.stream.write(f"\r\033[K{self._bar(self.done_count)} {label} ...")
            self.stream.flush()

    def done(self, label: str, outcome: str) -> None:
        with self.lock:
            self._done(label, outcome)

    def _done(self, label: str, outcome: str) -> None:
        self.done_count += 1
        elapsed = time.monotonic() - self.started
        prefix = "\r\033[K" if self.tty else ""
        self.stream.write(f"{prefix}{self._bar(self.done_count)} {elapsed:6.1f}s {label}: {outcome}\n")
        self.stream.flush()
