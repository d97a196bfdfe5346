"""What a replay yields: each GPU attempt, each day's result, the month's (Dagster-free)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from image_search_assets.studies.capacity.setups import Policy
from image_search_assets.studies.capacity.supply import DAY, HOUR, RUN_AT_S, DayItems


@dataclass(frozen=True)
class Attempt:
    category: str
    gpus: int
    zone: str
    start_s: float
    end_s: float
    option: str = "t4"  # the GPU option it ran on (regional.py): t4, l4, l4-spot, l4-flex


@dataclass(frozen=True)
class DayResult:
    day: int
    sale: bool
    start_s: float
    end_s: float
    gpus: dict[str, int]
    budget: int | None
    manual_actions: int
    failures: int  # attempts whose pod was deleted while Pending
    retries: int  # automatic retries scheduled by the backoff policy
    budget_waits: int  # times a ready step waited for GPU budget (no retry used)
    budget_wait_s: float
    stockouts_hit: frozenset[int]  # indices (into supply.episodes) of zone-A episodes
    attempts: tuple[Attempt, ...]

    @property
    def makespan_s(self) -> float:
        return self.end_s - self.start_s

    @property
    def gpu_seconds(self) -> float:
        return sum(a.gpus * (a.end_s - a.start_s) for a in self.attempts)

    @property
    def peak_gpus(self) -> int:
        return peak_in_use(self.attempts)


def peak_in_use(attempts: tuple[Attempt, ...] | list[Attempt]) -> int:
    # Ends sort before starts at the same instant: a handed-over GPU is not counted twice.
    edges = sorted(
        [(a.start_s, 1, a.gpus) for a in attempts] + [(a.end_s, 0, -a.gpus) for a in attempts]
    )
    level = peak = 0
    for _, _, delta in edges:
        level += delta
        peak = max(peak, level)
    return peak


@dataclass(frozen=True)
class MonthResult:
    policy: Policy
    days: tuple[DayResult, ...]

    def total(self, attr: str) -> float:
        return sum(getattr(d, attr) for d in self.days)

    @property
    def manual_days(self) -> int:
        return sum(1 for d in self.days if d.manual_actions)

    @property
    def gpu_hours(self) -> float:
        return self.total("gpu_seconds") / HOUR

    @property
    def peak_gpus(self) -> int:
        return max(d.peak_gpus for d in self.days)

    @property
    def stockouts_hit(self) -> frozenset[int]:
        return frozenset().union(*(d.stockouts_hit for d in self.days))


def replay_month(
    policy: Policy, workload: list[DayItems], run_day: Callable[[DayItems, float], DayResult]
) -> MonthResult:
    """`run_day` for every day in order, each starting at 03:00 or when the previous one ends,
    whichever is later."""
    days, ready = [], 0.0
    for day in workload:
        start = max(day.day * DAY + RUN_AT_S, ready)
        result = run_day(day, start)
        days.append(result)
        ready = result.end_s
    return MonthResult(policy, tuple(days))
