"""Per-day GPU sizing: how many GPUs each category's step gets (Dagster-free).

A category's step time is `overhead + items / (throughput * g * efficiency(g))`. The fastest
plan gives every category the most GPUs; its makespan is the reference. Each category then
gets the fewest GPUs that keep its step within `slack` times that makespan: since the steps run
side by side, that minimises the peak GPU demand at (almost) the same makespan. `budget_for`
then packs the sized steps onto the fewest GPUs that still meet the makespan, which is the
pool limit the day actually needs.
"""

from __future__ import annotations

import heapq
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from image_search_assets.core.planning.gpu_options import same_model

# The GPU counts a day's plan gives a step: one node's worth at most (4 GPUs on one VM).
GPU_COUNTS = (1, 2, 4)
SLACK = 1.05  # makespan allowed over the all-max-GPUs plan


@dataclass(frozen=True)
class ThroughputModel:
    items_per_gpu_second: float = 0.25  # detect + embed, per GPU, until a run has measured it
    overhead_s: float = 300.0  # pod start, model load, output flush, until a run has measured it
    scaling_efficiency: float = 0.95  # each doubling of GPUs keeps this share of linear speed-up

    def seconds(self, items: int, gpus: int) -> float:
        efficiency = self.scaling_efficiency ** max(0.0, (gpus.bit_length() - 1))
        return self.overhead_s + items / (self.items_per_gpu_second * gpus * efficiency)


@dataclass(frozen=True)
class PlanningConfig(ThroughputModel):
    """platform.yaml's `planning`: the assumed throughput (until a run has measured it) and how
    the daily schedule sizes each category's GPUs on the day's items."""

    slack: float = SLACK
    use_measured: bool = True  # the latest steps' measured rates and fixed seconds replace both

    def __post_init__(self) -> None:
        if self.items_per_gpu_second <= 0 or self.overhead_s < 0 or self.slack < 1:
            raise ValueError("needs items_per_gpu_second > 0, overhead_s >= 0 and slack >= 1")

    def model(self) -> ThroughputModel:
        return ThroughputModel(self.items_per_gpu_second, self.overhead_s, self.scaling_efficiency)


@dataclass(frozen=True)
class GpuPlan:
    gpus: dict[str, int]
    seconds: dict[str, float]
    fastest_makespan_s: float
    slack: float
    notes: list[str] = field(default_factory=list)

    @property
    def peak_gpus(self) -> int:
        return sum(self.gpus.values())

    @property
    def makespan_s(self) -> float:
        return max(self.seconds.values(), default=0.0)

    def as_metadata(self) -> dict[str, object]:
        return {
            "gpu_plan": self.gpus,
            "peak_gpus": self.peak_gpus,
            "makespan_s": round(self.makespan_s, 1),
            "fastest_makespan_s": round(self.fastest_makespan_s, 1),
            "slack": self.slack,
        }


def plan_gpus(
    items: Mapping[str, int],
    *,
    model: ThroughputModel,
    choices: Sequence[int] = GPU_COUNTS,
    slack: float = SLACK,
) -> GpuPlan:
    """The fewest GPUs per category that keep the makespan within `slack` of the fastest plan."""
    choices = sorted(set(choices))
    most = choices[-1]
    fastest = max((model.seconds(n, most) for n in items.values()), default=0.0)
    target = fastest * slack
    gpus, seconds = {}, {}
    for category, n in items.items():
        gpus[category] = next((g for g in choices if model.seconds(n, g) <= target), most)
        seconds[category] = model.seconds(n, gpus[category])
    return GpuPlan(gpus, seconds, fastest, slack)


def default_plan(defaults: Mapping[str, int]) -> GpuPlan:
    """The hand-set plan (tops 4, pants 2, others 1) when no item counts are known."""
    return GpuPlan(
        dict(defaults),
        {c: 0.0 for c in defaults},
        0.0,
        1.0,
        ["no item counts: hand-set GPUs from the categories config"],
    )


def list_schedule_makespan(plan: GpuPlan, budget: int) -> float:
    """Makespan when the sized steps share `budget` GPUs, biggest first (the admission order)."""
    if any(g > budget for g in plan.gpus.values()):
        return float("inf")
    queue = sorted(plan.gpus, key=lambda c: (-plan.gpus[c], -plan.seconds[c], c))
    free, now, running = budget, 0.0, []  # running: heap of (end time, gpus)
    for category in queue:
        need = plan.gpus[category]
        while free < need:  # the head waits; nothing overtakes it (no starvation)
            end, released = heapq.heappop(running)
            now, free = max(now, end), free + released
        heapq.heappush(running, (now + plan.seconds[category], need))
        free -= need
    return max((end for end, _ in running), default=now)


def budget_for(plan: GpuPlan, makespan_s: float) -> int:
    """The smallest pool limit whose schedule still finishes within `makespan_s`."""
    budget = max(plan.gpus.values(), default=0)
    while budget < plan.peak_gpus and list_schedule_makespan(plan, budget) > makespan_s:
        budget += 1
    return budget


@dataclass(frozen=True)
class StageRate:
    """One step's measured engine speed and fixed cost, from its materialisation."""

    stage: str  # "detections" | "embeddings"
    images_per_second: float  # the engine's, over all of the step's devices
    devices: int
    # The step's wall time from its launch (its pod's Job created, or its start in process) to
    # its output, less the engine's own seconds: pod start, imports, model load, output flush.
    fixed_seconds: float | None = None
    gpu_model: str | None = None  # gpu_options.gpu_model_key of the device it ran on ("l4")


def _median_fixed(rates: Sequence[StageRate], stage: str) -> float | None:
    fixed = [r.fixed_seconds for r in rates if r.stage == stage and r.fixed_seconds is not None]
    return statistics.median(fixed) if fixed else None


def measured_throughput(
    rates: Sequence[StageRate], base: ThroughputModel, models: Sequence[str] = ()
) -> tuple[ThroughputModel, str]:
    """The throughput a day is planned on: of the GPU models the steps ran on (`models`, when
    given, limits them to the acceptable ones), the slowest that has been measured.

    Slowest, not likeliest: a ComputeClass falls back to its later options exactly on the days
    the first ones are out, and a plan sized for an L4 would run late on a T4 then; on a day
    that gets the faster GPU the steps finish early. Rates that name no model (recorded before
    steps named their GPU) are pooled as one model.
    """
    names = list(dict.fromkeys(r.gpu_model for r in rates))
    if models:
        names = [n for n in names if n is None or any(same_model(m, n) for m in models)]
    per_model = []
    for name in names:
        measured, source = pooled_throughput([r for r in rates if r.gpu_model == name], base)
        if measured is not base:
            per_model.append((measured.items_per_gpu_second, name or "", measured, source))
    if not per_model:
        return pooled_throughput(rates if not models else [], base)
    _, name, measured, source = min(per_model)
    if len(names) == 1 and not name:
        return measured, source
    others = f" of {len(per_model)} measured" if len(per_model) > 1 else ""
    return measured, f"{name or 'unnamed GPU'}, the slowest GPU{others}: {source}"


def pooled_throughput(
    rates: Sequence[StageRate], base: ThroughputModel
) -> tuple[ThroughputModel, str]:
    """`base` with items/GPU-s and the fixed overhead taken from measured steps, and whence.

    Each stage's per-device rate is the median over its steps; an item passes through both
    stages, so the combined rate is 1 / (1/detect + 1/embed). A category pays both stages'
    fixed costs (two pods), so the overhead is the sum of each stage's median fixed seconds.
    Without a measurement of both stages the configured figure stands, for each of the two.
    """
    per_stage: dict[str, list[float]] = {}
    for r in rates:
        if r.images_per_second > 0 and r.devices > 0:
            per_stage.setdefault(r.stage, []).append(r.images_per_second / r.devices)
    if not {"detections", "embeddings"} <= set(per_stage):
        return base, (
            f"{base.items_per_gpu_second:g} items/GPU-s and {base.overhead_s:g} s overhead "
            "configured (none measured yet)"
        )
    detect, embed = (statistics.median(per_stage[s]) for s in ("detections", "embeddings"))
    combined = 1.0 / (1.0 / detect + 1.0 / embed)
    steps = sum(len(v) for v in per_stage.values())
    source = (
        f"{combined:.3g} items/GPU-s measured (median per device over {steps} steps: "
        f"detect {detect:.3g}/s, embed {embed:.3g}/s)"
    )
    fixed = [_median_fixed(rates, s) for s in ("detections", "embeddings")]
    if None in fixed:
        return replace(base, items_per_gpu_second=combined), (
            f"{source}; {base.overhead_s:g} s overhead configured"
        )
    overhead = sum(f for f in fixed if f is not None)
    source += (
        f"; {overhead:.3g} s overhead measured (detect {fixed[0]:.3g} s + embed {fixed[1]:.3g} s)"
    )
    return replace(base, items_per_gpu_second=combined, overhead_s=overhead), source
