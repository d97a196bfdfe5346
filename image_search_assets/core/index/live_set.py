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
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import numpy as np
import pandas as pd

from image_search_assets.core.records import asset_value_key
from image_search_assets.core.storage import Storage

LIVE_COLUMNS = ("product_id", "day", "added_on", "embedder")


class LiveSetError(RuntimeError):
    """The live set and the stored embeddings disagree; a retry cannot fix it."""


class ModelChangeError(RuntimeError):
    """The day's vectors come from another model than the previous index's."""


def empty() -> pd.DataFrame:
    return pd.DataFrame(columns=pd.Index(LIVE_COLUMNS)).astype(str)


def advance(
    previous: pd.DataFrame | None,
    embeddings: pd.DataFrame,
    day: str,
    removed_ids: Iterable[str] = (),
) -> pd.DataFrame:
    """Day N's live set from day N-1's: re-sent products point at today, removals leave.

    The same inputs give the same table, so re-running a day changes nothing. A product
    removed and re-added on the same day was resolved by the catalog (the later time wins):
    if it is among today's embeddings it is live.
    """
    before = empty() if previous is None else pd.DataFrame(previous[list(LIVE_COLUMNS)])
    today = pd.DataFrame(
        {
            "product_id": embeddings["product_id"].astype(str),
            "day": day,
            "added_on": day,
            "embedder": embeddings["embedder"].astype(str) if len(embeddings) else [],
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
    return live


def embedders(live: pd.DataFrame) -> list[str]:
    return sorted(live["embedder"].unique().tolist())


def require_one_model(
    previous: pd.DataFrame | None, embeddings: pd.DataFrame, *, category: str, day: str
) -> None:
    """Raises ModelChangeError if today's embedder differs from the previous index's."""
    today = sorted(embeddings["embedder"].astype(str).unique().tolist()) if len(embeddings) else []
    before = [] if previous is None or previous.empty else embedders(previous)
    mixed = sorted(set(before) | set(today))
    if len(mixed) <= 1:
        return
    raise ModelChangeError(
        f"{category} {day}: the day's vectors come from embedder {_names(today)}, the index to "
        f"{day} holds vectors of {_names(before)}. One index never mixes vector spaces. To roll "
        f"the new model out, re-index the category: `image-search reindex --category "
        f"{category}` (the current index keeps serving until it finishes), then re-run {day}; "
        "or put the old model back in the config."
    )


def _names(identities: list[str]) -> str:
    shown = []
    for raw in identities:
        try:
            ident = json.loads(raw)
            shown.append(f"{ident.get('arch')}[{ident.get('weights')}, dim {ident.get('dim')}]")
        except (ValueError, AttributeError):
            shown.append(raw)
    return " + ".join(shown) or "(none)"


def load_vectors(
    storage: Storage,
    category: str,
    live: pd.DataFrame,
    *,
    loaded: dict[str, pd.DataFrame] | None = None,
) -> np.ndarray:
    """The live set's vectors, in its row order, read from the embeddings partitions it names.

    `loaded` holds partitions already in memory (today's), keyed by day, so they are not read
    back. Raises LiveSetError naming the partition when a referenced row is gone.
    """
    if live.empty:
        return np.zeros((0, 0), np.float32)
    live = live.reset_index(drop=True)
    loaded = loaded or {}
    out: np.ndarray | None = None
    for day, rows in live.groupby("day", sort=True):
        day = str(day)
        table = loaded.get(day)
        if table is not None:
            ids, matrix = table["product_id"].astype(str), _matrix(table["vector"].tolist())
        else:
            key = asset_value_key([category, "embeddings"], day)
            if not storage.exists(key):
                raise LiveSetError(
                    f"{category}/embeddings for {day} is gone, and the live set still points at "
                    f"{len(rows)} of its vectors ({storage.uri(key)}); re-materialise "
                    f"{category}/embeddings for {day}, then every later annoy_index"
                )
            ids, matrix = _stored_vectors(storage, key)
        position = pd.Series(np.arange(len(ids)), index=pd.Index(ids))
        wanted = rows["product_id"]
        missing = wanted[~wanted.isin(list(ids))].tolist()
        if missing:
            raise LiveSetError(
                f"{category}/embeddings for {day} no longer holds {missing[:5]} "
                f"({len(missing)} in all) that the live set points at; re-materialise the "
                f"{category} annoy_index from {day} on"
            )
        block = matrix[position.loc[wanted].to_numpy()]
        if out is None:
            out = np.empty((len(live), block.shape[1]), np.float32)
        out[live.index.get_indexer(rows.index)] = block
    assert out is not None
    return out


def _matrix(vectors: list) -> np.ndarray:
    return np.stack(vectors).astype(np.float32, copy=False)


def _stored_vectors(storage: Storage, key: str) -> tuple[list[str], np.ndarray]:
    """An embeddings partition's ids and vectors, read column-wise with Arrow.

    The vector column is one list array of equal-length rows, so its flat values reshape into
    the (n, d) matrix without a Python object per row: at 100k rows that per-row path was a
    third of the index step's time.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(
        pa.BufferReader(storage.read_bytes(key)), columns=["product_id", "vector"]
    )
    ids = [str(i) for i in table.column("product_id").to_pylist()]
    column = table.column("vector").combine_chunks()
    if len(column) == 0:
        return ids, np.zeros((0, 0), np.float32)
    lengths = column.value_lengths().to_numpy(zero_copy_only=False)  # type: ignore[union-attr]
    if lengths.min() != lengths.max():
        raise LiveSetError(f"{storage.uri(key)} holds vectors of unequal length")
    flat = column.flatten().to_numpy(zero_copy_only=False)  # type: ignore[union-attr]
    return ids, flat.reshape(len(column), -1).astype(np.float32, copy=False)
