"""The simulated month's inputs: T4 supply per zone with stock-outs, and daily item counts.

Dagster-free and deterministic given the seed. Time is seconds since 00:00 (Asia/Tokyo) on the
month's first day. The pattern follows the reference case: 24 zone-A stock-outs in 30 days,
mostly at weekends and in the nightly batch window, some lasting hours; zone B stays up, but its
spare T4s run short a few times while A is out (the write-up's 6 failures after the fixes).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta

MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0
RUN_AT_S = 3 * HOUR  # the daily run starts at 03:00 Asia/Tokyo


@dataclass(frozen=True)
class Episode:
    """A window in which only `left` more T4s can be had in `zone`."""

    zone: str
    start_s: float
    end_s: float
    left: int = 0

    @property
    def hours(self) -> float:
        return (self.end_s - self.start_s) / HOUR

    def covers(self, t: float) -> bool:
        return self.start_s <= t < self.end_s


@dataclass(frozen=True)
class Supply:
    start: date
    spare: tuple[tuple[str, int], ...]  # (zone, T4s we can normally get there)
    episodes: tuple[Episode, ...]

    def capacity(self, zone: str, t: float) -> int:
        cap = dict(self.spare)[zone]
        return min([cap] + [e.left for e in self.episodes if e.zone == zone and e.covers(t)])

    def next_change(self, t: float) -> float:
        """The next episode boundary after `t` (inf when none)."""
        ends = [x for e in self.episodes for x in (e.start_s, e.end_s) if x > t]
        return min(ends, default=math.inf)

    def stockouts(self, zone: str = "a") -> list[Episode]:
        return [e for e in self.episodes if e.zone == zone]

    def is_weekend(self, t: float) -> bool:
        return (self.start + timedelta(days=int(t // DAY))).weekday() >= 5

    def date_of(self, t: float) -> date:
        return self.start + timedelta(days=int(t // DAY))


def _draw_stockout(rng: random.Random, day: int, min_s: float, max_s: float) -> Episode:
    # Log-uniform durations: most episodes are short, a few last hours.
    dur = math.exp(rng.uniform(math.log(min_s), math.log(max_s)))
    if rng.random() < 0.8:
        # In the nightly batch window, which is when the write-up's pods went Pending: the
        # episode covers the 03:00 run start.
        at = RUN_AT_S - rng.uniform(0.1, 0.9) * dur
    else:
        at = rng.uniform(8 * HOUR, 22 * HOUR)
    return Episode("a", day * DAY + at, day * DAY + at + dur)


def make_supply(
    start: date,
    *,
    days: int = 30,
    seed: int = 7,
    stockouts: int = 24,
    weekend_share: float = 2 / 3,
    spare_a: int = 64,
    spare_b: int = 24,
    tight_b: int = 6,
    min_stockout_s: float = 15 * MINUTE,
    max_stockout_s: float = 7 * HOUR,
) -> Supply:
    """Exactly `stockouts` non-overlapping zone-A episodes, `weekend_share` of them at weekends."""
    rng = random.Random(f"supply-{seed}")
    weekend = [d for d in range(days) if (start + timedelta(days=d)).weekday() >= 5]
    weekdays = [d for d in range(days) if d not in weekend]
    n_weekend = round(stockouts * weekend_share) if weekend else 0
    picks = [rng.choice(weekend) for _ in range(n_weekend)]
    picks += [rng.choice(weekdays) for _ in range(stockouts - n_weekend)]
    a: list[Episode] = []
    for day in sorted(picks):
        for _ in range(1000):
            e = _draw_stockout(rng, day, min_stockout_s, max_stockout_s)
            # Keep episodes apart (30 min) so none merge and the count stays exact.
            if e.start_s >= 0 and all(
                e.end_s + 30 * MINUTE <= o.start_s or o.end_s + 30 * MINUTE <= e.start_s for o in a
            ):
                a.append(e)
                break
        else:
            raise ValueError(f"cannot fit {stockouts} stock-outs into {days} days")
    a.sort(key=lambda e: e.start_s)
    # Zone B runs short only while A is out (both feel the same regional demand), during the
    # longer night episodes, and never to zero.
    night = [e for e in a if e.covers(e.start_s // DAY * DAY + RUN_AT_S) and e.hours >= 1]
    b = []
    for e in sorted(rng.sample(night, min(tight_b, len(night))), key=lambda e: e.start_s):
        at = e.start_s + rng.uniform(0.0, 0.3) * (e.end_s - e.start_s)
        b.append(Episode("b", at, at + rng.uniform(0.5, 2.5) * HOUR, rng.randint(3, 8)))
    return Supply(start, (("a", spare_a), ("b", spare_b)), tuple(a + b))


def human_rerun_at(supply: Supply, zones: tuple[str, ...], need: int, after: float) -> float:
    """When the on-call reruns a failed step: at a check once the zone can fit it again.

    Checks at 10:00 and 16:00 on weekdays, once at 12:00 at weekends (the write-up: weekend
    failures go unnoticed longer).
    """
    first = int(after // DAY)
    for day in range(first, first + 366):
        hours = (12,) if supply.is_weekend(day * DAY) else (10, 16)
        for h in hours:
            t = day * DAY + h * HOUR
            if t >= after and max(supply.capacity(z, t) for z in zones) >= need:
                return t
    raise RuntimeError(f"no zone in {zones} ever has {need} T4s again")


# New items by weekday (Mon..Sun): fewer products are registered at weekends.
WEEKDAY_FACTOR = (1.0, 0.97, 1.0, 1.03, 1.05, 0.6, 0.5)


@dataclass(frozen=True)
class DayItems:
    day: int
    items: dict[str, int]
    sale: bool = False


def daily_items(
    categories: Sequence[str],
    start: date,
    *,
    days: int = 30,
    seed: int = 7,
    base_tops: int = 6000,
    sale_days: int = 3,
) -> list[DayItems]:
    """Items per category per day in the reference mix: tops n, pants < n/2, others < pants/2.

    `categories` starts with tops and pants, as platform.yaml does.
    On a sale day one other category surges to 0.6-1.0 n and a second to ~0.45 n, breaking
    the mix that the hand-set 4/2/1 plan was sized for.
    """
    tops, pants, *others = categories
    rng = random.Random(f"items-{seed}")
    sales = set(rng.sample(range(days), sale_days))
    out = []
    for d in range(days):
        n = base_tops * WEEKDAY_FACTOR[(start + timedelta(days=d)).weekday()]
        n *= rng.uniform(0.93, 1.07)
        p = n * rng.uniform(0.25, 0.49)
        items = {tops: n, pants: p, **{c: p * rng.uniform(0.12, 0.5) for c in others}}
        if d in sales:
            big, second = rng.sample(others, 2)
            items[big], items[second] = n * rng.uniform(0.6, 1.0), n * rng.uniform(0.4, 0.49)
        out.append(DayItems(d, {c: int(v) for c, v in items.items()}, d in sales))
    return out
