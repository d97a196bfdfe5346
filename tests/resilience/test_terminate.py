"""A person's stop is never retried, a preemption is: both on real in-process runs.

The run worker that Dagster terminates gets SIGINT after the run turned CANCELING; a k8s step pod
of a terminated run gets SIGTERM; a preempted node's pods get SIGTERM with the run still STARTED.
(tests/e2e/test_terminate.py does the same through a real webserver, daemon and run worker.)
"""

from __future__ import annotations

import os
import signal
from types import SimpleNamespace

import dagster as dg
import pytest

from image_search_assets.core.index import annoy_index as annoy
from image_search_assets.core.inference import engine
from image_search_assets.core.storage import open_storage
from tests.resilience.helpers import events, fast_settings, run_day

DAY = "2026-11-01"
TOPS = [["tops", "embeddings"], ["tops", "annoy_index"]]


@pytest.fixture(scope="module")
def day_one(tmp_path_factory, sample_catalog):
    settings = fast_settings(str(tmp_path_factory.mktemp("storage")), str(sample_catalog))
    with dg.DagsterInstance.ephemeral() as instance:
        assert run_day(settings, DAY, instance).success
    return settings


@pytest.fixture
def embedder(monkeypatch):
    """The embedder call; its first call runs `fault` (if set) before embedding."""
    state = SimpleNamespace(fault=None, calls=0)
    real = engine.embed_sharded

    def embed(*args, **kwargs):
        state.calls += 1
        if state.fault is not None:
            fault, state.fault = state.fault, None
            fault()
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "embed_sharded", embed)
    return state


def the_run(instance: dg.DagsterInstance) -> dg.DagsterRun:
    (run,) = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
    return run


def served_version(settings) -> str:
    return annoy.load_current(open_storage(settings.storage_root), "tops").manifest["version"]


def test_terminate_is_not_retried_publishes_nothing_and_the_run_ends_canceled(day_one, embedder):
    before = served_version(day_one)
    with dg.DagsterInstance.ephemeral() as instance:

        def terminate():  # what DefaultRunLauncher.terminate and the code server do
            instance.report_run_canceling(the_run(instance))
            os.kill(os.getpid(), signal.SIGINT)

        embedder.fault = terminate
        result = run_day(day_one, DAY, instance, TOPS)
        status = instance.get_run_by_id(result.run_id).status
    assert status == dg.DagsterRunStatus.CANCELED
    assert events(result, "STEP_UP_FOR_RETRY") == [] and embedder.calls == 1
    (failure,) = events(result, "STEP_FAILURE")
    assert "terminated (CANCELING)" in failure.event_specific_data.error.message
    assert events(result, "STEP_START", "tops__annoy_index") == []
    assert served_version(day_one) == before


def test_sigterm_to_a_terminated_runs_step_is_a_stop_not_a_preemption(day_one, embedder):
    """k8s deletes a terminated run's step Jobs: their pods get SIGTERM, as on preemption."""
    before = served_version(day_one)
    with dg.DagsterInstance.ephemeral() as instance:

        def terminate_k8s():
            instance.report_run_canceling(the_run(instance))
            os.kill(os.getpid(), signal.SIGTERM)

        embedder.fault = terminate_k8s
        result = run_day(day_one, DAY, instance, TOPS)
        status = instance.get_run_by_id(result.run_id).status
    assert status == dg.DagsterRunStatus.CANCELED
    assert events(result, "STEP_UP_FOR_RETRY") == [] and embedder.calls == 1
    assert served_version(day_one) == before


def test_a_run_marked_canceled_stops_at_its_next_error_and_next_step(day_one, embedder):
    """Marked canceled immediately: a retryable error then ends the step, with no retry."""
    before = served_version(day_one)
    with dg.DagsterInstance.ephemeral() as instance:

        def mark_canceled():
            instance.report_run_canceled(the_run(instance))
            raise ConnectionResetError("connection reset by peer")

        embedder.fault = mark_canceled
        result = run_day(day_one, DAY, instance, TOPS)
        status = instance.get_run_by_id(result.run_id).status
    assert status == dg.DagsterRunStatus.CANCELED
    assert events(result, "STEP_UP_FOR_RETRY") == [] and embedder.calls == 1
    assert events(result, "STEP_START", "tops__annoy_index") == []
    assert served_version(day_one) == before


def test_preemption_sigterm_of_a_running_run_is_retried_and_publishes(day_one, embedder):
    embedder.fault = lambda: os.kill(os.getpid(), signal.SIGTERM)
    with dg.DagsterInstance.ephemeral() as instance:
        result = run_day(day_one, DAY, instance, TOPS)
    assert result.success
    (retry,) = events(result, "STEP_UP_FOR_RETRY")
    assert "Preempted" in retry.event_specific_data.error.to_string()
    assert embedder.calls == 2
    assert len(events(result, "ASSET_MATERIALIZATION", "tops__annoy_index")) == 1
