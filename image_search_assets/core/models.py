"""Detector and embedder loading: a torchvision architecture plus weights.

Weights are one of:
- `DEFAULT`: torchvision's pretrained weights (downloads once; needs internet);
- a local path or gs:// URI of a checkpoint (a state_dict or a TorchScript file);
- `random`: a seeded random initialisation, for tests and the offline demo only. It is never
  silent: the identity says so, and the assets log it and record it in metadata.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

log = logging.getLogger(__name__)

RANDOM_SEED = 0


@dataclass(frozen=True)
class ModelSpec:
    arch: str
    weights: str = "random"
    input_size: int = 224
    num_classes: int | None = None  # detectors only: categories + background


@dataclass(frozen=True)
class LoadedModel:
    module: nn.Module
    device: torch.device
    identity: dict[str, Any]  # what produced the vectors: recorded in manifests and metadata

    @property
    def is_random(self) -> bool:
        return self.identity["weights"] == "random"


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _construct(spec: ModelSpec, *, detector: bool, weights: str | None) -> nn.Module:
    kwargs: dict[str, Any] = {"weights": weights}
    if detector:
        kwargs["weights_backbone"] = None  # never download a backbone behind the user's back
        if weights is None and spec.num_classes:
            kwargs["num_classes"] = spec.num_classes
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        return torchvision.models.get_model(spec.arch, **kwargs)


def _read_checkpoint(uri: str, read_bytes: Callable[[str], bytes] | None) -> Path:
    if uri.startswith("gs://"):
        if read_bytes is None:
            raise ValueError(f"checkpoint {uri}: reading gs:// needs a GCS reader")
        tmp = Path(tempfile.mkdtemp()) / Path(uri).name
        tmp.write_bytes(read_bytes(uri))
        return tmp
    path = Path(uri.removeprefix("file://")).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return path


def _load_module(
    spec: ModelSpec, *, detector: bool, read_bytes: Callable[[str], bytes] | None
) -> tuple[nn.Module, dict[str, Any]]:
    identity: dict[str, Any] = {"arch": spec.arch, "weights": spec.weights}
    if spec.weights == "random":
        log.warning(
            "%s uses RANDOM weights (seed %d): for tests and demos only", spec.arch, RANDOM_SEED
        )
        identity["seed"] = RANDOM_SEED
        return _construct(spec, detector=detector, weights=None), identity
    if spec.weights.upper() == "DEFAULT":
        return _construct(spec, detector=detector, weights="DEFAULT"), identity
    path = _read_checkpoint(spec.weights, read_bytes)
    identity["sha256"] = _sha256(path)
    try:
        return torch.jit.load(str(path), map_location="cpu"), identity | {"format": "torchscript"}
    except RuntimeError:
        pass  # not TorchScript: a state_dict for the named architecture
    module = _construct(spec, detector=detector, weights=None)
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    module.load_state_dict({k: v.float() for k, v in state.items()})
    return module, identity | {"format": "state_dict"}


def _strip_classifier(module: nn.Module) -> nn.Module:
    """Turns a torchvision classifier into a feature extractor."""
    for attr in ("fc", "classifier", "heads", "head"):
        if hasattr(module, attr) and isinstance(getattr(module, attr), nn.Module):
            setattr(module, attr, nn.Identity())
            return module
    raise ValueError(f"don't know how to strip the classifier of {type(module).__name__}")


@functools.cache
def load_detector(
    spec: ModelSpec, device: str = "auto", read_bytes: Callable[[str], bytes] | None = None
) -> LoadedModel:
    """A torchvision detector in eval mode, resized to `spec.input_size`. Cached per process."""
    module, identity = _load_module(spec, detector=True, read_bytes=read_bytes)
    transform = getattr(module, "transform", None)
    if transform is not None and hasattr(transform, "min_size"):
        transform.min_size = (spec.input_size,)
        transform.max_size = spec.input_size
    dev = resolve_device(device)
    identity["input_size"] = spec.input_size
    return LoadedModel(module.eval().to(dev), dev, identity)


@functools.cache
def load_embedder(
    spec: ModelSpec, device: str = "auto", read_bytes: Callable[[str], bytes] | None = None
) -> LoadedModel:
    """A torchvision backbone whose output is the feature vector. Cached per process."""
    module, identity = _load_module(spec, detector=False, read_bytes=read_bytes)
    if identity.get("format") != "torchscript":
        module = _strip_classifier(module)
    dev = resolve_device(device)
    module = module.eval().to(dev)
    with torch.inference_mode():
        probe = torch.zeros(1, 3, spec.input_size, spec.input_size, device=dev)
        identity["dim"] = int(module(probe).flatten(1).shape[1])
    identity["input_size"] = spec.input_size
    return LoadedModel(module, dev, identity)
