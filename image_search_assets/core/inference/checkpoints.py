"""Checkpoint files: where a model's weights come from, and whether they may be loaded.

A checkpoint is a local path, a file:// or gs:// URI, or `demo` (the committed demo weights).
Its bytes are hashed on every load; with `sha256` pinned in the config, other bytes are refused
before torch reads them (core/inference/models.py loads them).
"""

from __future__ import annotations

import logging
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from image_search_assets.core.storage import file_sha256

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "demo" / "weights"
# The architectures demo/train_weights.py trains, and the file each one writes.
DEMO_WEIGHTS = {
    "ssdlite320_mobilenet_v3_large": "demo_detector.pt",
    "mobilenet_v3_small": "demo_embedder.pt",
}
DEMO_RECORD = WEIGHTS_DIR / "demo_weights.json"  # how the demo weights were made, labels too


class CheckpointRefused(ValueError):
    """The checkpoint must not be loaded (wrong digest, or TorchScript without opt-in).

    Permanent: a retry reads the same bytes. A ValueError, so core/failures.py never retries it.
    """


def read_checkpoint(uri: str, read_bytes: Callable[[str], bytes] | None) -> Path:
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
            "train them with image_search_assets/demo/train_weights.py or choose other weights"
        )
    return WEIGHTS_DIR / DEMO_WEIGHTS[arch]


def is_torchscript(path: Path) -> bool:
    """TorchScript archives carry their code; a saved state_dict is pickled data only."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.split("/")[1:2] == ["code"] for name in archive.namelist())
    except zipfile.BadZipFile:
        return False


def verified_checkpoint(
    arch: str, weights: str, pinned: str | None, read_bytes: Callable[[str], bytes] | None
) -> tuple[str, Path, str]:
    """(uri, local path, sha256) of the checkpoint `weights` names for `arch`;
    CheckpointRefused if the config pins another digest. `demo` resolves to the committed file,
    with a warning."""
    uri = weights
    if weights == "demo":
        uri = str(demo_checkpoint(arch))
        log.warning(
            "%s uses the DEMO weights: trained on the synthetic sample catalog only; set real "
            "weights in platform.yaml for real product photos",
            arch,
        )
    path = read_checkpoint(uri, read_bytes)
    digest = file_sha256(path)
    if pinned is not None and digest != pinned.lower():
        raise CheckpointRefused(
            f"checkpoint {uri} has sha256 {digest}, but the config pins {pinned}: the file "
            "changed or the pin is stale. Fix: restore the checkpoint or update models.<model>."
            "sha256 after verifying the new file; it is not retried"
        )
    return uri, path, digest
