"""The daily job's step Jobs as the k8s executor's step handler renders them, offline."""

from __future__ import annotations

from pathlib import Path

from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.execution.api import create_execution_plan
from dagster._core.execution.context.system import PlanData, PlanOrchestrationContext
from dagster._core.execution.context_creation_job import create_context_free_log_manager
from dagster._core.execution.plan.state import KnownExecutionState
from dagster._core.execution.retries import RetryMode
from dagster._core.executor.step_delegating.step_handler.base import StepHandlerContext
from dagster._core.test_utils import create_run_for_test
from dagster._grpc.types import ExecuteStepArgs
from dagster_k8s.container_context import K8sContainerContext
from k8s_fakes import FakeBatchApi, FakeCoreApi

from image_search_assets.definitions import DAILY_JOB
from image_search_assets.k8s.executor import PendingAwareK8sStepHandler

NAMESPACE = "dagster"
IMAGE = "asia-east1-docker.pkg.dev/my-project/image-search/user-code:test"


def k8s_launcher_config(kubeconfig: str, **extra) -> dict:
    """The K8sRunLauncher block the Helm chart writes into dagster.yaml (values.yaml)."""
    return {
        "module": "dagster_k8s",
        "class": "K8sRunLauncher",
        "config": {
            "service_account_name": "dagster",
            "instance_config_map": "dagster-instance",
            "postgres_password_secret": "dagster-postgresql-secret",
            "dagster_home": "/opt/dagster/dagster_home",
            "job_image": IMAGE,
            "job_namespace": NAMESPACE,
            "load_incluster_config": False,
            "kubeconfig_file": kubeconfig,
            **extra,
        },
    }


class StepJobs:
    """The daily job's steps, launched through PendingAwareK8sStepHandler into fake APIs."""

    def __init__(self, instance, kubeconfig: str, run_tags: dict | None = None, **handler_kw):
        repo = ReconstructableRepository.for_module(
            "image_search_assets.definitions", "defs", working_directory=str(Path.cwd())
        )
        self.job = repo.get_reconstructable_job(DAILY_JOB)
        self.plan = create_execution_plan(self.job)
        self.instance = instance
        self.run = create_run_for_test(
            instance,
            job_name=DAILY_JOB,
            job_code_origin=self.job.get_python_origin(),
            tags=run_tags or {},
        )
        self.batch, self.core = FakeBatchApi(), FakeCoreApi()
        self.handler = PendingAwareK8sStepHandler(
            image=None,
            container_context=K8sContainerContext(namespace=NAMESPACE),
            load_incluster_config=False,
            kubeconfig_file=kubeconfig,
            k8s_client_batch_api=self.batch,
            k8s_client_core_api=self.core,
            **{"scheduling_timeout_seconds": 900, **handler_kw},
        )
        self.plan_context = PlanOrchestrationContext(
            plan_data=PlanData(
                job=self.job,
                dagster_run=self.run,
                instance=instance,
                execution_plan=self.plan,
                raise_on_error=True,
                retry_mode=RetryMode.ENABLED,
            ),
            log_manager=create_context_free_log_manager(instance, self.run),
            executor=None,
            output_capture=None,
        )

    @property
    def step_keys(self) -> list[str]:
        return [s.key for s in self.plan.steps]

    def context(self, step_key: str, attempts: int = 0) -> StepHandlerContext:
        """What StepDelegatingExecutor hands the handler for `step_key` after `attempts` tries."""
        known = KnownExecutionState(previous_retry_attempts={step_key: attempts})
        return StepHandlerContext(
            instance=self.instance,
            plan_context=self.plan_context,
            steps=[self.plan.get_step_by_key(step_key)],
            execute_step_args=ExecuteStepArgs(
                self.job.get_python_origin(),
                self.run.run_id,
                [step_key],
                known_state=known,
            ),
            dagster_run=self.run,
        )

    def launch(self, step_key: str, attempts: int = 0):
        """Launches the step; returns the V1Job the handler sent to the API."""
        list(self.handler.launch_step(self.context(step_key, attempts)))
        return self.batch.created[-1]
