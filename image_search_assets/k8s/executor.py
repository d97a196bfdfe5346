"""The k8s executor: dagster-k8s's step Jobs, plus a scheduling timeout for Pending step pods.

Stock `k8s_job_executor` treats a step pod that no node can take as healthy forever (dagster
issue #24595), and the step keeps its pool slot. Here the health check (run by dagster's
StepDelegatingExecutor every `step_health_check_interval_seconds`) also asks whether the pod
was scheduled. Past `scheduling_timeout_seconds` it logs why not, deletes the Job and fails
the check; the executor then turns that failure into STEP_UP_FOR_RETRY with the platform's
capped backoff, which frees the step's pool slot and, after the delay, launches a new Job.
A step whose Job failed because its node was reclaimed (spot) is retried the same way.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from dagster import Field, IntSource, Noneable, StringSource, executor
from dagster import _check as check
from dagster._core.definitions.executor_definition import multiple_process_executor_requirements
from dagster._core.definitions.metadata import MetadataValue
from dagster._core.events import DagsterEvent, EngineEventData
from dagster._core.execution.plan.objects import StepFailureData, StepRetryData
from dagster._core.execution.retries import RetryMode
from dagster._core.execution.step_dependency_config import StepDependencyConfig
from dagster._core.executor.init import InitExecutorContext
from dagster._core.executor.step_delegating import (
    CheckStepHealthResult,
    StepDelegatingExecutor,
    StepHandlerContext,
)
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.executor import _K8S_EXECUTOR_CONFIG_SCHEMA, K8sStepHandler
from dagster_k8s.job import UserDefinedDagsterK8sConfig
from dagster_k8s.launcher import K8sRunLauncher
from kubernetes.client import CoreV1Event, CoreV1EventList, V1Job
from kubernetes.client.rest import ApiException

from image_search_assets.core.planning.retry import BackoffPolicy
from image_search_assets.k8s.job_config import planned_step_override, without_compute_class
from image_search_assets.k8s.pending import ScheduleVerdict, diagnose, node_reclaimed
from image_search_assets.settings import load_settings

KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
DEFAULT_SCHEDULING_TIMEOUT_S = 900  # GKE scales a GPU pool up from 0 in ~5-10 minutes

# The executor settings dagster-k8s passes straight into the step Jobs' container context.
_CONTEXT_FIELDS = (
    "image_pull_policy",
    "image_pull_secrets",
    "service_account_name",
    "env_config_maps",
    "env_secrets",
    "env_vars",
    "volume_mounts",
    "volumes",
    "labels",
    "resources",
    "scheduler_name",
    "security_context",
)


class PendingAwareK8sStepHandler(K8sStepHandler):
    """K8sStepHandler whose health check also fails a step pod no node took in time."""

    def __init__(
        self,
        *,
        scheduling_timeout_seconds: float,
        kueue_queue_name: str | None = None,
        clock: Callable[[], datetime] | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self._scheduling_timeout = timedelta(seconds=scheduling_timeout_seconds)
        self._kueue_queue_name = kueue_queue_name
        self._clock = clock or (lambda: datetime.now(UTC))
        self._unscheduled: dict[str, ScheduleVerdict] = {}
        self._reclaimed: dict[str, str] = {}  # step key: why its node went away
        self._first_launch: dict[str, float] = {}

    @property
    def name(self) -> str:
        return "PendingAwareK8sStepHandler"

    def _get_container_context(self, step_handler_context: StepHandlerContext):
        context = super()._get_container_context(step_handler_context)
        step_key = self._get_step_key(step_handler_context)
        extra: dict[str, Any] = (
            planned_step_override(
                step_handler_context.dagster_run.tags, step_handler_context.step_tags[step_key]
            )
            or {}
        )
        if not self._kueue_queue_name:
            if not extra:
                return context
            return context.merge(
                K8sContainerContext(run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(extra))
            )
        # Under Kueue the step's ResourceFlavor picks its GPU (k8s/kueue/queues.yaml).
        extra["job_metadata"] = {"labels": {KUEUE_QUEUE_LABEL: self._kueue_queue_name}}
        merged = context.merge(
            K8sContainerContext(run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(extra))
        ).run_k8s_config.to_dict()
        merged["pod_spec_config"] = without_compute_class(merged["pod_spec_config"])
        return K8sContainerContext(
            server_k8s_config=context.server_k8s_config,
            run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(merged),
            namespace=context.namespace,
        )

    def launch_step(self, step_handler_context: StepHandlerContext) -> Iterator[DagsterEvent]:
        step_key = self._get_step_key(step_handler_context)
        self._first_launch.setdefault(step_key, time.time())
        self._unscheduled.pop(step_key, None)
        yield from super().launch_step(step_handler_context)

    def check_step_health(self, step_handler_context: StepHandlerContext) -> CheckStepHealthResult:
        result = super().check_step_health(step_handler_context)
        step_key = self._get_step_key(step_handler_context)
        job_name = self._get_k8s_step_job_name(step_handler_context)
        namespace = check.not_none(self._get_container_context(step_handler_context).namespace)
        if not result.is_healthy:
            # A spot node reclaimed under the step: a preemption, retried like a pending pod.
            reason = node_reclaimed(self._api_client.get_pods_in_job(job_name, namespace))
            if reason:
                self._reclaimed[step_key] = reason
                return CheckStepHealthResult.unhealthy(f"node reclaimed (preemption): {reason}")
            return result
        verdict = self._scheduling_verdict(job_name, namespace)
        if verdict is None or not verdict.timed_out:
            return result
        # Delete before reporting: if the delete fails, the next check finds the same verdict.
        self._delete_job(job_name, namespace)
        timeout_s = self._scheduling_timeout.total_seconds()
        DagsterEvent.engine_event(
            step_handler_context.get_step_context(step_key),
            f"Scheduling timeout ({timeout_s:.0f}s) passed: deleted Kubernetes job {job_name} "
            f"so that its pod can never start later. The pod was {verdict.describe()}",
            EngineEventData(
                metadata={
                    "Kubernetes Job name": MetadataValue.text(job_name),
                    "pending_seconds": MetadataValue.float(verdict.pending_for.total_seconds()),
                    "scheduling_timeout_seconds": MetadataValue.float(timeout_s),
                    "reasons": MetadataValue.md(
                        "\n".join(f"- {r}" for r in verdict.reasons) or "none given"
                    ),
                }
            ),
        )
        self._unscheduled[step_key] = verdict
        return CheckStepHealthResult.unhealthy(
            f"Kubernetes job {job_name} deleted: its pod was {verdict.describe()}"
        )

    def _scheduling_verdict(self, job_name: str, namespace: str) -> ScheduleVerdict | None:
        try:
            # Synchronous call (no async_req): the client's return type also covers async results.
            job = cast(V1Job, self._api_client.batch_api.read_namespaced_job(job_name, namespace))
        except ApiException as e:
            if e.status == 404:  # the stock check reports a missing Job on its next pass
                return None
            raise
        now, timeout = self._clock(), self._scheduling_timeout
        # Read only as much as the verdict needs: most checks end at the Job (young or running).
        verdict = diagnose(job, [], [], now, timeout)
        if not verdict.timed_out:
            return verdict
        pods = self._api_client.get_pods_in_job(job_name, namespace)
        verdict = diagnose(job, pods, [], now, timeout)
        if not verdict.timed_out:
            return verdict
        events: list[CoreV1Event] = [
            event
            for obj in (job, *pods)
            for event in self._list_events(namespace, check.not_none(obj.metadata).uid)
        ]
        return diagnose(job, pods, events, now, timeout)

    def _list_events(self, namespace: str, uid: str) -> list[CoreV1Event]:
        event_list = cast(
            CoreV1EventList,
            self._api_client.core_api.list_namespaced_event(
                namespace, field_selector=f"involvedObject.uid={uid}"
            ),
        )
        return event_list.items or []

    def _delete_job(self, job_name: str, namespace: str) -> None:
        # Background propagation: the Job name is free at once (a resumed run worker relaunches
        # under the same name) and the garbage collector deletes its pod.
        try:
            self._api_client.batch_api.delete_namespaced_job(
                name=job_name, namespace=namespace, propagation_policy="Background"
            )
        except ApiException as e:
            if e.status != 404:
                raise

    def take_unscheduled(self, step_key: str) -> ScheduleVerdict | str | None:
        """Why this step's last health check failed, if it was a pending pod (the verdict) or
        a reclaimed node (the reason); None for any other failure."""
        return self._unscheduled.pop(step_key, None) or self._reclaimed.pop(step_key, None)

    def seconds_since_first_launch(self, step_key: str) -> float:
        return time.time() - self._first_launch.get(step_key, time.time())


class PendingAwareStepDelegatingExecutor(StepDelegatingExecutor):
    """Retries a step whose pod was never scheduled, or whose node was reclaimed, with the
    platform's capped backoff."""

    def __init__(
        self, step_handler: PendingAwareK8sStepHandler, *, backoff: BackoffPolicy, **kwargs: Any
    ):
        super().__init__(step_handler, **kwargs)
        self._pending_handler = step_handler
        self._backoff = backoff

    def log_failure_or_retry_event_after_error(self, step_context, err_info, known_state):
        # StepDelegatingExecutor.execute calls this when check_step_health is unhealthy. The stock
        # version retries only under the op's RetryPolicy, whose delay has no cap.
        step_key = step_context.step.key
        if self._pending_handler.take_unscheduled(step_key) is None:
            return super().log_failure_or_retry_event_after_error(
                step_context, err_info, known_state
            )
        retry_number = known_state.get_retry_state().get_attempt_count(step_key)
        elapsed = self._pending_handler.seconds_since_first_launch(step_key)
        if step_context.retry_mode.disabled or not self._backoff.should_retry(
            retry_number, elapsed
        ):
            return DagsterEvent.step_failure_event(
                step_context=step_context,
                step_failure_data=StepFailureData(error=err_info, user_failure_data=None),
            )
        return DagsterEvent.step_retry_event(
            step_context,
            StepRetryData(error=err_info, seconds_to_wait=self._backoff.delay(retry_number)),
        )


_CONFIG_SCHEMA = {
    **_K8S_EXECUTOR_CONFIG_SCHEMA,
    "scheduling_timeout_seconds": Field(
        IntSource,
        default_value=DEFAULT_SCHEDULING_TIMEOUT_S,
        description="How long a step pod may wait for a node before its Job is deleted and the "
        "step retried. Separate from any run-time limit.",
    ),
    "scheduling_max_retries": Field(
        IntSource,
        default_value=BackoffPolicy().max_retries,
        description="Retries of a step whose pods are never scheduled, before it fails.",
    ),
    "step_health_check_interval_seconds": Field(IntSource, default_value=20),
    "kueue_queue_name": Field(
        Noneable(StringSource),
        default_value=None,
        description="Kueue LocalQueue for step Jobs (default: env IMAGE_SEARCH_KUEUE_QUEUE).",
    ),
}


@executor(
    name="k8s",
    config_schema=_CONFIG_SCHEMA,
    requirements=multiple_process_executor_requirements(),
)
def image_search_k8s_executor(
    init_context: InitExecutorContext,
) -> PendingAwareStepDelegatingExecutor:
    """dagster-k8s's `k8s_job_executor` with a scheduling timeout and capped-backoff retries."""
    # The config was validated against _CONFIG_SCHEMA; dagster types its values as `object`.
    cfg = cast(Mapping[str, Any], init_context.executor_config)
    launcher = init_context.instance.run_launcher
    run_launcher = launcher if isinstance(launcher, K8sRunLauncher) else None
    container_context = K8sContainerContext(
        **{name: cfg.get(name) for name in _CONTEXT_FIELDS},
        namespace=cfg.get("job_namespace"),
        run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(cfg.get("step_k8s_config", {})),
    )
    in_cluster = cfg.get(
        "load_incluster_config", run_launcher.load_incluster_config if run_launcher else True
    )
    kubeconfig = cfg.get("kubeconfig_file", run_launcher.kubeconfig_file if run_launcher else None)
    handler = PendingAwareK8sStepHandler(
        scheduling_timeout_seconds=cfg["scheduling_timeout_seconds"],
        kueue_queue_name=cfg.get("kueue_queue_name") or os.environ.get("IMAGE_SEARCH_KUEUE_QUEUE"),
        image=cfg.get("job_image"),
        container_context=container_context,
        load_incluster_config=in_cluster,
        kubeconfig_file=kubeconfig,
        per_step_k8s_config=cfg.get("per_step_k8s_config", {}),
        enable_owner_references=bool(cfg.get("enable_owner_references", False)),
    )
    return PendingAwareStepDelegatingExecutor(
        handler,
        # The platform's one retry policy (platform.yaml `retry:`), capped by the executor's
        # own limit on scheduling retries.
        backoff=replace(load_settings().retry, max_retries=cfg["scheduling_max_retries"]),
        retries=RetryMode.from_config(cfg["retries"]),
        max_concurrent=cfg.get("max_concurrent"),
        tag_concurrency_limits=cfg.get("tag_concurrency_limits"),
        check_step_health_interval_seconds=cfg["step_health_check_interval_seconds"],
        should_verify_step=True,
        step_dependency_config=StepDependencyConfig.from_config(cfg.get("step_dependency_config")),
    )
