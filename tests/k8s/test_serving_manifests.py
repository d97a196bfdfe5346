"""k8s/serving/: every object validates strictly, and agrees with the service's own CLI."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from image_search_assets import cli
from image_search_assets.serving.limits import ServeLimits, flag, from_args
from image_search_assets.settings import ENV_OVERRIDES, FetchConfig
from tests.k8s.k8s_schemas import validate_strict

SERVING = Path(__file__).resolve().parents[2] / "k8s" / "serving"
PLACEHOLDERS = {"PROJECT_ID": "proj", "REGION": "asia-east1", "BUCKET": "b", "IMAGE_TAG": "abc"}


def _documents() -> list[dict]:
    docs = []
    for path in sorted(SERVING.glob("*.yaml")):
        text = re.sub(r"\$\{(\w+)\}", lambda m: PLACEHOLDERS[m.group(1)], path.read_text())
        docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


DOCS = _documents()
BY_KIND = {d["kind"]: d for d in DOCS}


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_every_object_validates_strictly(doc):
    validate_strict(doc)


def test_the_four_serving_kinds_are_there():
    wanted = {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"}
    assert wanted <= set(BY_KIND)


def test_pods_are_ready_on_readyz_non_root_read_only_with_requests():
    pod = BY_KIND["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] != 0
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert {"cpu", "memory", "ephemeral-storage"} <= set(container["resources"]["requests"])
    # Every writable path is an emptyDir; the index cache is one of them.
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert all("emptyDir" in volumes[name] for name in mounts.values())
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["IMAGE_SEARCH_SERVING_CACHE"] in mounts and "/tmp" in mounts
    assert ENV_OVERRIDES["IMAGE_SEARCH_STORAGE_ROOT"] == "storage_root"
    assert env["IMAGE_SEARCH_STORAGE_ROOT"].startswith("gs://")


def test_the_command_is_one_the_cli_accepts_on_the_probed_port(monkeypatch):
    pod = BY_KIND["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    command = container["command"]
    assert command[:2] == ["image-search", "serve"]
    seen = []
    monkeypatch.setattr(cli, "cmd_serve", lambda args: seen.append(args) or 0)
    assert cli.main(command[1:]) == 0
    (args,) = seen
    (port,) = container["ports"]
    assert args.host == "0.0.0.0" and args.port == port["containerPort"]
    assert container["readinessProbe"]["httpGet"]["port"] == port["name"]
    service_port = BY_KIND["Service"]["spec"]["ports"][0]
    assert service_port["targetPort"] == port["name"]


def test_selectors_and_targets_point_at_the_deployment():
    deployment = BY_KIND["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert BY_KIND["Service"]["spec"]["selector"].items() <= labels.items()
    pdb = BY_KIND["PodDisruptionBudget"]["spec"]
    assert pdb["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["minAvailable"] < deployment["spec"]["replicas"]
    hpa = BY_KIND["HorizontalPodAutoscaler"]["spec"]
    target = hpa["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert hpa["minReplicas"] >= pdb["minAvailable"] + 1
    sa = BY_KIND["ServiceAccount"]["metadata"]["name"]
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == sa
    namespaces = {d["metadata"]["namespace"] for d in DOCS}
    assert namespaces == {"dagster"}


def _bytes(quantity: str) -> int:
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}
    return int(quantity[:-2]) * units[quantity[-2:]] if quantity[-2:] in units else int(quantity)


def test_every_client_limit_is_stated_and_the_memory_limit_holds_the_image_budget(monkeypatch):
    (container,) = BY_KIND["Deployment"]["spec"]["template"]["spec"]["containers"]
    command = container["command"]
    # Stated, not left to defaults: a reader of the manifest sees what one client may cost.
    assert all(flag(f.name) in command for f in fields(ServeLimits))
    seen = []
    monkeypatch.setattr(cli, "cmd_serve", lambda args: seen.append(args) or 0)
    cli.main(command[1:])
    limits = from_args(seen[0])
    assert limits.image_queries and limits.header_timeout_s <= 30 and limits.body_timeout_s <= 60
    # The process with torch and the models, every image query's memory and upload beside it.
    process = int(1.5 * (1 << 30))
    uploads = limits.max_image_queries * FetchConfig().max_bytes
    memory = _bytes(container["resources"]["limits"]["memory"])
    assert memory >= process + limits.decode_memory_bytes + uploads
    assert limits.decode_memory_bytes >= FetchConfig().max_decode_bytes
    # A pod's connections stay under the open-file limit a container gets by default (1024).
    assert limits.max_connections < 1024
