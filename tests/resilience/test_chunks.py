"""Chunked, resumable stage work and the failure taxonomy, without Dagster."""

from __future__ import annotations

import pandas as pd
import pytest
import requests
import torch
from google.api_core import exceptions as gexc

from image_search_assets.core.failures import GpuMemoryExhausted, Preempted, classify
from image_search_assets.core.index.annoy_index import IndexVerificationError
from image_search_assets.core.inference.chunks import run_chunks
from image_search_assets.core.ingest.catalog import CatalogSchemaError
from image_search_assets.core.storage import LocalStorage, PreconditionFailed
from image_search_assets.settings import ConfigError

PREFIX = "work/2026-11-01/tops/embeddings"


def items(n: int, tag: str = "a") -> pd.DataFrame:
    return pd.DataFrame({"product_id": [f"p{i}" for i in range(n)], "sha": [tag] * n})


class Model:
    """A stand-in stage: doubles a number per item, counts items, can fail on a given chunk."""

    def __init__(self, fail_on: str | None = None, fault: Exception | None = None):
        self.seen: list[str] = []
        self.batches: list[int] = []
        self.fail_on, self.fault = fail_on, fault

    def __call__(self, part: pd.DataFrame, batch: int) -> pd.DataFrame:
        self.batches.append(batch)
        if self.fault is not None and self.fail_on in set(part["product_id"]):
            raise self.fault
        self.seen += part["product_id"].tolist()
        return part.assign(value=[int(p[1:]) * 2 for p in part["product_id"]])


def run(store, frame, model, salt="model-v1", batch=8, on_chunk=None):
    return run_chunks(
        store,
        PREFIX,
        frame,
        model,
        key_columns=["product_id", "sha"],
        salt=salt,
        chunk_size=3,
        batch_size=batch,
        on_chunk=on_chunk,
    )


def test_progress_counts_reused_and_computed_chunks(tmp_path):
    store, frame = LocalStorage(tmp_path), items(10)
    with pytest.raises(ConnectionError):
        run(store, frame, Model(fail_on="p7", fault=ConnectionError("reset")))
    done: list[int] = []
    run(store, frame, Model(), on_chunk=done.append)
    assert done == [3, 3, 3, 1]  # two reused chunks, then two computed: all 10 items counted


def test_a_failed_attempt_resumes_from_its_finished_chunks(tmp_path):
    store, frame = LocalStorage(tmp_path), items(10)
    with pytest.raises(ConnectionError):
        run(store, frame, Model(fail_on="p7", fault=ConnectionError("reset")))
    again = Model()
    result = run(store, frame, again)
    assert result.reused == ("chunk-00000", "chunk-00001")
    assert result.computed == ("chunk-00002", "chunk-00003")
    assert again.seen == ["p6", "p7", "p8", "p9"]  # only the unfinished items
    assert result.table["product_id"].tolist() == frame["product_id"].tolist()
    assert result.table["value"].tolist() == [2 * i for i in range(10)]


def test_only_chunks_whose_inputs_or_model_changed_are_recomputed(tmp_path):
    store, frame = LocalStorage(tmp_path), items(9)
    run(store, frame, Model())
    changed = frame.copy()
    changed.loc[4, "sha"] = "new image"  # one product's image changed: chunk 1 only
    model = Model()
    assert run(store, changed, model).computed == ("chunk-00001",)
    assert model.seen == ["p3", "p4", "p5"]
    assert len(run(store, changed, Model(), salt="model-v2").computed) == 3  # new weights


def test_fewer_items_on_a_rerun_drop_the_stale_chunk_files(tmp_path):
    store = LocalStorage(tmp_path)
    run(store, items(9), Model())
    result = run(store, items(4), Model())
    assert [k.rsplit("/", 1)[1] for k in store.list(PREFIX) if k.endswith(".parquet")] == [
        "chunk-00000.parquet",
        "chunk-00001.parquet",
    ]
    assert result.table["product_id"].tolist() == ["p0", "p1", "p2", "p3"]
    assert run(store, items(0), Model()).table.empty


def test_cuda_oom_halves_the_batch_for_the_next_attempt_down_to_one(tmp_path):
    store, frame = LocalStorage(tmp_path), items(6)
    oom = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 GiB")
    model = Model(fail_on="p4", fault=oom)
    for expected in (8, 4, 2):
        with pytest.raises(torch.cuda.OutOfMemoryError):
            run(store, frame, model)
        assert model.batches[-1] == expected
    with pytest.raises(GpuMemoryExhausted) as info:
        run(store, frame, model)  # batch 1 also fails: a smaller batch cannot help
    assert not classify(info.value).retryable
    assert model.batches == [8, 8, 4, 2, 1]  # chunk 0 at 8, then chunk 1 at 8, 4, 2 and 1
    assert run(store, frame, Model()).batch_size == 1  # the halving is remembered
    assert model.seen == ["p0", "p1", "p2"]  # chunk 0 was computed once and kept


@pytest.mark.parametrize(
    "error, retryable, kind",
    [
        (gexc.ServiceUnavailable("503"), True, "transient_network"),
        (gexc.TooManyRequests("429"), True, "transient_network"),
        (gexc.InternalServerError("500"), True, "transient_network"),
        (gexc.DeadlineExceeded("504"), True, "transient_network"),
        (requests.exceptions.ConnectionError("reset"), True, "transient_network"),
        (requests.exceptions.ReadTimeout("slow"), True, "transient_network"),
        (ConnectionRefusedError("refused"), True, "transient_network"),
        (TimeoutError("timed out"), True, "transient_network"),
        (torch.cuda.OutOfMemoryError("CUDA out of memory"), True, "cuda_oom"),
        (RuntimeError("CUDA out of memory. Tried to allocate"), True, "cuda_oom"),
        (Preempted("SIGTERM"), True, "preempted"),
        (ConfigError("bad"), False, "config"),
        (CatalogSchemaError("bad"), False, "catalog_schema"),
        (PreconditionFailed("moved"), False, "concurrent_write"),
        (IndexVerificationError("bad"), False, "index_verification"),
        (GpuMemoryExhausted("batch 1"), False, "gpu_memory"),
        (gexc.NotFound("no such object"), False, "unclassified"),
        (KeyError("x"), False, "code_error"),
        (ValueError("x"), False, "code_error"),
        (FileNotFoundError("x"), False, "unclassified"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else None,
)
def test_failure_taxonomy(error, retryable, kind):
    verdict = classify(error)
    assert (verdict.retryable, verdict.kind) == (retryable, kind)
    assert retryable or "Fix:" in verdict.message


def test_an_unknown_error_is_judged_by_its_cause():
    try:
        try:
            raise gexc.ServiceUnavailable("GCS 503")
        except gexc.ServiceUnavailable as cause:
            raise OSError("upload failed") from cause
    except OSError as wrapped:
        verdict = classify(wrapped)
    assert verdict.retryable and "upload failed" in verdict.message
    assert not classify(ValueError("bad")).retryable  # a known outer error is never overridden
