"""Pruning what a year of days leaves behind, per category (`index.keep_days`).

After day N publishes, for days before N - keep_days:
- the `annoy_index` partition values (live sets) are deleted: only day N's is needed to build
  N+1, and the window keeps recent days re-runnable;
- the category's chunks of each such day (resumable detection/embedding work) are deleted;
- an `embeddings` partition is deleted once no live set in the window points at any of its
  rows (every product in it re-sent or removed since).
Published versions are pruned after each publish (`index.retention`, prune_versions): the
rollback window is a number of distinct days, so re-runs of one day never use it up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from image_search_assets.core import layout
from image_search_assets.core.index import current
from image_search_assets.core.layout import asset_value_key
from image_search_assets.core.storage import Storage

# What a publish still writing looks like to a prune: an incomplete version or a hidden
# temporary. Younger than this they are left alone; older, a killed or failed writer left them.
GRACE_S = 6 * 3600.0


@dataclass
class Pruned:
    live_sets: list[str] = field(default_factory=list)
    work_days: list[str] = field(default_factory=list)
    embeddings: list[str] = field(default_factory=list)

    def as_metadata(self) -> dict[str, int]:
        return {
            "pruned_live_sets": len(self.live_sets),
            "pruned_work_days": len(self.work_days),
            "pruned_embeddings": len(self.embeddings),
        }


def _days_of(storage: Storage, category: str, asset: str) -> list[str]:
    """The days of one of the category's assets that have a stored value."""
    path = [category, asset]
    return layout.partitions_in(storage.list(layout.asset_prefix(path)), path)


def prune_category(storage: Storage, category: str, day: str, *, keep_days: int) -> Pruned:
    """Deletes the category's records older than the window ending on `day` (see module doc)."""
    if keep_days < 1:
        raise ValueError("keep_days must keep at least the previous day")
    cutoff = (date.fromisoformat(day) - timedelta(days=keep_days)).isoformat()
    pruned = Pruned()
    live_days = _days_of(storage, category, "annoy_index")
    referenced: set[str] = set()
    for d in live_days:
        if cutoff <= d <= day:
            table = storage.read_parquet(asset_value_key([category, "annoy_index"], d))
            referenced |= set(table["day"].astype(str)) if "day" in table else set()
    for d in live_days:
        if d < cutoff:
            storage.delete(asset_value_key([category, "annoy_index"], d))
            pruned.live_sets.append(d)
    for d in layout.work_days(storage.list(layout.WORK_ROOT)):
        work = layout.work_category_prefix(d, category)
        if d < cutoff and storage.list(f"{work}/"):
            storage.delete_prefix(work)
            pruned.work_days.append(d)
    if referenced:  # an empty window (old-format values) proves nothing: keep everything
        for d in _days_of(storage, category, "embeddings"):
            if d < cutoff and d not in referenced:
                storage.delete(asset_value_key([category, "embeddings"], d))
                pruned.embeddings.append(d)
    return pruned


def _age_s(version: str, now: datetime) -> float:
    """Seconds since a version was created, from its name (`<day>.<stamp>.<random>`).

    A name not in that form is no publish's: it reads as brand new, so it is never deleted.
    """
    try:
        stamp = layout.version_created(version)
    except (IndexError, ValueError):
        return 0.0
    return (now - stamp).total_seconds()


def prune_versions(
    storage: Storage, category: str, *, keep_days: int, grace_s: float = GRACE_S
) -> list[str]:
    """Deletes published versions outside the rollback window, and a crashed publish's leftovers.

    Kept: the version CURRENT serves, the pinned one, the one CURRENT replaced most recently
    (rollback's default), and the newest complete version of each of the newest `keep_days`
    days. Deleted: other complete versions, and incomplete ones (no manifest, which a publish
    writes last) or hidden temporaries once older than `grace_s`. Returns what was deleted.
    """
    if keep_days < 1:
        raise ValueError("retention must keep at least the current version")
    now = datetime.now(UTC)
    temporaries = storage.leftovers(f"{layout.category_prefix(category)}/", older_than_s=grace_s)
    listed = storage.list(layout.versions_prefix(category))
    names = layout.version_names([*listed, *temporaries], category)
    complete = set(current.kept_versions(storage, category))
    pointer = current.read_pointer(storage, category)
    kept: set[str] = set()
    if pointer is not None:
        kept |= {pointer.version, *pointer.previous[:1]}
        kept |= {pointer.pin.version} if pointer.pin else set()
    newest_of_day: dict[str, str] = {}
    for version in sorted(complete):  # day, then creation: the last one of a day wins
        newest_of_day[layout.version_day(version)] = version
    kept |= {newest_of_day[d] for d in sorted(newest_of_day)[-keep_days:]}
    doomed = [v for v in sorted(names - kept) if v in complete or _age_s(v, now) > grace_s]
    for version in doomed:
        storage.delete_prefix(layout.version_dir(category, version))
    gone = tuple(f"{layout.version_dir(category, v)}/" for v in doomed)
    stray = [k for k in temporaries if not k.startswith(gone)]  # beside CURRENT, in kept ones
    for key in stray:
        storage.delete(key)
    return doomed + stray
