"""The month with region-wide T4 stock-outs, a second GPU type and spot VMs (Dagster-free).

What the write-up's fixes could not cover: its one GPU type (T4) out in every zone of the
region at once. Here the region also has L4s, with smaller outages of their own, spot L4s that
are reclaimed now and then, and flex-start L4s, which always come but after a wait. Three
setups replay the same month: the write-up's fixes, this platform on T4 alone, and this
platform with the shipped GPU options (l4-spot, l4, t4, l4-flex, tried in that order).

A step placed on an option runs at that GPU's speed. A spot reclaim kills the attempt; the
step keeps the chunks it finished and retries (a preemption) after the platform's backoff.
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass, field, replace
from datetime import date

from image_search_assets.core.planning.gpu_plan import ThroughputModel
from image_search_assets.studies.capacity.results import (
    Attempt,
    DayResult,
    MonthResult,
    replay_month,
)
from image_search_assets.studies.capacity.setups import Policy, platform, reference_fixes
from image_search_assets.studies.capacity.sim import _Day, _Step, biggest_first, day_result
from image_search_assets.studies.capacity.supply import (
    DAY,
    HOUR,
    MINUTE,
    RUN_AT_S,
    DayItems,
    Episode,
    Supply,
    make_supply,
)

SHIPPED_OPTIONS = ("l4-spot", "l4", "t4", "l4-flex")  # platform.yaml's default_gpu_options
# Images/s per GPU against a T4 (assumed until the steps have measured both: fp16 inference,
# an L4 has about twice a T4's dense fp16 throughput).
SPEED = {"t4": 1.0, "l4": 2.0}
# USD per GPU-hour, on-demand list prices (cloud.google.com/compute/gpus-pricing, us-central1;
# GPU only, the VM's vCPUs and memory are billed on top alike). Spot: assumed 40 % of that (the
# page lists 60-91 % discounts, varying daily). Flex-start: priced as on-demand (conservative).
PRICE = {"t4": 0.35, "l4": 0.56}
SPOT_SHARE, FLEX_SHARE = 0.4, 1.0
FLEX_WAIT_S = 45 * MINUTE  # flex-start capacity comes, after a wait
DEADLINE_S = 9 * HOUR  # the day's indexes are live by 09:00 Asia/Tokyo, 6 h after the run


def gpu_of(option: str) -> str:
    return option.split("-")[0]


def price(option: str) -> float:
    share = (
        SPOT_SHARE if option.endswith("-spot") else FLEX_SHARE if option.endswith("-flex") else 1
    )
    return PRICE[gpu_of(option)] * share


@dataclass(frozen=True)
class RegionalSupply(Supply):
    """The zone-level T4 supply of supply.py, plus region-wide T4 outages, L4s and reclaims."""

    t4_out: tuple[Episode, ...] = ()  # no T4 in any zone
    l4_spare: tuple[tuple[str, int], ...] = ()
    l4_out: tuple[Episode, ...] = ()  # region-wide: only `left` L4s per zone
    reclaims: tuple[float, ...] = ()  # instants when the region's spot VMs are taken back

    def capacity(self, zone: str, t: float) -> int:  # T4s, as the T4-only setups see them
        return 0 if any(e.covers(t) for e in self.t4_out) else super().capacity(zone, t)

    def free(self, option: str, zone: str, t: float) -> float:
        if option.endswith("-flex"):
            return math.inf
        if gpu_of(option) == "t4":
            return self.capacity(zone, t)
        return min([dict(self.l4_spare)[zone]] + [e.left for e in self.l4_out if e.covers(t)])

    def next_change(self, t: float) -> float:
        edges = [x for e in (*self.t4_out, *self.l4_out) for x in (e.start_s, e.end_s) if x > t]
        return min([super().next_change(t), *edges])


def _night_episode(rng: random.Random, day: int, hours: tuple[float, float], night: float):
    dur = rng.uniform(*hours) * HOUR
    if rng.random() < night:  # over the 03:00 run start
        at = RUN_AT_S - rng.uniform(0.1, 0.9) * dur
    else:
        at = rng.uniform(8 * HOUR, 22 * HOUR)
    return day * DAY + at, day * DAY + at + dur


def make_regional_supply(start: date, *, days: int = 30, seed: int = 7) -> RegionalSupply:
    """Per 30 days: 6 region-wide T4 stock-outs of 2-8 h (4 in 5 at night), 6 L4 shortfalls of
    0.5-2 h down to 0-4 per zone, and 20 spot reclaims at any hour."""
    base = make_supply(start, days=days, seed=seed)
    rng = random.Random(f"regional-{seed}")
    per = days / 30
    t4_days = rng.sample(range(days), round(6 * per))
    t4 = [Episode("*", *_night_episode(rng, d, (2, 8), 0.8)) for d in sorted(t4_days)]
    l4_days = rng.sample(range(days), round(6 * per))
    l4 = [
        Episode("*", *_night_episode(rng, d, (0.5, 2), 0.5), left=rng.randint(0, 4))
        for d in sorted(l4_days)
    ]
    reclaims = sorted(rng.uniform(0, days * DAY) for _ in range(round(20 * per)))
    return RegionalSupply(
        base.start,
        base.spare,
        base.episodes,
        t4_out=tuple(t4),
        l4_spare=(("a", 32), ("b", 16)),
        l4_out=tuple(l4),
        reclaims=tuple(reclaims),
    )


@dataclass
class _GpuStep(_Step):
    work_s: float = 0.0  # the step's work on a T4, less its fixed overhead
    progress: float = 0.0  # share of the work in finished chunks, kept across attempts
    started: float = 0.0
    option: str = ""


@dataclass
class _RegionalDay(_Day):
    overhead_s: float = 0.0
    running: list[_GpuStep] = field(default_factory=list)

    def place(self, now: float) -> None:
        supply = self.supply
        assert isinstance(supply, RegionalSupply)
        for step in list(self.pending):
            assert isinstance(step, _GpuStep)
            for option in self.policy.options:
                used = {z: self.used.get(f"{option}/{z}", 0) for z in self.policy.zones}
                free = {z: supply.free(option, z, now) - used[z] for z in self.policy.zones}
                zone = max(self.policy.zones, key=lambda z: free[z])
                if free[zone] >= step.gpus:
                    break
            else:
                continue
            self.pending.remove(step)
            step.zone, step.option = f"{option}/{zone}", option
            self.used[step.zone] = self.used.get(step.zone, 0) + step.gpus
            step.started = now + (FLEX_WAIT_S if option.endswith("-flex") else 0.0)
            left = (1 - step.progress) * step.work_s / SPEED[gpu_of(option)]
            self.running.append(step)
            self.push(step.started + self.overhead_s + left, "finish", step)

    def reclaim(self, now: float) -> None:
        for step in [s for s in self.running if s.option.endswith("-spot")]:
            self.running.remove(step)
            self._record(step, now)
            ran = max(0.0, now - step.started - self.overhead_s) * SPEED[gpu_of(step.option)]
            step.progress = min(1.0, step.progress + ran / step.work_s)
            self.used[step.zone] -= step.gpus
            self.held -= step.gpus
            self.bump("reclaims")
            step.attempt += 1  # its pending finish event is void
            self.bump("retries")
            self.push(now + self.policy.backoff.delay(step.retry, self.rng), "ready", step)
            step.retry += 1

    def _record(self, step: _GpuStep, end: float) -> None:
        self.attempts.append(
            Attempt(step.category, step.gpus, step.zone, step.started, end, step.option)
        )

    def seed(self, steps: list[_Step], start: float) -> None:
        for t in self.supply.reclaims if isinstance(self.supply, RegionalSupply) else ():
            if start <= t < start + 2 * DAY:
                self.seq += 1
                heapq.heappush(self.events, (t, self.seq, "reclaim", steps[0], -1))

    def handle(self, now: float, kind: str, step: _Step, attempt: int) -> None:
        if kind == "reclaim":
            self.reclaim(now)
        else:
            super().handle(now, kind, step, attempt)

    def finish(self, now: float, step: _Step, attempt: int) -> None:
        if attempt != step.attempt:  # the attempt was reclaimed: its finish is void
            return
        assert isinstance(step, _GpuStep)
        self.running.remove(step)
        self._record(step, now)
        super().finish(now, step, attempt)


def simulate_regional_day(
    policy: Policy,
    day: DayItems,
    start_s: float,
    supply: RegionalSupply,
    model: ThroughputModel,
    rng: random.Random,
) -> DayResult:
    plan, budget = policy.size(day.items, model)
    steps: list[_Step] = [
        _GpuStep(c, plan.gpus[c], plan.seconds[c], work_s=plan.seconds[c] - model.overhead_s)
        for c in biggest_first(plan)
    ]
    state = _RegionalDay(policy, supply, budget, rng, overhead_s=model.overhead_s)
    return day_result(day, start_s, state.run(steps, start_s), plan.gpus, state)


def fallback() -> Policy:
    return replace(
        platform(), name="fallback", title="this platform, GPU options", options=SHIPPED_OPTIONS
    )


def regional_setups(defaults: dict[str, int]) -> list[Policy]:
    return [reference_fixes(defaults), platform(), fallback()]


def simulate_regional_month(
    policy: Policy,
    workload: list[DayItems],
    supply: RegionalSupply,
    model: ThroughputModel,
    seed: int = 7,
) -> MonthResult:
    rng = random.Random(f"regional-{policy.name}-{seed}")
    return replay_month(
        policy,
        workload,
        lambda day, start: simulate_regional_day(policy, day, start, supply, model, rng),
    )


def late_days(result: MonthResult) -> int:
    """Days whose last step ended past the deadline (09:00 of the day the run starts on)."""
    return sum(1 for d in result.days if d.end_s > d.day * DAY + DEADLINE_S)


def cost_usd(result: MonthResult) -> float:
    """What the month's GPUs cost at PRICE, each attempt at its option's price."""
    hours = option_hours(result)
    return sum(h * price(option) for option, h in hours.items())


def option_hours(result: MonthResult) -> dict[str, float]:
    hours: dict[str, float] = {}
    for a in (a for d in result.days for a in d.attempts):
        hours[a.option] = hours.get(a.option, 0.0) + a.gpus * (a.end_s - a.start_s) / HOUR
    return hours
