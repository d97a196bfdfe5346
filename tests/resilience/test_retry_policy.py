"""The one retry policy on real runs: capped, jittered exponential backoff for retryable errors,
one failure with a fix-it message for permanent ones (dg.execute_in_process on an instance)."""

from __future__ import annotations

import os
import random
import signal
from dataclasses import replace
from types import SimpleNamespace

import dagster as dg
import pytest
import torch
from google.api_core import exceptions as gexc

from image_search_assets.core.failures import GpuMemoryExhausted
from image_search_assets.core.inference import engine
from image_search_assets.core.ingest.catalog import CatalogSchemaError
from image_search_assets.settings import ConfigError, load_settings
from tests.resilience.helpers import FAST_RETRY, events, fast_settings, run_day

DAY = "2026-11-01"
STEP = "tops__embeddings"
EMBEDDINGS = [["tops", "embeddings"]]


@pytest.fixture(scope="module")
def day_one(tmp_path_factory, sample_catalog):
    """Day 1 materialised once; each test then re-runs only the tops embeddings step.

    Each test's run is a new run, so it recomputes: finished chunks are reused only by
    retries and re-executions of the run that made them.
    """
    settings = fast_settings(str(tmp_path_factory.mktemp("storage")), str(sample_catalog))
    with dg.DagsterInstance.ephemeral() as instance:
        assert run_day(settings, DAY, instance).success
    return settings


@pytest.fixture
def model(monkeypatch):
    """The embedder call, scripted: each queued fault is raised (or called) once, in order."""
    script: list = []
    batch_sizes: list[int] = []
    real = engine.embed_sharded

    def embed(load, blobs, boxes, devices, **options):
        batch_sizes.append(options["batch_size"])
        if script:
            fault = script.pop(0)
            if isinstance(fault, BaseException):
                raise fault
            fault()
        return real(load, blobs, boxes, devices, **options)

    monkeypatch.setattr(engine, "embed_sharded", embed)
    return SimpleNamespace(script=script, batch_sizes=batch_sizes)


def test_retryable_failures_back_off_exponentially_with_jitter_under_the_cap(day_one, model):
    model.script += [
        gexc.ServiceUnavailable("GCS answered 503"),
        gexc.TooManyRequests("GCS answered 429"),
        ConnectionResetError("connection reset by peer"),
        TimeoutError("read timed out"),
        gexc.InternalServerError("GCS answered 500"),
    ]
    with dg.DagsterInstance.ephemeral() as instance:
        result = run_day(day_one, DAY, instance, EMBEDDINGS)
        logs = instance.all_logs(result.run_id)
    assert result.success
    delays = [e.event_specific_data.seconds_to_wait for e in events(result, "STEP_UP_FOR_RETRY")]
    policy = day_one.retry
    assert len(delays) == 5 and len(model.batch_sizes) == 6
    bases = [policy.base_delay(n) for n in range(5)]
    assert bases == [0.05, 0.1, 0.2, 0.2, 0.2]  # doubling, then held at the cap
    for base, delay in zip(bases, delays, strict=True):
        assert (
            base * (1 - policy.jitter)
            <= delay
            <= min(policy.max_delay_s, base * (1 + policy.jitter))
        )
    assert len(set(delays)) == 5  # jittered, even the three at the cap
    # Dagster really waited that long between each retry request and the restart.
    ups = [
        e.timestamp for e in logs if e.dagster_event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY
    ]
    restarts = [
        e.timestamp for e in logs if e.dagster_event_type == dg.DagsterEventType.STEP_RESTARTED
    ]
    assert all(r - u >= d - 0.01 for u, r, d in zip(ups, restarts, delays, strict=True))


def test_the_platform_defaults_double_from_a_minute_to_a_half_hour_cap():
    policy = load_settings().retry
    assert [policy.base_delay(n) for n in range(7)] == [60, 120, 240, 480, 960, 1800, 1800]
    rng = random.Random(0)
    at_cap = [policy.delay(9, rng) for _ in range(1000)]  # uncapped, this retry waits 8.5 h
    assert 0.75 * 1800 <= min(at_cap) < 0.76 * 1800 and 0.99 * 1800 < max(at_cap) <= 1800


@pytest.mark.parametrize(
    "fault",
    [
        TypeError("unsupported operand type(s) for +: 'int' and 'str'"),
        KeyError("vector"),
        ConfigError("models.embedder.arch: unknown architecture 'resnet9000'"),
        CatalogSchemaError("catalog lacks required column(s) ['image_url']."),
        GpuMemoryExhausted("CUDA out of memory at batch size 1 (chunk-00000)"),
        gexc.Forbidden("403 the service account may not read gs://bucket"),
        RuntimeError("something nobody has seen before"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_permanent_failures_fail_at_once_saying_what_to_fix(day_one, model, fault):
    model.script.append(fault)
    with dg.DagsterInstance.ephemeral() as instance:
        result = run_day(day_one, DAY, instance, EMBEDDINGS)
    assert not result.success
    assert events(result, "STEP_UP_FOR_RETRY") == [] and len(model.batch_sizes) == 1
    (failure,) = events(result, "STEP_FAILURE", STEP)
    message = failure.event_specific_data.error.message
    assert str(fault.args[0]) in message and "Fix:" in message and "re-execute" in message


def test_catalog_schema_violation_fails_the_day_without_retry(tmp_path):
    catalog = tmp_path / "catalog.csv"
    catalog.write_text("product_id,category,added_at\np1,tops,2026-11-01\n")
    settings = fast_settings(str(tmp_path / "storage"), str(catalog))
    with dg.DagsterInstance.ephemeral() as instance:
        result = run_day(settings, DAY, instance)
    assert not result.success and events(result, "STEP_UP_FOR_RETRY") == []
    (failure,) = events(result, "STEP_FAILURE")
    assert failure.step_key == "new_products"
    message = failure.event_specific_data.error.message
    assert "lacks required column(s) ['image_url']" in message and "Fix:" in message


@pytest.mark.parametrize(
    "policy, retries, why",
    [
        (replace(FAST_RETRY, max_retries=2), 2, "retry.max_retries=2"),
        # A 0.12 s deadline admits the first retry (0.05 s) and never the second (0.1 s more).
        (replace(FAST_RETRY, max_retries=10, deadline_s=0.12), 1, "retry.deadline_s=0.12"),
    ],
    ids=["count", "deadline"],
)
def test_retries_stop_at_the_count_or_the_deadline(day_one, model, policy, retries, why):
    model.script += [ConnectionError("network unreachable")] * 20
    with dg.DagsterInstance.ephemeral() as instance:
        result = run_day(day_one.with_overrides(retry=policy), DAY, instance, EMBEDDINGS)
    assert not result.success
    assert len(events(result, "STEP_UP_FOR_RETRY")) == retries
    (failure,) = events(result, "STEP_FAILURE", STEP)
    message = failure.event_specific_data.error.message
    assert f"Gave up after {retries + 1} attempt(s)" in message and why in message


def test_cuda_oom_is_retried_with_half_the_batch(day_one, model):
    model.script.append(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"))
    with dg.DagsterInstance.ephemeral() as instance:
        result = run_day(day_one, DAY, instance, EMBEDDINGS)
    assert result.success and len(events(result, "STEP_UP_FOR_RETRY")) == 1
    full = day_one.embedder.batch_size
    assert model.batch_sizes == [full, full // 2]
    (materialization,) = result.asset_materializations_for_node(STEP)
    assert materialization.metadata["batch_size"].value == full // 2


def test_sigterm_preemption_is_retried_not_cancelled(day_one, model):
    before = signal.getsignal(signal.SIGTERM)

    def preempt():
        handler = signal.getsignal(signal.SIGTERM)
        # Without our handler SIGTERM would end pytest itself: fail instead of sending it.
        assert "sigterm_as_preemption" in getattr(handler, "__qualname__", ""), handler
        os.kill(os.getpid(), signal.SIGTERM)

    model.script.append(preempt)
    with dg.DagsterInstance.ephemeral() as instance:
        result = run_day(day_one, DAY, instance, EMBEDDINGS)
    assert result.success
    (retry,) = events(result, "STEP_UP_FOR_RETRY")
    assert "Preempted" in str(retry.event_specific_data.error.to_string())
    assert len(model.batch_sizes) == 2
    assert signal.getsignal(signal.SIGTERM) == before
