"""Catalog reading, validation and day bucketing (the contract: docs/configuration.md)."""

from __future__ import annotations

import io
import posixpath
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd

REQUIRED_COLUMNS = ("product_id", "category", "image_url", "added_at")
QUARANTINE_COLUMNS = ("product_id", "category", "image_url", "stage", "reason", "detail")
# Optional: the moment a product leaves the catalog (sold out, discontinued).
REMOVED_AT = "removed_at"
REMOVAL_COLUMNS = ("product_id", "category", "removed_at")


class CatalogSchemaError(ValueError):
    """The catalog as a whole violates the contract; retrying cannot help."""


@dataclass(frozen=True)
class CatalogDay:
    """The day's valid rows, the rows quarantined with a reason, and the day's removals."""

    products: pd.DataFrame
    quarantined: pd.DataFrame
    removed: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=pd.Index(REMOVAL_COLUMNS)).astype(str)
    )


def quarantine_frame(records: Iterable[dict[str, str]] = ()) -> pd.DataFrame:
    return pd.DataFrame(list(records), columns=pd.Index(QUARANTINE_COLUMNS)).astype(str)


def read_catalog(uri: str, read_bytes: Callable[[str], bytes] | None = None) -> pd.DataFrame:
    """Reads a CSV or Parquet catalog as strings; gs:// needs `read_bytes`."""
    if uri.startswith("gs://"):
        if read_bytes is None:
            raise CatalogSchemaError(f"{uri}: reading gs:// needs a GCS reader")
        data = io.BytesIO(read_bytes(uri))
    else:
        path = Path(uri.removeprefix("file://"))
        if not path.is_file():
            raise CatalogSchemaError(
                f"catalog {path} does not exist; run `image-search demo` to create the sample "
                "catalog, or set `catalog` in the config (or IMAGE_SEARCH_CATALOG)"
            )
        data = path
    if uri.endswith(".parquet"):
        df = pd.read_parquet(data)
        df = df.astype({c: str for c in df.columns}).replace({"None": "", "nan": ""})
    else:
        df = pd.read_csv(data, dtype=str, keep_default_na=False)
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise CatalogSchemaError(
            f"catalog {uri} lacks required column(s) {missing}; it has {list(df.columns)}. "
            f"The contract requires {list(REQUIRED_COLUMNS)}."
        )
    return pd.DataFrame(df.apply(lambda col: col.str.strip()))


def local_time(value: str, tz: ZoneInfo) -> datetime | None:
    """`value` as an aware time in `tz`; naive values are taken in `tz`. None if unparseable."""
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        return None
    return ts.replace(tzinfo=tz) if ts.tzinfo is None else ts.astimezone(tz)


def local_day(added_at: str, tz: ZoneInfo) -> date | None:
    """The date `added_at` falls on in `tz`; naive values are taken in `tz`. None if unparseable."""
    ts = local_time(added_at, tz)
    return None if ts is None else ts.date()


def resolve_url(url: str, catalog_uri: str) -> str:
    """Resolves a relative image path against the catalog's own directory."""
    if "://" in url or url.startswith("/"):
        return url
    if catalog_uri.startswith("gs://"):
        return posixpath.join(posixpath.dirname(catalog_uri), url)
    return str((Path(catalog_uri.removeprefix("file://")).parent / url).resolve())


def select_day(
    catalog: pd.DataFrame,
    day: date,
    *,
    tz: ZoneInfo,
    categories: Iterable[str],
    catalog_uri: str,
) -> CatalogDay:
    """The rows added on `day` (in `tz`), validated; bad rows are quarantined with a reason.

    Rows whose date cannot be parsed belong to no day; they are reported with every day so that
    they stay visible until someone fixes them. A row whose `removed_at` falls on `day` removes
    its product from every index from that day on; when the same product is also added that
    day, the later of the two times wins (a tie removes).
    """
    known = set(categories)
    good: list[dict[str, str]] = []
    bad: list[dict[str, str]] = []
    removed: dict[str, tuple[datetime, dict[str, str]]] = {}
    added_at: dict[str, datetime] = {}
    seen: set[str] = set()
    for row in catalog.to_dict("records"):
        row = {k: str(v) for k, v in row.items()}
        removal = row.get(REMOVED_AT, "")
        removed_ts = local_time(removal, tz) if removal else None
        if removal and removed_ts is None:
            bad.append(_reject(row, "unparseable_removed_at", f"removed_at={removal!r}"))
            continue
        if removed_ts is not None and removed_ts.date() == day and row["product_id"]:
            pid = row["product_id"]
            if pid not in removed or removed[pid][0] < removed_ts:
                removed[pid] = (removed_ts, row)
        added_ts = local_time(row["added_at"], tz) if row["added_at"] else None
        if row["added_at"] and added_ts is None:
            bad.append(_reject(row, "unparseable_added_at", f"added_at={row['added_at']!r}"))
            continue
        if added_ts is not None and added_ts.date() != day:
            continue
        missing = [c for c in REQUIRED_COLUMNS if not row[c]]
        if missing:
            bad.append(_reject(row, f"missing_{missing[0]}", f"empty field(s) {missing}"))
        elif row["category"] not in known:
            bad.append(_reject(row, "unknown_category", f"category={row['category']!r}"))
        elif row["product_id"] in seen:
            bad.append(_reject(row, "duplicate_product_id", "an earlier row of the day has it"))
        else:
            seen.add(row["product_id"])
            assert added_ts is not None  # an empty added_at is a missing field above
            added_at[row["product_id"]] = added_ts
            row["image_url"] = resolve_url(row["image_url"], catalog_uri)
            good.append(row)
    for pid, ts in added_at.items():  # same-day add and removal: the later one wins
        if pid in removed and ts > removed[pid][0]:
            del removed[pid]
    good = [row for row in good if row["product_id"] not in removed]
    columns = list(dict.fromkeys([*REQUIRED_COLUMNS, *catalog.columns]))
    products = pd.DataFrame(good, columns=pd.Index(columns)).astype(str)
    removals = pd.DataFrame(
        [{c: row.get(c, "") for c in REMOVAL_COLUMNS} for _, row in removed.values()],
        columns=pd.Index(REMOVAL_COLUMNS),
    ).astype(str)
    return CatalogDay(
        products=products.reset_index(drop=True),
        quarantined=quarantine_frame(bad),
        removed=removals,
    )


def _reject(row: dict[str, str], reason: str, detail: str) -> dict[str, str]:
    return {
        "product_id": row.get("product_id", ""),
        "category": row.get("category", ""),
        "image_url": row.get("image_url", ""),
        "stage": "catalog",
        "reason": reason,
        "detail": detail,
    }
