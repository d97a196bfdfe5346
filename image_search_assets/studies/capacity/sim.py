"""Discrete-event replay of a month of daily GPU runs against a supply with stock-outs.

Dagster-free. Each day's GPU steps (one per category) go through the setup's admission
(none, Airflow pool_slots, or the platform's weighted `decide`), then become pods that wait in
Pending until a zone has a node's worth of free T4s. A pod Pending past the startup/scheduling
timeout is deleted and counts as a failed attempt; the setup's BackoffPolicy decides the retry.
A step out of retries waits for a human, who reruns it after the stock-out ends. Runs are
sequential (max_active_runs=1 plus the previous-day check), so a late day delays the next.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field

from image_search_assets.core.planning.gpu_admission import decide
from image_search_assets.core.planning.gpu_plan import GpuPlan, ThroughputModel
from image_search_assets.studies.capacity.results import (
    Attempt,
    DayResult,
    MonthResult,
    replay_month,
)
from image_search_assets.studies.capacity.setups import Policy, platform, reference_fixes, zonal
from image_search_assets.studies.capacity.supply import (
    DayItems,
    Supply,
    human_rerun_at,
)

__all__ = ["Policy", "platform", "reference_fixes", "zonal", "simulate_day", "simulate_month"]


@dataclass
class _Step:
    category: str
    gpus: int
    seconds: float
    retry: int = 0
    first_launch: float | None = None
    attempt: int = 0
    ready_at: float = 0.0
    waited: bool = False
    done: bool = False
    zone: str = ""


@dataclass
class _Day:
    """One day's mutable state; `run` drives it."""

    policy: Policy
    supply: Supply
    budget: int | None
    rng: random.Random
    queue: list[_Step] = field(default_factory=list)
    pending: list[_Step] = field(default_factory=list)
    used: dict[str, int] = field(default_factory=dict)
    held: int = 0
    events: list[tuple[float, int, str, _Step, int]] = field(default_factory=list)
    seq: int = 0
    attempts: list[Attempt] = field(default_factory=list)
    counts: dict[str, float] = field(default_factory=dict)
    hit: set[int] = field(default_factory=set)

    def push(self, t: float, kind: str, step: _Step) -> None:
        self.seq += 1
        heapq.heappush(self.events, (t, self.seq, kind, step, step.attempt))

    def bump(self, key: str, by: float = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + by

    def admit(self, now: float) -> None:
        ahead: list[int] = []
        for step in list(self.queue):
            if self.policy.admission == "none" or self.budget is None:
                ok = True
            elif self.policy.admission == "weighted":
                ok = decide(step.gpus, self.budget - self.held, self.budget, ahead).admit
            else:  # Airflow's pool skips a task that does not fit and lets smaller ones pass
                ok = step.gpus <= self.budget - self.held
            if not ok:
                ahead.append(step.gpus)
                step.waited = True
                continue
            if step.waited:
                self.bump("budget_waits")
                self.bump("budget_wait_s", now - step.ready_at)
            self.queue.remove(step)
            step.attempt += 1
            step.first_launch = now if step.first_launch is None else step.first_launch
            self.held += step.gpus
            self.pending.append(step)
            if math.isfinite(self.policy.startup_timeout_s):
                self.push(now + self.policy.startup_timeout_s, "timeout", step)

    def place(self, now: float) -> None:
        # Pending pods in creation order, each on the zone with the most free T4s (location
        # policy ANY); k8s reserves nothing, so a 4-GPU pod can be passed by 1-GPU pods.
        for step in list(self.pending):
            free = {
                z: self.supply.capacity(z, now) - self.used.get(z, 0) for z in self.policy.zones
            }
            zone = max(self.policy.zones, key=lambda z: free[z])
            if free[zone] < step.gpus:
                continue
            self.pending.remove(step)
            step.zone = zone
            self.used[zone] = self.used.get(zone, 0) + step.gpus
            self.attempts.append(Attempt(step.category, step.gpus, zone, now, now + step.seconds))
            self.push(now + step.seconds, "finish", step)

    def fail(self, now: float, step: _Step) -> None:
        """The pod was Pending past the timeout: deleted (no zombie), slots freed, retried."""
        self.pending.remove(step)
        self.held -= step.gpus
        self.bump("failures")
        self.hit.update(
            i for i, e in enumerate(self.supply.episodes) if e.zone == "a" and e.covers(now)
        )
        if step.first_launch is None:
            raise RuntimeError(f"{step.category}: timed out without ever being launched")
        policy = self.policy
        if policy.backoff.should_retry(step.retry, now - step.first_launch):
            self.bump("retries")
            self.push(now + policy.backoff.delay(step.retry, self.rng), "ready", step)
            step.retry += 1
        else:
            self.bump("manual_actions")
            step.retry, step.first_launch = 0, None  # a human rerun starts a fresh series
            self.push(human_rerun_at(self.supply, policy.zones, step.gpus, now), "ready", step)

    def run(self, steps: list[_Step], start: float) -> float:
        self.seed(steps, start)
        for step in steps:
            step.ready_at = start
        self.queue = list(steps)
        now = start
        while True:
            self.admit(now)
            self.place(now)
            if all(s.done for s in steps):
                return max(a.end_s for a in self.attempts)
            now = min(self.events[0][0] if self.events else math.inf, self.supply.next_change(now))
            if not math.isfinite(now):
                raise RuntimeError("simulation stalled: a step can never be placed")
            while self.events and self.events[0][0] <= now:
                _, _, kind, step, attempt = heapq.heappop(self.events)
                self.handle(now, kind, step, attempt)

    def seed(self, steps: list[_Step], start: float) -> None:
        """Events the day starts with, beside its steps (none here)."""

    def handle(self, now: float, kind: str, step: _Step, attempt: int) -> None:
        if kind == "finish":
            self.finish(now, step, attempt)
        elif kind == "timeout" and attempt == step.attempt and step in self.pending:
            self.fail(now, step)
        elif kind == "ready":
            step.ready_at, step.waited = now, False
            self.queue.append(step)

    def finish(self, now: float, step: _Step, attempt: int) -> None:
        step.done = True
        self.held -= step.gpus
        self.used[step.zone] -= step.gpus


def simulate_day(
    policy: Policy,
    day: DayItems,
    start_s: float,
    supply: Supply,
    model: ThroughputModel,
    rng: random.Random,
) -> DayResult:
    """One daily run that starts at `start_s`."""
    plan, budget = policy.size(day.items, model)
    steps = [_Step(c, plan.gpus[c], plan.seconds[c]) for c in biggest_first(plan)]
    state = _Day(policy, supply, budget, rng)
    return day_result(day, start_s, state.run(steps, start_s), plan.gpus, state)


def biggest_first(plan: GpuPlan) -> list[str]:
    """The categories in launch order, as list_schedule_makespan assumes and the GPU steps'
    priority does."""
    return sorted(plan.gpus, key=lambda c: (-plan.gpus[c], -plan.seconds[c], c))


def day_result(
    day: DayItems, start_s: float, end_s: float, gpus: Mapping[str, int], state: _Day
) -> DayResult:
    c = state.counts
    return DayResult(
        day=day.day,
        sale=day.sale,
        start_s=start_s,
        end_s=end_s,
        gpus=dict(gpus),
        budget=state.budget,
        manual_actions=int(c.get("manual_actions", 0)),
        failures=int(c.get("failures", 0)),
        retries=int(c.get("retries", 0)),
        budget_waits=int(c.get("budget_waits", 0)),
        budget_wait_s=c.get("budget_wait_s", 0.0),
        stockouts_hit=frozenset(state.hit),
        attempts=tuple(state.attempts),
    )


def simulate_month(
    policy: Policy,
    workload: list[DayItems],
    supply: Supply,
    model: ThroughputModel,
    *,
    seed: int = 7,
) -> MonthResult:
    """Every day in order; day N+1 starts at 03:00 or when day N ends, whichever is later."""
    rng = random.Random(f"{policy.name}-{seed}")  # jitter draws, per setup
    return replay_month(
        policy, workload, lambda day, start: simulate_day(policy, day, start, supply, model, rng)
    )
