"""Pending step pods, against constructed Kubernetes API objects (no cluster, no network).

The Job, pods and events have the shapes the API server returns; FakeBatchApi/FakeCoreApi
hold them and record calls. The handler is the real one, launched on a real step of `defs`,
and the retry decision goes through the executor method StepDelegatingExecutor.execute calls
after a failed health check.
"""

from datetime import timedelta

import pytest
from dagster import DagsterEventType
from dagster._core.execution.plan.state import KnownExecutionState
from dagster._core.execution.retries import RetryMode
from dagster._utils.error import SerializableErrorInfo
from k8s_fakes import (
    NOT_TRIGGER_SCALE_UP,
    NOW,
    OUT_OF_RESOURCES,
    QUOTA_EXCEEDED,
    event,
    job_object,
    pending_pod,
    running_pod,
)
from k8s_harness import StepJobs

from image_search_assets.core.planning.retry import BackoffPolicy
from image_search_assets.k8s.compute_classes import class_name
from image_search_assets.k8s.executor import PendingAwareStepDelegatingExecutor
from image_search_assets.k8s.pending import diagnose
from image_search_assets.settings import load_settings

STEP = "tops__detections"
TIMEOUT = timedelta(minutes=10)
AUTOSCALER = "cluster-autoscaler"


def stuck_events(job, pod, at):
    return [
        event(
            pod,
            "FailedScheduling",
            "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
            at=at,
            count=5,
        ),
        event(
            pod,
            "NotTriggerScaleUp",
            NOT_TRIGGER_SCALE_UP,
            at=at - timedelta(minutes=1),
            type_="Normal",
            component=AUTOSCALER,
        ),
        event(
            pod,
            "FailedScaleUp",
            OUT_OF_RESOURCES,
            at=at - timedelta(minutes=2),
            component=AUTOSCALER,
        ),
        event(pod, "Pulling", "Pulling image", at=at, type_="Normal", component="kubelet"),
    ]


# --- the Dagster-free diagnosis -------------------------------------------------------------


def test_pod_pending_past_the_timeout_is_timed_out_with_its_reasons():
    job = job_object("dagster-step-0a1b2c", NOW - timedelta(minutes=15))
    pod = pending_pod(job, job.metadata.creation_timestamp)
    verdict = diagnose(job, [pod], stuck_events(job, pod, NOW), NOW, TIMEOUT)
    assert verdict.timed_out and not verdict.scheduled
    assert verdict.pending_for == timedelta(minutes=15)
    text = "\n".join(verdict.reasons)
    assert "Unschedulable: 0/3 nodes are available: 1 Insufficient nvidia.com/gpu" in text
    assert "FailedScheduling (x5): 0/3 nodes are available: 3 Insufficient nvidia.com/gpu." in text
    assert f"NotTriggerScaleUp: {NOT_TRIGGER_SCALE_UP}" in text
    assert "GCE out of resources" in text
    assert "Pulling" not in text  # routine events are not reasons


def test_pod_pending_within_the_timeout_is_not_timed_out():
    job = job_object("dagster-step-0a1b2c", NOW - timedelta(minutes=3))
    pod = pending_pod(job, job.metadata.creation_timestamp)
    verdict = diagnose(job, [pod], stuck_events(job, pod, NOW), NOW, TIMEOUT)
    assert not verdict.scheduled and not verdict.timed_out


def test_running_pod_is_scheduled_however_old():
    job = job_object("dagster-step-0a1b2c", NOW - timedelta(hours=3))
    verdict = diagnose(job, [running_pod(job, NOW - timedelta(hours=3))], [], NOW, TIMEOUT)
    assert verdict.scheduled and not verdict.timed_out


def test_quota_that_stops_the_pod_from_existing_is_a_reason():
    job = job_object("dagster-step-0a1b2c", NOW - timedelta(minutes=11))
    quota = event(job, "FailedCreate", QUOTA_EXCEEDED, at=NOW, component="job-controller")
    verdict = diagnose(job, [], [quota], NOW, TIMEOUT)
    assert verdict.timed_out
    assert "exceeded quota: gpu-quota" in verdict.describe()


# --- the step handler and executor on a real step of defs --------------------------------


@pytest.fixture
def jobs(k8s_instance, kubeconfig):
    return StepJobs(k8s_instance, kubeconfig, scheduling_timeout_seconds=600, clock=lambda: NOW)


def launch_stuck(jobs, *, waited, attempts=0, pod=True):
    """Launches STEP and leaves its pod Pending (FailedScheduling etc.) for `waited`."""
    jobs.batch.now = NOW - waited
    name = jobs.launch(STEP, attempts).metadata.name
    job = jobs.batch.jobs[name]
    if pod:
        stuck = pending_pod(job, jobs.batch.now)
        jobs.core.pods.append(stuck)
        jobs.core.events.extend(stuck_events(job, stuck, NOW))
    return job


def retry_decision(jobs, unhealthy_reason, attempts=0, backoff=None):
    """What StepDelegatingExecutor.execute does with an unhealthy check (its error message)."""
    executor = PendingAwareStepDelegatingExecutor(
        jobs.handler, backoff=backoff or BackoffPolicy(), retries=RetryMode.ENABLED
    )
    step_context = jobs.plan_context.for_step(jobs.plan.get_step_by_key(STEP))
    error = SerializableErrorInfo(
        message=f"Step {STEP} failed health check: {unhealthy_reason}", stack=[], cls_name=None
    )
    known = KnownExecutionState(previous_retry_attempts={STEP: attempts})
    return executor.log_failure_or_retry_event_after_error(step_context, error, known)


def logged(jobs, event_type):
    return [r.dagster_event for r in jobs.instance.all_logs(jobs.run.run_id, of_type=event_type)]


def test_the_timeout_names_the_class_and_the_options_it_tried(jobs):
    launch_stuck(jobs, waited=timedelta(minutes=15))
    result = jobs.handler.check_step_health(jobs.context(STEP))
    tops = load_settings().category("tops")
    tried = (
        f"ComputeClass {class_name(tops.gpu_options, tops.gpus)}, whose options GKE tried in "
        "order: l4 spot, l4, t4, l4 flex-start"
    )
    assert tried in result.unhealthy_reason
    (report,) = [
        e for e in logged(jobs, DagsterEventType.ENGINE_EVENT) if "Scheduling timeout" in e.message
    ]
    # ... followed by what the pod's events say of them
    assert tried in report.message and "GCE out of resources" in report.message


def test_pod_pending_past_timeout_logs_reasons_deletes_job_and_retries_later(jobs):
    job = launch_stuck(jobs, waited=timedelta(minutes=15))
    result = jobs.handler.check_step_health(jobs.context(STEP))

    assert not result.is_healthy
    assert "Insufficient nvidia.com/gpu" in result.unhealthy_reason
    # (a) the reasons are in the run's event log, on the step
    (report,) = [
        e for e in logged(jobs, DagsterEventType.ENGINE_EVENT) if "Scheduling timeout" in e.message
    ]
    assert report.step_key == STEP
    assert "GCE out of resources" in report.message
    reasons = report.engine_event_data.metadata["reasons"].value
    assert "FailedScheduling (x5)" in reasons and "NotTriggerScaleUp" in reasons
    # (b) the Job is deleted with its pod, so no zombie pod starts hours later
    assert jobs.batch.deleted == [
        {"name": job.metadata.name, "namespace": "dagster", "propagation_policy": "Background"}
    ]
    # (c) the attempt goes to the platform backoff: retry 0 waits 60 s +/- 25 % jitter
    retry = retry_decision(jobs, result.unhealthy_reason)
    assert retry.event_type == DagsterEventType.STEP_UP_FOR_RETRY
    assert 45.0 <= retry.step_retry_data.seconds_to_wait <= 75.0
    assert [e.step_key for e in logged(jobs, DagsterEventType.STEP_UP_FOR_RETRY)] == [STEP]
    # ... and the retry is a new Job
    again = jobs.launch(STEP, attempts=1)
    assert again.metadata.name == f"{job.metadata.name}-1"


def test_late_retries_wait_at_most_the_cap(jobs):
    policy = BackoffPolicy()
    for attempts in (5, 9):
        launch_stuck(jobs, waited=timedelta(minutes=15), attempts=attempts)
        result = jobs.handler.check_step_health(jobs.context(STEP, attempts))
        retry = retry_decision(jobs, result.unhealthy_reason, attempts=attempts)
        assert retry.event_type == DagsterEventType.STEP_UP_FOR_RETRY
        wait = retry.step_retry_data.seconds_to_wait
        assert policy.max_delay_s * (1 - policy.jitter) <= wait <= policy.max_delay_s


def test_step_fails_once_the_retries_are_spent(jobs):
    policy = BackoffPolicy(max_retries=3)
    launch_stuck(jobs, waited=timedelta(minutes=15), attempts=3)
    result = jobs.handler.check_step_health(jobs.context(STEP, 3))
    failure = retry_decision(jobs, result.unhealthy_reason, attempts=3, backoff=policy)
    assert failure.event_type == DagsterEventType.STEP_FAILURE
    assert "Insufficient nvidia.com/gpu" in failure.step_failure_data.error.message


def test_pod_pending_within_timeout_is_healthy_and_cheap(jobs):
    launch_stuck(jobs, waited=timedelta(minutes=4))
    assert jobs.handler.check_step_health(jobs.context(STEP)).is_healthy
    assert jobs.batch.deleted == [] and jobs.core.event_queries == []


def test_running_pod_is_healthy(jobs):
    jobs.batch.now = NOW - timedelta(hours=2)
    job = jobs.batch.jobs[jobs.launch(STEP).metadata.name]
    jobs.core.pods.append(running_pod(job, jobs.batch.now))
    assert jobs.handler.check_step_health(jobs.context(STEP)).is_healthy
    assert jobs.batch.deleted == []


def test_quota_exceeded_job_without_pod_is_reported_and_deleted(jobs):
    job = launch_stuck(jobs, waited=timedelta(minutes=12), pod=False)
    jobs.core.events.append(event(job, "FailedCreate", QUOTA_EXCEEDED, at=NOW))
    result = jobs.handler.check_step_health(jobs.context(STEP))
    assert not result.is_healthy and "exceeded quota: gpu-quota" in result.unhealthy_reason
    assert [d["name"] for d in jobs.batch.deleted] == [job.metadata.name]


def test_other_health_failures_keep_the_stock_handling(jobs):
    # A vanished Job is not a scheduling problem: the op's own RetryPolicy decides. The assets
    # carry a short bounded one (a killed pod should recover), so it is a retry, not a backoff.
    result = jobs.handler.check_step_health(jobs.context(STEP))
    assert not result.is_healthy and "could not be found" in result.unhealthy_reason
    decision = retry_decision(jobs, result.unhealthy_reason)
    assert decision.event_type == DagsterEventType.STEP_UP_FOR_RETRY
    first_delay = load_settings().retry.first_delay_s
    assert decision.event_specific_data.seconds_to_wait <= first_delay
