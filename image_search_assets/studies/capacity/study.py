"""What one capacity study holds, and the figures both the report and the plots read off it."""

from __future__ import annotations

from dataclasses import dataclass
from statistics import mean

from image_search_assets.core.planning.gpu_plan import ThroughputModel
from image_search_assets.studies.capacity.results import MonthResult
from image_search_assets.studies.capacity.supply import DAY, HOUR, DayItems, Supply

SETUPS = ("zonal", "reference", "platform")
SWEEP_SEEDS = range(1, 21)


@dataclass(frozen=True)
class Study:
    days: int
    seed: int
    supply: Supply
    workload: list[DayItems]
    model: ThroughputModel
    results: dict[str, MonthResult]  # the three setups, then the platform's ablations


def day_label(supply: Supply, day: int) -> str:
    return supply.date_of(day * DAY).strftime("%m-%d %a")


def gpu_hours(result: MonthResult, sale: bool | None = None) -> float:
    """GPU-hours over the month, or over its sale (True) or ordinary (False) days."""
    return sum(d.gpu_seconds for d in result.days if sale is None or d.sale == sale) / HOUR


def mean_makespan_h(result: MonthResult, days: list[int] | None = None) -> float:
    picked = [d for d in result.days if days is None or d.day in days]
    return mean(d.makespan_s for d in picked) / HOUR if picked else float("nan")
