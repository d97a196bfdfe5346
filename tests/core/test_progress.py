"""Progress lines for long steps: throttled by time, with done/total, rate and ETA."""

from image_search_assets.core.progress import Progress, format_duration


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_progress_logs_at_most_every_interval_with_rate_and_eta():
    clock, lines = FakeClock(), []
    progress = Progress("detect tops", 100, lines.append, every_s=30, clock=clock)
    for _ in range(10):  # 10 items in 10 s: under the interval, so silent
        clock.now += 1
        progress.advance()
    assert lines == ["detect tops: 0/100 items"]
    clock.now = 40.0  # 40 s in, 20 done: 0.5 items/s, 80 left -> 160 s
    progress.advance(10)
    assert lines[-1] == ("detect tops: 20/100 items (20%), 0.50 items/s, ETA 2m40s, elapsed 0m40s")
    progress.advance(5)  # just logged: throttled
    assert len(lines) == 2
    clock.now = 100.0
    progress.advance(75)  # done: the last line is finish()'s, never a 100% "ETA" line
    progress.finish()
    assert lines[-1] == "detect tops: 100/100 items (100%), 1.00 items/s, elapsed 1m40s"
    assert len(lines) == 3


def test_empty_steps_and_long_durations_read_well():
    lines = []
    progress = Progress("embed hats", 0, lines.append, clock=FakeClock())
    progress.finish()
    assert lines[-1] == "embed hats: 0/0 items, 0.00 items/s, elapsed 0m00s"
    assert format_duration(2 * 3600 + 5 * 60 + 59) == "2h05m"
