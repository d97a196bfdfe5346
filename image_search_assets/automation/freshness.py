"""Freshness of what is served: one check per category on the day CURRENT serves, run by a
schedule of its own (a stalled chain runs nothing else), alerted by sensors.check_failure_alert.

The check reads CURRENT, not the asset's last materialisation: a re-run of an old day
materialises the asset without changing what customers see, and a pin holds serving back
whatever runs."""

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from image_search_assets.core.index import current
from image_search_assets.core.index.checks import freshness_outcome
from image_search_assets.settings import Category, Settings
from resources import StorageResource

FRESHNESS_JOB = "index_freshness"
FRESHNESS_CHECK = "served_day_fresh"
# Twice an hour, off the hour: a lag is caught within 30 minutes of passing the allowance.
FRESHNESS_CRON = "17,47 * * * *"


def serving_metadata(pointer: current.Pointer | None) -> dict[str, dg.MetadataValue]:
    """What CURRENT names, pin included, as check or observation metadata for the UI."""
    if pointer is None:
        return {"served_version": dg.MetadataValue.text("none")}
    pin = pointer.pin
    return {
        "served_version": dg.MetadataValue.text(pointer.version),
        "served_day": dg.MetadataValue.text(pointer.date),
        "served_count": dg.MetadataValue.int(pointer.count),
        "pin": dg.MetadataValue.text(f"{pin.version} since {pin.pinned_at}" if pin else "none"),
        "pin_reason": dg.MetadataValue.text(pin.reason if pin else ""),
    }


def freshness_check(category: Category, *, settings: Settings) -> dg.AssetChecksDefinition:
    name = category.name

    @dg.asset_check(
        name=FRESHNESS_CHECK,
        asset=dg.AssetKey([name, "annoy_index"]),
        blocking=False,
        description=f"The served day lags yesterday by at most {settings.index.freshness_hours} h.",
    )
    def served_day_fresh(storage: StorageResource) -> dg.AssetCheckResult:
        """CURRENT serves a day that ended at most index.freshness_hours ago."""
        pointer = current.read_pointer(storage.open(), name)
        pin = pointer.pin if pointer else None
        outcome = freshness_outcome(
            pointer.date if pointer else None,
            now=datetime.now(UTC),
            tz=settings.tz,
            max_lag_hours=settings.index.freshness_hours,
            pin=f"pinned to {pin.version}: {pin.reason}" if pin else "",
        )
        # Held back on purpose by a pin: a warning, not an error, until someone unpins.
        severity = dg.AssetCheckSeverity.WARN if pin else dg.AssetCheckSeverity.ERROR
        return dg.AssetCheckResult(
            passed=outcome.passed,
            severity=severity,
            description=outcome.description,
            metadata={**outcome.metadata, **serving_metadata(pointer)},
        )

    return served_day_fresh


@dataclass(frozen=True)
class FreshnessWatch:
    """Every category's freshness check, the job that runs only them, and its schedule."""

    checks: list[dg.AssetChecksDefinition]
    job: Any  # what define_asset_job returns: dagster exports no name for it
    schedule: dg.ScheduleDefinition

    @property
    def selection(self) -> dg.AssetSelection:
        """What the daily job leaves out: a day being caught up is behind by definition."""
        return dg.AssetSelection.checks(*self.checks)


def build_freshness(settings: Settings) -> FreshnessWatch:
    checks = [freshness_check(c, settings=settings) for c in settings.categories]
    job = dg.define_asset_job(FRESHNESS_JOB, selection=dg.AssetSelection.checks(*checks))
    schedule = dg.ScheduleDefinition(
        name="index_freshness_schedule",
        job=job,
        cron_schedule=FRESHNESS_CRON,
        execution_timezone=settings.timezone,
        # Started with the daily schedule (docs/operations.md), like it: a bare `dagster dev`
        # launches nothing by itself.
        description="Checks twice an hour that every category serves a recent enough day.",
    )
    return FreshnessWatch(checks, job, schedule)
