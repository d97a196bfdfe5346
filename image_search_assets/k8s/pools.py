"""The GPU pools' limits, from the categories config: one pool per GPU type, limit = its GPUs.

`python -m image_search_assets.k8s.pools` writes them into the Dagster instance that
DAGSTER_HOME points at (run it in the daemon pod after every change to the categories).
`--dry-run` only prints them.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from image_search_assets.settings import Settings, load_settings
from image_search_assets.tags import gpu_pool


def gpu_pool_limits(settings: Settings) -> dict[str, int]:
    """{pool: GPU budget}: the sum of the GPUs of the categories of each GPU type."""
    limits: dict[str, int] = {}
    for category in settings.categories:
        pool = gpu_pool(category)
        limits[pool] = limits.get(pool, 0) + category.gpus
    return limits


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="print the limits only")
    args = parser.parse_args(argv)
    limits = gpu_pool_limits(load_settings())
    if not args.dry_run:
        import dagster as dg  # only for writing: --dry-run needs no instance

        with dg.DagsterInstance.get() as instance:
            for pool, limit in limits.items():
                instance.event_log_storage.set_concurrency_slots(pool, limit)
    for pool, limit in limits.items():
        print(f"{pool}\t{limit}")


if __name__ == "__main__":
    main()
