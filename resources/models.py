"""Model resource: which torchvision detector and embedder run, with which weights."""

import dagster as dg
import torch

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


def _reader_for(weights: str, read_gs):
    # Only gs:// checkpoints need the reader; leaving it out otherwise keeps the model cache hot.
    return read_gs if weights.startswith("gs://") else None


class ModelsResource(dg.ConfigurableResource):
    """Detector and embedder specs; models are loaded once per process, never inside a loop."""

    device: str = "auto"
    cpu_workers: int = 1  # engine workers when no GPU is used
    detector_arch: str
    detector_weights: str = "random"
    detector_input_size: int = 320
    detector_batch_size: int = 8
    score_threshold: float = 0.5
    detector_precision: str = "auto"  # autocast: auto | fp32 | fp16 | bf16 (engine precision.py)
    detector_compile: bool = False
    detector_sha256: str | None = None
    detector_allow_torchscript: bool = False
    embedder_arch: str
    embedder_weights: str = "random"
    embedder_input_size: int = 128
    embedder_batch_size: int = 64
    embedder_precision: str = "auto"
    embedder_compile: bool = False
    embedder_sha256: str | None = None
    embedder_allow_torchscript: bool = False
    # Where compiled kernels persist across step pods (a directory or gs:// prefix); None: off.
    compile_cache: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> "ModelsResource":
        d, e = settings.detector, settings.embedder
        return cls(
            device=settings.device,
            cpu_workers=settings.cpu_workers,
            detector_arch=d.arch,
            detector_weights=d.weights,
            detector_input_size=d.input_size,
            detector_batch_size=d.batch_size,
            score_threshold=d.score_threshold,
            detector_precision=d.precision,
            detector_compile=d.compile,
            detector_sha256=d.sha256,
            detector_allow_torchscript=d.allow_torchscript,
            embedder_arch=e.arch,
            embedder_weights=e.weights,
            embedder_input_size=e.input_size,
            embedder_batch_size=e.batch_size,
            embedder_precision=e.precision,
            embedder_compile=e.compile,
            embedder_sha256=e.sha256,
            embedder_allow_torchscript=e.allow_torchscript,
            compile_cache=settings.compile_cache,
        )

    def _embedder_spec(self) -> ModelSpec:
        return ModelSpec(
            self.embedder_arch,
            self.embedder_weights,
            self.embedder_input_size,
            sha256=self.embedder_sha256,
            allow_torchscript=self.embedder_allow_torchscript,
        )

    def embedder(self, read_gs=None) -> LoadedModel:
        spec = self._embedder_spec()
        return load_embedder(spec, self.device, _reader_for(spec.weights, read_gs))

    def embedder_identity(self, read_gs=None) -> dict:
        """The embedder's identity without loading it (models.embedder_identity), so the
        detections step can refuse a model change before the day's GPU work."""
        spec = self._embedder_spec()
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
        spec = ModelSpec(
            self.detector_arch,
            self.detector_weights,
            self.detector_input_size,
            num_classes,
            sha256=self.detector_sha256,
            allow_torchscript=self.detector_allow_torchscript,
        )
        reader = _reader_for(spec.weights, read_gs)
        compile_cache.configure(self.compile_cache)
        options = engine_options(self.detector_precision, self.detector_compile)
        return Replicas(lambda d: load_detector(spec, str(d), reader), self.devices(gpus), options)

    def embedder_replicas(self, gpus: int, read_gs=None) -> Replicas:
        spec = self._embedder_spec()
        reader = _reader_for(spec.weights, read_gs)
        compile_cache.configure(self.compile_cache)
        options = engine_options(self.embedder_precision, self.embedder_compile)
        return Replicas(lambda d: load_embedder(spec, str(d), reader), self.devices(gpus), options)
