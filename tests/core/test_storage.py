"""Storage backends: the same contract on a local directory and on the GCS emulator."""

import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from google.cloud import storage as gcs

from image_search_assets.core.inference.stages import read_images
from image_search_assets.core.storage import (
    GCSStorage,
    LocalStorage,
    PreconditionFailed,
    Storage,
    open_storage,
    split_gs_uri,
)


@pytest.fixture(params=["local", "gcs"])
def store(request, tmp_path) -> Storage:
    if request.param == "local":
        return LocalStorage(tmp_path)
    bucket = request.getfixturevalue("gcs_bucket")
    return open_storage(f"gs://{bucket}/some/prefix", lambda: gcs.Client(project="test"))


def test_round_trips_every_format(store):
    store.write_bytes("a/b.bin", b"\x00\x01")
    store.write_json("a/c.json", {"x": [1, 2]})
    frame = pd.DataFrame({"id": ["p1", "p2"], "n": [1, 2]})
    store.write_parquet("a/d.parquet", frame)
    store.write_npy("e/f.npy", np.arange(6, dtype=np.float32).reshape(2, 3))
    assert store.read_bytes("a/b.bin") == b"\x00\x01"
    assert store.read_json("a/c.json") == {"x": [1, 2]}
    pd.testing.assert_frame_equal(store.read_parquet("a/d.parquet"), frame)
    np.testing.assert_array_equal(store.read_npy("e/f.npy")[1], [3, 4, 5])
    assert store.list("a") == ["a/b.bin", "a/c.json", "a/d.parquet"]
    assert store.exists("e/f.npy") and not store.exists("e/missing")


def test_files_stream_in_and_out_and_local_copy_holds_the_object(store, tmp_path):
    payload = np.random.default_rng(0).bytes(300_000)
    source = tmp_path / "built.ann"
    source.write_bytes(payload)
    store.write_file("idx/index.ann", source)
    assert store.read_bytes("idx/index.ann") == payload
    store.download_to("idx/index.ann", tmp_path / "back.ann")
    assert (tmp_path / "back.ann").read_bytes() == payload
    with store.local_copy("idx/index.ann") as path:
        assert path.read_bytes() == payload
    assert store.list("idx") == ["idx/index.ann"]  # no temporary left beside it


def test_overwrite_replaces_and_delete_prefix_removes(store):
    store.write_bytes("k/x", b"1")
    store.write_bytes("k/x", b"2")
    store.write_bytes("k/y", b"3")
    assert store.read_bytes("k/x") == b"2"
    store.delete_prefix("k")
    assert store.list("k") == []
    store.delete("k/never-existed")  # deleting nothing is not an error


def test_conditional_write_detects_a_concurrent_change(store):
    assert store.generation("ptr") is None
    store.write_bytes_if_generation("ptr", b"v1", None)
    gen = store.generation("ptr")
    with pytest.raises(PreconditionFailed):
        store.write_bytes_if_generation("ptr", b"lost", None)  # "must not exist" fails now
    store.write_bytes("ptr", b"someone else")
    with pytest.raises(PreconditionFailed):
        store.write_bytes_if_generation("ptr", b"v2", gen)
    store.write_bytes_if_generation("ptr", b"v3", store.generation("ptr"))
    assert store.read_bytes("ptr") == b"v3"


def test_images_are_read_in_key_order_at_each_backends_concurrency(store):
    keys = [f"images/{i:03d}.jpg" for i in range(40)]
    for i, key in enumerate(keys):
        store.write_bytes(key, f"image {i}".encode() * (i + 1))
    expected = [f"image {i}".encode() * (i + 1) for i in range(40)]
    assert store.read_concurrency == (10 if isinstance(store, GCSStorage) else 1)
    for workers in (None, 1, 7):  # the backend's own, one by one, and more than one
        assert read_images(store, keys, workers) == expected


def test_local_keys_cannot_escape_the_root(tmp_path):
    with pytest.raises(ValueError, match="escapes"):
        LocalStorage(tmp_path / "root").write_bytes("../outside", b"x")


@pytest.mark.parametrize(
    "uri,expected",
    [("gs://b", ("b", "")), ("gs://b/p/q/", ("b", "p/q")), ("gs://b/p", ("b", "p"))],
)
def test_split_gs_uri(uri, expected):
    assert split_gs_uri(uri) == expected


def test_split_gs_uri_rejects_non_gs():
    with pytest.raises(ValueError):
        split_gs_uri("s3://b/p")


def test_gcs_pointer_write_sends_the_generation_precondition():
    """Recorded-call test: the emulator ignores preconditions, so check what we ask GCS for."""
    from image_search_assets.core.storage import GCSStorage

    calls = []

    class Blob:
        generation = 7

        def upload_from_string(self, data, **kwargs):
            calls.append(kwargs)

    class Bucket:
        def blob(self, name):
            return Blob()

        def get_blob(self, name):
            return Blob()

    class Client:
        def bucket(self, name):
            return Bucket()

    GCSStorage(Client(), "b").write_bytes_if_generation("CURRENT.json", b"{}", 7)
    assert calls == [{"if_generation_match": 7}]


def test_a_staged_file_is_unseen_until_moved_in_and_a_failed_one_leaves_nothing(store):
    payload = np.random.default_rng(1).bytes(200_000)
    with store.staged_path("idx/index.ann") as path:
        path.write_bytes(payload)
        assert store.list("idx") == []
        store.move_file("idx/index.ann", path)
        assert not path.exists()  # the move took the file
    assert store.read_bytes("idx/index.ann") == payload
    with pytest.raises(RuntimeError), store.staged_path("idx/failed.ann") as failed:
        failed.write_bytes(b"half a build")
        raise RuntimeError("the build died")
    assert not failed.exists() and store.list("idx") == ["idx/index.ann"]


def test_local_storage_renames_a_staged_file_and_copies_one_from_another_device(tmp_path):
    store = LocalStorage(tmp_path / "root")
    with store.staged_path("v/index.ann") as path:
        path.write_bytes(b"built in place")
        inode = path.stat().st_ino
        store.move_file("v/index.ann", path)
    assert os.stat(store.uri("v/index.ann")).st_ino == inode  # renamed, not copied
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no second filesystem to move from")
    with tempfile.TemporaryDirectory(dir=shm) as other:
        source = Path(other) / "built.ann"
        source.write_bytes(b"built elsewhere")
        store.move_file("w/index.ann", source)
        assert not source.exists()
    assert store.read_bytes("w/index.ann") == b"built elsewhere"
