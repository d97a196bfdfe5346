"""The deployment config under k8s/ agrees with the code: Helm values, GKE script, Dockerfile.

The Helm values are turned into the dagster.yaml the chart writes (only the sections these
values set) and loaded by Dagster's own instance-config loader, so a key Dagster rejects or
a storage class it cannot build fails here rather than in the cluster.
"""

import os
import re
import subprocess
import sys
from importlib import import_module
from pathlib import Path

import pytest
import yaml
from dagster._config import validate_config
from dagster._core.instance.config import dagster_instance_config
from dagster._core.storage.event_log.base import EventLogStorage

from image_search_assets.definitions import select_executor
from image_search_assets.k8s.compute_classes import quotas
from image_search_assets.k8s.job_config import APP_UID, PER_GPU
from image_search_assets.k8s.pools import gpu_pool_limits
from image_search_assets.settings import load_settings

K8S_DIR = Path(__file__).resolve().parents[2] / "k8s"
VALUES = yaml.safe_load((K8S_DIR / "helm" / "values.yaml").read_text())
SETTINGS = load_settings()


def chart_dagster_yaml(values: dict) -> str:
    """dagster.yaml as the chart's configmap-instance.yaml renders it from these values."""
    pg = {
        "postgres_db": {
            "hostname": "dagster-postgresql",
            "username": "dagster",
            "password": {"env": "DAGSTER_PG_PASSWORD"},
            "db_name": "dagster",
            "port": 5432,
        }
    }
    daemon = values["dagsterDaemon"]
    monitoring = daemon["runMonitoring"]
    pools, runs = values["concurrency"]["pools"], values["concurrency"]["runs"]
    chart = {
        "scheduler": {"module": "dagster.core.scheduler", "class": "DagsterDaemonScheduler"},
        "run_storage": {
            "module": "dagster_postgres.run_storage",
            "class": "PostgresRunStorage",
            "config": pg,
        },
        "schedule_storage": {
            "module": "dagster_postgres.schedule_storage",
            "class": "PostgresScheduleStorage",
            "config": pg,
        },
        "event_log_storage": {
            "module": "dagster_postgres.event_log",
            "class": "PostgresEventLogStorage",
            "config": pg,
        },
        "run_coordinator": {
            "module": "dagster.core.run_coordinator",
            "class": daemon["runCoordinator"]["type"],
        },
        "run_monitoring": {
            "enabled": monitoring["enabled"],
            "start_timeout_seconds": monitoring["startTimeoutSeconds"],
            "cancel_timeout_seconds": monitoring["cancelTimeoutSeconds"],
            "max_resume_run_attempts": monitoring["maxResumeRunAttempts"],
            "poll_interval_seconds": monitoring["pollIntervalSeconds"],
            "free_slots_after_run_end_seconds": monitoring["freeSlotsAfterRunEndSeconds"],
        },
        "concurrency": {
            "pools": {"default_limit": pools["defaultLimit"], "granularity": pools["granularity"]},
            "runs": {
                "max_concurrent_runs": runs["maxConcurrentRuns"],
                "tag_concurrency_limits": runs["tagConcurrencyLimits"],
            },
        },
    }
    # The chart appends additionalInstanceConfig as text after its own keys.
    return yaml.safe_dump(chart) + yaml.safe_dump(values["additionalInstanceConfig"])


@pytest.fixture(scope="module")
def instance_config(tmp_path_factory):
    home = tmp_path_factory.mktemp("dagster_home")
    (home / "dagster.yaml").write_text(chart_dagster_yaml(VALUES))
    config, _ = dagster_instance_config(str(home))
    return config


def test_instance_config_is_accepted_by_dagster(instance_config):
    assert instance_config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert instance_config["run_monitoring"]["free_slots_after_run_end_seconds"] > 0
    assert instance_config["concurrency"]["runs"]["max_concurrent_runs"] >= 1


def test_event_log_storage_is_the_weighted_gpu_storage(instance_config):
    storage = instance_config["event_log_storage"]  # the appended block won the repeated key
    assert (storage["module"], storage["class"]) == (
        "image_search_assets.gpu_budget",
        "WeightedPostgresEventLogStorage",
    )
    cls = getattr(import_module(storage["module"]), storage["class"])
    assert issubclass(cls, EventLogStorage)
    assert validate_config(cls.config_type(), storage["config"]).success


def test_gpu_pool_limit_is_the_categories_gpu_budget():
    limits = gpu_pool_limits(SETTINGS)
    assert limits == {"gpu-l4-spot.l4.t4.l4-flex": 17}  # one budget for the option list
    pools = VALUES["concurrency"]["pools"]
    assert pools["granularity"] == "op"
    assert pools["defaultLimit"] == sum(limits.values())


def test_code_location_runs_steps_on_the_k8s_executor():
    (deployment,) = VALUES["dagster-user-deployments"]["deployments"]
    env = {e["name"]: e.get("value") for e in deployment["env"]}
    assert env["IMAGE_SEARCH_EXECUTOR"] == "k8s"
    assert select_executor(env["IMAGE_SEARCH_EXECUTOR"]).name == "k8s"
    # Runs and steps take the same list from the run launcher, not the code server's whole env.
    assert deployment["includeConfigInLaunchedRuns"]["enabled"] is False
    run_config = VALUES["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]
    assert run_config["containerConfig"]["env"] == deployment["env"]
    assert deployment["dagsterApiGrpcArgs"] == ["--module-name", "image_search_assets.definitions"]
    images = {VALUES[part]["image"]["repository"] for part in ("dagsterWebserver", "dagsterDaemon")}
    assert images == {deployment["image"]["repository"]}  # they load our storage class
    assert deployment["podSecurityContext"]["runAsUser"] == APP_UID


def test_gcp_access_is_workload_identity_never_a_key_file():
    # The chart's account (the daemon's) has no Google identity; the others: next tests.
    assert "annotations" not in VALUES["serviceAccount"]
    assert VALUES["global"]["serviceAccountName"] == VALUES["serviceAccount"]["name"]
    everything = "\n".join(p.read_text() for p in K8S_DIR.rglob("*") if p.is_file())
    for key_file_hint in ("GOOGLE_APPLICATION_CREDENTIALS", "jsonCredentialsEnvvar", "keys create"):
        assert key_file_hint not in everything


@pytest.fixture(scope="module")
def setup_commands() -> str:
    env = {**os.environ, "PROJECT_ID": "my-project", "DRY_RUN": "1"}
    done = subprocess.run(
        ["bash", str(K8S_DIR / "gke-setup.sh")],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.stdout


def command(commands: str, prefix: str) -> str:
    (line,) = [line for line in commands.splitlines() if line.startswith(prefix)]
    return line.replace("\\,", ",")


def test_gke_script_makes_a_regional_cluster_and_checks_each_gpu_options_quota(setup_commands):
    cluster = command(setup_commands, "gcloud container clusters create")
    assert (
        "--location asia-east1 " in cluster and "--workload-pool my-project.svc.id.goog" in cluster
    )
    # GPU options: no fixed GPU pool (the ComputeClasses' node pools are created by GKE), and
    # each option's regional quota covers the whole GPU budget.
    assert "gcloud container node-pools create" not in setup_commands
    checks = [line for line in setup_commands.splitlines() if line.startswith("quota check:")]
    budget = sum(c.gpus for c in SETTINGS.categories)
    assert checks == [f"quota check: {m} >= {budget} in asia-east1" for m in quotas(SETTINGS)]


def test_gke_script_makes_a_gpu_pool_from_zero_for_a_single_type():
    env = {**os.environ, "PROJECT_ID": "my-project", "DRY_RUN": "1", "GPU_CLASSES": "false"}
    done = subprocess.run(
        ["bash", str(K8S_DIR / "gke-setup.sh")], env=env, capture_output=True, text=True, timeout=60
    )
    pool = command(done.stdout, "gcloud container node-pools create")
    assert "quota check:" not in done.stdout
    zones = re.search(r"--node-locations (\S+)", pool).group(1).split(",")
    assert len(zones) >= 2 and all(z.startswith("asia-east1-") for z in zones)
    for flag in (
        "--enable-autoscaling",
        "--total-min-nodes 0",
        "--num-nodes 0",
        "--location-policy ANY",
        "--node-taints nvidia.com/gpu=present:NoSchedule",
    ):
        assert flag in pool
    gpu_type, gpus_per_node = re.search(r"type=([\w-]+),count=(\d+)", pool).groups()
    assert gpu_type == "nvidia-tesla-t4"
    assert max(c.gpus for c in SETTINGS.categories) <= int(gpus_per_node)
    max_nodes = int(re.search(r"--total-max-nodes (\d+)", pool).group(1))
    assert max_nodes * int(gpus_per_node) >= sum(c.gpus for c in SETTINGS.categories)
    # A full node's worth of GPU steps fits an n1-standard-16 (~15.8 CPUs, ~55 GiB allocatable).
    assert PER_GPU.cpu_millis * int(gpus_per_node) <= 15_000
    assert PER_GPU.memory_gib * int(gpus_per_node) <= 52


def test_gke_script_binds_the_charts_service_account(setup_commands):
    bindings = [
        line.replace("\\", "")
        for line in setup_commands.splitlines()
        if line.startswith("gcloud iam service-accounts add-iam-policy-binding")
    ]
    (server,) = VALUES["dagster-user-deployments"]["deployments"]
    run_pod = VALUES["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]["podSpecConfig"]
    serving = yaml.safe_load_all((K8S_DIR / "serving" / "deployment.yaml").read_text())
    accounts = {
        "dagster-webserver",  # k8s/helm/post-render.sh
        run_pod["serviceAccountName"],
        server["serviceAccount"]["name"],
        "dagster-step",
        *(d["metadata"]["name"] for d in serving if d and d["kind"] == "ServiceAccount"),
    }
    assert len(accounts) == 5
    daemon = VALUES["global"]["serviceAccountName"]
    assert not [b for b in bindings if f"[dagster/{daemon}]" in b]  # no Google identity
    for account in accounts:  # one Google account per pod kind, each bound to its own KSA
        (line,) = [b for b in bindings if f"[dagster/{account}]" in b]
        assert "roles/iam.workloadIdentityUser" in line
    assert "roles/storage.objectAdmin" not in setup_commands


def test_gke_script_refuses_a_single_zone():
    env = {**os.environ, "PROJECT_ID": "p", "DRY_RUN": "1", "NODE_LOCATIONS": "asia-east1-a"}
    done = subprocess.run(
        ["bash", str(K8S_DIR / "gke-setup.sh")], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0 and "at least two zones" in done.stderr


def test_dockerfile_installs_dependencies_before_the_source_and_runs_as_non_root():
    text = (K8S_DIR / "Dockerfile").read_text()
    deps = text.index("pip install --require-hashes -r /tmp/requirements.lock")
    assert deps < text.index("COPY --chown=app:app image_search_assets")
    assert re.search(rf"ARG APP_UID={APP_UID}\b", text)
    assert re.search(r"^USER \$\{APP_UID\}", text, re.M)


def test_local_runs_never_import_dagster_k8s():
    env = {k: v for k, v in os.environ.items() if k != "IMAGE_SEARCH_EXECUTOR"}
    code = "import sys, image_search_assets.definitions; print('dagster_k8s' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stdout.strip() == "False"


def test_each_pod_kinds_account_maps_to_a_google_account_of_its_own():
    def manifests(path: Path) -> list[dict]:
        return [d for d in yaml.safe_load_all(path.read_text()) if d]

    (server,) = VALUES["dagster-user-deployments"]["deployments"]
    assert server["serviceAccount"] == {"create": False, "name": "dagster-code-server"}
    accounts = []
    for path in (K8S_DIR / "policy" / "rbac.yaml", K8S_DIR / "serving" / "deployment.yaml"):
        accounts += [
            (d["metadata"]["name"], d["metadata"]["annotations"])
            for d in manifests(path)
            if d["kind"] == "ServiceAccount"
        ]
    google = {name: notes["iam.gke.io/gcp-service-account"] for name, notes in accounts}
    assert len(google) == len(accounts) == 5
    assert len(set(google.values())) == 5, google  # no two pod kinds share a Google identity
