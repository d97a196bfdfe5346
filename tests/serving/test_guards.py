"""The service's guards below HTTP: the image-memory budget, the embedder check, CURRENT's pin."""

from __future__ import annotations

import io
import threading
import time

import pytest
from PIL import Image

from image_search_assets.core.index.annoy_index import publish
from image_search_assets.core.ingest.images import ItemRejected, decode_cost
from image_search_assets.core.storage import LocalStorage
from image_search_assets.serving.budget import EMBED_BYTES_PER_PIXEL, Busy, QueryBudget, query_cost
from image_search_assets.serving.reader import IndexReader, ModelMismatch
from tests.serving.conftest import CATEGORIES, day_ids, vectors_for

EMBEDDER = '{"arch": "resnet18", "dim": 16}'


def test_a_query_costs_its_decode_and_embedding_judged_from_the_header():
    buf = io.BytesIO()
    Image.new("RGB", (300, 200)).save(buf, "JPEG")
    assert query_cost(buf.getvalue()) == decode_cost("RGB", (300, 200)) + 60_000 * (
        EMBED_BYTES_PER_PIXEL
    )
    assert query_cost(b"not an image") == 0  # decode_image rejects it with its own reason


def test_the_budget_waits_then_answers_busy_and_refuses_what_can_never_fit():
    budget = QueryBudget(100)
    with budget.reserve_within(60, wait_s=1):
        started = time.monotonic()
        with pytest.raises(Busy) as busy, budget.reserve_within(50, wait_s=0.3):
            pass
        assert 0.3 <= time.monotonic() - started < 2 and busy.value.retry_after_s >= 1
        with budget.reserve_within(40, wait_s=0):  # what fits beside it goes in at once
            assert budget.in_use == 100
    freed = threading.Timer(0.2, lambda: held.__exit__(None, None, None))
    held = budget.reserve_within(100, wait_s=0)
    held.__enter__()
    freed.start()
    with budget.reserve_within(10, wait_s=5):  # waits for the release, then fits
        assert budget.in_use == 10
    with pytest.raises(ItemRejected, match="budget 100"), budget.reserve_within(101, wait_s=5):
        pass
    assert budget.in_use == 0


@pytest.fixture
def reader(tmp_path):
    storage = LocalStorage(tmp_path / "storage")
    for category in CATEGORIES:
        ids = day_ids(category, "2026-11-01", 20)
        publish(
            storage,
            category,
            "2026-11-01",
            ids,
            vectors_for(ids),
            metric="angular",
            n_trees=2,
            models={"embedders": [EMBEDDER]},
            recall_sample=5,
        )
    with IndexReader(storage, CATEGORIES, cache_dir=tmp_path / "cache").start(
        background=False
    ) as reader:
        yield reader


def test_vectors_of_another_embedder_are_refused_on_the_versions_that_would_answer(reader):
    vector = vectors_for(["x"])[0]
    assert reader.embedder_refusals(EMBEDDER) == {}
    assert len(reader.similar_to_vector(vector, 3, embedder=EMBEDDER).neighbours) == 3
    other = '{"arch": "resnet50", "dim": 16}'
    refused = reader.embedder_refusals(other)
    assert set(refused) == set(CATEGORIES) and "resnet18" in refused["tops"]
    with pytest.raises(ModelMismatch) as mismatch:
        reader.similar_to_vector(vector, 3, ["pants"], embedder=other)
    assert set(mismatch.value.refused) == {"pants"} and other in str(mismatch.value)


def test_the_pin_of_current_is_reported_as_written(reader):
    storage = reader.storage
    assert reader.state("tops").pin is None
    pointer = storage.read_json("indexes/tops/CURRENT.json")
    pin = {"version": pointer["version"], "reason": "bad day", "pinned_at": "2026-11-02T01:00Z"}
    time.sleep(0.01)  # a new mtime: the generation a poll compares
    storage.write_json("indexes/tops/CURRENT.json", {**pointer, "pin": pin})
    reader.refresh()
    assert reader.state("tops").pin == pin and reader.state("pants").pin is None
