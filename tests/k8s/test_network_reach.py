"""Who may reach what, evaluated from the NetworkPolicies over each pod kind's real labels.

The labels come from where each pod is made: step and run-worker Jobs as dagster-k8s renders
them (k8s_harness), the chart's component labels for webserver, daemon and code server, and
the serving Deployment's template. The evaluator applies NetworkPolicy semantics (a pod is
isolated for egress once any policy selects it; traffic passes if any selecting policy's rule
admits the destination address and port), so a policy change that opens the internet to a
GPU step, or the API server to the code server, fails here.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest
import yaml
from k8s_schemas import as_manifest

from image_search_assets.k8s.job_config import EGRESS_LABEL, IMAGE_HOSTS

ROOT = Path(__file__).resolve().parents[2]
POLICIES = [
    d
    for d in yaml.safe_load_all((ROOT / "k8s/policy/network-policies.yaml").read_text())
    if d and d["kind"] == "NetworkPolicy"
]
SETUP = (ROOT / "k8s/gke-setup.sh").read_text()


def setup_default(name: str) -> str:
    return re.search(rf'^{name}="\$\{{{name}:-([^}}]*)\}}"', SETUP, re.M).group(1)


def first_host(cidr: str) -> str:
    return str(next(ipaddress.ip_network(cidr).hosts()))


# Destinations, from gke-setup.sh's defaults where it sets them.
API_SERVER = (first_host(setup_default("MASTER_CIDR")), 443)
POSTGRES = (first_host(setup_default("PG_RANGE")), 5432)
GOOGLE_APIS = (first_host(setup_default("GOOGLE_APIS_RANGE")), 443)
METADATA = ("169.254.169.254", 80)
PUBLIC_HTTPS = ("93.184.215.14", 443)  # any public host: an image host, a webhook, anyone's
NODE = ("10.128.0.7", 10250)  # a node's kubelet


def _selects(policy: dict, labels: dict[str, str]) -> bool:
    wanted = policy["spec"]["podSelector"].get("matchLabels", {})
    return all(labels.get(k) == v for k, v in wanted.items())


def _peer_admits(peer: dict, ip: str) -> bool:
    block = peer.get("ipBlock")
    if block is None:
        return False  # pod/namespace selectors never match an address outside the cluster
    address = ipaddress.ip_address(ip)
    inside = address in ipaddress.ip_network(block["cidr"])
    return inside and not any(address in ipaddress.ip_network(e) for e in block.get("except", []))


def may_reach(
    labels: dict[str, str], destination: tuple[str, int], policies: list[dict] = POLICIES
) -> bool:
    ip, port = destination
    egress = [p for p in policies if "Egress" in p["spec"]["policyTypes"]]
    selecting = [p for p in egress if _selects(p, labels)]
    assert selecting, f"no egress policy selects {labels}"
    for policy in selecting:
        for rule in policy["spec"].get("egress", []):
            ports = {p["port"] for p in rule.get("ports", [])}
            peers = rule.get("to")
            if (not ports or port in ports) and (
                peers is None or any(_peer_admits(peer, ip) for peer in peers)
            ):
                return True
    return False


@pytest.fixture(scope="module")
def pod_labels(tmp_path_factory) -> dict[str, dict[str, str]]:
    """Each pod kind's labels, from the objects that create it."""
    from dagster._core.test_utils import instance_for_test
    from k8s_fakes import write_kubeconfig
    from k8s_harness import StepJobs, k8s_launcher_config, render_run_worker

    kubeconfig = write_kubeconfig(tmp_path_factory.mktemp("kube") / "config")

    def labels(job) -> dict[str, str]:
        return as_manifest(job)["spec"]["template"]["metadata"]["labels"]

    with instance_for_test(overrides={"run_launcher": k8s_launcher_config(kubeconfig)}) as inst:
        jobs = StepJobs(inst, kubeconfig)
        kinds = {
            "image step": labels(jobs.launch("product_images")),
            "catalog step": labels(jobs.launch("new_products")),
            "GPU step": labels(jobs.launch("tops__embeddings")),
            "index step": labels(jobs.launch("tops__annoy_index")),
            "run worker": labels(render_run_worker(inst, kubeconfig, jobs.run)),
        }
    serving = yaml.safe_load_all((ROOT / "k8s/serving/deployment.yaml").read_text())
    (deployment,) = [d for d in serving if d and d["kind"] == "Deployment"]
    kinds["serving"] = deployment["spec"]["template"]["metadata"]["labels"]
    # The chart's own pod labels (its templates set `component`).
    kinds["webserver"] = {"component": "dagster-webserver"}
    kinds["daemon"] = {"component": "dagster-daemon"}
    kinds["code server"] = {"component": "user-deployments", "deployment": "image-search"}
    return kinds


def reachable_by(pod_labels: dict, destination: tuple[str, int]) -> set[str]:
    return {kind for kind, labels in pod_labels.items() if may_reach(labels, destination)}


def test_only_the_image_fetching_step_carries_the_egress_label(pod_labels):
    labelled = {k for k, labels in pod_labels.items() if labels.get(EGRESS_LABEL) == IMAGE_HOSTS}
    assert labelled == {"image step"}


def test_public_addresses_only_for_image_fetching_and_the_alert_webhook(pod_labels):
    assert reachable_by(pod_labels, PUBLIC_HTTPS) == {"image step", "code server"}
    assert reachable_by(pod_labels, (PUBLIC_HTTPS[0], 80)) == {"image step"}


def test_google_apis_through_their_private_range(pod_labels):
    everyone_but_the_daemon = set(pod_labels) - {"daemon"}
    assert reachable_by(pod_labels, GOOGLE_APIS) == everyone_but_the_daemon
    assert reachable_by(pod_labels, METADATA) == everyone_but_the_daemon


def test_the_api_server_only_for_the_accounts_with_a_role(pod_labels):
    assert reachable_by(pod_labels, API_SERVER) == {"webserver", "daemon", "run worker"}


def test_postgres_only_for_dagster_processes_that_write_events(pod_labels):
    steps = {"image step", "catalog step", "GPU step", "index step"}
    assert reachable_by(pod_labels, POSTGRES) == {"webserver", "daemon", "run worker", *steps}


def test_no_pod_reaches_nodes_or_private_ranges(pod_labels):
    assert reachable_by(pod_labels, NODE) == set()


def test_the_evaluator_admits_and_refuses_what_a_policy_says():
    # Guards the guard, on one hand-made policy: a rule with an except list, and a port.
    policies = [
        {
            "spec": {
                "podSelector": {"matchLabels": {"a": "b"}},
                "policyTypes": ["Egress"],
                "egress": [
                    {
                        "to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}],
                        "ports": [{"port": 443}],
                    }
                ],
            }
        }
    ]
    assert may_reach({"a": "b"}, ("8.8.8.8", 443), policies)
    assert not may_reach({"a": "b"}, ("8.8.8.8", 80), policies)
    assert not may_reach({"a": "b"}, ("10.1.2.3", 443), policies)
    with pytest.raises(AssertionError, match="no egress policy"):
        may_reach({"c": "d"}, ("8.8.8.8", 443), policies)
