"""The one detect-then-embed sequence: boxes and vectors carry the identities of their models,
and a re-index keeps its chunks and progress apart from the daily steps'."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
from PIL import Image

from image_search_assets.core.config import ModelConfig
from image_search_assets.core.index import live_set
from image_search_assets.core.inference.detect_embed import (
    ModelParams,
    Work,
    detect_and_embed,
    embed,
)
from image_search_assets.core.inference.models import ModelSpec, load_detector, load_embedder
from image_search_assets.core.inference.stages import Replicas
from image_search_assets.core.ingest.fetch import FetchPolicy
from image_search_assets.core.ingest.store_images import fetch_images
from image_search_assets.core.ingest.url_rules import LOCAL_KINDS, UrlRules
from image_search_assets.core.storage import open_storage

DAY = "2026-11-01"
PARAMS = ModelParams(
    ModelConfig("ssdlite320_mobilenet_v3_large", input_size=160, batch_size=2),
    ModelConfig("resnet18", input_size=64, batch_size=2),
)


def _images(tmp_path, storage) -> pd.DataFrame:
    rows = []
    for n, colour in enumerate([(200, 20, 20), (20, 200, 20), (20, 20, 200)]):
        buffer = io.BytesIO()
        Image.new("RGB", (48, 40), colour).save(buffer, format="PNG")
        (tmp_path / f"{n}.png").write_bytes(buffer.getvalue())
        rows.append(
            {"product_id": f"p{n}", "category": "tops", "image_url": str(tmp_path / f"{n}.png")}
        )
    policy = FetchPolicy(rules=UrlRules(LOCAL_KINDS))
    stored = fetch_images(
        pd.DataFrame(rows), storage, DAY, policy=policy, max_pixels=10**6, workers=1
    )
    return stored.table


def test_both_halves_stamp_model_identities_and_a_reindex_works_apart(tmp_path):
    storage = open_storage(str(tmp_path / "root"))
    images = _images(tmp_path, storage)
    spec = ModelSpec.from_config(PARAMS.detector, num_classes=4)
    detector = Replicas.of(load_detector(spec, "cpu"))
    embedder = Replicas.of(load_embedder(ModelSpec.from_config(PARAMS.embedder), "cpu"))
    logged: list[str] = []
    work = Work(storage, DAY, "tops", "run-1", chunk_size=2, log=logged.append, reindex=True)

    boxes, vectors = detect_and_embed(images, detector, embedder, (), PARAMS, work)

    detector_id = live_set.identity_json(detector.primary.identity)
    embedder_id = live_set.identity_json(embedder.primary.identity)
    assert set(boxes.table["detector"]) == {detector_id}
    assert vectors.table["product_id"].tolist() == ["p0", "p1", "p2"]
    assert set(vectors.table["embedder"]) == {embedder_id}
    assert set(vectors.table["detector"]) == {detector_id}
    assert np.stack(vectors.table["vector"].tolist()).shape[0] == 3
    assert storage.list(f"work/{DAY}/tops/reindex-detections/")  # apart from the daily chunks
    assert storage.list(f"work/{DAY}/tops/reindex-embeddings/")
    assert not storage.list(f"work/{DAY}/tops/detections/")
    assert any(line.startswith("tops re-detect") for line in logged)
    assert any(line.startswith("tops re-embed") for line in logged)

    # A daily embeddings step over an old partition's boxes (no detector recorded): unknown.
    daily = Work(storage, DAY, "tops", "run-2", chunk_size=2, log=logged.append)
    old = embed(boxes.table.drop(columns="detector"), embedder, PARAMS, daily)
    assert set(old.table["detector"]) == {live_set.UNKNOWN}
    assert storage.list(f"work/{DAY}/tops/embeddings/")
