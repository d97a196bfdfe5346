"""Model resource: which torchvision detector and embedder run, with which weights."""

from typing import Any

import dagster as dg
import torch

from image_search_assets.core.config import ModelConfig
from image_search_assets.core.inference.engine import (
    compile_cache,
    cpu_workers,
    engine_options,
    visible_devices,
)
from image_search_assets.core.inference.models import (
    LoadedModel,
    ModelSpec,
    embedder_identity,
    load_detector,
    load_embedder,
)
from image_search_assets.core.inference.stages import Replicas
from image_search_assets.settings import Settings
from resources.sections import as_config, section


def _reader_for(weights: str, read_gs):
    # Only gs:// checkpoints need the reader; leaving it out otherwise keeps the model cache hot.
    return read_gs if weights.startswith("gs://") else None


class ModelsResource(dg.ConfigurableResource):
    """Detector and embedder specs; models are loaded once per process, never inside a loop.

    Built by `from_settings`: platform.yaml's `models` section, the detector's and embedder's
    settings as their ModelConfig (sections.py), so the UI shows exactly what the steps run.
    """

    device: str  # auto | cpu | cuda | a named device
    cpu_workers: int  # engine workers when no GPU is used
    # Where compiled kernels persist across step pods (a directory or gs:// prefix); None: off.
    compile_cache: str | None
    detector_config: dict[str, Any]  # a ModelConfig
    embedder_config: dict[str, Any]  # a ModelConfig

    @classmethod
    def from_settings(cls, settings: Settings) -> "ModelsResource":
        return cls(
            device=settings.device,
            cpu_workers=settings.cpu_workers,
            compile_cache=settings.compile_cache,
            detector_config=as_config(settings.detector),
            embedder_config=as_config(settings.embedder),
        )

    @property
    def detector(self) -> ModelConfig:
        return section(ModelConfig, self.detector_config)

    @property
    def embedder(self) -> ModelConfig:
        return section(ModelConfig, self.embedder_config)

    def loaded_embedder(self, read_gs=None) -> LoadedModel:
        spec = ModelSpec.from_config(self.embedder)
        return load_embedder(spec, self.device, _reader_for(spec.weights, read_gs))

    def embedder_identity(self, read_gs=None) -> dict:
        """The embedder's identity without loading it (models.embedder_identity), so the
        detections step can refuse a model change before the day's GPU work."""
        spec = ModelSpec.from_config(self.embedder)
        return embedder_identity(spec, _reader_for(spec.weights, read_gs))

    def devices(self, gpus: int) -> tuple[torch.device, ...]:
        """One engine worker per device: the step's `gpus` GPUs (on GKE exactly the granted
        ones are visible), an explicitly named device, or `cpu_workers` CPU workers."""
        if self.device in ("auto", "cuda") and torch.cuda.is_available():
            return tuple(visible_devices()[: max(1, gpus)])
        if self.device not in ("auto", "cpu"):
            return (torch.device(self.device),)
        return tuple(cpu_workers(self.cpu_workers))

    def detector_replicas(self, num_classes: int, gpus: int, read_gs=None) -> Replicas:
        config = self.detector
        spec = ModelSpec.from_config(config, num_classes)
        reader = _reader_for(spec.weights, read_gs)
        compile_cache.configure(self.compile_cache)
        options = engine_options(config.precision, config.compile)
        return Replicas(lambda d: load_detector(spec, str(d), reader), self.devices(gpus), options)

    def embedder_replicas(self, gpus: int, read_gs=None) -> Replicas:
        config = self.embedder
        spec = ModelSpec.from_config(config)
        reader = _reader_for(spec.weights, read_gs)
        compile_cache.configure(self.compile_cache)
        options = engine_options(config.precision, config.compile)
        return Replicas(lambda d: load_embedder(spec, str(d), reader), self.devices(gpus), options)
