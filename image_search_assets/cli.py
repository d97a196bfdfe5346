"""`image-search`: demo, query, serve, report, reindex, rollback, unpin. Dagster does the rest."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from datetime import date, timedelta
from pathlib import Path

import yaml

from image_search_assets import operations
from image_search_assets.settings import Settings, load_settings

DEFAULT_DAGSTER_HOME = "var/dagster_home"
# The console shows warnings (quarantine, random weights); the full log is in the instance.
# The demo catalog's looks (colour x pattern) per category: a season's collection, so that
# every product has look-alikes for the similar-items search to find.
DEMO_LOOKS = 4
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def _storage(settings: Settings):
    from resources import StorageResource

    return StorageResource(root=settings.storage_root, gcp_project=settings.gcp_project).open()


def ensure_dagster_home(settings: Settings) -> Path:
    """A persistent DAGSTER_HOME (var/dagster_home unless set) that `dagster dev` can reuse.

    Its instance uses the weighted GPU pools, with each GPU type's budget set from the config
    on every call (the gpu_pool_limits sensor keeps it so under `dagster dev`).
    """
    home = Path(os.environ.get("DAGSTER_HOME") or DEFAULT_DAGSTER_HOME).resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(yaml.safe_dump(instance_config(home)))
    os.environ["DAGSTER_HOME"] = str(home)
    import dagster as dg

    from image_search_assets.gpu_budget import apply_pool_limits, gpu_pool_limits

    with dg.DagsterInstance.get() as instance:
        # Every start, not only the first: a changed `gpus` reaches the existing instance.
        apply_pool_limits(instance, gpu_pool_limits(settings))
    return home


def instance_config(home: Path) -> dict:
    """A local instance: SQLite with weighted GPU pools and run monitoring freeing their slots."""
    return {
        "telemetry": {"enabled": False},
        "event_log_storage": {
            "module": "image_search_assets.gpu_budget",
            "class": "WeightedSqliteEventLogStorage",
            "config": {"base_dir": str(home / "history" / "runs")},
        },
        "run_monitoring": {"enabled": True, "free_slots_after_run_end_seconds": 60},
    }


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


def cmd_report(args: argparse.Namespace) -> int:
    from image_search_assets.core.records import day_report, format_report

    settings = load_settings()
    report = day_report(_storage(settings), args.date, settings.category_names)
    # What is served now, whatever the day asked: a pin and its reason show here.
    report["serving"], serving = operations.serving_now(_storage(settings), settings.category_names)
    text = f"{format_report(report)}\n\n{serving}"
    print(json.dumps(report, indent=2, default=str) if args.json else text)
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    # Neither Dagster nor torch for a product query: the reader maps the published files.
    from dataclasses import replace

    from image_search_assets.core.index import query
    from image_search_assets.serving import IndexReader, NotReady, UnknownProduct
    from image_search_assets.serving.service import cache_dir, open_platform_storage

    settings = load_settings()
    storage = open_platform_storage(settings)
    reader = IndexReader(storage, settings.category_names, cache_dir=cache_dir())
    with reader.start(background=False) as served:
        try:
            answer, title, image = _query_answer(served, args, settings)
        except NotReady:
            raise SystemExit(
                "no index has been published yet: run `image-search demo` first"
            ) from None
        except UnknownProduct:
            raise SystemExit(f"product {args.product_id!r} is in no served index") from None
        results = [replace(n, image_key=served.image_key(n.product_id)) for n in answer.neighbours]
    for rank, n in enumerate(results, 1):
        print(f"{rank:>3}. {n.product_id:<28} {n.category:<10} distance {n.distance:.4f}")
    page = query.write_html(Path(args.out), title, image, results, storage)
    caption = f"query: {args.product_id or Path(args.image).name}"
    sheet = query.write_png(page.with_suffix(".png"), title, image, results, storage, caption)
    print(f"wrote {page} and {sheet}")
    return 0


def _query_answer(reader, args: argparse.Namespace, settings: Settings):
    """(answer, page title, query image bytes) of a product-id or an image-file query."""
    if args.product_id:
        category, _ = reader.vector_of(args.product_id)
        title = f"Neighbours of {args.product_id} ({category})"
        key = reader.image_key(args.product_id)
        image = reader.storage.read_bytes(key) if key and reader.storage.exists(key) else None
        if args.category in (None, category):
            return reader.similar_to_product(args.product_id, args.k), title, image
        _, vector = reader.vector_of(args.product_id)
        return reader.similar_to_vector(vector, args.k, [args.category]), title, image
    from image_search_assets.serving.embedder import embed_upload

    image = Path(args.image).read_bytes()
    vector = embed_upload(settings, image)
    categories = [args.category] if args.category else None
    return (
        reader.similar_to_vector(vector, args.k, categories),
        f"Neighbours of {args.image}",
        image,
    )


def cmd_serve(args: argparse.Namespace) -> int:
    from image_search_assets.serving.limits import from_args
    from image_search_assets.serving.service import cache_dir, serve

    serve(
        load_settings(),
        host=args.host,
        port=args.port,
        poll_interval_s=args.poll_interval,
        cache=cache_dir(args.cache_dir),
        limits=from_args(args),
    )
    return 0


def cmd_reindex(args: argparse.Namespace) -> int:
    """Runs the `reindex` job (image_search_assets/assets/reindex.py) on the persistent instance."""
    import dagster as dg

    from image_search_assets.assets.reindex import REINDEX_JOB, reindex_op_name
    from image_search_assets.definitions import build_definitions

    settings = load_settings()
    names = [args.category] if args.category else list(settings.category_names)
    unknown = sorted(set(names) - set(settings.category_names))
    if unknown:
        raise SystemExit(f"unknown category {unknown[0]!r}; configured: {settings.category_names}")
    home = ensure_dagster_home(settings)
    ops = [reindex_op_name(n) for n in names]
    job = build_definitions(settings).resolve_job_def(REINDEX_JOB)
    print(f"re-indexing {', '.join(names)} with the configured models (DAGSTER_HOME={home}) ...")
    with dg.DagsterInstance.get() as instance:
        result = job.execute_in_process(
            run_config={**QUIET, "ops": {op: {"config": {"up_to": args.up_to}} for op in ops}},
            instance=instance,
            op_selection=ops,
            raise_on_error=False,
        )
    for event in result.get_asset_materialization_events():
        meta = {k: v.value for k, v in event.materialization.metadata.items()}
        done = f"{meta['count']} items to {meta['up_to']}, version {meta.get('version', '-')}"
        print(f"  {meta['category']}: {done}")
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data.error is not None:
            print(f"  {event.step_key} FAILED: {event.step_failure_data.error.message.strip()}")
    print("done: re-run the failed day, then the days continue" if result.success else "FAILED")
    return 0 if result.success else 1


def cmd_simulate(args: argparse.Namespace) -> int:
    from image_search_assets.studies.capacity.report import simulate_command

    print(f"wrote {simulate_command(Path(args.out), days=args.days, seed=args.seed)}")
    return 0


def cmd_release_run(args: argparse.Namespace) -> int:
    ensure_dagster_home(load_settings())
    import dagster as dg

    from image_search_assets.automation.run_health import release_run

    with dg.DagsterInstance.get() as instance:
        print(release_run(instance, args.run_id, args.reason))
    return 0


def main(argv: list[str] | None = None) -> int:
    from image_search_assets.serving import limits as serve_limits

    parser = argparse.ArgumentParser(prog="image-search", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="generate the sample catalog and materialise its days")
    demo.add_argument("--days", type=int, default=3)
    demo.set_defaults(func=cmd_demo)
    report = sub.add_parser("report", help="per-category counts and quarantine reasons of a day")
    report.add_argument("date")
    report.add_argument("--json", action="store_true")
    report.set_defaults(func=cmd_report)
    q = sub.add_parser("query", help="nearest neighbours of a product or an image file")
    target = q.add_mutually_exclusive_group(required=True)
    target.add_argument("--product-id")
    target.add_argument("--image")
    q.add_argument("--category")
    q.add_argument("-k", "--k", type=int, default=8)
    q.add_argument("--out", default="var/query.html", help="HTML page; the PNG goes beside it")
    q.set_defaults(func=cmd_query)
    srv = sub.add_parser("serve", help="the similar-items HTTP service over the current indexes")
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=int, default=8080)
    srv.add_argument("--poll-interval", type=float, default=10.0, help="seconds between polls")
    srv.add_argument("--cache-dir", help="gs:// index downloads (IMAGE_SEARCH_SERVING_CACHE)")
    serve_limits.add_arguments(srv)  # --max-header-bytes, --header-timeout, ...
    srv.set_defaults(func=cmd_serve)
    rx = sub.add_parser("reindex", help="re-embed categories with the configured (new) models")
    rx.add_argument("--category", help="one category (default: every configured one)")
    rx.add_argument("--up-to", default="", help="day whose live set to re-index (default: latest)")
    rx.set_defaults(func=cmd_reindex)
    rel = sub.add_parser("release-run", help="mark a run whose process is gone failed, free slots")
    rel.add_argument("run_id")
    rel.add_argument("--reason", default="released by an operator: its process is gone")
    rel.set_defaults(func=cmd_release_run)
    operations.add_commands(sub)  # rollback, unpin
    sim = sub.add_parser("simulate", help="replay a month of GPU stock-outs for three setups")
    sim.add_argument("--out", default="docs/capacity")
    sim.add_argument("--days", type=int, default=30)
    sim.add_argument("--seed", type=int, default=7)
    sim.set_defaults(func=cmd_simulate)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
