"""Every storage error names its object and operation, and is classified: truncated files and a
full disk on real materialisations, a missing previous day before any GPU work."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg
import pytest

from image_search_assets.core.failures import classify
from image_search_assets.core.index import annoy_index as annoy
from image_search_assets.core.layout import asset_value_key
from image_search_assets.core.storage import LocalStorage, open_storage
from image_search_assets.core.storage.errors import CorruptObject, MissingObject
from tests.resilience.helpers import events, fast_settings, run_day

ROOT = Path(__file__).resolve().parents[2]
DAY1, DAY2 = "2026-11-01", "2026-11-02"
TOPS = [["new_products"], ["removals"], ["product_images"]] + [
    ["tops", s] for s in ("detections", "embeddings", "annoy_index")
]


@pytest.fixture(scope="module")
def day_one_root(tmp_path_factory, sample_catalog):
    root = tmp_path_factory.mktemp("day-one") / "storage"
    settings = fast_settings(str(root), str(sample_catalog))
    with dg.DagsterInstance.ephemeral() as instance:
        assert run_day(settings, DAY1, instance).success
    return root


@pytest.fixture
def settings(day_one_root, tmp_path, sample_catalog):
    root = tmp_path / "storage"
    shutil.copytree(day_one_root, root)
    return fast_settings(str(root), str(sample_catalog))


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def failed_once(settings, day: str, step: str) -> str:
    """Runs tops' chain of `day`: it fails at `step`, with no retry; the failure's message."""
    with dg.DagsterInstance.ephemeral() as instance:
        result = run_day(settings, day, instance, TOPS)
    assert not result.success and events(result, "STEP_UP_FOR_RETRY") == []
    (failure,) = events(result, "STEP_FAILURE")
    assert failure.step_key == step
    return failure.event_specific_data.error.message


def test_a_truncated_live_set_names_its_file_and_fails_before_any_gpu_work(settings):
    path = Path(settings.storage_root) / asset_value_key(["tops", "annoy_index"], DAY1)
    truncate(path)
    message = failed_once(settings, DAY2, "tops__detections")
    assert f"reading Parquet {path} failed: ArrowInvalid" in message
    assert "the file is damaged" in message and "re-execute" in message


def test_a_truncated_embeddings_partition_names_its_file(settings):
    store = open_storage(settings.storage_root)
    before = annoy.load_current(store, "tops").manifest["version"]
    path = Path(settings.storage_root) / asset_value_key(["tops", "embeddings"], DAY1)
    truncate(path)
    message = failed_once(settings, DAY2, "tops__annoy_index")
    assert f"reading Parquet {path} failed" in message and "the file is damaged" in message
    assert annoy.load_current(store, "tops").manifest["version"] == before


def test_a_truncated_asset_value_fails_its_reader_once_naming_the_file(settings):
    """An IO manager's read: Dagster's crash retry policy would retry it, the taxonomy does not."""
    path = Path(settings.storage_root) / asset_value_key(["tops", "embeddings"], DAY1)
    truncate(path)
    with dg.DagsterInstance.ephemeral() as instance:
        result = run_day(settings, DAY1, instance, [["tops", "annoy_index"]])
    assert not result.success and events(result, "STEP_UP_FOR_RETRY") == []
    (failure,) = events(result, "STEP_FAILURE")
    message = failure.event_specific_data.error.message
    assert f"reading Parquet {path} failed" in message and "the file is damaged" in message


def test_a_missing_previous_day_fails_before_any_gpu_work_naming_the_day(settings, tmp_path):
    (Path(settings.storage_root) / asset_value_key(["tops", "annoy_index"], DAY1)).unlink()
    message = failed_once(settings, DAY2, "tops__detections")
    assert f"tops/annoy_index for {DAY1} is missing" in message
    assert "nothing was detected or embedded" in message


def test_missing_and_corrupt_objects_are_named_and_classified(tmp_path):
    store = LocalStorage(tmp_path)
    with pytest.raises(MissingObject) as missing:
        store.read_parquet("assets/tops/annoy_index/2026-11-01.parquet")
    assert isinstance(missing.value, FileNotFoundError)  # what callers already catch
    assert f"reading {tmp_path}/assets/tops/annoy_index/2026-11-01.parquet" in str(missing.value)
    assert classify(missing.value).kind == "missing_file"
    store.write_bytes("CURRENT.json", b'{"version": ')
    with pytest.raises(CorruptObject) as corrupt:
        store.read_json("CURRENT.json")
    assert classify(corrupt.value).kind == "corrupt_file"


@contextlib.contextmanager
def tiny_filesystem(path: Path, size: str):
    """A tmpfs of `size` at `path` (root only); skips where it cannot be mounted."""
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def test_a_full_disk_fails_the_day_once_naming_the_file(tmp_path, sample_catalog):
    with tiny_filesystem(tmp_path / "full", "192k") as root:
        settings = fast_settings(str(root), str(sample_catalog))
        with dg.DagsterInstance.ephemeral() as instance:
            result = run_day(settings, DAY1, instance)
    assert not result.success and events(result, "STEP_UP_FOR_RETRY") == []
    failures = events(result, "STEP_FAILURE")  # each category's step that wrote, once
    assert failures
    for failure in failures:
        message = failure.event_specific_data.error.message
        assert f"writing {root}/" in message and "No space left on device" in message
        assert "Fix: free space under the storage root" in message


def test_a_write_past_the_file_size_limit_names_the_file_without_root(tmp_path):
    """RLIMIT_FSIZE (EFBIG) stands in for a full disk where no tmpfs can be mounted."""
    script = textwrap.dedent(f"""
        import resource, signal
        from image_search_assets.core.failures import classify
        from image_search_assets.core.storage import LocalStorage
        from image_search_assets.core.storage.errors import StorageFull
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a core dump
        resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
        try:
            LocalStorage({str(tmp_path)!r}).write_bytes("assets/big.parquet", b"x" * 200000)
        except StorageFull as e:
            print(classify(e).kind, "|", e)
    """)
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert out.startswith("storage_full |") and f"writing {tmp_path}/assets/big.parquet" in out
