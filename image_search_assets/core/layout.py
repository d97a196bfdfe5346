"""Every storage key under the root, spelled once here, with its parsing (stdlib only).

    assets/<asset path>/<partition>.parquet          an asset's value for one partition
    removals/<day>.parquet                           the `removals` asset: the day's removals
    quarantine/<day>/<stage>.parquet                 rows a stage refused, with reasons
    images/<day>/<quoted product id>.jpg             an ingested image
    work/<day>/<category>/<stage>/chunk-NNNNN.parquet  one finished chunk of GPU work
    work/<day>/<category>/<stage>/manifest.json      the chunks finished so far
    indexes/<category>/CURRENT.json                  the version served (core/index/current.py)
    indexes/<category>/versions/<version>/{index.ann, ids.parquet, manifest.json}
    partition_scheme.json                            the partitions' start day and step

A version's name is `<day>.<created>.<random>`. Readers that must stay light (serving, the
query CLI) import this module as freely as the pipeline does: it imports nothing heavy.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from urllib.parse import quote

PARQUET = ".parquet"
REMOVALS_ASSET = "removals"  # new_products' second output, an input of every annoy_index
# The removals asset keeps the key the day's removals had before they were an asset, so every
# day stored since stays readable (a rebuild of an old day reads them).
REMOVALS_ROOT = "removals/"

# -- asset values ----------------------------------------------------------------------------


def asset_prefix(asset_path: Sequence[str]) -> str:
    """The folder of an asset's partition values, with its trailing slash."""
    return f"assets/{'/'.join(asset_path)}/"


def asset_value_key(asset_path: Sequence[str], partition: str) -> str:
    """Where the IO manager keeps an asset's value for one partition."""
    if list(asset_path) == [REMOVALS_ASSET]:
        return removals_key(partition)
    return f"{asset_prefix(asset_path)}{partition}{PARQUET}"


def removals_key(day: str) -> str:
    """The day's catalog removals (product_id, category, removed_at): the `removals` asset."""
    return f"{REMOVALS_ROOT}{day}{PARQUET}"


def removal_days(keys: Iterable[str]) -> list[str]:
    """The days whose removals are among `keys` (a listing of REMOVALS_ROOT), oldest first."""
    names = (k.removeprefix(REMOVALS_ROOT) for k in keys if k.startswith(REMOVALS_ROOT))
    return sorted(n.removesuffix(PARQUET) for n in names if n.endswith(PARQUET) and "/" not in n)


def live_set_path(category: str) -> list[str]:
    """The asset path of a category's live sets (its `annoy_index` values, one per day)."""
    return [category, "annoy_index"]


def live_set_key(category: str, day: str) -> str:
    return asset_value_key(live_set_path(category), day)


def partitions_in(keys: Iterable[str], asset_path: Sequence[str]) -> list[str]:
    """The partitions of `asset_path` whose values are among `keys`, sorted."""
    prefix = asset_prefix(asset_path)
    names = (k[len(prefix) :] for k in keys if k.startswith(prefix))
    return sorted(n.removesuffix(PARQUET) for n in names if n.endswith(PARQUET) and "/" not in n)


def quarantine_key(day: str, stage: str) -> str:
    return f"quarantine/{day}/{stage}{PARQUET}"


# -- images ----------------------------------------------------------------------------------


def image_key(day: str, product_id: str) -> str:
    """Where ingestion stores a product's image, under the day it was first stored."""
    return f"images/{day}/{quote(product_id, safe='')}.jpg"


# -- resumable work --------------------------------------------------------------------------

WORK_ROOT = "work/"
WORK_MANIFEST = "manifest.json"


def work_prefix(day: str, category: str, stage: str) -> str:
    """One stage's chunks of one category and day."""
    return f"{work_category_prefix(day, category)}/{stage}"


def work_category_prefix(day: str, category: str) -> str:
    """Every stage's chunks of one category and day (no trailing slash)."""
    return f"{WORK_ROOT}{day}/{category}"


def chunk_key(prefix: str, chunk_id: str) -> str:
    return f"{prefix}/{chunk_id}{PARQUET}"


def work_manifest_key(prefix: str) -> str:
    return f"{prefix}/{WORK_MANIFEST}"


def work_days(keys: Iterable[str]) -> list[str]:
    """The days that hold any work, from keys listed under WORK_ROOT."""
    return sorted({k[len(WORK_ROOT) :].split("/", 1)[0] for k in keys if k.startswith(WORK_ROOT)})


# -- published index versions ----------------------------------------------------------------

ANN_FILE = "index.ann"
IDS_FILE = "ids.parquet"
MANIFEST_FILE = "manifest.json"
POINTER_FILE = "CURRENT.json"


def category_prefix(category: str) -> str:
    """Everything published for a category: its pointer and its versions (no trailing slash)."""
    return f"indexes/{category}"


def pointer_key(category: str) -> str:
    return f"{category_prefix(category)}/{POINTER_FILE}"


def versions_prefix(category: str) -> str:
    """The folder of a category's versions, with its trailing slash."""
    return f"{category_prefix(category)}/versions/"


def version_dir(category: str, version: str) -> str:
    """Where one published version lives (no trailing slash)."""
    return f"{versions_prefix(category)}{version}"


def ann_key(category: str, version: str) -> str:
    return f"{version_dir(category, version)}/{ANN_FILE}"


def ids_key(category: str, version: str) -> str:
    return f"{version_dir(category, version)}/{IDS_FILE}"


def manifest_key(category: str, version: str) -> str:
    """A version's manifest: written last, so its presence marks the version complete."""
    return f"{version_dir(category, version)}/{MANIFEST_FILE}"


# Microseconds: retention orders a day's versions by creation.
VERSION_STAMP = "%Y%m%dT%H%M%S%fZ"


def version_name(day: str, created: datetime, suffix: str) -> str:
    return f"{day}.{created.astimezone(UTC).strftime(VERSION_STAMP)}.{suffix}"


def version_day(version: str) -> str:
    """The day a version was published for, from its name."""
    return version.split(".", 1)[0]


def version_created(version: str) -> datetime:
    """When a version was created, from its name; IndexError or ValueError if it has none."""
    return datetime.strptime(version.split(".")[1], VERSION_STAMP).replace(tzinfo=UTC)


def version_names(keys: Iterable[str], category: str) -> set[str]:
    """The version names that `keys` (listed under versions_prefix) belong to."""
    prefix = versions_prefix(category)
    return {k[len(prefix) :].split("/", 1)[0] for k in keys if k.startswith(prefix)}


# -- partitions ------------------------------------------------------------------------------

PARTITION_SCHEME_KEY = "partition_scheme.json"
