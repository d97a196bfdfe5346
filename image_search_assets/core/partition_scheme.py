"""How the stored days were cut, and the config changes that would lose them (Dagster-free).

Each day's index builds on the day before, from the first partition on. Two config edits
silently rebuild or re-cut that history: a `partitions.start_date` moved past stored days
(the new first day builds on nothing, so every older product drops out) and a changed
`partitions.timezone` or cron/format (days cut at other hours: the products at the boundary
fall between two days). The first step of every day checks the config against the stored
days and the scheme recorded in SCHEME_KEY, and refuses such a change with the supported way
to make it (docs/operations.md, "What to do when").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from image_search_assets.core.index.reindex import live_days
from image_search_assets.core.layout import PARTITION_SCHEME_KEY as SCHEME_KEY
from image_search_assets.core.storage import Storage

REBUILD = (
    "rebuild the history in an empty storage_root: set storage_root to a new location, backfill "
    "every day from the catalog's first day with the new setting, then point serving at it; "
    "the current root keeps serving meanwhile (docs/operations.md, What to do when)"
)


class SchemeChangeError(Exception):
    """The config cuts days differently from the stored history: running would lose data."""


@dataclass(frozen=True)
class PartitionScheme:
    start_date: str
    timezone: str
    cron_schedule: str
    fmt: str


def stored_days(storage: Storage, categories: Sequence[str]) -> list[str]:
    """Days with a stored live set in any of `categories`, oldest first."""
    return sorted({day for c in categories for day in live_days(storage, c)})


def recorded(storage: Storage) -> PartitionScheme | None:
    if not storage.exists(SCHEME_KEY):
        return None
    return PartitionScheme(**storage.read_json(SCHEME_KEY))


def check_and_record(
    storage: Storage, scheme: PartitionScheme, categories: Sequence[str]
) -> list[str]:
    """Raises SchemeChangeError for a change that would lose stored days; else records `scheme`
    (the first time, or after a harmless change) and returns notes on what changed."""
    days = stored_days(storage, categories)
    before = recorded(storage)
    if days and days[0] < scheme.start_date:
        was = before.start_date if before else days[0]
        raise SchemeChangeError(
            f"partitions.start_date moved to {scheme.start_date}, past the stored days "
            f"{days[0]}..{days[-1]}: the day {scheme.start_date} would build its index from "
            "itself alone and every product of the days before would drop out of it. Fix: "
            f"restore partitions.start_date: {was}. To start the indexes over from "
            f"{scheme.start_date}, {REBUILD}."
        )
    if before is not None and days:
        for field in ("timezone", "cron_schedule", "fmt"):
            old, new = getattr(before, field), getattr(scheme, field)
            if old != new:
                raise SchemeChangeError(
                    f"the daily partitions' {field} changed from {old!r} to {new!r} while the "
                    f"stored days {days[0]}..{days[-1]} were cut with {old!r}: days would start "
                    "at other hours and the products at the boundary would be lost. Fix: "
                    f"restore the old {field} ({old!r}). To move to {new!r}, {REBUILD}."
                )
    if before == scheme:
        return []
    storage.write_json(SCHEME_KEY, asdict(scheme))
    if before is None:
        return [f"recorded the partition scheme {asdict(scheme)} in {storage.uri(SCHEME_KEY)}"]
    change = f"partition scheme changed from {asdict(before)} to {asdict(scheme)}"
    return [f"{change}: no stored day is cut differently"]
