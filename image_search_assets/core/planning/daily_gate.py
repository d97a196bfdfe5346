"""Whether the daily run may start, and the day's GPU plan (Dagster-free).

The reference case ran its DAG with `max_active_runs=1` and a first task that failed the run
unless yesterday's run had succeeded. Here the same rule is a decision the schedule makes
before launching, so a skipped day is visible as a reason, not as a failed run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pandas as pd

from image_search_assets.core.planning.gpu_plan import (
    GpuPlan,
    ThroughputModel,
    default_plan,
    plan_gpus,
)


@dataclass(frozen=True)
class ActiveRun:
    """A queued or running run of one partition."""

    run_id: str
    partition: str
    status: str


@dataclass(frozen=True)
class GateDecision:
    launch: bool
    reason: str


def target_day(tick: datetime, tz: ZoneInfo) -> date:
    """The partition a tick launches: the day before the tick's date in the configured zone."""
    return tick.astimezone(tz).date() - timedelta(days=1)


def previous_day(day: date, first_day: date) -> date | None:
    """The partition `day` builds on; None for the first partition."""
    return None if day <= first_day else day - timedelta(days=1)


def decide_daily_run(
    day: date,
    first_day: date,
    *,
    missing_previous: Sequence[str],
    active_runs: Sequence[ActiveRun],
) -> GateDecision:
    """Launch `day` only if no run of it or of its predecessor is active and the predecessor
    is materialised for every category (`missing_previous` lists the categories it lacks)."""
    if day < first_day:
        return GateDecision(False, f"{day} is before the first partition {first_day}")
    if active_runs:
        runs = ", ".join(f"{r.partition} is {r.status} (run {r.run_id[:8]})" for r in active_runs)
        return GateDecision(
            False,
            f"{day} waits: one active daily run at a time, and {runs}. The next tick retries.",
        )
    prev = previous_day(day, first_day)
    if prev is not None and missing_previous:
        return GateDecision(
            False,
            f"{day} not launched: the previous day {prev} has not succeeded for "
            f"{', '.join(sorted(missing_previous))} (no annoy_index materialisation). "
            f"Repair {prev} first, e.g. backfill it; the next tick then proceeds.",
        )
    note = "the first partition" if prev is None else f"{prev} succeeded for every category"
    return GateDecision(True, f"launching {day}: {note}")


def count_per_category(products: pd.DataFrame, categories: Sequence[str]) -> dict[str, int]:
    """The day's valid catalog rows per category (0 for a category with none)."""
    counts = products["category"].value_counts().to_dict()
    return {c: int(counts.get(c, 0)) for c in categories}


def day_gpu_plan(
    hand_set: Mapping[str, int],
    items: Callable[[], Mapping[str, int]],
    model: ThroughputModel | None = None,
    slack: float = 1.05,
) -> GpuPlan:
    """The plan sized on the day's item counts, or the hand-set GPUs when they can't be read."""
    try:
        counts = items()
    # Sizing is an optimisation: any read failure (local, GCS, parse) must not stop the day.
    except Exception as e:  # noqa: BLE001
        plan = default_plan(hand_set)
        plan.notes.append(f"catalog unreadable ({type(e).__name__}: {e})")
        return plan
    return plan_gpus(counts, model=model or ThroughputModel(), slack=slack)
