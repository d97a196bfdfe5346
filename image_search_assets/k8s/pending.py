"""Why a step's pod is not running yet, from Kubernetes API objects (Dagster-free).

Stock dagster-k8s only notices a missing or failed Job, so a step pod that no node can take
(no GPU in the zone, the autoscaler out of resources, a quota) is "healthy" forever (dagster
issue #24595). `diagnose` reads the Job, its pods and their events and says whether the pod
has waited past the scheduling timeout, and why. For a pod that selects a ComputeClass, the
why starts with the class's GPU options, every one of which GKE tried before the events below.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from kubernetes.client import CoreV1Event, V1Job, V1Pod

from image_search_assets.k8s.compute_classes import COMPUTE_CLASS_LABEL

# Events that explain a wait even though Kubernetes files some of them as "Normal":
# the cluster autoscaler reports "pod didn't trigger scale-up" as a Normal NotTriggerScaleUp.
EXPLAINING_EVENTS = frozenset(
    {"FailedScheduling", "NotTriggerScaleUp", "FailedScaleUp", "TriggeredScaleUp", "FailedCreate"}
)
MAX_REASONS = 10
MAX_MESSAGE_CHARS = 400


@dataclass(frozen=True)
class ScheduleVerdict:
    """Whether a step's pod is on a node; if not, for how long and why."""

    scheduled: bool
    pending_for: timedelta
    reasons: tuple[str, ...]
    timed_out: bool
    compute_class: str | None = None  # the class the pod selects, if any

    def describe(self) -> str:
        waited = f"not scheduled after {self.pending_for.total_seconds():.0f}s"
        if self.compute_class:
            waited += (
                f" on ComputeClass {self.compute_class}, whose options GKE tried in order: "
                + ", ".join(class_options(self.compute_class))
            )
        if not self.reasons:
            return f"{waited} (Kubernetes gave no reason)"
        return f"{waited}: " + "; ".join(self.reasons)


def class_options(name: str) -> tuple[str, ...]:
    """A class's options from its name (compute_classes.class_name): "gpu-x4-l4-spot.t4" ->
    ("l4 spot", "t4"). The name is all a pod carries; the class object needs API rights."""
    family = name.split("-", 2)[-1] if name.startswith("gpu-x") else name
    words = {"spot": "spot", "flex": "flex-start"}
    return tuple(
        " ".join(words.get(part, part) for part in slug.rsplit("-", 1))
        if slug.rsplit("-", 1)[-1] in words
        else slug
        for slug in family.split(".")
    )


def selected_class(pods: Sequence[V1Pod]) -> str | None:
    for pod in pods:
        selector = (pod.spec.node_selector if pod.spec else None) or {}
        if COMPUTE_CLASS_LABEL in selector:
            return selector[COMPUTE_CLASS_LABEL]
    return None


def is_scheduled(pod: V1Pod) -> bool:
    """Bound to a node (it may still be pulling its image: that is not a scheduling problem)."""
    if pod.spec is not None and pod.spec.node_name:
        return True
    status = pod.status
    if status is None:
        return False
    if status.phase not in (None, "Pending"):
        return True
    return any(c.type == "PodScheduled" and c.status == "True" for c in (status.conditions or []))


def waiting_since(job: V1Job) -> datetime:
    """When the wait started: the Job's creation (a quota can stop its pod from ever existing)."""
    created = job.metadata.creation_timestamp if job.metadata is not None else None
    if created is None:
        raise ValueError("Kubernetes Job has no metadata.creation_timestamp: not read from the API")
    return created


def _when(event: CoreV1Event) -> float:
    # Older events carry last_timestamp; events.k8s.io-style ones only event_time.
    at = event.last_timestamp or event.event_time or event.first_timestamp
    return at.timestamp() if at else 0.0


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 3] + "..."


def explain(pods: Sequence[V1Pod], events: Sequence[CoreV1Event]) -> tuple[str, ...]:
    """The wait's reasons, without repeats: pod conditions, then events (newest first)."""
    reasons: list[str] = []
    for pod in pods:
        for c in (pod.status.conditions if pod.status else None) or []:
            if c.type == "PodScheduled" and c.status == "False" and (c.reason or c.message):
                reasons.append(_clip(f"{c.reason or 'Unscheduled'}: {c.message or ''}"))
    relevant = [e for e in events if e.type == "Warning" or e.reason in EXPLAINING_EVENTS]
    relevant.sort(key=_when, reverse=True)
    for e in relevant:
        count = f" (x{e.count})" if e.count and e.count > 1 else ""
        reasons.append(_clip(f"{e.reason}{count}: {e.message or ''}"))
    unique = list(dict.fromkeys(reasons))
    return tuple(unique[:MAX_REASONS])


def diagnose(
    job: V1Job,
    pods: Sequence[V1Pod],
    events: Sequence[CoreV1Event],
    now: datetime,
    timeout: timedelta,
) -> ScheduleVerdict:
    """The verdict on a step Job: scheduled, or waiting (and past `timeout` or not).

    `events` are those of the Job and of its pods, as `list_namespaced_event` returns them.
    """
    waited = max(timedelta(0), now - waiting_since(job))
    status = job.status
    done = status is not None and bool(status.succeeded or status.failed or status.ready)
    if done or any(is_scheduled(p) for p in pods):
        return ScheduleVerdict(
            scheduled=True, pending_for=timedelta(0), reasons=(), timed_out=False
        )
    return ScheduleVerdict(
        scheduled=False,
        pending_for=waited,
        reasons=explain(pods, events),
        timed_out=waited >= timeout,
        compute_class=selected_class(pods),
    )


# Why Kubernetes ended a pod because its node went away: the kubelet's graceful node shutdown
# (a spot VM reclaimed, a node preempted) or the pod garbage collector after the node vanished.
NODE_GONE_REASONS = frozenset({"TerminationByKubelet", "DeletionByPodGC"})


def node_reclaimed(pods: Sequence[V1Pod]) -> str | None:
    """Why a failed step's pod ended, if its node was taken away (a spot reclaim); else None.

    Such a step is a retryable preemption: its finished chunks are kept and the next attempt,
    a new Job on whatever node the class finds, resumes from them.
    """
    for pod in pods:
        status = pod.status
        for c in (status.conditions if status else None) or []:
            if (
                c.type == "DisruptionTarget"
                and c.status == "True"
                and c.reason in NODE_GONE_REASONS
            ):
                name = pod.metadata.name if pod.metadata else "?"
                return _clip(f"pod {name} {c.reason}: {c.message or ''}")
    return None
