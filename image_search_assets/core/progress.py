"""Progress lines for long steps: done/total, rate and ETA, at most every `every_s` (Dagster-free).

progress = Progress("detect tops", total=len(images), log=context.log.info)
for batch in batches:
    ...
    progress.advance(len(batch))
progress.finish()
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class Progress:
    """Logs through `log` when `every_s` seconds have passed since the last line.

    Throttled by time rather than by count, so a step logs about as often whether it runs
    300 items on a GPU or 30 on a CPU; the first and last lines are always written. `advance`
    may be called from worker threads (image fetching).
    """

    def __init__(
        self,
        label: str,
        total: int,
        log: Callable[[str], object],
        *,
        every_s: float = 30.0,
        unit: str = "items",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label, self.total, self.log, self.every_s, self.unit = label, total, log, every_s, unit
        self.clock = clock
        self.done = 0
        self._lock = threading.Lock()
        self.started = self.last_logged = clock()
        self.log(f"{label}: 0/{total} {unit}")

    def line(self) -> str:
        elapsed = max(self.clock() - self.started, 1e-9)
        rate = self.done / elapsed
        share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        text = (
            f"{self.label}: {self.done}/{self.total} {self.unit}{share}, {rate:.2f} {self.unit}/s"
        )
        if self.done < self.total and rate > 0:
            text += f", ETA {format_duration((self.total - self.done) / rate)}"
        return text + f", elapsed {format_duration(elapsed)}"

    def advance(self, n: int = 1) -> None:
        with self._lock:
            self.done += n
            if self.clock() - self.last_logged < self.every_s or self.done >= self.total:
                return
            self.last_logged = self.clock()
            text = self.line()
        self.log(text)

    def finish(self) -> None:
        self.log(self.line())
