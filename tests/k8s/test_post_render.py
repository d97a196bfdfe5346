"""k8s/helm/post-render.sh over the chart's webserver, daemon and code server Deployments.

The Deployments are built from k8s/helm/values.yaml the way the chart's templates fill them
(test_pod_security.chart_pods, with the chart's names and `component` labels), then piped
through the real post-renderer, which runs kustomize (`kustomize build`, or kubectl's
built-in `kubectl kustomize`). It needs one of the two binaries.
"""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from k8s_harness import VALUES
from k8s_schemas import validate_strict
from pod_security import violations
from test_pod_security import chart_pods

POST_RENDER = Path(__file__).resolve().parents[2] / "k8s" / "helm" / "post-render.sh"
KUSTOMIZE = shutil.which("kustomize") or shutil.which("kubectl")
pytestmark = pytest.mark.skipif(KUSTOMIZE is None, reason="needs kustomize or kubectl")

# (Deployment name, component label) as the chart names them for release "dagster".
CHART = {
    "webserver": ("dagster-dagster-webserver", "dagster-webserver"),
    "daemon": ("dagster-daemon", "dagster-daemon"),
    "code-server": ("dagster-dagster-user-deployments-image-search", "user-deployments"),
}


def chart_render() -> list[dict]:
    docs = []
    for kind, pod in chart_pods(VALUES).items():
        name, component = CHART[kind]
        labels = {"app.kubernetes.io/instance": "dagster", "component": component}
        docs.append(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": name, "namespace": "dagster", "labels": labels},
                "spec": {
                    "selector": {"matchLabels": labels},
                    "template": {"metadata": {"labels": labels}, "spec": pod},
                },
            }
        )
    docs.append(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "dagster-instance"},
            "data": {"dagster.yaml": "telemetry: {enabled: false}\n"},
        }
    )
    return docs


def post_render(chart: list[dict]) -> dict[str, dict]:
    """The objects k8s/helm/post-render.sh writes for `chart`, by name."""
    done = subprocess.run(
        ["bash", str(POST_RENDER)],
        input=yaml.safe_dump_all(chart),
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return {d["metadata"]["name"]: d for d in yaml.safe_load_all(done.stdout) if d}


@pytest.fixture(scope="module")
def rendered() -> dict[str, dict]:
    chart = chart_render()
    out = post_render(chart)
    assert set(out) == {d["metadata"]["name"] for d in chart}  # nothing dropped or added
    return out


def pod(rendered: dict, kind: str) -> dict:
    return rendered[CHART[kind][0]]["spec"]["template"]["spec"]


def test_the_code_server_pod_has_its_own_account_and_no_token(rendered):
    assert chart_pods(VALUES)["code-server"]["automountServiceAccountToken"] is True  # chart's
    assert pod(rendered, "code-server")["automountServiceAccountToken"] is False
    assert pod(rendered, "code-server")["serviceAccountName"] == "dagster-code-server"


def test_the_code_server_account_is_set_even_where_the_chart_names_another():
    # A chart that ignored the deployment's serviceAccount would give it the daemon's account,
    # which has a Role; the post-renderer sets the code server's own one regardless.
    chart = chart_render()
    (server,) = [d for d in chart if d["metadata"]["name"] == CHART["code-server"][0]]
    server["spec"]["template"]["spec"]["serviceAccountName"] = "dagster"
    spec = post_render(chart)[CHART["code-server"][0]]["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == "dagster-code-server"


def test_the_webserver_runs_as_its_own_account_and_the_daemon_keeps_the_charts(rendered):
    assert pod(rendered, "webserver")["serviceAccountName"] == "dagster-webserver"
    assert pod(rendered, "daemon")["serviceAccountName"] == VALUES["global"]["serviceAccountName"]


def test_everything_else_passes_through_unchanged(rendered):
    before = {d["metadata"]["name"]: d for d in chart_render()}
    assert rendered["dagster-instance"] == before["dagster-instance"]
    daemon = CHART["daemon"][0]
    assert rendered[daemon] == before[daemon]
    webserver = dict(pod(rendered, "webserver"), serviceAccountName="dagster")
    assert webserver == before[CHART["webserver"][0]]["spec"]["template"]["spec"]


@pytest.mark.parametrize("kind", list(CHART))
def test_post_rendered_pods_pass_restricted(rendered, kind):
    assert violations(pod(rendered, kind)) == []
    validate_strict(rendered[CHART[kind][0]])
