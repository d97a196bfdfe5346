"""`image-search report` (a day's counts and what is served) and `simulate` (the capacity study)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from image_search_assets import operations
from image_search_assets.cli.instance import _storage
from image_search_assets.settings import load_settings


def cmd_report(args: argparse.Namespace) -> int:
    from image_search_assets.core.records import day_report, format_report

    settings = load_settings()
    report = day_report(_storage(settings), args.date, settings.category_names)
    # What is served now, whatever the day asked: a pin and its reason show here.
    report["serving"], serving = operations.serving_now(_storage(settings), settings.category_names)
    text = f"{format_report(report)}\n\n{serving}"
    print(json.dumps(report, indent=2, default=str) if args.json else text)
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from image_search_assets.studies.capacity.report import simulate_command

    print(f"wrote {simulate_command(Path(args.out), days=args.days, seed=args.seed)}")
    return 0
