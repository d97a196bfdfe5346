"""Which day the daily chain launches next, and the day's GPU plan (Dagster-free).

The reference case ran its DAG with `max_active_runs=1` and a first task that failed the run
unless yesterday's run had succeeded: a late day delayed the next one, it never dropped it.
Here the same rule is a decision taken on every evaluation from what the instance holds, not
from the evaluation's own date: the earliest day from the first partition through the last
ready day that is not indexed (or indexed on a predecessor that has since changed) is the one
to run, once nothing else is running. A day held back by a failed predecessor waits, named in
the reason, until an operator re-executes it; the next evaluation then moves on by itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from enum import Enum
from zoneinfo import ZoneInfo

import pandas as pd

from image_search_assets.core.planning.gpu_plan import (
    SLACK,
    GpuPlan,
    ThroughputModel,
    default_plan,
    plan_gpus,
)

# Run statuses by their Dagster names: this module does not import Dagster.
FINISHED_BADLY = ("FAILURE", "CANCELED")
# A day whose run died (process killed, node lost) is launched again this many times; after
# that it waits for an operator like a failed day, since something keeps killing it.
MAX_RELAUNCHES = 3


@dataclass(frozen=True)
class ActiveRun:
    """A queued or running run of one partition."""

    run_id: str
    partition: str
    status: str


@dataclass(frozen=True)
class LastRun:
    """The newest run that targeted a day, whoever launched it."""

    run_id: str
    status: str
    rebuild: bool = False  # the chain's annoy_index-only run, not a whole day
    # Failed without a step failing: its process died. Not a verdict on the day's data.
    crashed: bool = False


@dataclass(frozen=True)
class DayState:
    """What the instance holds for one day of the chain."""

    day: date
    missing: tuple[str, ...] = ()  # categories with no annoy_index materialisation
    # category -> why its index is older than its predecessor's (re-run or backfill of it)
    stale: Mapping[str, str] = field(default_factory=dict)
    last_run: LastRun | None = None
    crashes: int = 0  # runs of this day that died, the last one included


class Action(Enum):
    LAUNCH = "launch"  # the whole day: ingest, GPU stages, index
    REBUILD = "rebuild"  # annoy_index of the stale categories only: no GPU work
    WAIT = "wait"
    IDLE = "idle"


@dataclass(frozen=True)
class ChainDecision:
    action: Action
    reason: str
    day: date | None = None
    categories: tuple[str, ...] = ()

    @property
    def launch(self) -> bool:
        return self.action in (Action.LAUNCH, Action.REBUILD)


def previous_day(day: date, first_day: date) -> date | None:
    """The partition `day` builds on; None for the first partition."""
    return None if day <= first_day else day - timedelta(days=1)


def last_ready_day(now: datetime, tz: ZoneInfo, ready_at: time) -> date:
    """The newest day whose catalog is complete: a day is ready at `ready_at` the next morning
    (local time), so at 05:59 the newest ready day is the day before yesterday."""
    local = now.astimezone(tz)
    today = local.date()
    return today - timedelta(days=1 if local.time() >= ready_at else 2)


def chain_days(first_day: date, last_day: date) -> list[date]:
    return [first_day + timedelta(days=i) for i in range((last_day - first_day).days + 1)]


def release_hint(run_id: str) -> str:
    """The one command that clears a run whose process is gone."""
    return f"image-search release-run {run_id}"


def _waiting_on(runs: Sequence[ActiveRun]) -> str:
    shown = "; ".join(f"{r.partition} is {r.status} (run {r.run_id})" for r in runs[:3])
    more = f" and {len(runs) - 3} more" if len(runs) > 3 else ""
    first = runs[0].run_id
    return (
        f"one daily run at a time, and {shown}{more}. The next evaluation continues once it "
        f"ends; if its process is gone and it was not marked failed, `{release_hint(first)}` "
        "marks it failed and frees its GPU slots"
    )


def _held_by(state: DayState, what: str) -> str | None:
    """Why a day whose last run ended badly waits for an operator, or None."""
    run = state.last_run
    if run is None or run.status not in FINISHED_BADLY:
        return None
    if run.crashed and state.crashes <= MAX_RELAUNCHES:
        return None  # launched again below
    ended = "was canceled" if run.status == "CANCELED" else "failed after its retries"
    if run.crashed:
        ended = f"died ({state.crashes} runs of it died: something keeps killing it)"
    return (
        f"{state.day} waits: its {what} (run {run.run_id}) {ended}, and the chain never skips a "
        f"day. Re-execute that run from failure (UI: Runs > {run.run_id[:8]} > Re-execute > "
        f"From failure) or backfill {state.day}; the following days then run by themselves"
    )


def decide_next(
    days: Sequence[DayState], active: Sequence[ActiveRun], *, first_day: date
) -> ChainDecision:
    """The chain's next step: the earliest day that is missing or stale, in order, one run at a
    time; a day whose run ended badly holds back every later day until it is re-run."""
    if not days:
        return ChainDecision(Action.IDLE, f"no day is ready yet (the first is {first_day})")
    if active:
        return ChainDecision(Action.WAIT, f"the chain waits: {_waiting_on(active)}")
    last = days[-1].day
    for i, state in enumerate(days):
        prev = previous_day(state.day, first_day)
        if state.missing:
            held = _held_by(state, "daily run")
            if held:
                return ChainDecision(Action.WAIT, held, state.day)
            note = "the first partition" if prev is None else f"{prev} is indexed and current"
            if state.last_run is not None and state.last_run.crashed:
                note = (
                    f"its run {state.last_run.run_id} died before finishing (relaunch "
                    f"{state.crashes} of {MAX_RELAUNCHES})"
                )
            return ChainDecision(
                Action.LAUNCH,
                f"launching {state.day}: {note} ({len(days) - i} day(s) to go through {last})",
                state.day,
            )
        if state.stale:
            held = _held_by(state, "index rebuild")
            if held:
                return ChainDecision(Action.WAIT, held, state.day)
            why = "; ".join(f"{c}: {r}" for c, r in sorted(state.stale.items()))
            return ChainDecision(
                Action.REBUILD,
                f"rebuilding {state.day}'s index (no GPU work), stale for {why}",
                state.day,
                tuple(sorted(state.stale)),
            )
    return ChainDecision(Action.IDLE, f"every day from {first_day} through {last} is indexed")


def count_per_category(products: pd.DataFrame, categories: Sequence[str]) -> dict[str, int]:
    """The day's valid catalog rows per category (0 for a category with none)."""
    counts = products["category"].value_counts().to_dict()
    return {c: int(counts.get(c, 0)) for c in categories}


def day_gpu_plan(
    hand_set: Mapping[str, int],
    items: Callable[[], Mapping[str, int]],
    model: ThroughputModel | None = None,
    slack: float = SLACK,
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
