"""A whole run on the k8s executor whose first step pod is never scheduled.

Dagster is real: `execute_job` runs StepDelegatingExecutor's loop with our step handler on a
SQLite instance. Kubernetes is not: FakeCluster stands in for BatchV1Api (constructed API
objects, no network). It leaves the first Job's pod Pending with FailedScheduling events, and
"runs" any later Job by starting its container command (`dagster api execute_step`) as a local
subprocess, the way a kubelet would start the container.
"""

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import kubernetes.client
import pytest
import yaml
from k8s_fakes import FakeBatchApi, FakeCoreApi, event, pending_pod, running_pod
from k8s_harness import k8s_launcher_config
from k8s_run_job import gpu_step_job

from image_search_assets.settings import DEFAULT_CONFIG

HERE = Path(__file__).parent


class FakeCluster(FakeBatchApi):
    """The first Job's pod never fits; later Jobs run their container as a subprocess."""

    def __init__(self, core: FakeCoreApi):
        super().__init__()
        self.core = core
        self.procs: dict[str, subprocess.Popen] = {}

    def create_namespaced_job(self, body, namespace, **kwargs):
        self.now = datetime.now(UTC)
        super().create_namespaced_job(body, namespace, **kwargs)
        job = self.jobs[body.metadata.name]
        if len(self.created) == 1:
            pod = pending_pod(job, self.now)
            self.core.pods.append(pod)
            self.core.events.append(
                event(
                    pod,
                    "FailedScheduling",
                    "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
                    at=self.now,
                    count=3,
                )
            )
            return
        self.core.pods.append(running_pod(job, self.now))
        (container,) = body.spec.template.spec.containers
        env = {**os.environ, **{e.name: e.value for e in container.env if e.value is not None}}
        env["PYTHONPATH"] = os.pathsep.join([str(HERE), os.getcwd(), env.get("PYTHONPATH", "")])
        # The image puts `dagster` on PATH; here it is this interpreter's environment.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        self.procs[body.metadata.name] = subprocess.Popen(container.args, env=env)

    def read_namespaced_job(self, name, namespace, **kwargs):
        job = super().read_namespaced_job(name, namespace, **kwargs)
        proc = self.procs.get(name)
        if proc is not None and proc.poll() is not None:
            ok = proc.returncode == 0
            job.status = kubernetes.client.V1JobStatus(succeeded=int(ok), failed=int(not ok))
        return job

    read_namespaced_job_status = read_namespaced_job


@pytest.fixture
def cluster(monkeypatch, tmp_path):
    # The platform's retry policy comes from its config: a copy with a fast first delay.
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    config["retry"] = {**config.get("retry", {}), "first_delay_s": 0.2, "max_delay_s": 0.5}
    (tmp_path / "platform.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setenv("IMAGE_SEARCH_CONFIG", str(tmp_path / "platform.yaml"))
    core = FakeCoreApi()
    batch = FakeCluster(core)
    # DagsterKubernetesClient.production_client builds its APIs from these names.
    monkeypatch.setattr(kubernetes.client, "BatchV1Api", lambda *a, **k: batch)
    monkeypatch.setattr(kubernetes.client, "CoreV1Api", lambda *a, **k: core)
    monkeypatch.setenv("DAGSTER_STEP_DELEGATING_EXECUTOR_SLEEP_SECONDS", "0.2")
    yield batch
    for proc in batch.procs.values():
        proc.kill()
        proc.wait()


@pytest.mark.timeout(180)
def test_unscheduled_step_is_logged_deleted_and_retried_as_a_new_job(cluster, kubeconfig, tmp_path):
    launcher = k8s_launcher_config(kubeconfig, dagster_home=str(tmp_path))
    with dg.instance_for_test(overrides={"run_launcher": launcher}, temp_dir=str(tmp_path)) as inst:
        result = dg.execute_job(
            dg.reconstructable(gpu_step_job),
            instance=inst,
            run_config={
                "execution": {
                    "config": {
                        "scheduling_timeout_seconds": 0,
                        "step_health_check_interval_seconds": 1,
                    }
                }
            },
        )
        logs = [r.dagster_event for r in inst.all_logs(result.run_id) if r.dagster_event]

    assert result.success, [e.message for e in logs if e.is_failure]
    first, retry = [job.metadata.name for job in cluster.created]
    assert retry == f"{first}-1"
    assert cluster.deleted == [
        {"name": first, "namespace": "dagster", "propagation_policy": "Background"}
    ]
    report = next(e for e in logs if e.is_engine_event and "Scheduling timeout" in e.message)
    assert "FailedScheduling (x3)" in report.message
    (up_for_retry,) = [e for e in logs if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
    assert 0.15 <= up_for_retry.step_retry_data.seconds_to_wait <= 0.25
    # Only the retry's pod ever ran the step: it started as attempt 2 and succeeded once.
    steps = [e for e in logs if e.step_key == "detect"]
    kinds = [e.event_type for e in steps]
    assert dg.DagsterEventType.STEP_START not in kinds
    (restart,) = [e for e in steps if e.event_type == dg.DagsterEventType.STEP_RESTARTED]
    assert "attempt # 2" in restart.message
    assert kinds.count(dg.DagsterEventType.STEP_SUCCESS) == 1
    assert cluster.procs[retry].wait(timeout=60) == 0
    assert cluster.created[1].spec.template.spec.containers[0].args[:3] == [
        "dagster",
        "api",
        "execute_step",
    ]
