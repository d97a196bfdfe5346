"""Annoy publish: versioned, verified, pointer moved last, pruned; merge keeps ids unique."""

import numpy as np
import pytest

from image_search_assets.core.index import annoy_index as annoy
from image_search_assets.core.index import published, recall
from image_search_assets.core.storage import LocalStorage, Storage, file_sha256


def _unit(n, d=16, seed=0):
    v = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _publish(store, day, n, **kw):
    vectors = _unit(n, seed=n)
    ids = [f"p{i}" for i in range(n)]
    return annoy.publish(
        store,
        "tops",
        day,
        ids,
        vectors,
        metric="angular",
        n_trees=8,
        models={"embedder": "test"},
        **kw,
    ), vectors


def test_publish_writes_a_verified_version_and_moves_current(tmp_path):
    store = LocalStorage(tmp_path)
    manifest, vectors = _publish(store, "2026-11-01", 50)
    served = annoy.load_current(store, "tops")
    assert {**served.manifest, "served": manifest["served"]} == manifest
    assert manifest["served"] == {
        "moved": True,
        "reason": f"tops serves 2026-11-01 ({manifest['version']})",
        "version": manifest["version"],
    }
    assert manifest["count"] == 50 and manifest["dim"] == 16
    assert manifest["recall_at_10"] > 0.9
    assert set(manifest["sha256"]) == {"index.ann", "ids.parquet"}
    nearest = served.query_vector(vectors[7], k=1)
    assert nearest[0][0] == "p7" and nearest[0][1] == pytest.approx(0.0, abs=1e-3)


def test_prune_keeps_the_newest_versions_and_current(tmp_path):
    store = LocalStorage(tmp_path)
    for day in range(1, 6):
        manifest, _ = _publish(store, f"2026-11-0{day}", 10 + day, retention=2)
    versions = {k.split("/")[3] for k in store.list("indexes/tops/versions")}
    assert len(versions) == 2 and manifest["version"] in versions
    assert annoy.load_current(store, "tops").manifest["count"] == 15


def test_a_publish_bounds_its_recall_sample_and_records_it(tmp_path):
    manifest, _ = _publish(LocalStorage(tmp_path), "2026-11-01", 50)
    assert manifest["recall_queries"] == 50  # a small index: every item it has
    assert annoy.publish_recall_queries(20_000, 576, 200) == 200
    assert annoy.publish_recall_queries(100_000, 576, 200) == 52
    assert annoy.publish_recall_queries(1_000_000, 576, 200) == recall.RECALL_MIN_QUERIES
    assert annoy.publish_recall_queries(1_000_000, 576, 20) == 20  # never above the setting


def test_load_current_without_any_publish_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no published index"):
        annoy.load_current(LocalStorage(tmp_path), "tops")


def test_recall_is_exact_for_brute_force_sized_search():
    vectors = _unit(200, seed=1)
    index = annoy.build_index(vectors, metric="angular", n_trees=4)
    assert annoy.recall_at_k(index, vectors, search_k=200 * 10 * 4) == pytest.approx(1.0)
    assert annoy.recall_at_k(index, vectors, search_k=20) < 1.0


def test_current_lists_what_it_replaced_and_retention_keeps_a_window_of_days(tmp_path, monkeypatch):
    store = LocalStorage(tmp_path)
    served = [_publish(store, f"2026-11-0{d}", 10 + d, retention=3)[0]["version"] for d in (1, 2)]

    def crash(*args):
        raise RuntimeError("died before the pointer moved")

    monkeypatch.setattr(store, "write_bytes_if_generation", crash)
    with pytest.raises(RuntimeError):
        _publish(store, "2026-11-03", 13, retention=3)
    monkeypatch.undo()
    (unserved,) = {k.split("/")[3] for k in store.list("indexes/tops/versions")} - set(served)
    served.append(_publish(store, "2026-11-04", 14, retention=3)[0]["version"])
    pointer = store.read_json("indexes/tops/CURRENT.json")
    assert pointer["version"] == served[2] and pointer["previous"] == [served[1], served[0]]
    # Three days kept: the crashed publish's version verified, so it is day 3's.
    assert {k.split("/")[3] for k in store.list("indexes/tops/versions")} == {
        served[1],
        unserved,
        served[2],
    }
    served.append(_publish(store, "2026-11-05", 15, retention=3)[0]["version"])
    assert {k.split("/")[3] for k in store.list("indexes/tops/versions")} == {
        unserved,
        *served[2:],
    }


def test_prune_leaves_versions_newer_than_current_alone(tmp_path):
    store = LocalStorage(tmp_path)
    _publish(store, "2026-11-01", 11, retention=1)
    in_flight = "2026-11-02.29991231T000000000000Z.abcdef"  # another publish, still writing
    store.write_bytes(f"indexes/tops/versions/{in_flight}/index.ann", b"partial")
    assert annoy.prune(store, "tops", keep=1) == []
    assert store.exists(f"indexes/tops/versions/{in_flight}/index.ann")


def test_retention_must_keep_the_current_version(tmp_path):
    with pytest.raises(ValueError, match="retention"):
        _publish(LocalStorage(tmp_path), "2026-11-01", 10, retention=0)


class WholeFileRefused(LocalStorage):
    """Local storage that refuses to move index.ann as one in-memory bytes object."""

    def read_bytes(self, key):
        assert not key.endswith("index.ann"), f"{key} read whole into memory"
        return super().read_bytes(key)

    def write_bytes(self, key, data):
        assert not key.endswith("index.ann"), f"{key} written from memory"
        super().write_bytes(key, data)


def test_publish_streams_the_index_file_and_its_checksum_is_the_stored_files(tmp_path):
    store = WholeFileRefused(tmp_path)
    manifest, vectors = _publish(store, "2026-11-01", 60)
    stored = store.uri(f"indexes/tops/versions/{manifest['version']}/index.ann")
    assert file_sha256(stored) == manifest["sha256"]["index.ann"]
    served = annoy.load_current(store, "tops")
    assert served.query_vector(vectors[3], k=1)[0][0] == "p3"


def test_an_upload_that_differs_from_the_built_file_is_refused_and_current_stays(
    tmp_path, monkeypatch
):
    store = LocalStorage(tmp_path)
    old, _ = _publish(store, "2026-11-01", 20)
    real = store.move_file

    def damaging(key, path):
        real(key, path)
        target = tmp_path / key
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0xFF
        store.write_bytes(key, bytes(data))  # another file now holds the object

    monkeypatch.setattr(store, "move_file", damaging)
    with pytest.raises(annoy.IndexVerificationError, match="checksum mismatch"):
        _publish(store, "2026-11-02", 30)
    assert store.read_json("indexes/tops/CURRENT.json")["version"] == old["version"]


def test_a_version_uploaded_elsewhere_is_hashed_again_from_the_stored_bytes(tmp_path, monkeypatch):
    """Storage that copies (an upload) gets no shortcut: verify hashes what was stored."""
    store = LocalStorage(tmp_path / "root")
    monkeypatch.setattr(store, "staged_path", Storage.staged_path.__get__(store))
    monkeypatch.setattr(store, "move_file", Storage.move_file.__get__(store))
    hashed = []
    real = annoy.file_sha256

    def recorded(p):
        hashed.append(p)
        return real(p)

    monkeypatch.setattr(annoy, "file_sha256", recorded)  # the build's file
    monkeypatch.setattr(published, "file_sha256", recorded)  # the one reader's check
    manifest, vectors = _publish(store, "2026-11-01", 40)
    stored = store.uri(f"indexes/tops/versions/{manifest['version']}/index.ann")
    assert [str(p) for p in hashed[1:]] == [stored]  # the build's file, then the stored one
    assert file_sha256(stored) == manifest["sha256"]["index.ann"]
    assert annoy.load_current(store, "tops").query_vector(vectors[5], k=1)[0][0] == "p5"


def test_exact_neighbours_in_item_blocks_match_one_block(monkeypatch):
    monkeypatch.setattr(recall, "EXACT_ITEM_BLOCK", 64)
    vectors = _unit(300, seed=2)
    queries = vectors[:37]
    got = annoy.exact_neighbours(vectors, queries, 10)
    sims = queries @ vectors.T
    want = np.argsort(-sims, axis=1)[:, :10]
    np.testing.assert_array_equal(got, want)
    assert annoy.exact_neighbours(vectors, queries[:0], 10).shape == (0, 10)
    np.testing.assert_array_equal(
        annoy.exact_neighbours(vectors[:4], queries, 10)[:, 0],
        [0, 1, 2, 3, *np.argmax(queries[4:] @ vectors[:4].T, axis=1)],
    )
