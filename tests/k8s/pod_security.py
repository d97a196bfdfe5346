"""The Pod Security Standard "restricted" (Kubernetes 1.32), as checks over a pod spec.

Each rule is named as in https://kubernetes.io/docs/concepts/security/pod-security-standards/.
Baseline rules (restricted includes them):
- host-namespaces: hostNetwork, hostPID, hostIPC unset or false;
- privileged: no container privileged;
- capabilities-baseline: added capabilities only from the baseline list;
- host-path: no hostPath volume;
- host-ports: no hostPort;
- proc-mount: procMount unset or Default;
- seccomp-baseline: no seccomp profile Unconfined;
- sysctls: only the safe set;
- apparmor / selinux: no Unconfined AppArmor, no custom SELinux user or role.
Restricted rules:
- volume-types: only configMap, csi, downwardAPI, emptyDir, ephemeral,
  persistentVolumeClaim, projected, secret;
- privilege-escalation: every container sets allowPrivilegeEscalation false;
- run-as-non-root: runAsNonRoot true on the pod or on every container;
- run-as-user: runAsUser never 0;
- seccomp: RuntimeDefault or Localhost on the pod or on every container;
- capabilities: every container drops ALL and adds at most NET_BIND_SERVICE.
The platform's own rules on top:
- read-only-root: every container sets readOnlyRootFilesystem true;
- ephemeral-limits: every container requests and limits ephemeral-storage and limits memory.
"""

from __future__ import annotations

from typing import Any

BASELINE_CAPABILITIES = {
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
}
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}
ALLOWED_VOLUME_TYPES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
RULES = (
    "host-namespaces",
    "privileged",
    "capabilities-baseline",
    "host-path",
    "host-ports",
    "proc-mount",
    "seccomp-baseline",
    "sysctls",
    "apparmor",
    "selinux",
    "volume-types",
    "privilege-escalation",
    "run-as-non-root",
    "run-as-user",
    "seccomp",
    "capabilities",
    "read-only-root",
    "ephemeral-limits",
)


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        *pod.get("initContainers", []),
        *pod.get("containers", []),
        *pod.get("ephemeralContainers", []),
    ]


def violations(pod: dict[str, Any]) -> list[str]:
    """'rule: detail' for each rule above that the pod spec (camelCase JSON) breaks."""
    found: list[str] = []
    pod_sc = pod.get("securityContext") or {}
    containers = _containers(pod)

    def bad(rule: str, detail: str) -> None:
        found.append(f"{rule}: {detail}")

    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            bad("host-namespaces", key)
    for v in pod.get("volumes", []):
        kinds = set(v) - {"name"}
        if "hostPath" in kinds:
            bad("host-path", v["name"])
        if kinds - ALLOWED_VOLUME_TYPES:
            bad("volume-types", f"{v['name']} is {sorted(kinds)}")
    for s in pod_sc.get("sysctls", []):
        if s["name"] not in SAFE_SYSCTLS:
            bad("sysctls", s["name"])
    if (pod_sc.get("seccompProfile") or {}).get("type") == "Unconfined":
        bad("seccomp-baseline", "pod")
    if (pod_sc.get("appArmorProfile") or {}).get("type") == "Unconfined":
        bad("apparmor", "pod")
    if {"user", "role"} & set(pod_sc.get("seLinuxOptions") or {}):
        bad("selinux", "pod")
    if pod_sc.get("runAsUser") == 0:
        bad("run-as-user", "pod")

    for c in containers:
        name, sc = c["name"], c.get("securityContext") or {}
        caps = sc.get("capabilities") or {}
        added = set(caps.get("add") or [])
        if sc.get("privileged"):
            bad("privileged", name)
        if added - BASELINE_CAPABILITIES:
            bad("capabilities-baseline", f"{name} adds {sorted(added)}")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            bad("host-ports", name)
        if sc.get("procMount", "Default") != "Default":
            bad("proc-mount", name)
        seccomp = (sc.get("seccompProfile") or {}).get("type")
        if seccomp == "Unconfined":
            bad("seccomp-baseline", name)
        if (sc.get("appArmorProfile") or {}).get("type") == "Unconfined":
            bad("apparmor", name)
        if {"user", "role"} & set(sc.get("seLinuxOptions") or {}):
            bad("selinux", name)
        if sc.get("allowPrivilegeEscalation") is not False:
            bad("privilege-escalation", name)
        if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
            bad("run-as-non-root", name)
        if sc.get("runAsUser") == 0:
            bad("run-as-user", name)
        if (seccomp or (pod_sc.get("seccompProfile") or {}).get("type")) not in {
            "RuntimeDefault",
            "Localhost",
        }:
            bad("seccomp", name)
        if "ALL" not in (caps.get("drop") or []) or added - {"NET_BIND_SERVICE"}:
            bad("capabilities", name)
        if sc.get("readOnlyRootFilesystem") is not True:
            bad("read-only-root", name)
        res = c.get("resources") or {}
        requests, limits = res.get("requests") or {}, res.get("limits") or {}
        if "ephemeral-storage" not in requests or not {"ephemeral-storage", "memory"} <= set(
            limits
        ):
            bad("ephemeral-limits", name)
    return found


# Where each workload kind keeps its pod template (the path to the PodTemplateSpec).
POD_TEMPLATE_PATHS: dict[str, tuple[str, ...]] = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}


def pod_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    """The pod spec a manifest object creates pods from: a Pod's own, a workload's template's;
    None for kinds that create no pods."""
    if doc.get("kind") == "Pod":
        return doc["spec"]
    path = POD_TEMPLATE_PATHS.get(doc.get("kind", ""))
    if path is None:
        return None
    node = doc
    for key in path:
        node = node[key]
    return node["spec"]
