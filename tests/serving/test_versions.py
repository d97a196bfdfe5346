"""The id map of a loaded version: numpy arrays searched by bisection."""

import numpy as np
import pytest

from image_search_assets.serving.versions import IdMap


@pytest.fixture
def ids() -> IdMap:
    return IdMap(np.asarray(["tops-003", "tops-001", "ünï-7", "tops-002"], dtype=str))


def test_product_ids_map_back_to_their_annoy_ids(ids):
    assert [ids.row(p) for p in ("tops-003", "tops-001", "ünï-7", "tops-002")] == [0, 1, 2, 3]
    assert [ids[i] for i in range(4)] == ["tops-003", "tops-001", "ünï-7", "tops-002"]
    assert ids.head(2) == ["tops-003", "tops-001"] and len(ids) == 4


@pytest.mark.parametrize("missing", ["tops-004", "tops-00", "tops-0010", "pants-0001", "", "t"])
def test_an_absent_id_of_any_width_is_not_found(ids, missing):
    assert ids.row(missing) is None and missing not in ids


def test_values_ride_along():
    days = IdMap(np.asarray(["a", "b"]), np.asarray(["2026-11-01", "2026-11-02"]))
    assert (days.value("b"), days.value("c")) == ("2026-11-02", None)
    assert IdMap(np.asarray([], dtype=str)).row("a") is None
