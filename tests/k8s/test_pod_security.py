"""Every pod the platform creates passes the Pod Security Standard "restricted".

The rules checked are named in tests/k8s/pod_security.py: the baseline rules (host
namespaces, privileged, baseline capabilities, hostPath, hostPort, procMount, seccomp not
Unconfined, sysctls, AppArmor, SELinux) and the restricted ones (volume types, privilege
escalation, runAsNonRoot, runAsUser != 0, seccomp RuntimeDefault/Localhost, drop ALL
capabilities), plus a read-only root filesystem and ephemeral-storage limits.

The pods: every step Job of the daily job (assets and asset checks) and the run worker, both
rendered by dagster-k8s from the real `defs` with the chart's config (k8s_harness), the
webserver, daemon and code server pods, built from k8s/helm/values.yaml the way the chart's
templates place each value, and every pod template in the plain manifests (k8s/serving/,
k8s/policy/). The namespace enforces the same profile (k8s/policy/), and every object of those
manifests lives in it.
"""

import re
from pathlib import Path

import pytest
import yaml
from dagster._core.test_utils import instance_for_test
from k8s_fakes import write_kubeconfig
from k8s_harness import VALUES, StepJobs, k8s_launcher_config, render_run_worker
from k8s_schemas import as_manifest, validate_strict
from pod_security import RULES, pod_spec, violations

from image_search_assets.k8s.job_config import K8S_CONFIG_TAG, STEP_SERVICE_ACCOUNT

RUN_WORKER_ACCOUNT = VALUES["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"][
    "podSpecConfig"
]["serviceAccountName"]

K8S_DIR = Path(__file__).resolve().parents[2] / "k8s"
POLICY_DIR = K8S_DIR / "policy"
MANIFEST_DIRS = (K8S_DIR / "serving", POLICY_DIR)
# envsubst's placeholders in k8s/serving/ (its header names them).
PLACEHOLDERS = {"PROJECT_ID": "proj", "REGION": "asia-east1", "BUCKET": "b", "IMAGE_TAG": "abc"}
WRITABLE = {"/tmp", "/home/app", "/dev/shm"}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """({step key: Job manifest}, run worker Job manifest, {step key: op tags})."""
    kubeconfig = write_kubeconfig(tmp_path_factory.mktemp("kube") / "config")
    with instance_for_test(overrides={"run_launcher": k8s_launcher_config(kubeconfig)}) as inst:
        jobs = StepJobs(inst, kubeconfig)
        steps = {key: as_manifest(jobs.launch(key)) for key in jobs.step_keys}
        tags = {s.key: s.tags for s in jobs.plan.steps}
        yield steps, as_manifest(render_run_worker(inst, kubeconfig, jobs.run)), tags


def pod_of(job: dict) -> dict:
    return job["spec"]["template"]["spec"]


def test_every_step_job_assets_and_checks_passes_restricted(rendered):
    steps, _, tags = rendered
    checks = [key for key in steps if K8S_CONFIG_TAG not in tags[key]]
    assert checks, "the asset checks' steps carry no k8s op tags: they are what this guards"
    failing = {key: violations(pod_of(job)) for key, job in steps.items()}
    assert {key: v for key, v in failing.items() if v} == {}
    for job in steps.values():
        validate_strict(job)


def test_step_pods_have_no_api_token_and_their_own_account(rendered):
    steps, _, _ = rendered
    for key, job in steps.items():
        pod = pod_of(job)
        assert pod["automountServiceAccountToken"] is False, key
        assert pod["serviceAccountName"] == STEP_SERVICE_ACCOUNT, key
        (container,) = pod["containers"]
        assert {m["mountPath"] for m in container["volumeMounts"]} == WRITABLE, key


def test_run_worker_passes_restricted_and_keeps_its_token(rendered):
    _, run_worker, _ = rendered
    pod = pod_of(run_worker)
    assert violations(pod) == []
    assert pod["serviceAccountName"] == RUN_WORKER_ACCOUNT != VALUES["global"]["serviceAccountName"]
    assert pod.get("automountServiceAccountToken", True) is True  # it creates its steps' Jobs
    validate_strict(run_worker)


def _env_of(pod: dict) -> tuple[dict[str, str | None], list[dict]]:
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    return env, container.get("envFrom", [])


def test_the_alert_webhook_reaches_the_code_server_only(rendered):
    steps, run_worker, _ = rendered
    (server,) = VALUES["dagster-user-deployments"]["deployments"]
    platform_env = {e["name"]: e["value"] for e in server["env"]}
    assert {s["name"] for s in server["envSecrets"]} == {"image-search-alerts"}
    for key, job in [*steps.items(), ("run worker", run_worker)]:
        env, env_from = _env_of(pod_of(job))
        assert "IMAGE_SEARCH_ALERT_WEBHOOK" not in env, key
        assert "image-search-alerts" not in str(env_from), key
        # ...and the deployment's settings do, from the one list the code server has too.
        assert {k: env[k] for k in platform_env} == platform_env, key


def chart_pods(values: dict) -> dict[str, dict]:
    """The webserver, daemon and code server pod specs, as the chart's templates fill them."""
    pods = {}
    (server,) = values["dagster-user-deployments"]["deployments"]
    instance = [{"name": "dagster-instance", "configMap": {"name": "dagster-instance"}}]
    instance.append({"name": "dagster-workspace-yaml", "configMap": {"name": "dagster-workspace"}})
    for kind, part in (("webserver", "dagsterWebserver"), ("daemon", "dagsterDaemon")):
        v = values[part]
        init = [
            {"name": "check-db-ready", "image": "postgres:14.6", "command": ["pg_isready"]},
            {"name": f"init-user-deployment-{server['name']}", "image": "busybox:1.28"},
        ]
        pods[kind] = {
            "serviceAccountName": values["global"]["serviceAccountName"],
            "automountServiceAccountToken": True,
            "securityContext": v["podSecurityContext"],
            "initContainers": [
                {
                    **c,
                    "securityContext": v["securityContext"],
                    "resources": v["initContainerResources"],
                }
                for c in init
            ],
            "containers": [
                {
                    "name": "dagster",
                    "image": "user-code",
                    "securityContext": v["securityContext"],
                    "resources": v["resources"],
                    "volumeMounts": [
                        {
                            "name": "dagster-instance",
                            "subPath": "dagster.yaml",
                            "mountPath": "/opt/dagster/dagster_home/dagster.yaml",
                        },
                        {"name": "dagster-workspace-yaml", "mountPath": "/dagster-workspace/"},
                        *v["volumeMounts"],
                    ],
                }
            ],
            "volumes": [*instance, *v["volumes"]],
        }
    server_env_from = [{"secretRef": secret} for secret in server["envSecrets"]]
    pods["code-server"] = {
        "serviceAccountName": server["serviceAccount"]["name"],
        "automountServiceAccountToken": True,
        "securityContext": server["podSecurityContext"],
        "containers": [
            {
                "name": "dagster",
                "image": "user-code",
                "securityContext": server["securityContext"],
                "resources": server["resources"],
                "env": server["env"],
                "envFrom": server_env_from,
                "volumeMounts": server["volumeMounts"],
            }
        ],
        "volumes": server["volumes"],
    }
    return pods


@pytest.mark.parametrize("kind", ["webserver", "daemon", "code-server"])
def test_chart_pods_pass_restricted(kind):
    pod = chart_pods(VALUES)[kind]
    assert violations(pod) == []
    validate_strict({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": kind}, "spec": pod})


def test_only_the_launching_accounts_have_a_role():
    docs = [d for p in sorted(POLICY_DIR.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text())]
    bindings = [d for d in docs if d and d["kind"] in {"RoleBinding", "ClusterRoleBinding"}]
    assert {b["kind"] for b in bindings} == {"RoleBinding"}
    roles = {d["metadata"]["name"]: d for d in docs if d and d["kind"] == "Role"}

    def verbs(role: str) -> set[tuple[str, str]]:
        rules = roles[role]["rules"]
        return {(res, v) for r in rules for res in r["resources"] for v in r["verbs"]}

    bound = {s["name"]: b["roleRef"]["name"] for b in bindings for s in b["subjects"]}
    # The daemon launches run Jobs, run workers their steps'; the webserver only deletes them.
    daemon = VALUES["global"]["serviceAccountName"]
    assert bound == {
        daemon: "dagster-job-launcher",
        RUN_WORKER_ACCOUNT: "dagster-job-launcher",
        "dagster-webserver": "dagster-run-terminator",
    }
    for role in roles:
        writes = {(res, v) for res, v in verbs(role) if v not in {"get", "list", "watch"}}
        assert {res for res, _ in writes} <= {"jobs"}, role  # nothing but Jobs is ever written
    assert ("jobs", "create") in verbs("dagster-job-launcher")
    assert ("jobs", "create") not in verbs("dagster-run-terminator")
    assert ("jobs", "delete") in verbs("dagster-run-terminator")
    accounts = {d["metadata"]["name"]: d for d in docs if d and d["kind"] == "ServiceAccount"}
    assert accounts[STEP_SERVICE_ACCOUNT]["automountServiceAccountToken"] is False


def manifest_objects() -> dict[str, dict]:
    """Every object of the plain manifests, as 'dir/file: Kind/name'."""
    found = {}
    for directory in MANIFEST_DIRS:
        for path in sorted(directory.glob("*.yaml")):
            text = re.sub(r"\$\{(\w+)\}", lambda m: PLACEHOLDERS[m.group(1)], path.read_text())
            for doc in yaml.safe_load_all(text):
                if doc:
                    name = f"{directory.name}/{path.name}: {doc['kind']}/{doc['metadata']['name']}"
                    found[name] = doc
    return found


def test_every_pod_template_in_the_manifests_passes_restricted():
    templates = {k: pod for k, d in manifest_objects().items() if (pod := pod_spec(d)) is not None}
    # The serving Deployment is there (k8s/policy/ holds no workloads today; any added is checked).
    assert "serving/deployment.yaml: Deployment/image-search-serving" in templates
    assert {k: v for k, pod in templates.items() if (v := violations(pod))} == {}
    for key, pod in templates.items():
        assert pod.get("automountServiceAccountToken") is False, f"{key} has no Role: no token"


def test_namespace_enforces_restricted():
    (ns,) = [d for d in yaml.safe_load_all((POLICY_DIR / "namespace.yaml").read_text()) if d]
    labels = ns["metadata"]["labels"]
    for mode in ("enforce", "audit", "warn"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"
    # No manifest brings a namespace of its own (one without these labels) or lands outside.
    objects = manifest_objects()
    namespaces = [k for k, d in objects.items() if d["kind"] == "Namespace"]
    assert namespaces == ["policy/namespace.yaml: Namespace/" + ns["metadata"]["name"]]
    outside = {
        k: d["metadata"].get("namespace")
        for k, d in objects.items()
        if d["kind"] != "Namespace" and d["metadata"].get("namespace") != ns["metadata"]["name"]
    }
    assert outside == {}


def test_the_checker_catches_each_restricted_rule():
    # Guards the guard: a pod that breaks every rule must be reported under every rule name.
    pod = {
        "hostNetwork": True,
        "securityContext": {
            "runAsUser": 0,
            "sysctls": [{"name": "kernel.msgmax", "value": "1"}],
            "seLinuxOptions": {"user": "x"},
            "appArmorProfile": {"type": "Unconfined"},
        },
        "volumes": [{"name": "host", "hostPath": {"path": "/"}}],
        "containers": [
            {
                "name": "c",
                "ports": [{"containerPort": 80, "hostPort": 80}],
                "securityContext": {
                    "privileged": True,
                    "capabilities": {"add": ["SYS_ADMIN"]},
                    "procMount": "Unmasked",
                    "seccompProfile": {"type": "Unconfined"},
                },
            }
        ],
    }
    reported = {v.split(":")[0] for v in violations(pod)}
    assert reported == set(RULES)
    # ... and a workload's template is found wherever its kind keeps it.
    cron = {"kind": "CronJob", "spec": {"jobTemplate": {"spec": {"template": {"spec": pod}}}}}
    assert pod_spec(cron) is pod
    assert pod_spec({"kind": "Service", "spec": {}}) is None
