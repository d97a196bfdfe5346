"""The setups the capacity simulation compares, each one policy object (Dagster-free).

zonal: the reference case before its fixes. reference_fixes: after them (regional pool,
4/2/1 GPUs, Airflow pool_slots, capped backoff). platform: this repository's policies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from image_search_assets.core.planning.gpu_plan import (
    GpuPlan,
    ThroughputModel,
    budget_for,
    plan_gpus,
)
from image_search_assets.core.planning.retry import BackoffPolicy


@dataclass(frozen=True)
class Policy:
    """One setup: where pods may run, how GPUs are sized and admitted, and how it retries."""

    name: str
    title: str
    zones: tuple[str, ...]
    admission: str  # "none" | "pool" (Airflow pool_slots) | "weighted" (gpu_admission.decide)
    backoff: BackoffPolicy
    startup_timeout_s: float  # Pending longer than this: pod deleted, attempt failed
    gpus: Mapping[str, int] | None = None  # fixed GPUs per category; None: plan_gpus per day
    budget: int | None = None  # pool slots (Airflow) or the GPU quota the budget is capped at
    slack: float = 1.05
    pack: bool = True  # admit within budget_for's packed budget, not the whole quota
    # The GPU options a pod may land on, in order (regional.py); T4 alone before fallback.
    options: tuple[str, ...] = ("t4",)

    def size(self, items: Mapping[str, int], model: ThroughputModel) -> tuple[GpuPlan, int | None]:
        """The day's GPUs per category and the admission budget."""
        if self.gpus is not None:
            seconds = {c: model.seconds(n, self.gpus[c]) for c, n in items.items()}
            return GpuPlan(dict(self.gpus), seconds, 0.0, 1.0), self.budget
        plan = plan_gpus(items, model=model, slack=self.slack)
        need = budget_for(plan, plan.fastest_makespan_s * self.slack) if self.pack else None
        if need is None or self.budget is None:
            return plan, self.budget if need is None else need
        return plan, min(self.budget, need)


def zonal(categories: Sequence[str]) -> Policy:
    """Before the fixes: zone A only, 4 GPUs each, Airflow retries=3 every 5 minutes."""
    return Policy(
        name="zonal",
        title="zonal, 52 GPUs, fixed retries",
        zones=("a",),
        admission="none",
        backoff=BackoffPolicy(
            first_delay_s=300, max_delay_s=300, max_retries=3, deadline_s=None, jitter=0.0
        ),
        startup_timeout_s=1200.0,  # the startup timeout in the write-up's own error log
        gpus=dict.fromkeys(categories, 4),
    )


def reference_fixes(defaults: Mapping[str, int]) -> Policy:
    """The write-up's fixes: regional, 4/2/1 GPUs, pool_slots on a 17-slot pool, capped backoff."""
    return Policy(
        name="reference",
        title="reference fixes (regional, 17, pool_slots)",
        zones=("a", "b"),
        admission="pool",
        # Airflow's retry_exponential_backoff with max_retry_delay; its hash jitter left out.
        backoff=BackoffPolicy(
            first_delay_s=60, max_delay_s=1800, max_retries=10, deadline_s=None, jitter=0.0
        ),
        startup_timeout_s=1200.0,
        gpus=dict(defaults),
        budget=sum(defaults.values()),
    )


def platform(quota: int = 17) -> Policy:
    """This platform: per-day plan_gpus + budget_for under the quota, decide, BackoffPolicy()."""
    return Policy(
        name="platform",
        title="this platform",
        zones=("a", "b"),
        admission="weighted",
        backoff=BackoffPolicy(),  # the k8s executor's default: 12 retries, 6 h deadline
        # The k8s executor's DEFAULT_SCHEDULING_TIMEOUT_S (not imported: it needs dagster).
        startup_timeout_s=900.0,
        budget=quota,
    )
