"""Schedules, sensors and asset checks: how the daily graph is driven and watched."""

from .checks import build_asset_checks
from .schedules import build_schedules
from .sensors import build_sensors

__all__ = ["build_asset_checks", "build_schedules", "build_sensors"]
