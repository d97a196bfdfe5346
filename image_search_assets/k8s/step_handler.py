"""The k8s executor's step handler: dagster-k8s's step Jobs, sized at launch, and a
scheduling timeout for Pending step pods.

Each step Job gets what the run gives the step (job_config.launch_config: its GPUs by the run's
GPU plan) and, under Kueue, the queue's label. Stock `k8s_job_executor` treats a step pod that
no node can take as healthy forever (dagster issue #24595), and the step keeps its pool slot.
Here the health check (run by dagster's StepDelegatingExecutor every
`step_health_check_interval_seconds`) also asks whether the pod was scheduled. Past
`scheduling_timeout_seconds` it logs why not, deletes the Job and fails the check; the executor
(executor.py) then turns that failure into a retry. A step whose Job failed because its node
was reclaimed (spot) is retried the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from dagster import _check as check
from dagster._core.definitions.metadata import MetadataValue
from dagster._core.events import DagsterEvent, EngineEventData
from dagster._core.executor.step_delegating import (
    CheckStepHealthResult,
    StepHandlerContext,
)
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.executor import K8sStepHandler
from dagster_k8s.job import UserDefinedDagsterK8sConfig
from kubernetes.client import CoreV1Event, CoreV1EventList, V1Job
from kubernetes.client.rest import ApiException

from image_search_assets.k8s.job_config import launch_config, without_compute_class
from image_search_assets.k8s.pending import ScheduleVerdict, diagnose, node_reclaimed

KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"


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
            launch_config(
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
