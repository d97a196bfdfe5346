"""`image-search reindex`: the `reindex` job for some categories on the persistent instance."""

from __future__ import annotations

import argparse

from image_search_assets.cli.instance import QUIET, ensure_dagster_home
from image_search_assets.settings import load_settings


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
