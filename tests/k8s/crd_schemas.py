"""Strict JSON schemas for the custom resources the platform generates, offline.

kubernetes-validate knows only core kinds, so GKE's ComputeClass and Kueue's kinds get schemas
here, written from their references for the fields we use and no others: an unknown or
misspelt field fails (additionalProperties: false), as `kubernetes-validate --strict` does
for core objects.
- ComputeClass (cloud.google.com/v1): docs.cloud.google.com/kubernetes-engine/docs/reference/
  crds/computeclass, checked against Google's manifests in GoogleCloudPlatform/
  accelerated-platforms (custom_compute_class/templates/manifests/gpu/).
- ResourceFlavor, ClusterQueue, LocalQueue (kueue.x-k8s.io/v1beta1): kueue.sigs.k8s.io API
  reference; flavorFungibility takes the current whenCanBorrow/whenCanPreempt values only.
"""

from __future__ import annotations

from typing import Any

import jsonschema


def _object(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


_STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
_NAME = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$"}
_METADATA = _object(
    {"name": _NAME, "namespace": _NAME, "labels": _STRINGS, "annotations": _STRINGS}, ("name",)
)
_QUANTITY = {"oneOf": [{"type": "integer", "minimum": 0}, {"type": "string"}]}

_PRIORITY = _object(
    {
        "machineType": {"type": "string"},
        "machineFamily": {"type": "string"},
        "gpu": _object(
            {
                "type": {"type": "string", "pattern": "^nvidia-"},
                "count": {"type": "integer", "minimum": 1},
                "driverVersion": {"enum": ["default", "latest"]},
            },
            ("type", "count"),
        ),
        "spot": {"type": "boolean"},
        "flexStart": _object({"enabled": {"type": "boolean"}}, ("enabled",)),
        "maxRunDurationSeconds": {"type": "integer", "minimum": 1, "maximum": 604800},
        "location": _object({"zones": {"type": "array", "items": {"type": "string"}}}),
    }
)

COMPUTE_CLASS = _object(
    {
        "apiVersion": {"const": "cloud.google.com/v1"},
        "kind": {"const": "ComputeClass"},
        "metadata": _METADATA,
        "spec": _object(
            {
                "priorities": {"type": "array", "items": _PRIORITY, "minItems": 1},
                "whenUnsatisfiable": {"enum": ["DoNotScaleUp", "ScaleUpAnyway"]},
                "nodePoolAutoCreation": _object({"enabled": {"type": "boolean"}}),
                "activeMigration": _object({"optimizeRulePriority": {"type": "boolean"}}),
            },
            ("priorities",),
        ),
    },
    ("apiVersion", "kind", "metadata", "spec"),
)

_KUEUE_API = {"const": "kueue.x-k8s.io/v1beta1"}
_TOLERATION = _object(
    {
        "key": {"type": "string"},
        "operator": {"enum": ["Equal", "Exists"]},
        "value": {"type": "string"},
        "effect": {"enum": ["NoSchedule", "PreferNoSchedule", "NoExecute"]},
    }
)
RESOURCE_FLAVOR = _object(
    {
        "apiVersion": _KUEUE_API,
        "kind": {"const": "ResourceFlavor"},
        "metadata": _METADATA,
        "spec": _object(
            {"nodeLabels": _STRINGS, "tolerations": {"type": "array", "items": _TOLERATION}}
        ),
    },
    ("apiVersion", "kind", "metadata"),
)
_FLAVOR_QUOTAS = _object(
    {
        "name": _NAME,
        "resources": {
            "type": "array",
            "items": _object(
                {"name": {"type": "string"}, "nominalQuota": _QUANTITY}, ("name", "nominalQuota")
            ),
        },
    },
    ("name", "resources"),
)
_FUNGIBILITY = {"enum": ["TryNextFlavor", "MayStopSearch"]}
CLUSTER_QUEUE = _object(
    {
        "apiVersion": _KUEUE_API,
        "kind": {"const": "ClusterQueue"},
        "metadata": _METADATA,
        "spec": _object(
            {
                "namespaceSelector": {"type": "object"},
                "queueingStrategy": {"enum": ["BestEffortFIFO", "StrictFIFO"]},
                "flavorFungibility": _object(
                    {"whenCanBorrow": _FUNGIBILITY, "whenCanPreempt": _FUNGIBILITY}
                ),
                "resourceGroups": {
                    "type": "array",
                    "items": _object(
                        {
                            "coveredResources": {"type": "array", "items": {"type": "string"}},
                            "flavors": {"type": "array", "items": _FLAVOR_QUOTAS},
                        },
                        ("coveredResources", "flavors"),
                    ),
                },
            },
            ("resourceGroups",),
        ),
    },
    ("apiVersion", "kind", "metadata", "spec"),
)
LOCAL_QUEUE = _object(
    {
        "apiVersion": _KUEUE_API,
        "kind": {"const": "LocalQueue"},
        "metadata": _METADATA,
        "spec": _object({"clusterQueue": _NAME}, ("clusterQueue",)),
    },
    ("apiVersion", "kind", "metadata", "spec"),
)

SCHEMAS = {
    ("cloud.google.com/v1", "ComputeClass"): COMPUTE_CLASS,
    ("kueue.x-k8s.io/v1beta1", "ResourceFlavor"): RESOURCE_FLAVOR,
    ("kueue.x-k8s.io/v1beta1", "ClusterQueue"): CLUSTER_QUEUE,
    ("kueue.x-k8s.io/v1beta1", "LocalQueue"): LOCAL_QUEUE,
}


def is_custom(doc: dict[str, Any]) -> bool:
    return (doc.get("apiVersion"), doc.get("kind")) in SCHEMAS


def validate_custom(doc: dict[str, Any]) -> None:
    """Raises jsonschema.ValidationError on an unknown field, a wrong type or a bad value."""
    schema = SCHEMAS[(doc["apiVersion"], doc["kind"])]
    jsonschema.Draft202012Validator(schema).validate(doc)
