"""Strict Kubernetes schema validation, offline (kubernetes-validate ships the schemas)."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
from kubernetes.client import ApiClient

K8S_VERSION = "1.32"  # GKE's regular channel; kubernetes-validate ships 1.25 to 1.37


def as_manifest(obj: Any) -> dict[str, Any]:
    """A kubernetes.client model as the JSON the API server would receive (camelCase)."""
    return ApiClient().sanitize_for_serialization(obj)


def validate_strict(doc: dict[str, Any]) -> None:
    """Raises kubernetes_validate.ValidationError on unknown fields or wrong types."""
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
