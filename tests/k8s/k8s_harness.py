"""The daily job's step Jobs and run worker as dagster-k8s renders them, offline.

Both get what the Helm chart gives them on the cluster (k8s/helm/values.yaml): the run
launcher's `runK8sConfig` and, were `includeConfigInLaunchedRuns` on, the code location's
container context, which the chart builds from the code server's env, volumes and resources
(its `k8sContainerContext` helper). Ours has it off, so runs and steps inherit nothing of
the code server's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.execution.api import create_execution_plan
from dagster._core.execution.context.system import PlanData, PlanOrchestrationContext
from dagster._core.execution.context_creation_job import create_context_free_log_manager
from dagster._core.execution.plan.state import KnownExecutionState
from dagster._core.execution.retries import RetryMode
from dagster._core.executor.step_delegating.step_handler.base import StepHandlerContext
from dagster._core.launcher import LaunchRunContext
from dagster._core.test_utils import create_run_for_test
from dagster._grpc.types import ExecuteStepArgs
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.launcher import K8sRunLauncher
from k8s_fakes import FakeBatchApi, FakeCoreApi

from image_search_assets.definitions import DAILY_JOB
from image_search_assets.k8s.step_handler import PendingAwareK8sStepHandler

NAMESPACE = "dagster"
IMAGE = "asia-east1-docker.pkg.dev/my-project/image-search/user-code:test"
VALUES = yaml.safe_load(
    (Path(__file__).resolve().parents[2] / "k8s" / "helm" / "values.yaml").read_text()
)


def launcher_run_k8s_config(values: dict = VALUES) -> dict[str, Any]:
    """`run_k8s_config` as the chart writes it from runLauncher...runK8sConfig."""
    run_k8s = values["runLauncher"]["config"]["k8sRunLauncher"].get("runK8sConfig", {})
    keys = {"containerConfig": "container_config", "podSpecConfig": "pod_spec_config"}
    return {keys[k]: v for k, v in run_k8s.items()}


def code_location_container_context(values: dict = VALUES) -> dict[str, Any] | None:
    """The container context the chart passes from the code server to its runs and steps.

    None when `includeConfigInLaunchedRuns` is off (our values): then the code server's env,
    volumes and resources stay its own, and runs and steps get theirs from the run launcher.
    """
    (server,) = values["dagster-user-deployments"]["deployments"]
    if not server.get("includeConfigInLaunchedRuns", {"enabled": True})["enabled"]:
        return None
    k8s = {
        "image_pull_policy": server["image"]["pullPolicy"],
        "env_secrets": [s["name"] for s in server.get("envSecrets", [])],
        "volume_mounts": server.get("volumeMounts", []),
        "volumes": server.get("volumes", []),
        "resources": server.get("resources", {}),
        "namespace": NAMESPACE,
        "service_account_name": values["global"]["serviceAccountName"],
        "env": server.get("env", []),
    }
    return {"k8s": {key: value for key, value in k8s.items() if value}}


def k8s_launcher_config(kubeconfig: str, **extra) -> dict:
    """The K8sRunLauncher block the Helm chart writes into dagster.yaml (values.yaml)."""
    return {
        "module": "dagster_k8s",
        "class": "K8sRunLauncher",
        "config": {
            "service_account_name": VALUES["global"]["serviceAccountName"],
            "instance_config_map": "dagster-instance",
            "postgres_password_secret": "dagster-postgresql-secret",
            "dagster_home": "/opt/dagster/dagster_home",
            "job_image": IMAGE,
            "job_namespace": NAMESPACE,
            "load_incluster_config": False,
            "kubeconfig_file": kubeconfig,
            "run_k8s_config": launcher_run_k8s_config(),
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
        origin = self.job.get_python_origin()
        self.origin = origin._replace(
            repository_origin=origin.repository_origin._replace(
                container_context=code_location_container_context()
            )
        )
        self.run = create_run_for_test(
            instance,
            job_name=DAILY_JOB,
            job_code_origin=self.origin,
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
                self.origin,
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


def render_run_worker(instance, kubeconfig: str, run) -> Any:
    """The run worker's V1Job, as the chart's K8sRunLauncher creates it for `run`."""
    config = k8s_launcher_config(kubeconfig)["config"]
    batch = FakeBatchApi()
    launcher = K8sRunLauncher(**config, k8s_client_batch_api=batch)
    launcher.register_instance(instance)
    launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
    return batch.created[-1]
