"""Progress of a sweep, on stderr: cells and launches done, elapsed time and an estimate of what is
left. On a terminal the launch in hand is shown while it runs; in a log (CI) each finished cell is
one line, so the log reads as a record of the sweep."""

from __future__ import annotations

import threading
import time
from typing import TextIO


def duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """Counts cells and launches. `launches` is every launch the plan asks for; a cell that is
    settled early (skipped, failed) gives back the launches it will not need, so the estimate
    follows what is really left."""

    def __init__(self, cells: int, stream: TextIO, launches: int | None = None, width: int = 20):
        self.total, self.stream, self.width = cells, stream, width
        self.launches_total = launches if launches is not None else cells
        self.done_count = self.launches_done = self.launches_skipped = 0
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.started = time.monotonic()
        self.lock = threading.Lock()  # machine workers report from their threads

    def _bar(self) -> str:
        filled = round(self.width * self.done_count / self.total) if self.total else self.width
        return f"[{'#' * filled}{'.' * (self.width - filled)}] {self.done_count:>{len(str(self.total))}}/{self.total}"

    def eta(self) -> str:
        """Time left at the pace of the launches so far ('?' before the first)."""
        left = self.launches_total - self.launches_done - self.launches_skipped
        if not self.launches_done:
            return "?"
        return duration((time.monotonic() - self.started) / self.launches_done * max(0, left))

    def start(self, label: str) -> None:
        if self.tty:
            with self.lock:
                self.stream.write(f"\r\033[K{self._bar()} ETA {self.eta()} {label} ...")
                self.stream.flush()

    def launch_done(self) -> None:
        with self.lock:
            self.launches_done += 1

    def skip_launches(self, n: int) -> None:
        with self.lock:
            self.launches_skipped += max(0, n)

    def cell_done(self, label: str, outcome: str) -> None:
        with self.lock:
            self.done_count += 1
            elapsed = time.monotonic() - self.started
            prefix = "\r\033[K" if self.tty else ""
            left = "" if self.done_count == self.total else f" ETA {self.eta()}"
            self.stream.write(f"{prefix}{self._bar()} {elapsed:6.1f}s{left} {label}: {outcome}\n")
            self.stream.flush()

    def note(self, message: str) -> None:
        """A line of its own between cells (a round of launches done), with the estimate."""
        with self.lock:
            elapsed = time.monotonic() - self.started
            prefix = "\r\033[K" if self.tty else ""
            self.stream.write(f"{prefix}{self._bar()} {elapsed:6.1f}s ETA {self.eta()} {message}\n")
            self.stream.flush()
