"""Every workload in the plain manifests has a NetworkPolicy of its own besides default deny.

Under default deny (k8s/policy/network-policies.yaml) a pod no policy selects can neither take
a request nor reach GCS, which an offline schema check cannot see.
"""

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
POLICIES = [
    d
    for d in yaml.safe_load_all((ROOT / "k8s/policy/network-policies.yaml").read_text())
    if d and d["kind"] == "NetworkPolicy"
]
WORKLOADS = [
    d
    for path in sorted((ROOT / "k8s/serving").glob("*.yaml"))
    for d in yaml.safe_load_all(path.read_text())
    if d and d["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}
]


def _selecting(labels: dict[str, str]) -> list[dict]:
    """The policies, default deny aside, whose pod selector matches these pod labels."""
    found = []
    for policy in POLICIES:
        wanted = policy["spec"]["podSelector"].get("matchLabels", {})
        if wanted and all(labels.get(k) == v for k, v in wanted.items()):
            found.append(policy)
    return found


def test_default_deny_covers_every_pod_both_ways():
    deny = next(p for p in POLICIES if p["metadata"]["name"] == "default-deny-all")
    assert deny["spec"]["podSelector"] == {}
    assert set(deny["spec"]["policyTypes"]) == {"Ingress", "Egress"}


@pytest.mark.parametrize("workload", WORKLOADS, ids=[w["metadata"]["name"] for w in WORKLOADS])
def test_each_workload_is_let_in_on_its_ports_and_out_to_gcs(workload):
    template = workload["spec"]["template"]
    policies = _selecting(template["metadata"]["labels"])
    assert policies, f"{workload['metadata']['name']}: no NetworkPolicy selects its pods"
    ports = {p["containerPort"] for c in template["spec"]["containers"] for p in c.get("ports", [])}
    ingress = {
        p["port"]
        for pol in policies
        for rule in pol["spec"].get("ingress", [])
        for p in rule.get("ports", [])
    }
    egress = {
        p["port"]
        for pol in policies
        for rule in pol["spec"].get("egress", [])
        for p in rule.get("ports", [])
    }
    assert ports <= ingress
    assert 443 in egress  # GCS
