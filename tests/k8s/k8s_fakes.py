"""Constructed Kubernetes API objects and in-memory stand-ins for BatchV1Api / CoreV1Api.

The objects have the shapes the real API server returns for a step Job whose pod cannot be
scheduled (`kubectl get -o yaml` of a GKE cluster out of T4s). The fakes keep Jobs, pods and
events in dicts, record every call, and never touch the network.
"""

from __future__ import annotations

import copy
import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path

from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

NOW = datetime(2026, 11, 2, 3, 0, tzinfo=UTC)
_uids = itertools.count(1)

FAILED_SCHEDULING = (
    "0/3 nodes are available: 1 Insufficient nvidia.com/gpu, 2 node(s) didn't match Pod's "
    "node affinity/selector. preemption: 0/3 nodes are available: 1 No preemption victims "
    "found for incoming pod, 2 Preemption is not helpful for scheduling."
)
NOT_TRIGGER_SCALE_UP = (
    "pod didn't trigger scale-up: 1 node(s) didn't match Pod's node affinity/selector, "
    "1 max node group size reached"
)
OUT_OF_RESOURCES = (
    "Node scale up in zones asia-east1-a associated with this pod failed: GCE out of "
    "resources. Pod is at risk of not being scheduled."
)
QUOTA_EXCEEDED = (
    'Error creating: pods "dagster-step-0a1b2c-x7k2p" is forbidden: exceeded quota: gpu-quota, '
    "requested: requests.nvidia.com/gpu=4, used: requests.nvidia.com/gpu=16, "
    "limited: requests.nvidia.com/gpu=17"
)


def write_kubeconfig(path: Path) -> str:
    """A kubeconfig that loads offline; nothing ever connects to its server."""
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: test\n"
        "clusters: [{name: test, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "contexts: [{name: test, context: {cluster: test, user: test}}]\n"
        "users: [{name: test, user: {token: not-a-secret}}]\n"
    )
    return str(path)


def job_object(name: str, created: datetime, namespace: str = "dagster") -> k8s.V1Job:
    """A step Job as read back from the API: uid, creation time, and an active, unready pod."""
    return k8s.V1Job(
        api_version="batch/v1",
        kind="Job",
        metadata=k8s.V1ObjectMeta(
            name=name, namespace=namespace, uid=f"job-uid-{next(_uids)}", creation_timestamp=created
        ),
        spec=k8s.V1JobSpec(backoff_limit=0, template=k8s.V1PodTemplateSpec()),
        status=k8s.V1JobStatus(active=1, ready=0, start_time=created),
    )


def pending_pod(job: k8s.V1Job, created: datetime) -> k8s.V1Pod:
    """The Job's pod, Pending with PodScheduled=False/Unschedulable, on no node; it carries the
    node selector of the Job's pod template, as the Job controller copies it."""
    template = job.spec.template.spec if job.spec and job.spec.template else None
    selector = template.node_selector if template else None
    return k8s.V1Pod(
        api_version="v1",
        kind="Pod",
        metadata=k8s.V1ObjectMeta(
            name=f"{job.metadata.name}-x7k2p",
            namespace=job.metadata.namespace,
            uid=f"pod-uid-{next(_uids)}",
            creation_timestamp=created,
            labels={"job-name": job.metadata.name},
        ),
        spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="dagster")], node_selector=selector),
        status=k8s.V1PodStatus(
            phase="Pending",
            qos_class="Burstable",
            conditions=[
                k8s.V1PodCondition(
                    type="PodScheduled",
                    status="False",
                    reason="Unschedulable",
                    message=FAILED_SCHEDULING,
                    last_transition_time=created,
                )
            ],
        ),
    )


def running_pod(job: k8s.V1Job, created: datetime) -> k8s.V1Pod:
    pod = pending_pod(job, created)
    pod.spec.node_name = "gke-image-search-gpu-t4-1a2b3c4d-x9z8"
    pod.status = k8s.V1PodStatus(
        phase="Running",
        conditions=[k8s.V1PodCondition(type="PodScheduled", status="True")],
    )
    return pod


def event(
    obj: k8s.V1Job | k8s.V1Pod,
    reason: str,
    message: str,
    *,
    at: datetime,
    type_: str = "Warning",
    component: str = "default-scheduler",
    count: int = 1,
) -> k8s.CoreV1Event:
    """A core/v1 Event about `obj`, as `list_namespaced_event` returns it."""
    return k8s.CoreV1Event(
        api_version="v1",
        kind="Event",
        metadata=k8s.V1ObjectMeta(
            name=f"{obj.metadata.name}.{next(_uids):x}", namespace=obj.metadata.namespace
        ),
        involved_object=k8s.V1ObjectReference(
            api_version=obj.api_version,
            kind=obj.kind,
            name=obj.metadata.name,
            namespace=obj.metadata.namespace,
            uid=obj.metadata.uid,
        ),
        reason=reason,
        message=message,
        type=type_,
        count=count,
        first_timestamp=at - timedelta(minutes=count),
        last_timestamp=at,
        source=k8s.V1EventSource(component=component),
        reporting_component=component,
    )


def _not_found(name: str) -> ApiException:
    return ApiException(status=404, reason=f'jobs.batch "{name}" not found')


class FakeBatchApi:
    """BatchV1Api over a dict of Jobs; records create/delete calls.

    A created Job gets what the API server adds: a uid, a creation time (`now`) and the
    status of an active Job whose pod is not ready.
    """

    def __init__(self, now: datetime = NOW):
        self.now = now
        self.jobs: dict[str, k8s.V1Job] = {}
        self.created: list[k8s.V1Job] = []
        self.deleted: list[dict] = []

    def create_namespaced_job(self, body, namespace, **_):
        self.created.append(body)  # as sent
        stored = copy.deepcopy(body)
        stored.metadata.namespace = namespace
        stored.metadata.uid = f"job-uid-{next(_uids)}"
        stored.metadata.creation_timestamp = self.now
        stored.status = k8s.V1JobStatus(active=1, ready=0, start_time=self.now)
        self.jobs[body.metadata.name] = stored

    def read_namespaced_job(self, name, namespace, **_):
        if name not in self.jobs:
            raise _not_found(name)
        return self.jobs[name]

    read_namespaced_job_status = read_namespaced_job

    def delete_namespaced_job(self, name, namespace, **kwargs):
        self.deleted.append({"name": name, "namespace": namespace, **kwargs})
        if self.jobs.pop(name, None) is None:
            raise _not_found(name)


class FakeCoreApi:
    """CoreV1Api over lists of pods and events; filters like the API server's selectors."""

    def __init__(self):
        self.pods: list[k8s.V1Pod] = []
        self.events: list[k8s.CoreV1Event] = []
        self.event_queries: list[str] = []

    def list_namespaced_pod(self, namespace, label_selector="", **_):
        key, _, value = label_selector.partition("=")
        items = [p for p in self.pods if (p.metadata.labels or {}).get(key) == value]
        return k8s.V1PodList(items=items)

    def delete_namespaced_pod(self, name, namespace, **_):
        self.pods = [p for p in self.pods if p.metadata.name != name]

    def list_namespaced_event(self, namespace, field_selector="", **_):
        self.event_queries.append(field_selector)
        wanted = dict(part.split("=", 1) for part in field_selector.split(",") if part)
        uid = wanted.get("involvedObject.uid")
        items = [e for e in self.events if uid is None or e.involved_object.uid == uid]
        return k8s.CoreV1EventList(items=items)


def reclaimed_pod(job: k8s.V1Job, at: datetime) -> k8s.V1Pod:
    """The Job's pod after GKE reclaimed its spot VM: the kubelet's graceful node shutdown
    failed it (DisruptionTarget / TerminationByKubelet) and it is being deleted."""
    pod = running_pod(job, at)
    pod.metadata.deletion_timestamp = at
    pod.status = k8s.V1PodStatus(
        phase="Failed",
        reason="Terminated",
        message="Pod was terminated in response to imminent node shutdown.",
        conditions=[
            k8s.V1PodCondition(type="PodScheduled", status="True"),
            k8s.V1PodCondition(
                type="DisruptionTarget",
                status="True",
                reason="TerminationByKubelet",
                message="Pod was terminated in response to imminent node shutdown.",
                last_transition_time=at,
            ),
        ],
    )
    return pod
