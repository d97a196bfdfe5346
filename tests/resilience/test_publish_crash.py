"""A publish that dies between writing a version and moving CURRENT leaves the old index serving,
intact; the orphaned version is pruned later by the retention setting."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from image_search_assets.core.failures import classify
from image_search_assets.core.index import annoy_index as annoy
from image_search_assets.core.index import retention
from image_search_assets.core.storage import LocalStorage, PreconditionFailed

ROOT = Path(__file__).resolve().parents[2]


class Crash(Exception):
    """Stands in for the process dying at this point."""


def unit(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, 16)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def publish(store, day: str, n: int, retention: int = 2) -> dict:
    ids = [f"{day}-p{i}" for i in range(n)]
    return annoy.publish(
        store,
        "tops",
        day,
        ids,
        unit(n, seed=n),
        metric="angular",
        n_trees=4,
        models={"embedder": "test"},
        recall_sample=20,
        retention=retention,
    )


def snapshot(store) -> tuple[dict, list[str], list]:
    """What a client sees: the manifest, the ids and the answers to a few queries."""
    served = annoy.load_current(store, "tops")
    answers = [served.query_vector(q, k=5) for q in unit(3, seed=99)]
    return served.manifest, served.ids, answers


def versions(store) -> set[str]:
    return {k.split("/")[3] for k in store.list("indexes/tops/versions")}


def crash_on(monkeypatch, store, method: str, key_suffix: str) -> None:
    real = getattr(store, method)

    def dying(key, *args, **kwargs):
        if key.endswith(key_suffix):
            raise Crash(f"died in {method}({key})")
        return real(key, *args, **kwargs)

    monkeypatch.setattr(store, method, dying)


@pytest.mark.parametrize(
    "method, key_suffix",
    [
        ("move_file", "index.ann"),  # built beside the version, not yet moved into it
        ("write_parquet", "ids.parquet"),  # the index is written, its id map is not
        ("write_json", "manifest.json"),  # all but the manifest
        ("local_copy", "index.ann"),  # while verifying the written version
        ("write_bytes_if_generation", "CURRENT.json"),  # written and verified; pointer not moved
    ],
)
def test_a_crash_at_any_point_leaves_the_old_index_serving(
    tmp_path, monkeypatch, method, key_suffix
):
    store = LocalStorage(tmp_path)
    old = publish(store, "2026-11-01", 30)
    before = snapshot(store)
    crash_on(monkeypatch, store, method, key_suffix)
    with pytest.raises(Crash):
        publish(store, "2026-11-02", 40)
    monkeypatch.undo()
    assert snapshot(store) == before and before[0]["version"] == old["version"]
    crashed = versions(store) - {old["version"]}
    # The next day's publish succeeds. Retention prunes the crashed, never-served version once
    # no publish could still be writing it (grace_s); one that got as far as its manifest is
    # that day's version like any other (it verified, or unpin's verification refuses it).
    new = publish(store, "2026-11-03", 50, retention=2)
    retention.prune_versions(store, "tops", keep_days=2, grace_s=0)
    complete = method in ("local_copy", "write_bytes_if_generation")
    assert versions(store) == {old["version"], new["version"], *(crashed if complete else ())}
    assert annoy.load_current(store, "tops").manifest["count"] == 50


CHILD = """
import os, signal, sys
import numpy as np
from image_search_assets.core.index import annoy_index as annoy
from image_search_assets.core.index import retention
from image_search_assets.core.storage import LocalStorage

store = LocalStorage(sys.argv[1])
real = store.write_bytes_if_generation
def die(key, *args):
    if key.endswith("CURRENT.json"):
        os.kill(os.getpid(), signal.SIGKILL)  # as a node loss would, with no cleanup at all
    return real(key, *args)
store.write_bytes_if_generation = die
v = np.random.default_rng(0).normal(size=(40, 16)).astype(np.float32)
annoy.publish(store, "tops", "2026-11-02", [f"q{i}" for i in range(40)], v, metric="angular",
              n_trees=4, models={}, recall_sample=20, retention=2)
"""


def test_a_sigkilled_publish_leaves_the_old_index_serving(tmp_path):
    store = LocalStorage(tmp_path)
    old = publish(store, "2026-11-01", 30)
    before = snapshot(store)
    child = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CHILD), str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == -9, child.stderr
    (orphan,) = versions(store) - {old["version"]}
    assert store.exists(f"indexes/tops/versions/{orphan}/manifest.json")  # written in full
    assert snapshot(store) == before
    new = publish(store, "2026-11-03", 50)
    # Verified in full, the orphan is day 2's version in the rollback window of two days.
    assert versions(store) == {old["version"], orphan, new["version"]}


def test_a_concurrent_publish_loses_the_compare_and_swap_and_decides_again(tmp_path, monkeypatch):
    store = LocalStorage(tmp_path)
    publish(store, "2026-11-01", 30)
    real = store.write_bytes_if_generation

    def meanwhile(key, data, generation):
        monkeypatch.setattr(store, "write_bytes_if_generation", real)
        publish(store, "2026-11-09", 35)  # another writer moves CURRENT after our verify
        return real(key, data, generation)

    monkeypatch.setattr(store, "write_bytes_if_generation", meanwhile)
    late = publish(store, "2026-11-02", 40)
    # The loser re-reads what the winner wrote and compares days: an older day never wins.
    assert not late["served"]["moved"] and "newer than 2026-11-02" in late["served"]["reason"]
    assert annoy.load_current(store, "tops").manifest["date"] == "2026-11-09"
    # A swap lost again and again surfaces, and is not retried as a crash would be.
    assert not classify(PreconditionFailed("CURRENT.json kept changing")).retryable
