"""Crash recovery through run monitoring, and the Dagster internals gpu_budget relies on.

The internals tests exist to fail loudly on a Dagster upgrade that moves what
image_search_assets/gpu_budget.py reaches into; re-verify that module before changing them.
"""

import inspect
import json
import logging
import time
from types import SimpleNamespace

import dagster as dg
from dagster._core.execution.plan import instance_concurrency_context
from dagster._core.storage.event_log.schema import ConcurrencySlotsTable, PendingStepsTable
from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage
from dagster._daemon.monitoring.concurrency import execute_concurrency_slots_iteration
from dagster._utils.concurrency import ConcurrencyClaimStatus

from image_search_assets.settings import load_settings
from image_search_assets.tags import GPU_PLAN_TAG, gpu_pool
from tests.gpu_budget.jobs import gpu_steps

# The pool the steps of gpu_steps are in: the shipped GPU option list's.
POOL = gpu_pool(load_settings().category("tops"))


def test_gpus_held_by_a_crashed_run_come_back_through_run_monitoring(tmp_path):
    overrides = {
        "event_log_storage": {
            "module": "image_search_assets.gpu_budget",
            "class": "WeightedSqliteEventLogStorage",
            "config": {"base_dir": str(tmp_path)},
        },
        "run_monitoring": {"enabled": True, "free_slots_after_run_end_seconds": 1},
    }
    with dg.instance_for_test(overrides=overrides) as instance:
        storage = instance.event_log_storage
        storage.set_concurrency_slots(POOL, 4)
        crashed = instance.create_run_for_job(gpu_steps)
        other = instance.create_run_for_job(gpu_steps)
        assert storage.claim_concurrency_slot(
            POOL, crashed.run_id, "tops__detections", 4
        ).is_claimed
        assert storage.get_concurrency_info(POOL).active_slot_count == 4
        assert not storage.claim_concurrency_slot(POOL, other.run_id, "bags__detections").is_claimed
        instance.report_run_failed(crashed)  # the run died without freeing its steps' slots
        time.sleep(2.1)
        context = SimpleNamespace(instance=instance)
        list(execute_concurrency_slots_iteration(context, logging.getLogger("test")))
        assert storage.get_concurrency_info(POOL).active_slot_count == 0
        assert storage.claim_concurrency_slot(POOL, other.run_id, "bags__detections").is_claimed


def test_dagster_version_is_the_one_gpu_budget_was_verified_against():
    assert dg.__version__ == "1.13.27", "re-verify image_search_assets/gpu_budget.py first"


def test_concurrency_tables_have_the_columns_used():
    assert {"id", "concurrency_key", "run_id", "step_key", "deleted"} <= set(
        ConcurrencySlotsTable.c.keys()
    )
    assert {"id", "concurrency_key", "run_id", "step_key", "priority", "assigned_timestamp"} <= set(
        PendingStepsTable.c.keys()
    )


def test_storage_methods_keep_their_signatures():
    def params(fn):
        return list(inspect.signature(fn).parameters)

    assert params(SqlEventLogStorage.claim_concurrency_slot) == [
        "self",
        "concurrency_key",
        "run_id",
        "step_key",
        "priority",
    ]
    assert params(SqlEventLogStorage.add_pending_step)[:5] == [
        "self",
        "concurrency_key",
        "run_id",
        "step_key",
        "priority",
    ]
    assert params(SqlEventLogStorage.has_pending_step) == [
        "self",
        "concurrency_key",
        "run_id",
        "step_key",
    ]
    for name in (
        "index_transaction",
        "free_concurrency_slot_for_step",
        "free_concurrency_slots_for_run",
        "set_concurrency_slots",
    ):
        assert callable(getattr(SqlEventLogStorage, name))
    assert {
        "concurrency_key",
        "slot_status",
        "priority",
        "assigned_timestamp",
        "sleep_interval",
    } <= set(inspect.signature(ConcurrencyClaimStatus).parameters)


def test_executors_still_claim_through_the_storage_and_honour_sleep_interval():
    source = inspect.getsource(instance_concurrency_context.InstanceConcurrencyContext.claim)
    assert "event_log_storage.claim_concurrency_slot" in source
    assert "sleep_interval" in inspect.getsource(instance_concurrency_context)


def test_postgres_storage_is_importable_with_the_same_hooks():
    from image_search_assets.gpu_budget import WeightedPostgresEventLogStorage

    assert callable(WeightedPostgresEventLogStorage.index_transaction)
    assert WeightedPostgresEventLogStorage.__module__ == "image_search_assets.gpu_budget"


def test_the_runs_gpu_plan_overrides_the_hand_set_weights(tmp_path):
    overrides = {
        "event_log_storage": {
            "module": "image_search_assets.gpu_budget",
            "class": "WeightedSqliteEventLogStorage",
            "config": {"base_dir": str(tmp_path)},
        }
    }
    with dg.instance_for_test(overrides=overrides) as instance:
        storage = instance.event_log_storage
        storage.set_concurrency_slots(POOL, 4)
        planned = instance.create_run_for_job(
            gpu_steps, tags={GPU_PLAN_TAG: json.dumps({"tops": 2, "bags": 3})}
        )
        default = instance.create_run_for_job(gpu_steps)
        assert storage.gpu_need(planned.run_id, "tops__detections") == 2
        assert storage.gpu_need(planned.run_id, "bags__detections") == 3
        assert storage.gpu_need(planned.run_id, "pants__detections") == 2  # not in the plan
        assert storage.gpu_need(default.run_id, "tops__detections") == 4
        assert storage.claim_concurrency_slot(
            POOL, planned.run_id, "tops__detections", 2
        ).is_claimed
        assert storage.get_concurrency_info(POOL).active_slot_count == 2
