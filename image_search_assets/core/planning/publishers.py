"""One publisher per day: which unfinished run a run of the daily graph must give way to.

(Dagster-free.) Two runs of one day would both detect, embed and publish it, and a day N+1 run
that races day N's index leaves categories on different days. The rule holds on every launcher
(CLI, UI, schedule, backfill) because each step asks it before any work:
- same day: the older of two unfinished runs that share a step goes on, the younger stops;
- the day before: a run stops while an unfinished run of the previous day has yet to publish a
  category this run publishes too. A backfill's detection of day N+1 beside day N's index is
  fine: it shares no index step.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta

INDEX_STEP_SUFFIX = "__annoy_index"


@dataclass(frozen=True)
class DayRun:
    """An unfinished run of one daily partition and the steps it executes."""

    run_id: str
    day: str
    status: str
    created: float  # the run record's creation time: who came first
    steps: frozenset[str]
    finished: frozenset[str] = frozenset()  # steps it has ended (published or failed)

    @property
    def index_steps(self) -> frozenset[str]:
        return frozenset(s for s in self.steps if s.endswith(INDEX_STEP_SUFFIX))


def day_before(day: str) -> str:
    return (date.fromisoformat(day) - timedelta(days=1)).isoformat()


def _older(a: DayRun, b: DayRun) -> bool:
    return (a.created, a.run_id) < (b.created, b.run_id)


def blocking_run(me: DayRun, others: Iterable[DayRun]) -> tuple[DayRun, str] | None:
    """The run `me` must give way to and why, or None. `others` excludes `me`."""
    for other in sorted(others, key=lambda r: (r.created, r.run_id)):
        shared = sorted(me.steps & other.steps)
        if other.day == me.day and shared and _older(other, me):
            why = f"run {other.run_id} of {me.day} ({other.status}) also runs {', '.join(shared)}"
            return other, why
        pending = sorted((me.index_steps & other.index_steps) - other.finished)
        if other.day == day_before(me.day) and pending:
            why = (
                f"run {other.run_id} of the previous day {other.day} ({other.status}) has yet "
                f"to publish {', '.join(pending)}"
            )
            return other, why
    return None


def refusal(me: DayRun, blocker: DayRun, why: str) -> str:
    """The failure message of a run that gave way: what runs, and what to do."""
    return (
        f"Another run is publishing: {why}. This run ({me.run_id}, {me.day}) stopped before "
        "any GPU work so that each day is published by one run, after its previous day. Fix: "
        f"wait for run {blocker.run_id} to finish (or terminate it), then launch {me.day} again "
        "or re-execute this run."
    )
