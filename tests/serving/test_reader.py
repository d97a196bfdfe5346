"""IndexReader on real small indexes published by the platform's publish, local and gs://."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from image_search_assets.serving import IndexReader, NotReady, UnknownProduct
from tests.serving.conftest import CATEGORIES, day_ids, publish_corrupt, publish_day, vectors_for


@pytest.fixture
def published(storage):
    """Day one of both categories: 40 tops, 30 pants."""
    for category, n in zip(CATEGORIES, (40, 30), strict=True):
        publish_day(storage, category, "2026-11-01", day_ids(category, "2026-11-01", n))
    return storage


def test_answers_by_product_and_by_vector_from_the_current_version(published, tmp_path):
    with IndexReader(published, CATEGORIES, cache_dir=tmp_path / "cache").start(
        background=False
    ) as reader:
        assert reader.ready()
        pid = "tops-2026-11-01-007"
        answer = reader.similar_to_product(pid, k=5)
        version = reader.state("tops").served.version  # type: ignore[union-attr]
        assert answer.category == "tops" and answer.versions == {"tops": version}
        assert len(answer.neighbours) == 5 and pid not in [n.product_id for n in answer.neighbours]
        distances = [n.distance for n in answer.neighbours]
        assert distances == sorted(distances)
        assert all(n.category == "tops" and n.version == version for n in answer.neighbours)

        # By vector across both categories: the exact vector of a pants item finds it first.
        target = "pants-2026-11-01-003"
        across = reader.similar_to_vector(vectors_for([target])[0], k=3)
        assert across.neighbours[0].product_id == target
        assert across.neighbours[0].distance == pytest.approx(0, abs=1e-3)
        assert set(across.versions) == set(CATEGORIES)

        with pytest.raises(UnknownProduct):
            reader.similar_to_product("no-such-product")
        with pytest.raises(UnknownProduct):  # it exists, but not in the asked category
            reader.similar_to_product(pid, category="pants")


def test_local_index_is_mapped_in_place_and_gcs_is_downloaded_once_per_version(published, tmp_path):
    cache = tmp_path / "cache"
    reader = IndexReader(published, CATEGORIES, cache_dir=cache).start(background=False)
    served = reader.state("tops").served
    assert served is not None
    if published.uri("x").startswith("gs://"):
        assert (cache / "tops" / served.version / "index.ann").is_file()
    else:
        assert not cache.exists()  # nothing copied: Annoy maps the published file itself
    reader.close()
    assert served.released and not (cache / "tops" / served.version).exists()


def test_a_new_version_swaps_in_and_the_old_is_released_only_when_unheld(published, tmp_path):
    reader = IndexReader(published, CATEGORIES, cache_dir=tmp_path / "cache").start(
        background=False
    )
    with reader.hold(["tops"]) as held:
        old = held["tops"]
        new_ids = day_ids("tops", "2026-11-01", 40) + day_ids("tops", "2026-11-02", 10)
        manifest = publish_day(published, "tops", "2026-11-02", new_ids)
        assert reader.refresh() == ["tops"]
        assert reader.state("tops").served.version == manifest["version"]  # type: ignore[union-attr]
        assert old.retired and not old.released  # a query in flight still holds it
        assert old.by_item(1, 3)  # and it still answers (Annoy id 1 is tops-2026-11-01-001)
    assert old.released and old.holders == 0
    answer = reader.similar_to_product("tops-2026-11-02-004", k=3)
    assert answer.versions == {"tops": manifest["version"]}
    assert reader.state("tops").swaps == 1 and reader.state("pants").swaps == 0
    assert reader.refresh() == []  # CURRENT did not move again
    reader.close()


@pytest.mark.parametrize("how", ["flip", "short"])
def test_a_corrupt_version_is_refused_and_the_old_one_keeps_serving(published, tmp_path, how):
    reader = IndexReader(published, CATEGORIES, cache_dir=tmp_path / "cache").start(
        background=False
    )
    good = reader.state("pants").served
    assert good is not None
    bad = publish_corrupt(published, "pants", how)
    assert reader.refresh() == []
    state = reader.state("pants")
    assert state.served is good and not good.retired
    assert state.failed_loads == 1 and bad in (state.last_error or "")
    assert reader.similar_to_product("pants-2026-11-01-002", k=2).versions == {
        "pants": good.version
    }
    reader.refresh()
    assert state.failed_loads == 1  # refused once, not reloaded on every poll
    assert not (tmp_path / "cache" / "pants" / bad).exists()
    reader.close()


def test_not_ready_until_every_category_has_an_index(storage, tmp_path):
    publish_day(storage, "tops", "2026-11-01", day_ids("tops", "2026-11-01", 12))
    reader = IndexReader(storage, CATEGORIES, cache_dir=tmp_path / "c", poll_interval_s=0.05)
    reader.start()
    try:
        assert not reader.ready()
        assert reader.similar_to_product("tops-2026-11-01-001", k=2).category == "tops"
        with pytest.raises(NotReady):
            reader.similar_to_vector(vectors_for(["x"])[0], categories=["pants"])
        publish_day(storage, "pants", "2026-11-01", day_ids("pants", "2026-11-01", 12))
        deadline = time.monotonic() + 20
        while not reader.ready() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert reader.ready()  # the background poll found the new CURRENT
    finally:
        reader.close()


def test_queries_during_background_swaps_always_see_one_whole_version(published, tmp_path):
    reader = IndexReader(published, ["tops"], cache_dir=tmp_path / "c", poll_interval_s=0.01)
    reader.start()
    errors: list[BaseException] = []
    seen: set[str] = set()
    stop = threading.Event()

    def ask() -> None:
        while not stop.is_set():
            try:
                answer = reader.similar_to_product("tops-2026-11-01-000", k=5)
                assert {n.version for n in answer.neighbours} == set(answer.versions.values())
                seen.update(answer.versions.values())
            except BaseException as e:  # noqa: BLE001 - collected and re-raised below
                errors.append(e)

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for day in ("2026-11-02", "2026-11-03"):
            publish_day(published, "tops", day, day_ids("tops", "2026-11-01", 40))
            time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join()
        reader.close()
    assert not errors, errors[:3]
    assert len(seen) >= 2 and reader.state("tops").swaps >= 1


def test_image_key_agrees_with_ingestion():
    from image_search_assets.core.ingest.store_images import image_key as ingested
    from image_search_assets.serving.reader import image_key

    for pid in ("plain-1", "with space/and?slash", "ünï"):
        assert image_key("2026-11-01", pid) == ingested("2026-11-01", pid)


def test_items_key_agrees_with_the_io_manager():
    from image_search_assets.core.records import asset_value_key
    from image_search_assets.serving.versions import items_key

    for category in ("tops", "long-sleeve_tee"):
        assert items_key(category, "2026-11-01") == asset_value_key(
            [category, "annoy_index"], "2026-11-01"
        )


def test_a_product_query_imports_neither_torch_nor_dagster(tmp_path):
    from image_search_assets.core.storage import LocalStorage

    storage = LocalStorage(tmp_path / "s")
    publish_day(storage, "tops", "2026-11-01", day_ids("tops", "2026-11-01", 10))
    code = (
        "import sys\n"
        "from image_search_assets.core.storage import LocalStorage\n"
        "from image_search_assets.serving import IndexReader\n"
        "from image_search_assets.serving.app import create_app\n"
        f"r = IndexReader(LocalStorage({str(tmp_path / 's')!r}), ['tops'], cache_dir='c')\n"
        "r.start(background=False)\n"
        "assert r.similar_to_product('tops-2026-11-01-001', 3).neighbours\n"
        "print(sorted(m for m in ('torch', 'dagster', 'torchvision') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
