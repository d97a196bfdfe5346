"""What a healthy published index looks like, as plain functions (Dagster-free).

Each returns a `CheckOutcome`; the asset checks turn them into check results.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from annoy import AnnoyIndex

from image_search_assets.core.index.annoy_index import recall_at_k

SEARCH_KS = (10, 20, 50, 100, 200, 500, 1000)


@dataclass(frozen=True)
class CheckOutcome:
    passed: bool
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)


def aligned_vectors(
    index_ids: Sequence[str], table_ids: Sequence[str], vectors: np.ndarray
) -> np.ndarray:
    """The table's vectors in the index's dense-id order; ValueError if the ids differ."""
    if len(index_ids) != len(table_ids) or set(index_ids) != set(table_ids):
        missing = sorted(set(table_ids) - set(index_ids))[:5]
        extra = sorted(set(index_ids) - set(table_ids))[:5]
        raise ValueError(
            f"index holds {len(index_ids)} ids, the table {len(table_ids)}; "
            f"missing from index {missing}, not in table {extra}"
        )
    row = {pid: i for i, pid in enumerate(table_ids)}
    return vectors[[row[pid] for pid in index_ids]]


def recall_curve(
    index: AnnoyIndex, vectors: np.ndarray, *, sample: int, k: int = 10
) -> dict[int, float]:
    """recall@k against exact search for a range of search_k (the cost/quality dial)."""
    return {s: recall_at_k(index, vectors, k=k, sample=sample, search_k=s) for s in SEARCH_KS}


def recall_outcome(
    index: AnnoyIndex, vectors: np.ndarray, *, min_recall: float, sample: int, k: int = 10
) -> CheckOutcome:
    """recall@k at the default search_k (what queries use) must reach `min_recall`."""
    recall = recall_at_k(index, vectors, k=k, sample=sample)
    passed = recall >= min_recall
    verdict = "meets" if passed else "is BELOW"
    return CheckOutcome(
        passed,
        f"recall@{k} {recall:.3f} {verdict} the threshold {min_recall} "
        f"({min(sample, len(vectors))} sampled queries vs exact search)",
        {
            f"recall_at_{k}": round(recall, 4),
            "min_recall": min_recall,
            "sampled_queries": min(sample, len(vectors)),
            "items": len(vectors),
        },
    )


def vectors_outcome(vectors: np.ndarray, *, tolerance: float = 1e-3) -> CheckOutcome:
    """Every vector is finite and L2 unit-norm (the angular metric and recall assume it)."""
    if vectors.size == 0:
        return CheckOutcome(True, "no vectors yet", {"items": 0})
    finite = np.isfinite(vectors).all(axis=1)
    norms = np.linalg.norm(np.where(np.isfinite(vectors), vectors, 0.0), axis=1)
    bad_norm = finite & (np.abs(norms - 1.0) > tolerance)
    passed = bool(finite.all() and not bad_norm.any())
    return CheckOutcome(
        passed,
        "all vectors finite and unit-norm"
        if passed
        else f"{int((~finite).sum())} non-finite, {int(bad_norm.sum())} not unit-norm",
        {
            "items": int(len(vectors)),
            "dim": int(vectors.shape[1]),
            "non_finite": int((~finite).sum()),
            "not_unit_norm": int(bad_norm.sum()),
            "max_norm_error": float(np.max(np.abs(norms[finite] - 1.0), initial=0.0)),
        },
    )


def accounting_outcome(category_report: Mapping[str, Any]) -> CheckOutcome:
    """Every new product of the category is indexed or quarantined (one `day_report` entry)."""
    r = category_report
    unaccounted = list(r["unaccounted"])
    passed = not unaccounted
    return CheckOutcome(
        passed,
        f"{r['new']} new = {r['indexed']} indexed + {r['quarantined']} quarantined"
        if passed
        else f"{len(unaccounted)} product(s) neither indexed nor quarantined: {unaccounted[:10]}",
        {
            "new": r["new"],
            "indexed": r["indexed"],
            "quarantined": r["quarantined"],
            "quarantine_reasons": dict(r["reasons"]),
            "unaccounted": len(unaccounted),
        },
    )


def reach_outcome(
    previous_ids: Sequence[str],
    new_ids: Sequence[str],
    indexed_ids: Sequence[str],
    published_count: int,
    removed_ids: Sequence[str] = (),
) -> CheckOutcome:
    """index count = previous + today's new - re-sent - removed, each product once."""
    previous, new, indexed = set(previous_ids), set(new_ids), list(indexed_ids)
    removed = (set(removed_ids) & previous) - new
    resent = len(previous & new)
    expected = len(previous) + len(new) - resent - len(removed)
    duplicates = len(indexed) - len(set(indexed))
    lost = sorted((previous | new) - removed - set(indexed))[:10]
    kept_removed = sorted(removed & set(indexed))[:10]
    passed = (
        len(indexed) == expected == published_count
        and not duplicates
        and not lost
        and not kept_removed
    )
    formula = (
        f"{len(previous)} previous + {len(new)} new - {resent} re-sent - {len(removed)} removed"
    )
    return CheckOutcome(
        passed,
        f"{len(indexed)} = {formula}"
        if passed
        else (
            f"expected {expected} (= {formula}), table holds {len(indexed)}, published index "
            f"{published_count}; duplicates {duplicates}, lost {lost}, removed but kept "
            f"{kept_removed}"
        ),
        {
            "count": len(indexed),
            "previous_count": len(previous),
            "new_items": len(new),
            "resent": resent,
            "removed": len(removed),
            "expected": expected,
            "published_count": published_count,
        },
    )


def removed_outcome(served_ids: Sequence[str], removed_ids: set[str]) -> CheckOutcome:
    """No product the catalog has removed (and not added again since) is served."""
    served = sorted(set(served_ids) & removed_ids)
    return CheckOutcome(
        not served,
        f"none of the {len(removed_ids)} removed product(s) is served"
        if not served
        else f"{len(served)} removed product(s) still served: {served[:10]}",
        {"removed_to_date": len(removed_ids), "removed_but_served": len(served)},
    )


def freshness_outcome(
    served_day: str | None, *, now: datetime, tz: ZoneInfo, max_lag_hours: float, pin: str = ""
) -> CheckOutcome:
    """The served day ended at most `max_lag_hours` ago, counted in the partitions' zone.

    A day's data is complete at the midnight that ends it, so serving yesterday is a lag of
    0-24 hours and the default allowance (30) gives the day's run until 06:00 to publish it.
    """
    yesterday = (now.astimezone(tz).date() - timedelta(days=1)).isoformat()
    if served_day is None:
        return CheckOutcome(False, f"nothing is served yet (yesterday was {yesterday})", {})
    ended = datetime.combine(date.fromisoformat(served_day) + timedelta(days=1), time(), tz)
    lag = (now - ended).total_seconds() / 3600
    passed = lag <= max_lag_hours
    held = f"; {pin}" if pin else ""
    return CheckOutcome(
        passed,
        f"serves {served_day}, {lag:.1f} h after it ended ({tz.key}), within {max_lag_hours} h"
        if passed
        else f"serves {served_day}, {lag:.1f} h after it ended ({tz.key}): more than "
        f"{max_lag_hours} h behind; yesterday {yesterday} is not served{held}",
        {"served_day": served_day, "lag_hours": round(lag, 2), "max_lag_hours": max_lag_hours},
    )


def kept_unless_removed_outcome(
    before_ids: Sequence[str], before_day: str, after_ids: Sequence[str], removed: set[str]
) -> CheckOutcome:
    """Every product served on an earlier day is still served unless the catalog removed it.

    The daily checks compare a day with the live set it was built on; this one compares what
    is served, so a rebuild from fewer days (a moved start_date) cannot pass unseen.
    """
    lost = sorted(set(before_ids) - set(after_ids) - removed)
    return CheckOutcome(
        not lost,
        f"{len(after_ids)} served; all {len(before_ids)} of {before_day} kept or removed"
        if not lost
        else f"{len(lost)} of the {len(before_ids)} products served on {before_day} are gone "
        f"without a removal: {lost[:10]}. A start_date moved forward or a changed timezone "
        "rebuilds the index from fewer days",
        {
            "count": len(after_ids),
            "before_count": len(before_ids),
            "before_day": before_day,
            "lost_without_removal": len(lost),
        },
    )
