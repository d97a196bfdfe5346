"""A live set's vectors, read from the embeddings partitions its rows name (core/index/live_set.py).

The index step and the asset checks read them here: one partition decoding while the next is
read, today's partition taken from memory, and a clear error naming a partition that is gone.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pandas as pd

from image_search_assets.core.index.live_set import LiveSetError
from image_search_assets.core.layout import asset_value_key
from image_search_assets.core.storage import Storage
from image_search_assets.core.storage.errors import naming

LOAD_THREADS = 2  # embeddings partitions decoded at once


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
    groups = [(str(day), rows) for day, rows in live.groupby("day", sort=True)]
    stored = [day for day, _ in groups if day not in loaded]
    for day, rows in groups:
        key = asset_value_key([category, "embeddings"], day)
        if day in stored and not storage.exists(key):
            raise LiveSetError(
                f"{category}/embeddings for {day} is gone, and the live set still points at "
                f"{len(rows)} of its vectors ({storage.uri(key)}); re-materialise "
                f"{category}/embeddings for {day}, then every later annoy_index"
            )
    out: np.ndarray | None = None
    with ThreadPoolExecutor(LOAD_THREADS) as pool:
        # Arrow decodes a partition's vector column on one core (the partition's time); the
        # next one decodes meanwhile, one ahead, so that no more than two are in memory.
        ahead: deque[Future] = deque()
        keys = iter([asset_value_key([category, "embeddings"], day) for day in stored])
        for day, rows in groups:
            while len(ahead) < LOAD_THREADS and (key := next(keys, None)) is not None:
                ahead.append(pool.submit(_stored_vectors, storage, key))
            table = loaded.get(day)
            if table is not None:
                ids, matrix = table["product_id"].astype(str), _matrix(table["vector"].tolist())
            else:
                ids, matrix = ahead.popleft().result()
            wanted = rows["product_id"]
            found = pd.Index(ids).get_indexer(wanted)
            if (found < 0).any():
                missing = wanted[found < 0].tolist()
                raise LiveSetError(
                    f"{category}/embeddings for {day} no longer holds {missing[:5]} "
                    f"({len(missing)} in all) that the live set points at; re-materialise the "
                    f"{category} annoy_index from {day} on"
                )
            if out is None:
                out = np.empty((len(live), matrix.shape[1]), np.float32)
            out[rows.index.to_numpy()] = matrix[found]
    assert out is not None
    import pyarrow as pa

    # Arrow's allocator keeps the decoded partitions' memory for reuse; the index build that
    # follows needs it more (at 100k items: 70 MB, a seventh of vectors + index).
    pa.default_memory_pool().release_unused()
    return out


def _matrix(vectors: list) -> np.ndarray:
    return np.stack(vectors).astype(np.float32, copy=False)


def _stored_vectors(storage: Storage, key: str) -> tuple[list[str], np.ndarray]:
    """An embeddings partition's ids and vectors, read column-wise with Arrow.

    The vector column is one list array of equal-length rows, so its flat values reshape into
    the (n, d) matrix without a Python object per row: at 100k rows that per-row path was a
    third of the index step's time.
    """
    import pyarrow.parquet as pq

    # Read from a file, not a bytes object: a partition's bytes (15 MB at 100k items to date)
    # would stay behind in the interpreter's heap after it is freed, under the index build.
    with naming(storage, "reading Parquet", key), storage.local_copy(key) as path:
        table = pq.read_table(path, columns=["product_id", "vector"])
    ids = [str(i) for i in table.column("product_id").to_pylist()]
    column = table.column("vector").combine_chunks()
    if len(column) == 0:
        return ids, np.zeros((0, 0), np.float32)
    lengths = column.value_lengths().to_numpy(zero_copy_only=False)  # type: ignore[union-attr]
    if lengths.min() != lengths.max():
        raise LiveSetError(f"{storage.uri(key)} holds vectors of unequal length")
    flat = column.flatten().to_numpy(zero_copy_only=False)  # type: ignore[union-attr]
    return ids, flat.reshape(len(column), -1).astype(np.float32, copy=False)
