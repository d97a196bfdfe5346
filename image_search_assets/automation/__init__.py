"""Schedules, sensors and asset checks: how the daily graph is driven and watched."""

from image_search_assets.automation.checks import build_asset_checks
from image_search_assets.automation.freshness import build_freshness
from image_search_assets.automation.rollback import rollback_job
from image_search_assets.automation.schedules import build_schedules
from image_search_assets.automation.sensors import build_sensors

__all__ = [
    "build_asset_checks",
    "build_freshness",
    "build_schedules",
    "build_sensors",
    "rollback_job",
]
