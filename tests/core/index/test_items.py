"""Items written into an on-disk Annoy build as whole blocks are the items add_item writes."""

from typing import Any

import numpy as np
import pytest
from annoy import AnnoyIndex

from image_search_assets.core.index import annoy_index as annoy
from image_search_assets.core.index import items

N, DIM = 300, 8


def _vectors(seed=0):
    return np.random.default_rng(seed).normal(size=(N, DIM)).astype(np.float32)


def _nodes(path, layout) -> Any:  # records: fields by name
    return np.frombuffer(path.read_bytes()[: N * layout.itemsize], layout)


@pytest.mark.parametrize("metric", ["angular", "euclidean", "manhattan"])
def test_block_written_items_are_the_items_add_item_writes(tmp_path, metric):
    layout = items.layout(metric, DIM)
    assert layout is not None  # the layout matched what this Annoy writes
    vectors = _vectors()
    fast = annoy.build_index(vectors, metric=metric, n_trees=4, path=tmp_path / "fast.ann")
    slow = annoy.build_index(vectors, metric=metric, n_trees=4)
    slow.save(str(tmp_path / "slow.ann"))
    got, want = _nodes(tmp_path / "fast.ann", layout), _nodes(tmp_path / "slow.ann", layout)
    for field in layout.names or ():
        if field == "norm":  # v.v summed in another order: the same float within an ulp or two
            np.testing.assert_allclose(got[field], want[field], rtol=1e-6)
        else:
            np.testing.assert_array_equal(got[field], want[field])
    assert fast.get_n_items() == N
    everything = N * 4 * 10  # a search that visits every leaf: exact, whatever the trees
    for i in (0, 7, N - 1):
        assert fast.get_nns_by_item(i, 5, search_k=everything) == slow.get_nns_by_item(
            i, 5, search_k=everything
        )


def test_other_metrics_and_a_layout_annoy_does_not_write_take_add_items_path(tmp_path, monkeypatch):
    vectors = _vectors(1)
    assert items.layout("dot", DIM) is None
    dot = annoy.build_index(vectors, metric="dot", n_trees=2, path=tmp_path / "dot.ann")
    assert dot.get_n_items() == N
    real = items._dtype
    monkeypatch.setattr(items, "_dtype", lambda m, d: real("euclidean" if m == "angular" else m, d))
    items._layout_holds.cache_clear()
    try:
        assert items.layout("angular", DIM) is None  # the probe saw other bytes
        index = annoy.build_index(vectors, metric="angular", n_trees=2, path=tmp_path / "a.ann")
    finally:
        monkeypatch.undo()
        items._layout_holds.cache_clear()
    np.testing.assert_allclose(index.get_item_vector(5), vectors[5], rtol=1e-6)
    assert index.get_n_items() == N and items.layout("angular", DIM) is not None


@pytest.mark.parametrize("n", [0, 1, 2])
def test_tiny_on_disk_builds_load_back(tmp_path, n):
    path = tmp_path / "tiny.ann"
    built = annoy.build_index(_vectors()[:n], metric="angular", n_trees=2, path=path)
    assert built.get_n_items() == n
    built.unload()
    loaded = AnnoyIndex(DIM, "angular")
    loaded.load(str(path))
    assert loaded.get_n_items() == n
    if n:
        assert loaded.get_nns_by_item(n - 1, 1) == [n - 1]
