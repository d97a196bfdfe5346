"""The live set: a day's index value names stored embedding rows, never copies vectors."""

import contextlib
import json
import os

import numpy as np
import pandas as pd
import pytest

from image_search_assets.core.index import annoy_index as annoy
from image_search_assets.core.index import live_set, retention
from image_search_assets.core.index.vectors import load_vectors
from image_search_assets.core.layout import asset_value_key
from image_search_assets.core.storage import LocalStorage

MODEL = json.dumps({"arch": "resnet18", "weights": "random", "dim": 8})
OTHER = json.dumps({"arch": "resnet50", "weights": "demo", "dim": 8})


class CountingStorage(LocalStorage):
    """Local storage that counts the bytes written and read, per key."""

    def __init__(self, root):
        super().__init__(root)
        self.written: dict[str, int] = {}
        self.read: dict[str, int] = {}

    def write_bytes(self, key, data):
        self.written[key] = self.written.get(key, 0) + len(data)
        super().write_bytes(key, data)

    def read_bytes(self, key):
        data = super().read_bytes(key)
        self.read[key] = self.read.get(key, 0) + len(data)
        return data

    def write_file(self, key, path):
        self.written[key] = self.written.get(key, 0) + os.path.getsize(path)
        super().write_file(key, path)

    def move_file(self, key, path):
        self.written[key] = self.written.get(key, 0) + os.path.getsize(path)
        super().move_file(key, path)

    @contextlib.contextmanager
    def local_copy(self, key):
        with super().local_copy(key) as path:
            self.read[key] = self.read.get(key, 0) + os.path.getsize(path)
            yield path


def _embeddings(ids, seed, dim=8, model=MODEL):
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(len(ids), dim)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return pd.DataFrame({"product_id": ids, "vector": list(v), "embedder": model})


def test_resent_products_move_to_the_later_day_and_removals_leave():
    d1 = live_set.advance(None, _embeddings(["a", "b", "c"], 1), "2026-11-01").live
    step = live_set.advance(d1, _embeddings(["b", "d"], 2), "2026-11-02", removed_ids={"c", "x"})
    d2 = step.live
    assert step.removed == {"c"}  # "x" was never live: it leaves nothing
    assert d2["product_id"].tolist() == ["a", "b", "d"]
    assert dict(zip(d2["product_id"], d2["day"], strict=True)) == {
        "a": "2026-11-01",
        "b": "2026-11-02",
        "d": "2026-11-02",
    }
    # Re-added the same day it was removed (the catalog let the add win): live.
    readded = live_set.advance(d2, _embeddings(["a"], 3), "2026-11-03", removed_ids={"a"})
    d3 = readded.live
    assert readded.removed == frozenset()
    assert sorted(d3["product_id"]) == ["a", "b", "d"]
    again = live_set.advance(d2, _embeddings(["a"], 3), "2026-11-03", removed_ids={"a"}).live
    assert again.equals(d3)  # the same inputs, the same value


def test_vectors_are_read_from_the_partitions_the_live_set_names(tmp_path):
    store = LocalStorage(tmp_path)
    e1, e2 = _embeddings(["a", "b", "c"], 1), _embeddings(["b"], 2)
    store.write_parquet(asset_value_key(["tops", "embeddings"], "2026-11-01"), e1)
    live = live_set.advance(live_set.advance(None, e1, "2026-11-01").live, e2, "2026-11-02").live
    got = load_vectors(store, "tops", live, loaded={"2026-11-02": e2})
    assert live["product_id"].tolist() == ["a", "c", "b"]
    want = np.stack([e1["vector"][0], e1["vector"][2], e2["vector"][0]])
    np.testing.assert_array_equal(got, want)
    store.delete(asset_value_key(["tops", "embeddings"], "2026-11-01"))
    with pytest.raises(live_set.LiveSetError, match="tops/embeddings for 2026-11-01 is gone"):
        load_vectors(store, "tops", live, loaded={"2026-11-02": e2})


def test_a_model_change_is_refused_with_both_identities_and_the_reindex_command():
    d1 = live_set.advance(None, _embeddings(["a"], 1), "2026-11-01").live
    live_set.require_one_model(d1, _embeddings(["b"], 2), category="tops", day="2026-11-02")
    with pytest.raises(live_set.ModelChangeError) as e:
        live_set.require_one_model(
            d1, _embeddings(["b"], 2, model=OTHER), category="tops", day="2026-11-02"
        )
    message = str(e.value)
    assert "resnet50[demo, dim 8]" in message and "resnet18[random, dim 8]" in message
    assert "image-search reindex --category tops" in message


DET = json.dumps({"arch": "ssdlite", "weights": "demo", "sha256": "a" * 64, "input_size": 320})
DET2 = json.dumps({"arch": "ssdlite", "weights": "demo", "sha256": "b" * 64, "input_size": 320})


def test_the_configured_models_are_checked_against_the_previous_live_set_before_gpu_work():
    d1 = live_set.advance(None, _embeddings(["a"], 1).assign(detector=DET), "2026-11-01").live
    assert live_set.detectors(d1) == [DET] and live_set.embedders(d1) == [MODEL]
    kw = {"category": "tops", "day": "2026-11-02"}
    assert live_set.check_configured(d1, MODEL, DET, **kw) == []
    assert live_set.check_configured(None, OTHER, DET2, **kw) == []  # the first day
    with pytest.raises(live_set.ModelChangeError) as e:  # a new checkpoint under the same name
        live_set.check_configured(d1, MODEL, DET2, **kw)
    message = str(e.value)
    assert "detector" in message and "sha256 aaaaaaaaaaaa" in message
    assert "sha256 bbbbbbbbbbbb" in message and "image-search reindex --category tops" in message
    with pytest.raises(live_set.ModelChangeError, match="embedder"):
        live_set.check_configured(d1, OTHER, DET, **kw)


def test_a_live_set_written_before_detectors_were_recorded_reads_as_unknown(tmp_path):
    store = LocalStorage(tmp_path)
    old = live_set.advance(None, _embeddings(["a", "b"], 1), "2026-11-01").live.drop(
        columns="detector"
    )
    store.write_parquet(asset_value_key(["tops", "annoy_index"], "2026-11-01"), old)
    stored = live_set.stored_models(store, "tops", "2026-11-01")
    assert stored is not None and stored.to_dict("records") == [
        {"embedder": MODEL, "detector": live_set.UNKNOWN}
    ]
    assert live_set.stored_models(store, "tops", "2026-10-31") is None
    # Unknown cannot be compared: a warning says so; the embedder is still checked.
    (note,) = live_set.check_configured(stored, MODEL, DET, category="tops", day="2026-11-02")
    assert "does not record its detector" in note
    with pytest.raises(live_set.ModelChangeError, match="embedder"):
        live_set.check_configured(stored, OTHER, DET, category="tops", day="2026-11-02")
    # The next day's live set carries on, old rows unknown, new rows recorded.
    d2 = live_set.advance(old, _embeddings(["c"], 2).assign(detector=DET), "2026-11-02").live
    assert list(d2.columns) == list(live_set.LIVE_COLUMNS)
    assert dict(zip(d2["product_id"], d2["detector"], strict=True)) == {"a": "", "b": "", "c": DET}
    live_set.require_one_model(old, _embeddings(["c"], 2).assign(detector=DET), **KW)
    assert live_set.manifest_models(d2) == {
        "embedders": [MODEL],
        "detectors": [DET],
        "detector_unrecorded_rows": 2,
    }
    with pytest.raises(live_set.ModelChangeError, match="detector"):
        live_set.require_one_model(d2, _embeddings(["d"], 3).assign(detector=DET2), **KW)


KW = {"category": "tops", "day": "2026-11-02"}


def test_a_day_writes_its_vectors_once_however_many_days_came_before(tmp_path):
    """Bytes written per day stay within 1.2 x (new vectors + .ann + small manifests)."""
    store = CountingStorage(tmp_path)
    n0, change, dim = 4000, 40, 64  # 1% a day
    live = None
    for n, day in enumerate(["2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04"]):
        ids = [f"p{i}" for i in range(n0)] if n == 0 else [f"p{i}" for i in range(n * change)]
        emb = _embeddings(ids, n, dim)
        store.written.clear()
        store.read.clear()
        store.write_parquet(asset_value_key(["tops", "embeddings"], day), emb)
        new_vectors = sum(store.written.values())
        live = live_set.advance(live, emb, day, removed_ids={f"p{n0 - 1 - n}"}).live
        store.write_parquet(asset_value_key(["tops", "annoy_index"], day), live)
        vectors = load_vectors(store, "tops", live, loaded={day: emb})
        annoy.publish(
            store,
            "tops",
            day,
            live["product_id"].tolist(),
            vectors,
            metric="angular",
            n_trees=2,
            models={"embedders": live_set.embedders(live)},
            recall_sample=10,
        )
        retention.prune_category(store, "tops", day, keep_days=2)
        ann = sum(v for k, v in store.written.items() if k.endswith("index.ann"))
        manifests = (
            sum(v for k, v in store.written.items() if k.endswith((".json", "ids.parquet")))
            + store.written[asset_value_key(["tops", "annoy_index"], day)]
        )
        assert sum(store.written.values()) <= 1.2 * (new_vectors + ann + manifests)
        if n:  # the live set is ids only: a fraction of the vectors it points at
            assert manifests < 0.2 * len(live) * dim * 4
            # Read: the vectors the build needs (older partitions), the .ann back once for
            # verification, and small manifests.
            older = sum(v for k, v in store.read.items() if "/embeddings/" in k)
            other = sum(store.read.values()) - older
            assert other <= 2.2 * ann + manifests


def test_retention_prunes_old_live_sets_work_chunks_and_unreferenced_embeddings(tmp_path):
    store = LocalStorage(tmp_path)
    days = [f"2026-11-0{i}" for i in range(1, 6)]
    live = None
    for n, day in enumerate(days):
        emb = _embeddings(["a", "b"] if n == 0 else ["b"], n)  # b is re-sent every day
        store.write_parquet(asset_value_key(["tops", "embeddings"], day), emb)
        live = live_set.advance(live, emb, day).live
        store.write_parquet(asset_value_key(["tops", "annoy_index"], day), live)
        store.write_bytes(f"work/{day}/tops/embeddings/chunk-00000.parquet", b"x")
        store.write_bytes(f"work/{day}/pants/embeddings/chunk-00000.parquet", b"x")
    pruned = retention.prune_category(store, "tops", days[-1], keep_days=2)
    assert pruned.live_sets == days[:2] and pruned.work_days == days[:2]
    # Day 1 still holds "a"'s live vector; days 2 (only b, re-sent since) is garbage.
    assert pruned.embeddings == [days[1]]
    assert store.exists(asset_value_key(["tops", "embeddings"], days[0]))
    assert store.exists(asset_value_key(["tops", "annoy_index"], days[2]))
    assert store.list("work/2026-11-01/pants/")  # another category's work is its own
    assert not store.list("work/2026-11-01/tops/")
