"""The GPU pools' limits, from the categories config: one pool per GPU type, limit = its GPUs.

`python -m image_search_assets.k8s.pools` writes them into the Dagster instance that
DAGSTER_HOME points at at once; the `gpu_pool_limits` sensor does the same within a minute of
any change to the categories. `--dry-run` only prints them. Both compute and apply them with
image_search_assets/gpu_budget.py.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from image_search_assets.gpu_budget import apply_pool_limits, gpu_pool_limits
from image_search_assets.settings import load_settings

__all__ = ["gpu_pool_limits", "main"]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="print the limits only")
    args = parser.parse_args(argv)
    limits = gpu_pool_limits(load_settings())
    if not args.dry_run:
        import dagster as dg  # only for writing: --dry-run opens no instance

        with dg.DagsterInstance.get() as instance:
            apply_pool_limits(instance, limits)
    for pool, limit in limits.items():
        print(f"{pool}\t{limit}")


if __name__ == "__main__":
    main()
