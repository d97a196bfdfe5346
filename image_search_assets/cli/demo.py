"""`image-search demo`: the sample catalog, its days materialised, the report and a query."""

from __future__ import annotations

import argparse
import time
import uuid
from datetime import date, timedelta
from pathlib import Path

from image_search_assets.cli.instance import QUIET, _storage, ensure_dagster_home
from image_search_assets.settings import Settings, load_settings

# The demo catalog's looks (colour x pattern) per category: a season's collection, so that
# every product has look-alikes for the similar-items search to find.
DEMO_LOOKS = 4


def materialise_days(settings: Settings, days: list[str]) -> list[float]:
    """Runs the daily job for each day in order on the persistent instance; wall seconds each."""
    import dagster as dg
    from tqdm import tqdm

    from image_search_assets.automation.run_progress import StepProgressBar
    from image_search_assets.definitions import DAILY_JOB, build_definitions

    job = build_definitions(settings).resolve_job_def(DAILY_JOB)
    walls = []
    with dg.DagsterInstance.get() as instance, tqdm(days, desc="days", unit="day") as bar:
        for day in bar:
            started, run_id = time.perf_counter(), str(uuid.uuid4())
            with StepProgressBar(instance, run_id, len(job.graph.nodes), desc=f"  {day} steps"):
                result = job.execute_in_process(
                    partition_key=day,
                    instance=instance,
                    run_config=QUIET,
                    raise_on_error=False,
                    run_id=run_id,
                )
            walls.append(time.perf_counter() - started)
            status = "ok" if result.success else "FAILED"
            bar.write(f"  {day}: {status} in {walls[-1]:.1f} s (run {run_id[:8]})")
            if not result.success:
                raise SystemExit(f"day {day} failed; later days were not run")
    return walls


def cmd_demo(args: argparse.Namespace) -> int:
    from image_search_assets.demo.synthetic import generate_catalog

    settings = load_settings()
    if settings.catalog.startswith("gs://"):
        raise SystemExit("demo writes a local sample catalog; unset a gs:// catalog first")
    start = date.fromisoformat(settings.start_date)
    out = Path(settings.catalog).parent
    print(f"generating the sample catalog for {args.days} days from {start} in {out}/ ...")
    generate_catalog(
        out,
        settings.category_names,
        start,
        days=args.days,
        timezone=settings.timezone,
        looks=DEMO_LOOKS,
    )
    home = ensure_dagster_home(settings)
    days = [(start + timedelta(days=i)).isoformat() for i in range(args.days)]
    print(f"materialising {len(days)} days through Dagster (DAGSTER_HOME={home}) ...")
    materialise_days(settings, days)
    from image_search_assets.core.records import day_report, format_report

    print(format_report(day_report(_storage(settings), days[-1], settings.category_names)))
    print(f"\nOpen the UI:   DAGSTER_HOME={home} dagster dev   (then http://127.0.0.1:3000)")
    print(f"Query:         image-search query --product-id {suggested_query(settings)}")
    return 0


def suggested_query(settings: Settings) -> str:
    """An indexed product of the first category whose look the most other products share."""
    from collections import Counter

    from image_search_assets.core.index.annoy_index import load_current
    from image_search_assets.demo.synthetic import read_looks

    ids = load_current(_storage(settings), settings.category_names[0]).ids
    look = read_looks(settings.catalog)
    shared = Counter(look.get(pid) for pid in ids)
    return max(ids, key=lambda pid: shared[look.get(pid)] if pid in look else 0)
