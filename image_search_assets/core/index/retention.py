"""Pruning what a year of days leaves behind, per category (`index.keep_days`).

After day N publishes, for days before N - keep_days:
- the `annoy_index` partition values (live sets) are deleted: only day N's is needed to build
  N+1, and the window keeps recent days re-runnable;
- the `work/<day>/<category>/` chunks (resumable detection/embedding work) are deleted;
- an `embeddings` partition is deleted once no live set in the window points at any of its
  rows (every product in it re-sent or removed since).
Published versions are pruned separately (`index.retention`, annoy_index.prune).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

from image_search_assets.core.records import asset_value_key
from image_search_assets.core.storage import Storage


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


def _days_under(storage: Storage, prefix: str, suffix: str = "") -> list[str]:
    found = set()
    for key in storage.list(prefix):
        head = key[len(prefix) :].split("/", 1)[0]
        if head.endswith(suffix):
            found.add(head.removesuffix(suffix))
    return sorted(found)


def prune_category(storage: Storage, category: str, day: str, *, keep_days: int) -> Pruned:
    """Deletes the category's records older than the window ending on `day` (see module doc)."""
    if keep_days < 1:
        raise ValueError("keep_days must keep at least the previous day")
    cutoff = (date.fromisoformat(day) - timedelta(days=keep_days)).isoformat()
    pruned = Pruned()
    live_prefix = f"assets/{category}/annoy_index/"
    live_days = _days_under(storage, live_prefix, ".parquet")
    referenced: set[str] = set()
    for d in live_days:
        if cutoff <= d <= day:
            table = storage.read_parquet(asset_value_key([category, "annoy_index"], d))
            referenced |= set(table["day"].astype(str)) if "day" in table else set()
    for d in live_days:
        if d < cutoff:
            storage.delete(asset_value_key([category, "annoy_index"], d))
            pruned.live_sets.append(d)
    for d in _days_under(storage, "work/"):
        if d < cutoff and storage.list(f"work/{d}/{category}/"):
            storage.delete_prefix(f"work/{d}/{category}")
            pruned.work_days.append(d)
    if referenced:  # an empty window (old-format values) proves nothing: keep everything
        for d in _days_under(storage, f"assets/{category}/embeddings/", ".parquet"):
            if d < cutoff and d not in referenced:
                storage.delete(asset_value_key([category, "embeddings"], d))
                pruned.embeddings.append(d)
    return pruned
