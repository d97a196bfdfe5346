"""precision@k on hand-made vectors whose neighbours are known."""

import numpy as np
import pytest

from image_search_assets.core.index.annoy_index import ServedIndex, build_index
from image_search_assets.demo.retrieval_eval import precision_at_k, served_precision


def test_clustered_vectors_score_one_and_shuffled_labels_score_low():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16))
    labels = np.repeat(np.arange(4), 8)
    vectors = centres[labels] + 0.01 * rng.normal(size=(32, 16))
    assert precision_at_k(vectors, labels, k=5) == 1.0
    shuffled = rng.permutation(labels)
    assert precision_at_k(vectors, shuffled, k=5) < 0.5


def test_groups_restrict_the_search_and_small_groups_are_left_out():
    # Items 0-5 in group a share label x; item 6 is alone in group b (cannot fill k=5).
    vectors = np.vstack([np.eye(3)[0] + 0.01 * i for i in range(6)] + [np.eye(3)[0]])
    labels = ["x"] * 6 + ["y"]
    groups = ["a"] * 6 + ["b"]
    assert precision_at_k(vectors, labels, k=5, groups=groups) == 1.0
    # Without groups, item 6 (label y, identical direction) pollutes the others' neighbours.
    assert precision_at_k(vectors, labels, k=5) < 1.0


def test_nothing_to_measure_is_an_error():
    with pytest.raises(ValueError, match="k=5"):
        precision_at_k(np.eye(3), ["a", "b", "c"], k=5)


def test_served_precision_asks_the_annoy_index_and_credits_what_a_small_catalog_allows():
    # 6 products in one index: looks a (4 products, tight cluster) and b (2, another cluster).
    rng = np.random.default_rng(1)
    centres = np.eye(8)[:2]
    which = [0, 0, 0, 0, 1, 1]
    vectors = centres[which] + 0.01 * rng.normal(size=(6, 8))
    ids = [f"p{i}" for i in range(6)]
    served = {"tops": ServedIndex(build_index(vectors, metric="angular", n_trees=4), ids, {})}
    looks = {pid: "ab"[w] for pid, w in zip(ids, which, strict=True)}
    looks["stranger"] = "a"  # not in any index: ignored
    result = served_precision(served, looks, k=5)
    # Look a: 3 look-alikes of 5 neighbours; look b: 1 of 5. found_share credits both fully.
    assert result["precision_at_5"] == pytest.approx((4 * 3 / 5 + 2 * 1 / 5) / 6)
    assert result["found_share"] == 1.0 and result["products"] == 6
    assert result["attainable_precision_at_5"] == result["precision_at_5"]
    with pytest.raises(ValueError, match="k=10"):
        served_precision(served, looks, k=10)
