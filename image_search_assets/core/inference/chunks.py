"""Resumable GPU work: a stage's items processed in chunks persisted as they finish (Dagster-free).

Per (day, category, stage), under its work prefix (core/layout.py): one file of output rows per
finished chunk, and a manifest {"chunks": {id: {...}}, "batch": {...}}. A chunk counts as
finished when the manifest records it with the fingerprint of its inputs (the items' content,
the model, the parameters and the run scope) and its file exists. An attempt
that dies (`kill -9`, preemption, OOM) is retried and recomputes only what is missing; changed
inputs, a changed model or a new run change the fingerprint, so stale chunks are never reused.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from image_search_assets.core.inference.gpu_memory import (
    GpuMemoryExhausted,
    is_cuda_oom,
    release_gpu_memory,
)
from image_search_assets.core.layout import chunk_key, work_manifest_key
from image_search_assets.core.storage import Storage


def chunk_id(n: int) -> str:
    return f"chunk-{n:05d}"


@dataclass(frozen=True)
class ChunkedRun:
    table: pd.DataFrame
    computed: tuple[str, ...]  # chunk ids this attempt computed
    reused: tuple[str, ...]  # chunk ids an earlier attempt had finished
    batch_size: int  # the batch size this attempt ran with


def fingerprint(part: pd.DataFrame, key_columns: Sequence[str], salt: str) -> str:
    """Content hash of a chunk's inputs: the key columns' values, in order, plus the salt."""
    rows = part[list(key_columns)].astype(str).to_numpy().tolist()
    return hashlib.sha256(json.dumps([salt, rows]).encode()).hexdigest()


def salt_of(**params: Any) -> str:
    """A stable salt from the model identity and parameters that shape a stage's output."""
    return json.dumps(params, sort_keys=True, default=str)


def run_chunks(
    storage: Storage,
    prefix: str,
    items: pd.DataFrame,
    compute: Callable[[pd.DataFrame, int], pd.DataFrame],
    *,
    key_columns: Sequence[str],
    salt: str,
    chunk_size: int,
    batch_size: int,
    id_column: str = "product_id",
    on_chunk: Callable[[int], object] | None = None,
) -> ChunkedRun:
    """`compute(part, batch_size)` over `items` chunk by chunk, skipping finished chunks.

    Returns the chunks' outputs concatenated in input order; every item appears exactly once.
    On CUDA OOM the halved batch size is recorded before the error propagates, so the retry
    (a new process on k8s) runs smaller batches; at batch size 1 it becomes GpuMemoryExhausted.
    `on_chunk(items)` is called after each chunk, reused or computed (progress reporting).
    """
    if chunk_size < 1 or batch_size < 1:
        raise ValueError("chunk_size and batch_size must be >= 1")
    items = items.reset_index(drop=True)
    manifest = _read_manifest(storage, prefix)
    # A batch halved after an OOM holds for this stage run (same salt) only.
    halved = manifest.get("batch", {})
    batch = min(batch_size, int(halved["size"])) if halved.get("salt") == salt else batch_size
    done: dict[str, Any] = manifest.setdefault("chunks", {})
    parts, computed, reused = [], [], []
    for n, start in enumerate(range(0, len(items), chunk_size)):
        part, cid = items.iloc[start : start + chunk_size], chunk_id(n)
        fp, key = fingerprint(part, key_columns, salt), chunk_key(prefix, cid)
        if done.get(cid, {}).get("fingerprint") == fp and storage.exists(key):
            parts.append(storage.read_parquet(key))
            reused.append(cid)
            if on_chunk is not None:
                on_chunk(len(part))
            continue
        try:
            out = compute(part, batch)
        except Exception as exc:
            if not is_cuda_oom(exc):
                raise
            release_gpu_memory()
            if batch == 1:
                raise GpuMemoryExhausted(f"CUDA out of memory at batch size 1 ({cid})") from exc
            manifest["batch"] = {"salt": salt, "size": batch // 2}
            storage.write_json(work_manifest_key(prefix), manifest)
            raise
        storage.write_parquet(key, out)
        # The manifest is written after the chunk: a crash in between only recomputes it.
        done[cid] = {"fingerprint": fp, "items": len(out)}
        storage.write_json(work_manifest_key(prefix), manifest)
        parts.append(out)
        computed.append(cid)
        if on_chunk is not None:
            on_chunk(len(part))
    table = pd.concat(parts, ignore_index=True) if parts else compute(items.iloc[:0], batch)
    if table[id_column].tolist() != items[id_column].tolist():
        raise RuntimeError(f"{prefix}: chunk outputs do not match the inputs one to one")
    _drop_stale(storage, prefix, n_chunks=len(parts))
    return ChunkedRun(table, tuple(computed), tuple(reused), batch)


def _read_manifest(storage: Storage, prefix: str) -> dict[str, Any]:
    key = work_manifest_key(prefix)
    return storage.read_json(key) if storage.exists(key) else {}


def _drop_stale(storage: Storage, prefix: str, *, n_chunks: int) -> None:
    """Deletes chunk files past the current count, left by an earlier run with more items."""
    wanted = {chunk_key(prefix, chunk_id(n)) for n in range(n_chunks)}
    for key in storage.list(f"{prefix}/"):
        if key.endswith(".parquet") and key not in wanted:
            storage.delete(key)
