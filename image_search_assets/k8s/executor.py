"""The k8s executor: dagster-k8s's step Jobs through the platform's step handler
(step_handler.py: Jobs sized at launch, a scheduling timeout for Pending step pods).

A step whose pod was never scheduled, or whose node was reclaimed, is retried with the
platform's capped backoff (platform.yaml `retry:`), which frees the step's pool slot and, after
the delay, launches a new Job.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, cast

from dagster import Field, IntSource, Noneable, StringSource, executor
from dagster._core.definitions.executor_definition import multiple_process_executor_requirements
from dagster._core.events import DagsterEvent
from dagster._core.execution.plan.objects import StepFailureData, StepRetryData
from dagster._core.execution.retries import RetryMode
from dagster._core.execution.step_dependency_config import StepDependencyConfig
from dagster._core.executor.init import InitExecutorContext
from dagster._core.executor.step_delegating import StepDelegatingExecutor
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.executor import _K8S_EXECUTOR_CONFIG_SCHEMA
from dagster_k8s.job import UserDefinedDagsterK8sConfig
from dagster_k8s.launcher import K8sRunLauncher

from image_search_assets.core.planning.retry import BackoffPolicy
from image_search_assets.k8s.step_handler import PendingAwareK8sStepHandler
from image_search_assets.settings import load_settings

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
