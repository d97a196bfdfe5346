"""The platform's configuration, loaded from one YAML file (Dagster-free).

`platform.yaml` beside this module is the default. `IMAGE_SEARCH_CONFIG` points at another
file; a few deployment values can be overridden one by one through the environment, so that
a k8s deployment or a test can move storage without copying the whole file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from datetime import date, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from image_search_assets.core.config import ConfigError, ModelConfig
from image_search_assets.core.ingest.url_rules import DEPLOYED_KINDS, LOCAL_KINDS, URL_KINDS
from image_search_assets.core.planning.gpu_options import (
    GpuOption,
    category_options,
    is_single_type,
)
from image_search_assets.core.planning.gpu_plan import PlanningConfig
from image_search_assets.core.planning.retry import BackoffPolicy

DEFAULT_CONFIG = Path(__file__).with_name("platform.yaml")
ENV_OVERRIDES = {
    "IMAGE_SEARCH_STORAGE_ROOT": "storage_root",
    "IMAGE_SEARCH_CATALOG": "catalog",
    "IMAGE_SEARCH_GCP_PROJECT": "gcp_project",
    "IMAGE_SEARCH_IMAGE_PREFIXES": "fetch.gcs_prefixes",  # "bucket/images/,other-bucket"
    "IMAGE_SEARCH_COMPILE_CACHE": "models.compile_cache",  # a directory or gs://bucket/prefix
    # A webhook URL is a secret: deployments set it in the environment, not in the file.
    "IMAGE_SEARCH_ALERT_WEBHOOK": "alerts.webhook_url",
}


@dataclass(frozen=True)
class Category:
    name: str
    gpus: int = 1
    gpu_type: str = "nvidia-tesla-t4"  # with gpu_options: the first (most preferred) option's
    gpu_options: tuple[GpuOption, ...] = ()  # in order (gpu_options.py); () = gpu_type on-demand
    # Which detector labels count as this category (tags.detector_class_ids): explicit label
    # ids, else the labels with these names, else the label named like the category; a
    # category that matches none takes the best box of any label.
    class_ids: tuple[int, ...] = ()
    labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class FetchConfig:
    timeout_s: float = 10.0
    max_bytes: int = 20_000_000
    max_pixels: int = 40_000_000
    workers: int = 8
    allow_private_hosts: tuple[str, ...] = ()
    # Local mode (the demo, tests, a workstation) may read local files and plain http; a
    # deployment may not. parse_settings() resolves `auto` from storage_root (local or gs://).
    local_mode: bool = False
    schemes: tuple[str, ...] | None = None  # None: LOCAL_KINDS in local mode, else DEPLOYED_KINDS
    gcs_prefixes: tuple[str, ...] = ()  # gs:// rows must lie under "bucket" or "bucket/folder/"
    max_decode_bytes: int = 512_000_000  # one image's decode (images.decode_cost)
    decode_memory_bytes: int = 2_000_000_000  # all of a step's decodes in flight together

    def __post_init__(self) -> None:
        unknown = sorted(set(self.schemes or ()) - set(URL_KINDS))
        if unknown:
            raise ValueError(f"schemes {unknown} are not among {list(URL_KINDS)}")
        if "file" in self.allowed_schemes and not self.local_mode:
            raise ValueError(
                "schemes: file (file:// and local paths) is allowed in local mode only"
            )
        if not 0 < self.max_decode_bytes <= self.decode_memory_bytes:
            raise ValueError("needs 0 < max_decode_bytes <= decode_memory_bytes")

    @property
    def allowed_schemes(self) -> tuple[str, ...]:
        if self.schemes is not None:
            return self.schemes
        return LOCAL_KINDS if self.local_mode else DEPLOYED_KINDS


@dataclass(frozen=True)
class IndexConfig:
    metric: str = "angular"
    n_trees: int = 16
    recall_sample: int = 200
    retention: int = 7  # days of published versions kept for rollback (+ CURRENT, pin)
    # Days of live sets and work/ chunks kept per category (core/index/retention.py); older
    # days cannot be re-run without re-materialising from an earlier kept day.
    keep_days: int = 14
    # The served day may end at most this long ago (partitions' zone) before the annoy_index
    # freshness check fails: 30 gives the day's run until 06:00 to publish yesterday.
    freshness_hours: int = 30


@dataclass(frozen=True)
class AlertsConfig:
    webhook_url: str | None = None  # None: the failure sensor posts nothing
    ui_url: str = "http://localhost:3000"  # base of the run links in alerts
    timeout_s: float = 10.0


@dataclass(frozen=True)
class ChecksConfig:
    min_recall: float = 0.9  # recall@10 vs exact search below this fails the recall check


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
    # torch.compile's persistent cache, a directory or gs:// prefix (engine/compile_cache.py)
    compile_cache: str | None = None
    gcp_project: str | None = None
    fetch: FetchConfig = field(default_factory=FetchConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    checks: ChecksConfig = field(default_factory=ChecksConfig)
    retry: BackoffPolicy = field(default_factory=BackoffPolicy)
    # Items per persisted chunk of detection/embedding work; a retried step skips finished ones.
    chunk_size: int = 64
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    planning: PlanningConfig = field(default_factory=PlanningConfig)
    # A day's catalog is complete at this local time the next morning: the chain launches it then.
    ready_at: time = time(6, 0)

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


def _gpu_fields(entry: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    try:
        options = category_options(entry, config)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"category {entry.get('name')!r}: {e}") from e
    return {"gpu_type": options[0].type, "gpu_options": () if is_single_type(options) else options}


def _categories(raw: list[dict[str, Any]], config: dict[str, Any]) -> tuple[Category, ...]:
    cats = []
    for entry in raw:
        entry = {**entry, **_gpu_fields(entry, config)}
        entry["class_ids"] = tuple(entry.get("class_ids", ()))
        entry["labels"] = tuple(entry.get("labels", ()))
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
    """Builds Settings from the YAML document's dict, validating as it goes. A key left out
    takes the dataclass's default: no default is written twice."""
    parts = raw.get("partitions", {})
    start_date = str(parts.get("start_date", "2026-11-01"))
    timezone = parts.get("timezone", "Asia/Tokyo")
    models = raw.get("models", {})
    given = {k: models[k] for k in ("device", "cpu_workers", "chunk_size") if k in models}
    try:
        date.fromisoformat(start_date)
        ZoneInfo(timezone)
        if "ready_at" in parts:
            given["ready_at"] = time.fromisoformat(str(parts["ready_at"]))
    except Exception as e:  # noqa: BLE001 - any parse failure is a config error
        raise ConfigError(f"partitions: {e}") from e
    if models.get("compile_cache"):
        given["compile_cache"] = str(models["compile_cache"])
    storage_root = str(raw.get("storage_root", "var/storage"))
    fetch = dict(raw.get("fetch", {}))
    fetch["allow_private_hosts"] = tuple(fetch.get("allow_private_hosts", ()))
    fetch.update(_url_policy(fetch, storage_root))
    settings = Settings(
        categories=_categories(raw["categories"], raw),
        start_date=start_date,
        timezone=timezone,
        storage_root=storage_root,
        catalog=str(raw.get("catalog", "var/catalog/catalog.csv")),
        gcp_project=raw.get("gcp_project"),
        detector=_section(
            ModelConfig,
            models.get("detector", {"arch": "fasterrcnn_mobilenet_v3_large_320_fpn"}),
            "models.detector",
        ),
        embedder=_section(
            ModelConfig, models.get("embedder", {"arch": "resnet18"}), "models.embedder"
        ),
        fetch=_section(FetchConfig, fetch, "fetch"),
        index=_index(raw.get("index", {})),
        retry=_section(BackoffPolicy, raw.get("retry", {}), "retry"),
        alerts=_section(AlertsConfig, raw.get("alerts") or {}, "alerts"),
        checks=_section(ChecksConfig, raw.get("checks") or {}, "checks"),
        planning=_section(PlanningConfig, raw.get("planning") or {}, "planning"),
        **given,
    )
    _positive(settings.cpu_workers, "models.cpu_workers")
    _positive(settings.chunk_size, "models.chunk_size")
    return settings


def _url_policy(fetch: dict[str, Any], storage_root: str) -> dict[str, Any]:
    """fetch.local_mode (auto: storage_root is local), schemes and gcs_prefixes as tuples."""
    local_mode = fetch.get("local_mode", "auto")
    if local_mode == "auto":
        local_mode = not storage_root.startswith("gs://")
    if not isinstance(local_mode, bool):
        raise ConfigError(f"fetch.local_mode must be auto, true or false, got {local_mode!r}")
    prefixes = fetch.get("gcs_prefixes") or ()
    if isinstance(prefixes, str):  # IMAGE_SEARCH_IMAGE_PREFIXES: comma-separated
        prefixes = [p.strip() for p in prefixes.split(",") if p.strip()]
    schemes = fetch.get("schemes")
    return {
        "local_mode": local_mode,
        "gcs_prefixes": tuple(prefixes),
        "schemes": None if schemes is None else tuple(schemes),
    }


def _positive(value: Any, what: str) -> int:
    if not isinstance(value, int) or value < 1:
        raise ConfigError(f"{what} must be a positive integer, got {value!r}")
    return value


def _index(raw: dict[str, Any]) -> IndexConfig:
    index = _section(IndexConfig, raw, "index")
    _positive(index.retention, "index.retention")
    _positive(index.keep_days, "index.keep_days")
    _positive(index.freshness_hours, "index.freshness_hours")
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
