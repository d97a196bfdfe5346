"""The live set: which stored embedding rows a category's index holds on a day.

The `annoy_index` partition value is this small table, one row per live product, never the
vectors. A vector stays where the day's `embeddings` partition wrote it, so a day writes
only its own vectors plus a table of ids, and a re-sent product's row simply points at a later
partition. Columns:
    product_id   the product
    day          the embeddings partition holding its current vector (its image's day too),
                 or a re-index snapshot `<day>.reindex-<digest>` (core/index/reindex.py)
    added_on     the day its image was stored, the name the query page reads
    embedder     the identity (JSON) of the model that made the vector
    detector     the identity (JSON) of the model that chose the box it was cropped from; ""
                 (unknown) in rows and live sets written before it was recorded
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from image_search_assets.core.layout import asset_value_key
from image_search_assets.core.storage import Storage
from image_search_assets.core.storage.errors import naming

LIVE_COLUMNS = ("product_id", "day", "added_on", "embedder", "detector")
MODEL_COLUMNS = ("embedder", "detector")
UNKNOWN = ""  # a model identity that was not recorded


class LiveSetError(RuntimeError):
    """The live set and the stored embeddings disagree; a retry cannot fix it."""


class ModelChangeError(RuntimeError):
    """The day's vectors come from another model than the previous index's."""


def empty() -> pd.DataFrame:
    return pd.DataFrame(columns=pd.Index(LIVE_COLUMNS)).astype(str)


def identity_json(identity: Mapping[str, Any]) -> str:
    """A model identity as every stored row and manifest writes it, so equal models compare
    equal."""
    return json.dumps(dict(identity), sort_keys=True)


def with_model_columns(table: pd.DataFrame) -> pd.DataFrame:
    """`table` with every model column, a missing one (written before it existed) unknown."""
    missing = {c: UNKNOWN for c in MODEL_COLUMNS if c not in table.columns}
    return table.assign(**missing) if missing else table


def _column(table: pd.DataFrame, column: str) -> list[str]:
    if not len(table):
        return []
    values = with_model_columns(table)[column]
    return values.fillna(UNKNOWN).astype(str).tolist()


@dataclass(frozen=True)
class Advanced:
    """A day's live set and the products of the day before that left it by a removal."""

    live: pd.DataFrame
    removed: frozenset[str]


def advance(
    previous: pd.DataFrame | None,
    embeddings: pd.DataFrame,
    day: str,
    removed_ids: Iterable[str] = (),
) -> Advanced:
    """Day N's live set from day N-1's: re-sent products point at today, removals leave.

    The same inputs give the same table, so re-running a day changes nothing. A product is
    removed unless added again: one removed and re-added on the same day was resolved by the
    catalog (the later time wins), and if it is among today's embeddings it is live.
    """
    if previous is None:
        before = empty()
    else:
        before = pd.DataFrame(with_model_columns(previous)[list(LIVE_COLUMNS)])
    today = pd.DataFrame(
        {
            "product_id": embeddings["product_id"].astype(str),
            "day": day,
            "added_on": day,
            "embedder": _column(embeddings, "embedder"),
            "detector": _column(embeddings, "detector"),
        },
        columns=pd.Index(LIVE_COLUMNS),
    )
    gone = set(removed_ids) - set(today["product_id"])
    kept = before[~before["product_id"].isin(sorted(set(today["product_id"]) | gone))]
    live = pd.DataFrame(pd.concat([kept, today], ignore_index=True).astype(str))
    ids = pd.Series(live["product_id"])
    if not ids.is_unique:
        dup = ids[ids.duplicated()].tolist()[:5]
        raise LiveSetError(f"{day}: the day's embeddings hold product ids twice: {dup}")
    return Advanced(live, frozenset(gone & set(before["product_id"])))


def embedders(live: pd.DataFrame) -> list[str]:
    return sorted(set(_column(live, "embedder")))


def detectors(live: pd.DataFrame) -> list[str]:
    """The recorded detector identities; unknown ones (old rows) are not listed."""
    return sorted(set(_column(live, "detector")) - {UNKNOWN})


def manifest_models(live: pd.DataFrame) -> dict[str, Any]:
    """The `models` entry of a version's manifest built from `live`."""
    models: dict[str, Any] = {"embedders": embedders(live), "detectors": detectors(live)}
    unrecorded = _column(live, "detector").count(UNKNOWN)
    if unrecorded:
        models["detector_unrecorded_rows"] = unrecorded
    return models


def stored_models(storage: Storage, category: str, day: str) -> pd.DataFrame | None:
    """The distinct model identities of a stored live set (MODEL_COLUMNS, a missing column
    unknown), or None when the day has none. Reads the model columns only, not the ids."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    key = asset_value_key([category, "annoy_index"], day)
    if not storage.exists(key):
        return None
    with naming(storage, "reading Parquet", key):
        stored = pq.ParquetFile(pa.BufferReader(storage.read_bytes(key)))
        present = [c for c in MODEL_COLUMNS if c in stored.schema_arrow.names]
        table = stored.read(columns=present).to_pandas()
    return with_model_columns(table).drop_duplicates().reset_index(drop=True)


def check_configured(
    previous: pd.DataFrame | None, embedder: str, detector: str, *, category: str, day: str
) -> list[str]:
    """Raises ModelChangeError if the configured models differ from those the previous live set
    was built with; returns warnings for identities the previous one did not record.

    Runs before any GPU work of the day. A new detector alone gives other boxes, so other crops
    and vectors: it needs a re-index as much as a new embedder does.
    """
    if previous is None or previous.empty:
        return []
    warnings = []
    for role, configured in (("embedder", embedder), ("detector", detector)):
        before = set(_column(previous, role))
        if before - {UNKNOWN} - {configured}:
            raise _refusal(category, day, role, [configured], sorted(before))
        if UNKNOWN in before:
            warnings.append(
                f"{category} {day}: the index this day builds on does not record its {role} "
                f"(written before {role} identities were stored), so a {role} change cannot be "
                f"checked; `image-search reindex --category {category}` records it"
            )
    return warnings


def require_one_model(
    previous: pd.DataFrame | None, embeddings: pd.DataFrame, *, category: str, day: str
) -> None:
    """Raises ModelChangeError if today's vectors and the previous index's come from different
    embedders, or from boxes of different (recorded) detectors."""
    for role in MODEL_COLUMNS:
        today = sorted(set(_column(embeddings, role)))
        before = [] if previous is None else sorted(set(_column(previous, role)))
        known = set(today + before)
        if role == "detector":
            known.discard(UNKNOWN)  # not recorded: cannot tell
        if len(known) > 1:
            raise _refusal(category, day, role, today, before)


def _refusal(
    category: str, day: str, role: str, today: list[str], before: list[str]
) -> ModelChangeError:
    return ModelChangeError(
        f"{category} {day}: the day's {role} is {_names(today)}, and the index {day} builds on "
        f"was made with {_names(before)}. One index never mixes vector spaces (a new detector "
        "gives new boxes, so new vectors). To roll the new model out, re-index the category: "
        f"`image-search reindex --category {category}` (the current index keeps serving until it "
        f"finishes), then re-run {day}; or put the old model back in the config."
    )


def _names(identities: list[str]) -> str:
    shown = []
    for raw in identities:
        if raw == UNKNOWN:
            shown.append("(not recorded)")
            continue
        try:
            ident = json.loads(raw)
            extra = [f"dim {ident['dim']}"] if "dim" in ident else []
            extra += [f"sha256 {ident['sha256'][:12]}"] if "sha256" in ident else []
            extra += [f"{ident['input_size']}px"] if "input_size" in ident else []
            shown.append(f"{ident.get('arch')}[{', '.join([str(ident.get('weights')), *extra])}]")
        except (ValueError, AttributeError, TypeError):
            shown.append(raw)
    return " + ".join(shown) or "(none)"
