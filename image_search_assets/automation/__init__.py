"""Schedules, sensors and asset checks: how the daily graph is driven and watched."""

from image_search_assets.automation.checks import build_asset_checks
from image_search_assets.automation.schedules import build_schedules
from image_search_assets.automation.sensors import build_sensors

__all__ = ["build_asset_checks", "build_schedules", "build_sensors"]
