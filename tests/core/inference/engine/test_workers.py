"""Sharding across workers: contiguous shards, results in input order, same as one worker."""

from __future__ import annotations

import multiprocessing
import threading
import time

import numpy as np
import pytest
import torch

from image_search_assets.core.inference.engine import (
    EngineStats,
    detect_sharded,
    embed_sharded,
    run_sharded,
    visible_devices,
)
from image_search_assets.core.inference.engine.workers import shards
from tests.core.inference.engine.conftest import CLASS_IDS
from tests.core.inference.engine.test_embed import boxes_for

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:torchvision")


@pytest.mark.parametrize(("n", "parts"), [(10, 3), (2, 4), (0, 2), (7, 1)])
def test_shards_are_contiguous_and_balanced(n, parts):
    got = shards(n, parts)
    assert len(got) == parts and [i for r in got for i in r] == list(range(n))
    assert max(map(len, got)) - min(map(len, got)) <= 1


def test_run_sharded_merges_in_input_order_whoever_finishes_first():
    def work(shard, device):
        time.sleep(0.05 if shard[0] == 0 else 0)  # the first shard finishes last
        return [(x, str(device)) for x in shard]

    out = run_sharded(work, list(range(7)), ["cpu", "cpu", "cpu"])
    assert [x for part in out for x, _ in part] == list(range(7))
    assert [len(p) for p in out] == [3, 2, 2]


def test_workers_keep_their_threads_and_thread_local_state_across_calls():
    # PyTorch's cuDNN plan cache is thread_local: a worker that came back as a fresh thread on
    # every call would plan every convolution again (workers.py docstring, measured on an H100).
    warm = threading.local()

    def work(shard, device):
        calls = getattr(warm, "calls", 0) + 1
        warm.calls = calls
        return threading.get_ident(), calls

    first = run_sharded(work, list(range(6)), ["cpu", "cpu", "cpu"])
    second = run_sharded(work, list(range(6)), ["cpu", "cpu", "cpu"])
    threads = [ident for ident, _ in first]
    assert len(set(threads)) == 3 and threading.get_ident() not in threads
    assert [ident for ident, _ in second] == threads  # slot i runs on the same thread each call
    assert [calls for _, calls in second] == [c + 1 for _, c in first]


def test_a_failing_worker_raises_after_the_others_finish():
    finished = []

    def work(shard, device):
        if shard[0] == 0:
            raise ValueError("bad shard")
        time.sleep(0.05)
        finished.append(shard[0])
        return shard

    with pytest.raises(ValueError, match="bad shard"):
        run_sharded(work, list(range(6)), ["cpu", "cpu", "cpu"])
    assert sorted(finished) == [2, 4]
    assert run_sharded(lambda shard, d: list(shard), [1, 2], ["cpu", "cpu"]) == [[1], [2]]


def _two_workers(_) -> list:
    return run_sharded(lambda shard, device: list(shard), [1, 2, 3], ["cpu", "cpu"])


def test_a_forked_child_gets_workers_of_its_own():
    run_sharded(lambda shard, device: shard, [1, 2], ["cpu", "cpu"])  # the parent's threads
    with multiprocessing.get_context("fork").Pool(1) as pool:
        assert pool.apply_async(_two_workers, (None,)).get(timeout=30) == [[1, 2], [3]]


def test_visible_devices_without_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert visible_devices() == [torch.device("cpu")]


def test_two_cpu_workers_match_one(ssdlite, embedder, blobs):
    options = {"class_ids": CLASS_IDS, "score_threshold": 0.35, "batch_size": 3}
    one = detect_sharded(lambda d: ssdlite, blobs, ["cpu"], **options)
    stats = EngineStats()
    two = detect_sharded(lambda d: ssdlite, blobs, ["cpu", "cpu"], stats=stats, **options)
    assert [(b.label, b.box_source, b.candidates) for b in two] == [
        (b.label, b.box_source, b.candidates) for b in one
    ]
    assert [b.score for b in two] == pytest.approx([b.score for b in one], abs=1e-5)
    assert stats.images == len(blobs) and stats.wall_seconds > 0

    boxes = boxes_for(blobs)
    single = embed_sharded(lambda d: embedder, blobs, boxes, ["cpu"], input_size=64, batch_size=4)
    double = embed_sharded(
        lambda d: embedder, blobs, boxes, ["cpu", "cpu"], input_size=64, batch_size=4
    )
    assert double.shape == single.shape
    np.testing.assert_allclose(double, single, atol=1e-5)


def test_each_device_gets_one_replica_loaded_up_front(embedder, blobs):
    loads = []

    def load(device):
        loads.append((str(device), threading.current_thread() is threading.main_thread()))
        return embedder

    embed_sharded(load, blobs[:4], boxes_for(blobs[:4]), ["cpu"] * 3, input_size=64, batch_size=2)
    assert loads == [("cpu", True)]
