"""Detector and embedder loading: a torchvision architecture plus weights.

Weights are one of:
- `DEFAULT`: torchvision's pretrained weights (downloads once; needs internet);
- a local path or gs:// URI of a checkpoint: a state_dict, loaded with
  `torch.load(weights_only=True)`, or a TorchScript file, which carries code and so loads only
  with `allow_torchscript`. With `sha256` pinned, any other bytes are refused before loading;
- `demo`: the small weights committed in `image_search_assets/weights/`, trained on the synthetic
  catalog by `scripts/train_demo_weights.py` (they know the demo's drawings, nothing else);
- `random`: a seeded random initialisation, for tests and the offline demo only. It is never
  silent: the identity says so, and the assets log it and record it in metadata.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

log = logging.getLogger(__name__)

RANDOM_SEED = 0
WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "demo" / "weights"
# The architectures scripts/train_demo_weights.py trains, and the file each one writes.
DEMO_WEIGHTS = {
    "ssdlite320_mobilenet_v3_large": "demo_detector.pt",
    "mobilenet_v3_small": "demo_embedder.pt",
}


@dataclass(frozen=True)
class ModelSpec:
    arch: str
    weights: str = "random"
    input_size: int = 224
    num_classes: int | None = None  # detectors only: categories + background
    sha256: str | None = None  # pinned checkpoint digest: other bytes are refused
    allow_torchscript: bool = False  # TorchScript runs its own code: an explicit opt-in


class CheckpointRefused(ValueError):
    """The checkpoint must not be loaded (wrong digest, or TorchScript without opt-in).

    Permanent: a retry reads the same bytes. A ValueError, so core/failures.py never retries it.
    """


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


def demo_checkpoint(arch: str) -> Path:
    """The committed demo checkpoint for `arch`; a clear error for any other architecture."""
    if arch not in DEMO_WEIGHTS:
        raise ValueError(
            f"weights 'demo' exist for {sorted(DEMO_WEIGHTS)} only, not {arch!r}: "
            "train them with scripts/train_demo_weights.py or choose other weights"
        )
    return WEIGHTS_DIR / DEMO_WEIGHTS[arch]


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives carry their code; a saved state_dict is pickled data only."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.split("/")[1:2] == ["code"] for name in archive.namelist())
    except zipfile.BadZipFile:
        return False


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
    uri = spec.weights
    if spec.weights == "demo":
        uri = str(demo_checkpoint(spec.arch))
        log.warning(
            "%s uses the DEMO weights: trained on the synthetic sample catalog only; set real "
            "weights in platform.yaml for real product photos",
            spec.arch,
        )
    path = _read_checkpoint(uri, read_bytes)
    identity["sha256"] = digest = _sha256(path)
    if spec.sha256 is not None and digest != spec.sha256.lower():
        raise CheckpointRefused(
            f"checkpoint {uri} has sha256 {digest}, but the config pins {spec.sha256}: the file "
            "changed or the pin is stale. Fix: restore the checkpoint or update models.<model>."
            "sha256 after verifying the new file; it is not retried"
        )
    if _is_torchscript(path):
        if not spec.allow_torchscript:
            raise CheckpointRefused(
                f"checkpoint {uri} is TorchScript, which runs code of its own when loaded. Fix: "
                "save a state_dict instead, or set models.<model>.allow_torchscript: true if "
                "you trust its source"
            )
        return torch.jit.load(str(path), map_location="cpu"), identity | {"format": "torchscript"}
    module = _construct(spec, detector=detector, weights=None)
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    # Stored fp16 to keep checkpoints small; the model runs in fp32 unless autocast says so.
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    if not detector:
        # An embedder never uses its classifier, so a checkpoint trained with any head fits.
        head = _strip_classifier(module)
        state = {k: v for k, v in state.items() if not k.startswith(f"{head}.")}
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"checkpoint {uri} does not fit {spec.arch}: {exc}") from exc
    return module, identity | {"format": "state_dict"}


def _strip_classifier(module: nn.Module) -> str:
    """Turns a torchvision classifier into a feature extractor; returns the head's name."""
    for attr in ("fc", "classifier", "heads", "head"):
        if hasattr(module, attr) and isinstance(getattr(module, attr), nn.Module):
            setattr(module, attr, nn.Identity())
            return attr
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
        if getattr(transform, "fixed_size", None) is not None:  # SSD resizes to a square
            transform.fixed_size = (spec.input_size, spec.input_size)
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
        _strip_classifier(module)
    dev = resolve_device(device)
    module = module.eval().to(dev)
    with torch.inference_mode():
        probe = torch.zeros(1, 3, spec.input_size, spec.input_size, device=dev)
        identity["dim"] = int(module(probe).flatten(1).shape[1])
    identity["input_size"] = spec.input_size
    return LoadedModel(module, dev, identity)
