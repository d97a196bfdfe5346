"""The per-day records under the storage root (keys in core/layout.py), and the day's report."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from image_search_assets.core import layout
from image_search_assets.core.layout import (
    REMOVALS_ROOT,
    asset_value_key,
    quarantine_key,
    removals_key,
)
from image_search_assets.core.storage import Storage

if TYPE_CHECKING:
    # Readers that never build a report import this module: pandas costs them half a second,
    # so it is imported where a report needs it.
    import pandas as pd

QUARANTINE_STAGES = ("catalog", "image")


def removal_days(storage: Storage) -> list[str]:
    """The days that have a removals record, oldest first."""
    return layout.removal_days(storage.list(REMOVALS_ROOT))


def _read(storage: Storage, key: str) -> pd.DataFrame | None:
    return storage.read_parquet(key) if storage.exists(key) else None


def removed_to_date(storage: Storage, day: str) -> set[str]:
    """Products whose latest catalog event up to `day` is a removal (not added again since).

    Rebuilt from the daily records (removals, new_products) alone, independently of the
    index's own live sets, so that a check can hold one against the other.
    """
    removed: set[str] = set()
    for d in (d for d in removal_days(storage) if d <= day):
        gone = _read(storage, removals_key(d))
        added = _read(storage, asset_value_key(["new_products"], d))
        if gone is not None:
            removed |= set(gone["product_id"].astype(str))
        if added is not None:
            removed -= set(added["product_id"].astype(str))
    return removed


def day_report(storage: Storage, day: str, categories: Sequence[str]) -> dict[str, Any]:
    """Per category: new, indexed and quarantined counts with reasons; plus catalog-level rows.

    `unaccounted` lists products that are neither indexed nor quarantined (it should be empty).
    """
    import pandas as pd

    products = _read(storage, asset_value_key(["new_products"], day))
    if products is None:
        raise FileNotFoundError(f"{day} has not been materialised (no new_products record)")
    quarantined = {s: _read(storage, quarantine_key(day, s)) for s in QUARANTINE_STAGES}
    images_q = (
        quarantined["image"]
        if quarantined["image"] is not None
        else pd.DataFrame(
            columns=pd.Index(["product_id", "category", "reason", "detail", "image_url"])
        )
    )
    removals = _read(storage, removals_key(day))
    per_category: dict[str, Any] = {}
    for cat in categories:
        new_ids = set(products.loc[products["category"] == cat, "product_id"])
        emb = _read(storage, asset_value_key([cat, "embeddings"], day))
        indexed = set() if emb is None else set(emb["product_id"])
        q = pd.DataFrame(images_q[images_q["category"] == cat])
        index_count = _read(storage, asset_value_key([cat, "annoy_index"], day))
        per_category[cat] = {
            "new": len(new_ids),
            "indexed": len(indexed & new_ids),
            "quarantined": len(q),
            "reasons": {str(k): int(v) for k, v in q["reason"].value_counts().items()},
            "quarantined_items": pd.DataFrame(
                q[["product_id", "image_url", "reason", "detail"]]
            ).to_dict("records"),
            "unaccounted": sorted(new_ids - indexed - set(q["product_id"])),
            "index_count_to_date": None if index_count is None else len(index_count),
            "removed": 0 if removals is None else int((removals["category"] == cat).sum()),
        }
    rows_q = quarantined["catalog"]
    catalog_rows = [] if rows_q is None else rows_q.to_dict("records")
    return {"date": day, "categories": per_category, "catalog_quarantine": catalog_rows}


def format_report(report: dict[str, Any]) -> str:
    lines = [
        f"Report for {report['date']}",
        f"{'category':<12}{'new':>6}{'indexed':>9}{'quarant.':>10}{'removed':>9}{'to date':>9}"
        "  reasons",
    ]
    for cat, r in report["categories"].items():
        reasons = ", ".join(f"{k}={v}" for k, v in r["reasons"].items())
        to_date = "-" if r["index_count_to_date"] is None else r["index_count_to_date"]
        lines.append(
            f"{cat:<12}{r['new']:>6}{r['indexed']:>9}{r['quarantined']:>10}"
            f"{r.get('removed', 0):>9}{to_date:>9}  {reasons}"
        )
        for item in r["quarantined_items"]:
            lines.append(f"    - {item['product_id']}: {item['reason']} ({item['image_url']})")
        if r["unaccounted"]:
            lines.append(f"    ! unaccounted: {r['unaccounted']}")
    rows = report["catalog_quarantine"]
    lines.append(f"catalog rows quarantined: {len(rows)}")
    for row in rows:
        lines.append(
            f"    - {row['product_id'] or '(no id)'} [{row['category']}]: "
            f"{row['reason']} {row['detail']}"
        )
    return "\n".join(lines)
