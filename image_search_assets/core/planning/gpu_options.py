"""A category's acceptable GPUs, in order of preference (Dagster-free).

`platform.yaml` lists them per category (or once as the default): the first is what GKE tries
first, the last its final fallback (k8s/compute_classes.py turns a list into ComputeClasses).
One plain option, a single GPU type with neither spot nor flex-start, is today's single-type
config and renders exactly as it always did: a `gke-accelerator` node selector, no class.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

_TYPE = re.compile(r"nvidia-[a-z0-9-]+")


@dataclass(frozen=True)
class GpuOption:
    """One acceptable GPU: a GKE accelerator type, on spot or flex-start VMs or on-demand."""

    type: str  # GKE's accelerator name: nvidia-tesla-t4, nvidia-l4, ...
    spot: bool = False  # reclaimable at any time: a step resumes from its finished chunks
    flex_start: bool = False  # Dynamic Workload Scheduler: waits for capacity, runs <= 7 days

    def __post_init__(self) -> None:
        if not _TYPE.fullmatch(self.type):
            raise ValueError(f"GPU type {self.type!r} is not a GKE accelerator (nvidia-...)")
        if not isinstance(self.spot, bool) or not isinstance(self.flex_start, bool):
            raise ValueError(f"{self.type}: spot and flex_start are true or false")
        if self.spot and self.flex_start:
            raise ValueError(f"{self.type}: an option is spot or flex-start, not both")

    @property
    def model(self) -> str:
        """The GPU model, as gpu_model_key spells a device name: nvidia-tesla-t4 -> t4."""
        return gpu_model_key(self.type)

    @property
    def slug(self) -> str:
        """Short and label-safe: l4-spot, l4, t4, l4-flex."""
        return self.model + ("-spot" if self.spot else "") + ("-flex" if self.flex_start else "")

    def describe(self) -> str:
        return (
            self.type + (" spot" if self.spot else "") + (" flex-start" if self.flex_start else "")
        )


def gpu_model_key(name: str) -> str:
    """One spelling for a GKE accelerator type and the device name CUDA reports.

    nvidia-tesla-t4 and "Tesla T4" -> t4; nvidia-l4 and "NVIDIA L4" -> l4;
    nvidia-tesla-a100 -> a100 and "NVIDIA A100-SXM4-40GB" -> a100-sxm4-40gb (see same_model).
    """
    key = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    for prefix in ("nvidia-", "tesla-"):
        key = key.removeprefix(prefix)
    return key


def same_model(option_model: str, device_model: str) -> bool:
    """Whether a device is of an option's model: "a100" covers "a100-sxm4-40gb"."""
    return device_model == option_model or device_model.startswith(option_model + "-")


def family(options: Sequence[GpuOption]) -> str:
    """The name of an option list, for its pool and classes: l4-spot.l4.t4.l4-flex."""
    return ".".join(o.slug for o in options)


def parse_options(raw: Iterable[Any], what: str) -> tuple[GpuOption, ...]:
    """GpuOptions from the YAML list; a bare string is an on-demand option of that type."""
    options = []
    for entry in raw:
        fields: dict[str, Any] = {"type": entry} if isinstance(entry, str) else dict(entry)
        options.append(GpuOption(**fields))
    if not options:
        raise ValueError(f"{what}: the GPU options list is empty")
    if len(set(options)) != len(options):
        raise ValueError(f"{what}: an option is listed twice")
    return tuple(options)


def is_single_type(options: Sequence[GpuOption]) -> bool:
    """One on-demand GPU type: today's config, rendered without a ComputeClass."""
    return len(options) == 1 and not options[0].spot and not options[0].flex_start


def category_options(entry: dict[str, Any], config: dict[str, Any]) -> tuple[GpuOption, ...]:
    """A category's options: its `gpu_type` or `gpu_options`, else the config's default list
    (`default_gpu_options`, or `default_gpu_type` as a one-option list)."""
    if "gpu_type" in entry and "gpu_options" in entry:
        raise ValueError("set gpu_options or gpu_type, not both")
    if "gpu_type" in entry:
        return parse_options([entry["gpu_type"]], "gpu_type")
    if "gpu_options" in entry:
        return parse_options(entry["gpu_options"], "gpu_options")
    if "default_gpu_options" in config and "default_gpu_type" in config:
        raise ValueError("the config sets default_gpu_options and default_gpu_type: keep one")
    if "default_gpu_options" in config:
        return parse_options(config["default_gpu_options"], "default_gpu_options")
    return parse_options([config.get("default_gpu_type", "nvidia-tesla-t4")], "default_gpu_type")
