"""Re-indexing a category with new models, without ever serving a mixed index (Dagster-free).

A model rollout re-detects and re-embeds every live product of a category, up to a day that has
a live set, from the images ingestion stored (`product_images`), then commits in this order:
1. the new vectors, as one snapshot table beside the daily embeddings partitions:
   `assets/<category>/embeddings/<day>.reindex-<digest of both models>.parquet`. A live set
   row names it in its `day` column, so the vector loader and retention treat it like any
   embeddings partition;
2. a version built from the snapshot alone (one embedder, one detector), verified, then CURRENT;
3. the day's live set rewritten to point at the snapshot, with the new embedder and detector
   identities. The next daily run builds on it, so its model checks pass.
A new detector alone needs this too: other boxes give other crops, so other vectors.
Until step 2 the old version keeps serving. Detection and embedding run in resumable chunks
under `work/<day>/<category>/reindex-*`; a retry of the same run recomputes only missing chunks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from image_search_assets.core import layout
from image_search_assets.core.index import annoy_index as annoy
from image_search_assets.core.index import live_set
from image_search_assets.core.index.vectors import load_vectors
from image_search_assets.core.inference.detect_embed import ModelParams, Work, detect_and_embed
from image_search_assets.core.inference.stages import Replicas
from image_search_assets.core.layout import asset_value_key
from image_search_assets.core.storage import Storage

SNAPSHOT_MARK = ".reindex-"


class ReindexError(RuntimeError):
    """The category cannot be re-indexed as asked; the message says what to fix."""


@dataclass(frozen=True)
class Plan:
    """What a re-index of `category` up to `day` works on: the live set and its images."""

    category: str
    day: str
    live: pd.DataFrame  # the day's live set (live_set.LIVE_COLUMNS)
    images: pd.DataFrame  # one product_images row per live product, in live-set order
    later_days: tuple[str, ...]  # days after `day` that have a live set (built on old models)


@dataclass(frozen=True)
class Result:
    snapshot: str  # the `day` value the live set's rows now name
    embedder: str  # the identity (JSON) every vector of the new version comes from
    detector: str  # the identity (JSON) of the detector every box of it comes from
    count: int
    previous_embedders: list[str]
    manifest: dict[str, Any] | None  # None when the live set is empty: nothing to publish
    chunks_computed: int
    chunks_reused: int


def live_days(storage: Storage, category: str) -> list[str]:
    """Days that have a live set (`annoy_index` value), oldest first."""
    path = layout.live_set_path(category)
    return layout.partitions_in(storage.list(layout.asset_prefix(path)), path)


def plan(storage: Storage, category: str, day: str | None = None) -> Plan:
    """The re-index of `category` up to `day` (default: its latest live set)."""
    days = live_days(storage, category)
    if not days:
        raise ReindexError(
            f"{category} has no index yet: nothing to re-index, run the daily job instead"
        )
    day = day or days[-1]
    if day not in days:
        raise ReindexError(
            f"{category} has no live set for {day} (kept: {days[0]} .. {days[-1]}); re-index up "
            "to a kept day, normally the latest"
        )
    live = storage.read_parquet(asset_value_key([category, "annoy_index"], day))
    live = live_set.with_model_columns(live)[list(live_set.LIVE_COLUMNS)]
    live = pd.DataFrame(live).astype(str).reset_index(drop=True)
    parts = []
    for added_on, rows in live.groupby("added_on", sort=True):
        key = asset_value_key(["product_images"], str(added_on))
        if not storage.exists(key):
            raise ReindexError(
                f"product_images for {added_on} is gone ({storage.uri(key)}), and {len(rows)} "
                f"live {category} products have their image there; re-materialise it first"
            )
        stored = storage.read_parquet(key).drop_duplicates("product_id", keep="last")
        found = stored.set_index("product_id").reindex(rows["product_id"])
        missing = found.index[found["image_key"].isna()].tolist()
        if missing:
            raise ReindexError(
                f"product_images for {added_on} has no image of {missing[:5]} ({len(missing)} "
                f"live {category} products); re-materialise product_images for {added_on}"
            )
        parts.append(found.reset_index().set_axis(rows.index))
    images = pd.concat(parts).sort_index() if parts else pd.DataFrame()
    later = tuple(d for d in days if d > day)
    return Plan(category, day, live, images, later)


def snapshot_name(day: str, embedder: str, detector: str = live_set.UNKNOWN) -> str:
    """The snapshot's `day` value: the day plus a digest of the models, so a later re-index with
    another embedder or detector never overwrites vectors that a committed live set names."""
    models = embedder if detector == live_set.UNKNOWN else f"{embedder}\n{detector}"
    return f"{day}{SNAPSHOT_MARK}{hashlib.sha256(models.encode()).hexdigest()[:12]}"


def reindex(
    storage: Storage,
    target: Plan,
    detector: Replicas,
    embedder: Replicas,
    *,
    class_ids: Sequence[int],
    params: ModelParams,
    chunk_size: int,
    run_scope: str,
    index_options: Mapping[str, Any],
    log: Callable[[str], object] = print,
) -> Result:
    """Re-detects and re-embeds `target`'s live products, as the daily steps do, then commits
    (see module doc). `index_options` are annoy_index.publish's (metric, n_trees,
    recall_sample, retention).
    """
    name, day = target.category, target.day
    # The identities as the daily steps write them, so the model checks compare equals.
    embedder_id = live_set.identity_json(embedder.primary.identity)
    detector_id = live_set.identity_json(detector.primary.identity)
    previous = live_set.embedders(target.live)
    snapshot = snapshot_name(day, embedder_id, detector_id)
    if target.live.empty:
        return Result(snapshot, embedder_id, detector_id, 0, previous, None, 0, 0)
    work = Work(storage, day, name, run_scope, chunk_size, log, reindex=True)
    detected, embedded = detect_and_embed(
        target.images, detector, embedder, class_ids, params, work
    )
    vectors_table = embedded.table
    if set(vectors_table["product_id"]) != set(target.live["product_id"]):
        raise ReindexError(f"{name}: re-embedding lost products; nothing was committed")
    storage.write_parquet(asset_value_key([name, "embeddings"], snapshot), vectors_table)
    live = target.live.assign(day=snapshot, embedder=embedder_id, detector=detector_id)
    vectors = load_vectors(storage, name, live, loaded={snapshot: vectors_table})
    ids = live["product_id"].tolist()
    manifest = annoy.publish(
        storage, name, day, ids, vectors, models=live_set.manifest_models(live), **index_options
    )
    storage.write_parquet(asset_value_key([name, "annoy_index"], day), live)
    runs = [r.chunks for r in (detected, embedded) if r.chunks is not None]
    return Result(
        snapshot,
        embedder_id,
        detector_id,
        len(live),
        previous,
        manifest,
        sum(len(r.computed) for r in runs),
        sum(len(r.reused) for r in runs),
    )
