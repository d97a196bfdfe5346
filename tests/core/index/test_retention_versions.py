"""Version retention: a window of distinct days, pins kept, a crashed publish's leftovers gone."""

import os
import time

import pytest

from image_search_assets.core.index import annoy_index as annoy
from image_search_assets.core.index import current, pins, retention
from image_search_assets.core.storage import LocalStorage, Storage, open_storage
from tests.core.index.test_current import publish

# A version name as publish makes them, created long before any grace period ends.
OLD = "2026-11-02.20261102T000000000000Z.dead01"


def versions(store: Storage) -> set[str]:
    return {k.split("/")[3] for k in store.list("indexes/tops/versions/")}


@pytest.fixture(params=["local", "gcs"])
def store(request, tmp_path) -> Storage:
    if request.param == "local":
        return LocalStorage(tmp_path)
    bucket = request.getfixturevalue("gcs_bucket")
    from google.cloud import storage as gcs

    return open_storage(f"gs://{bucket}/p", lambda: gcs.Client(project="test"))


def test_several_publishes_of_one_day_do_not_use_up_the_window(store):
    days = [publish(store, f"2026-11-0{d}", 10 + d, retention=3)["version"] for d in (1, 2)]
    reruns = [publish(store, "2026-11-03", 20 + i, retention=3)["version"] for i in range(4)]
    # Days 1-3 kept (day 3 once, its latest), plus the re-run CURRENT replaced (rollback's
    # default target); the earlier re-runs of day 3 are gone.
    assert versions(store) == {*days, reruns[-2], reruns[-1]}
    assert (
        pins.rollback(store, "tops", day="2026-11-01", reason="r", retention=3).version == (days[0])
    )


def test_a_pinned_version_survives_every_later_publish(store):
    pinned = publish(store, "2026-11-01", 10, retention=2)["version"]
    replaced = publish(store, "2026-11-02", 11, retention=2)["version"]
    pins.rollback(store, "tops", to_version=pinned, reason="investigating", retention=2)
    later = [publish(store, f"2026-11-0{d}", 10 + d, retention=2)["version"] for d in (3, 4, 5)]
    # The pin, the version the rollback replaced, and the window's two newest days.
    assert versions(store) == {pinned, replaced, *later[-2:]}
    assert annoy.load_current(store, "tops").manifest["version"] == pinned


def test_a_killed_publish_leaves_nothing_behind_after_the_grace_period(store):
    publish(store, "2026-11-01", 10)
    # Killed before its manifest (written last): an incomplete version, long ago and just now.
    store.write_bytes(f"indexes/tops/versions/{OLD}/index.ann", b"partial")
    fresh = f"2026-11-02.{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}000000Z.beef02"
    store.write_bytes(f"indexes/tops/versions/{fresh}/index.ann", b"still writing")
    served = publish(store, "2026-11-02", 11)["version"]
    assert versions(store) == {current.read_pointer(store, "tops").previous[0], served, fresh}


def test_hidden_temporaries_of_killed_local_writes_are_removed(tmp_path):
    store = LocalStorage(tmp_path)
    publish(store, "2026-11-01", 10)
    root = tmp_path / "indexes/tops"
    # What LocalStorage.write_file leaves when killed mid-copy: a version holding only a hidden
    # temporary (invisible to list()), and a temporary beside CURRENT.json.
    orphan = root / "versions" / OLD / ".index.ann.x1y2"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"\0" * 4096)
    beside = root / ".CURRENT.json.a1b2"
    beside.write_bytes(b"{")
    young = root / ".CURRENT.json.c3d4"  # a write in progress right now
    young.write_bytes(b"{")
    long_ago = time.time() - retention.GRACE_S - 60
    for path in (orphan, beside):
        os.utime(path, (long_ago, long_ago))
    assert store.list(f"indexes/tops/versions/{OLD}") == []  # why nothing found them before
    publish(store, "2026-11-02", 11)
    assert not orphan.parent.exists() and not beside.exists() and young.exists()
    assert len(versions(store)) == 2
