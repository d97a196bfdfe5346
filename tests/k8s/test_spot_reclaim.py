"""A step whose spot node is reclaimed mid-run is retried and resumes from its finished chunks.

Dagster is real (`execute_job`, our executor, a SQLite instance) and so is the step: each Job's
container command runs as a local subprocess. Kubernetes is not: the API objects are
constructed. The first attempt's process dies after two chunks, as a reclaimed VM's would, and
its pod then reads as the kubelet leaves it on a node shutdown (Failed, DisruptionTarget
TerminationByKubelet, being deleted).
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
from k8s_fakes import NOW, FakeBatchApi, FakeCoreApi, job_object, reclaimed_pod, running_pod
from k8s_harness import k8s_launcher_config
from k8s_run_job import CHUNK, ITEMS, RECLAIM_AFTER_ENV, chunked_step_job

from image_search_assets.k8s.pending import node_reclaimed
from image_search_assets.settings import DEFAULT_CONFIG

HERE = Path(__file__).parent
RECLAIM_AFTER = 2


class SpotCluster(FakeBatchApi):
    """Runs every Job's container; the first one's VM is reclaimed after RECLAIM_AFTER chunks."""

    def __init__(self, core: FakeCoreApi, storage_root: Path):
        super().__init__()
        self.core, self.storage_root = core, str(storage_root)
        self.procs: dict[str, subprocess.Popen] = {}

    def create_namespaced_job(self, body, namespace, **kwargs):
        self.now = datetime.now(UTC)
        super().create_namespaced_job(body, namespace, **kwargs)
        self.core.pods.append(running_pod(self.jobs[body.metadata.name], self.now))
        (container,) = body.spec.template.spec.containers
        env = {**os.environ, **{e.name: e.value for e in container.env if e.value is not None}}
        env["PYTHONPATH"] = os.pathsep.join([str(HERE), os.getcwd(), env.get("PYTHONPATH", "")])
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        env["IMAGE_SEARCH_STORAGE_ROOT"] = self.storage_root  # the chart's is gs://
        if len(self.created) == 1:
            env[RECLAIM_AFTER_ENV] = str(RECLAIM_AFTER)
        self.procs[body.metadata.name] = subprocess.Popen(container.args, env=env)

    def read_namespaced_job(self, name, namespace, **kwargs):
        job = super().read_namespaced_job(name, namespace, **kwargs)
        proc = self.procs.get(name)
        if proc is not None and proc.poll() is not None:
            ok = proc.returncode == 0
            job.status = kubernetes.client.V1JobStatus(succeeded=int(ok), failed=int(not ok))
            if not ok:  # the node went away: the pod is as the kubelet's shutdown left it
                self.core.pods = [
                    p for p in self.core.pods if p.metadata.labels["job-name"] != name
                ]
                self.core.pods.append(reclaimed_pod(job, datetime.now(UTC)))
        return job

    read_namespaced_job_status = read_namespaced_job


@pytest.fixture
def cluster(monkeypatch, tmp_path):
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    config["retry"] = {**config.get("retry", {}), "first_delay_s": 0.2, "max_delay_s": 0.5}
    (tmp_path / "platform.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setenv("IMAGE_SEARCH_CONFIG", str(tmp_path / "platform.yaml"))
    core = FakeCoreApi()
    batch = SpotCluster(core, tmp_path / "storage")
    monkeypatch.setattr(kubernetes.client, "BatchV1Api", lambda *a, **k: batch)
    monkeypatch.setattr(kubernetes.client, "CoreV1Api", lambda *a, **k: core)
    monkeypatch.setenv("DAGSTER_STEP_DELEGATING_EXECUTOR_SLEEP_SECONDS", "0.2")
    yield batch
    for proc in batch.procs.values():
        proc.kill()
        proc.wait()


def test_a_reclaimed_pod_reads_as_a_node_going_away():
    job = job_object("dagster-step-abc", NOW)
    assert "TerminationByKubelet" in (node_reclaimed([reclaimed_pod(job, NOW)]) or "")
    assert node_reclaimed([running_pod(job, NOW)]) is None


@pytest.mark.timeout(240)
def test_a_reclaimed_step_is_retried_and_resumes_from_its_chunks(cluster, kubeconfig, tmp_path):
    launcher = k8s_launcher_config(kubeconfig, dagster_home=str(tmp_path))
    with dg.instance_for_test(overrides={"run_launcher": launcher}, temp_dir=str(tmp_path)) as inst:
        result = dg.execute_job(
            dg.reconstructable(chunked_step_job),
            instance=inst,
            run_config={"execution": {"config": {"step_health_check_interval_seconds": 1}}},
        )
        logs = [r.dagster_event for r in inst.all_logs(result.run_id) if r.dagster_event]

    assert result.success, [e.message for e in logs if e.is_failure]
    first, retry = [job.metadata.name for job in cluster.created]
    assert cluster.procs[first].returncode == 143 and cluster.procs[retry].wait(timeout=60) == 0
    (up_for_retry,) = [e for e in logs if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
    error = up_for_retry.step_retry_data.error.message
    assert "node reclaimed (preemption)" in error and "TerminationByKubelet" in error
    (output,) = [e for e in logs if e.event_type == dg.DagsterEventType.STEP_OUTPUT]
    meta = {k: v.value for k, v in output.step_output_data.metadata.items()}
    assert meta == {
        "chunks_reused": RECLAIM_AFTER,
        "chunks_computed": ITEMS // CHUNK - RECLAIM_AFTER,
    }
