"""The platform's configuration, loaded from one YAML file (Dagster-free).

`platform.yaml` beside this module is the default. `IMAGE_SEARCH_CONFIG` points at another
file; a few deployment values can be overridden one by one through the environment, so that
a k8s deployment or a test can move storage without copying the whole file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from image_search_assets.core.planning.gpu_plan import ThroughputModel
from image_search_assets.core.planning.retry import BackoffPolicy

DEFAULT_CONFIG = Path(__file__).with_name("platform.yaml")
ENV_OVERRIDES = {
    "IMAGE_SEARCH_STORAGE_ROOT": "storage_root",
    "IMAGE_SEARCH_CATALOG": "catalog",
    "IMAGE_SEARCH_GCP_PROJECT": "gcp_project",
    # A webhook URL is a secret: deployments set it in the environment, not in the file.
    "IMAGE_SEARCH_ALERT_WEBHOOK": "alerts.webhook_url",
}


class ConfigError(ValueError):
    """The configuration is invalid; the message says what to fix."""


@dataclass(frozen=True)
class Category:
    name: str
    gpus: int = 1
    gpu_type: str = "nvidia-tesla-t4"
    # Detector label ids that count as this category; empty means "any label".
    class_ids: tuple[int, ...] = ()


# The engine's choices (core/engine/precision.py), spelled out so that config needs no torch;
# tests/core/inference/engine/test_precision.py holds the two together.
PRECISIONS = ("auto", "calibrate", "fp32", "fp16", "bf16")


@dataclass(frozen=True)
class ModelConfig:
    arch: str
    weights: str = "random"
    input_size: int = 224
    batch_size: int = 16
    score_threshold: float = 0.5
    precision: str = "auto"  # auto | calibrate | fp32 | fp16 | bf16 (core/engine/precision.py)
    compile: bool = False  # torch.compile (any device); pays off on long runs (see benchmarks)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r} is not one of {PRECISIONS}")


@dataclass(frozen=True)
class FetchConfig:
    timeout_s: float = 10.0
    max_bytes: int = 20_000_000
    max_pixels: int = 40_000_000
    workers: int = 8
    allow_private_hosts: tuple[str, ...] = ()


@dataclass(frozen=True)
class IndexConfig:
    metric: str = "angular"
    n_trees: int = 16
    recall_sample: int = 200
    retention: int = 7  # published versions kept per category (CURRENT and its predecessors)


@dataclass(frozen=True)
class AlertsConfig:
    webhook_url: str | None = None  # None: the failure sensor posts nothing
    ui_url: str = "http://localhost:3000"  # base of the run links in alerts
    timeout_s: float = 10.0


@dataclass(frozen=True)
class ChecksConfig:
    min_recall: float = 0.9  # recall@10 vs exact search below this fails the recall check


@dataclass(frozen=True)
class PlanningConfig:
    """How the daily schedule sizes each category's GPUs on the day's items (core/gpu_plan)."""

    items_per_gpu_second: float = 0.25  # detect + embed per GPU, until a run has measured it
    overhead_s: float = 300.0  # pod start, model load, output flush
    scaling_efficiency: float = 0.95  # share of linear speed-up kept per doubling of GPUs
    slack: float = 1.05  # makespan allowed over the all-max-GPUs plan
    use_measured: bool = True  # the engine's latest measured rates replace items_per_gpu_second

    def __post_init__(self) -> None:
        if self.items_per_gpu_second <= 0 or self.overhead_s < 0 or self.slack < 1:
            raise ValueError("needs items_per_gpu_second > 0, overhead_s >= 0 and slack >= 1")

    def model(self) -> ThroughputModel:
        return ThroughputModel(self.items_per_gpu_second, self.overhead_s, self.scaling_efficiency)


@dataclass(frozen=True)
class Settings:
    categories: tuple[Category, ...]
    start_date: str
    timezone: str
    storage_root: str
    catalog: str
    detector: ModelConfig
    embedder: ModelConfig
    device: str = "auto"
    cpu_workers: int = 1  # inference engine workers when no GPU is used
    gcp_project: str | None = None
    fetch: FetchConfig = field(default_factory=FetchConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    checks: ChecksConfig = field(default_factory=ChecksConfig)
    retry: BackoffPolicy = field(default_factory=BackoffPolicy)
    # Items per persisted chunk of detection/embedding work; a retried step skips finished ones.
    chunk_size: int = 64
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    planning: PlanningConfig = field(default_factory=PlanningConfig)

    @property
    def category_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.categories)

    def category(self, name: str) -> Category:
        for c in self.categories:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def with_overrides(self, **values: Any) -> Settings:
        return replace(self, **values)


def _model(raw: dict[str, Any], what: str) -> ModelConfig:
    try:
        return ModelConfig(**raw)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"models.{what}: {e}") from e


def _categories(raw: list[dict[str, Any]], default_gpu_type: str) -> tuple[Category, ...]:
    cats = []
    for entry in raw:
        entry = {"gpu_type": default_gpu_type, **entry}
        entry["class_ids"] = tuple(entry.get("class_ids", ()))
        cat = Category(**entry)
        if not cat.name.isidentifier() or cat.name != cat.name.lower():
            raise ConfigError(f"category name {cat.name!r} must be a lower-case identifier")
        if cat.gpus < 1:
            raise ConfigError(f"category {cat.name!r}: gpus must be >= 1, got {cat.gpus}")
        cats.append(cat)
    names = [c.name for c in cats]
    if len(set(names)) != len(names):
        raise ConfigError(f"duplicate category names in {names}")
    if not cats:
        raise ConfigError("at least one category is required")
    return tuple(cats)


def _section(cls: Any, raw: dict[str, Any], what: str) -> Any:
    try:
        return cls(**raw)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{what}: {e}") from e


def parse_settings(raw: dict[str, Any]) -> Settings:
    """Builds Settings from the YAML document's dict, validating as it goes."""
    parts = raw.get("partitions", {})
    start_date = str(parts.get("start_date", "2026-11-01"))
    timezone = parts.get("timezone", "Asia/Tokyo")
    try:
        date.fromisoformat(start_date)
        ZoneInfo(timezone)
    except Exception as e:  # noqa: BLE001 - any parse failure is a config error
        raise ConfigError(f"partitions: {e}") from e
    models = raw.get("models", {})
    fetch = dict(raw.get("fetch", {}))
    fetch["allow_private_hosts"] = tuple(fetch.get("allow_private_hosts", ()))
    return Settings(
        categories=_categories(raw["categories"], raw.get("default_gpu_type", "nvidia-tesla-t4")),
        start_date=start_date,
        timezone=timezone,
        storage_root=str(raw.get("storage_root", "var/storage")),
        catalog=str(raw.get("catalog", "var/catalog/catalog.csv")),
        gcp_project=raw.get("gcp_project"),
        device=models.get("device", "auto"),
        cpu_workers=_positive(models.get("cpu_workers", 1), "models.cpu_workers"),
        detector=_model(
            models.get("detector", {"arch": "fasterrcnn_mobilenet_v3_large_320_fpn"}), "detector"
        ),
        embedder=_model(models.get("embedder", {"arch": "resnet18"}), "embedder"),
        fetch=_section(FetchConfig, fetch, "fetch"),
        index=_index(raw.get("index", {})),
        retry=_section(BackoffPolicy, raw.get("retry", {}), "retry"),
        chunk_size=_positive(models.get("chunk_size", 64), "models.chunk_size"),
        alerts=_section(AlertsConfig, raw.get("alerts") or {}, "alerts"),
        checks=_section(ChecksConfig, raw.get("checks") or {}, "checks"),
        planning=_section(PlanningConfig, raw.get("planning") or {}, "planning"),
    )


def _positive(value: Any, what: str) -> int:
    if not isinstance(value, int) or value < 1:
        raise ConfigError(f"{what} must be a positive integer, got {value!r}")
    return value


def _index(raw: dict[str, Any]) -> IndexConfig:
    index = _section(IndexConfig, raw, "index")
    _positive(index.retention, "index.retention")
    return index


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Reads the config file (IMAGE_SEARCH_CONFIG or the packaged default) plus env overrides."""
    path = Path(path or os.environ.get("IMAGE_SEARCH_CONFIG") or DEFAULT_CONFIG)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    raw = yaml.safe_load(path.read_text()) or {}
    for env, key in ENV_OVERRIDES.items():
        if os.environ.get(env):
            *parents, leaf = key.split(".")
            section = raw
            for name in parents:
                if not isinstance(section.get(name), dict):  # absent, or `alerts:` left empty
                    section[name] = {}
                section = section[name]
            section[leaf] = os.environ[env]
    return parse_settings(raw)
