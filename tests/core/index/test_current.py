"""CURRENT: only forward on its own, a compare-and-swap; rollback pins it, unpin releases it."""

import numpy as np
import pytest

from image_search_assets.core import layout
from image_search_assets.core.index import annoy_index as annoy
from image_search_assets.core.index import current, pins
from image_search_assets.core.storage import LocalStorage, Storage, open_storage


def publish(store: Storage, day: str, n: int, *, move_current: bool = True, retention: int = 7):
    """A real publish of `n` unit vectors as products p0..p<n-1> of `tops`."""
    v = np.random.default_rng(n).normal(size=(n, 16)).astype(np.float32)
    return annoy.publish(
        store,
        "tops",
        day,
        [f"p{i}" for i in range(n)],
        v / np.linalg.norm(v, axis=1, keepdims=True),
        metric="angular",
        n_trees=4,
        models={"embedder": "test"},
        recall_sample=20,
        retention=retention,
        move_current=move_current,
    )


def served(store: Storage) -> current.Pointer:
    pointer = current.read_pointer(store, "tops")
    assert pointer is not None
    return pointer


@pytest.fixture(params=["local", "gcs"])
def store(request, tmp_path) -> Storage:
    if request.param == "local":
        return LocalStorage(tmp_path)
    bucket = request.getfixturevalue("gcs_bucket")
    from google.cloud import storage as gcs

    return open_storage(f"gs://{bucket}/p", lambda: gcs.Client(project="test"))


def test_an_older_day_writes_its_version_but_current_stays_on_the_newer_day(store):
    newer = publish(store, "2026-11-05", 12)
    older = publish(store, "2026-11-03", 9)
    assert older["served"] == {
        "moved": False,
        "reason": f"tops serves 2026-11-05 ({newer['version']}), newer than 2026-11-03: "
        f"CURRENT stays; {older['version']} is kept",
        "version": newer["version"],
    }
    assert (served(store).version, served(store).date, served(store).count) == (
        newer["version"],
        "2026-11-05",
        12,
    )
    # The older day's version was written and verifies: an operator may still roll back to it.
    assert pins.verified_manifest(store, "tops", older["version"])["count"] == 9


def test_a_rerun_of_the_served_day_replaces_it(store):
    first = publish(store, "2026-11-05", 12)
    again = publish(store, "2026-11-05", 13)
    assert again["served"]["moved"] and served(store).version == again["version"]
    assert served(store).previous == (first["version"],)
    assert annoy.load_current(store, "tops").manifest["count"] == 13


def test_without_move_current_only_the_version_is_written(tmp_path):
    store = LocalStorage(tmp_path)
    manifest = publish(store, "2026-11-01", 5, move_current=False)
    assert "served" not in manifest and current.read_pointer(store, "tops") is None
    assert current.kept_versions(store, "tops") == [manifest["version"]]


def test_rollback_pins_the_previous_version_and_publishes_no_longer_move_current(store):
    day1 = publish(store, "2026-11-01", 10)
    day2 = publish(store, "2026-11-02", 11)
    pointer = pins.rollback(store, "tops", reason="bad crops on 11-02", retention=7)
    assert pointer == served(store)
    assert (pointer.version, pointer.date, pointer.count) == (day1["version"], "2026-11-01", 10)
    assert pointer.pin is not None and pointer.pin.version == day1["version"]
    assert pointer.pin.reason == "bad crops on 11-02"
    assert store.read_json("indexes/tops/CURRENT.json")["pin"]["reason"] == "bad crops on 11-02"

    day3 = publish(store, "2026-11-03", 12)
    assert not day3["served"]["moved"] and day3["served"]["version"] == day1["version"]
    assert (
        "pinned to" in day3["served"]["reason"] and "bad crops on 11-02" in day3["served"]["reason"]
    )
    assert pins.verified_manifest(store, "tops", day3["version"])["date"] == "2026-11-03"
    assert served(store).version == day1["version"]

    released = pins.unpin(store, "tops")
    assert released.pin is None and released.version == day3["version"]
    assert store.read_json("indexes/tops/CURRENT.json")["pin"] is None
    assert publish(store, "2026-11-04", 13)["served"]["moved"]
    assert day2["version"] in current.kept_versions(store, "tops")


def test_rollback_to_a_day_or_a_version_and_refusals(tmp_path):
    store = LocalStorage(tmp_path)
    versions = [publish(store, f"2026-11-0{d}", 10 + d)["version"] for d in (1, 2, 3)]
    assert (
        pins.rollback(store, "tops", day="2026-11-01", reason="r", retention=7).version
        == (versions[0])
    )
    to = pins.rollback(store, "tops", to_version=versions[1], reason="r2", retention=7)
    assert to.pin is not None and (to.version, to.pin.reason) == (versions[1], "r2")
    with pytest.raises(current.PointerError, match="no kept version of 2026-10-30"):
        pins.rollback(store, "tops", day="2026-10-30", reason="r", retention=7)
    with pytest.raises(current.PointerError, match="not kept"):
        pins.rollback(store, "tops", to_version="2026-11-02.x.y", reason="r", retention=7)
    # A damaged version is refused by publish's own verification and CURRENT does not move.
    (tmp_path / layout.ann_key("tops", versions[0])).write_bytes(b"garbage")
    with pytest.raises(annoy.IndexVerificationError, match=f"{versions[0]}: index.ann"):
        pins.rollback(store, "tops", to_version=versions[0], reason="r", retention=7)
    assert served(store).version == versions[1]
    # unpin passes over a damaged newest version to the newest one that verifies.
    (tmp_path / layout.ann_key("tops", versions[2])).write_bytes(b"garbage")
    assert pins.unpin(store, "tops").version == versions[1]


def test_nothing_published_is_a_clear_refusal(tmp_path):
    with pytest.raises(current.PointerError, match="nothing is published"):
        pins.rollback(LocalStorage(tmp_path), "tops", reason="r", retention=7)


class RacedStorage(LocalStorage):
    """Local storage where another publisher moves CURRENT just before our first swap."""

    def __init__(self, root, race):
        super().__init__(root)
        self.race = race

    def write_bytes_if_generation(self, key, data, generation):
        race, self.race = self.race, None
        if race is not None:
            race()
        super().write_bytes_if_generation(key, data, generation)


def test_a_lost_swap_decides_again_against_what_the_winner_wrote(tmp_path):
    store = RacedStorage(tmp_path, None)
    publish(store, "2026-11-01", 10)
    winner = {}
    store.race = lambda: winner.update(publish(LocalStorage(tmp_path), "2026-11-04", 11))
    late = publish(store, "2026-11-02", 12)
    assert not late["served"]["moved"] and served(store).version == winner["version"]
