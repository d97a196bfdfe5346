"""A persistent torch.compile cache: inductor's cache directory, archived per model, torch and
device under a local directory or a gs:// prefix, so a fresh pod need not compile again.

A pod starts with an empty inductor cache, so every step pays the whole compile. This module
points TORCHINDUCTOR_CACHE_DIR at a directory of the process's own, fills it from the archive
for each compiled module before its first call, and writes the archive back after a call that
compiled something new. The archive is the whole directory (FX graphs, AOT-autograd entries,
compiled C++ and Triton kernels, automatic-dynamic profiles), not torch's
save_cache_artifacts() bundle: that bundle lacks the compiled CPU kernels, so a warm CPU
compile would still build them all.

torch keys every entry by its own hashes (graph, torch version, device), so a stale entry is
a miss, never a wrong answer. The archive's key adds torch version and device name so that
pods of another kind never download it, and its manifest is checked once more on load. A
missing, unreadable or foreign archive never fails a step: it logs why and compiles cold.

The archive holds code that the process loads and runs: its location must be trusted like
the container image (written only by the platform's own steps).
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import os
import platform
import re
import tarfile
import tempfile
import threading
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from image_search_assets.core.storage import Storage, open_storage

log = logging.getLogger(__name__)

FORMAT = 1
MANIFEST = "compile_cache.json"


@functools.cache
def device_name(device: torch.device) -> str:
    """The compiled code's target: the GPU's model, or the CPU's model and vector ISA."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return f"{torch.cuda.get_device_name(device)} sm{major}{minor}"
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{cpu} {torch.backends.cpu.get_cpu_capability()}"


def model_identity(module: nn.Module) -> str:
    """The architecture, not the weights: class and every parameter's and buffer's name, shape
    and dtype (inductor takes weights as inputs, so new weights reuse the compiled code)."""
    digest = hashlib.sha256(type(module).__qualname__.encode())
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
    return f"{type(module).__name__}-{digest.hexdigest()[:16]}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_")


def archive_key(module: nn.Module, device: torch.device) -> str:
    """Where `module`'s archive lies under the cache's location: torch/device/model."""
    torch_part = _slug(f"torch-{torch.__version__}")
    return f"{torch_part}/{_slug(device_name(device))}/{model_identity(module)}.tar.gz"


def _compile_misses() -> int:
    """Graphs inductor and AOT autograd actually compiled (cache misses) in this process."""
    from torch._dynamo.utils import counters

    return (
        counters["inductor"]["fxgraph_cache_miss"] + counters["aot_autograd"]["autograd_cache_miss"]
    )


class CompileCache:
    """The process's compile cache: `storage` holds one archive per model, torch and device."""

    def __init__(
        self,
        storage: Storage,
        local_dir: str | os.PathLike[str] | None = None,
        location: str = "",
    ) -> None:
        self.storage = storage
        self.location = location or storage.uri("")
        self.local_dir = Path(local_dir or tempfile.mkdtemp(prefix="torchinductor-"))
        self.local_dir.mkdir(parents=True, exist_ok=True)
        # Read by inductor at every lookup: set before the first compile, for the whole process.
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(self.local_dir)
        self.events: list[dict[str, Any]] = []  # what each load and save did, for the record
        self._lock = threading.Lock()
        self._loaded: set[str] = set()
        self._saved_misses = _compile_misses()

    def _manifest(self, device: torch.device) -> dict[str, Any]:
        return {"format": FORMAT, "torch": torch.__version__, "device": device_name(device)}

    def load(self, key: str, device: torch.device) -> bool:
        """Fills the local directory from `key`'s archive; False (and why, logged) if none."""
        with self._lock:
            if key in self._loaded:
                return True
            reason = self._extract(key, device)
            self._loaded.add(key)
        event = {"event": "load", "key": key, "hit": reason is None}
        self.events.append(event if reason is None else {**event, "reason": reason})
        if reason is None:
            log.info("compile cache: loaded %s", self.storage.uri(key))
        else:
            log.warning("compile cache: %s (%s); compiling cold", reason, self.storage.uri(key))
        return reason is None

    def _extract(self, key: str, device: torch.device) -> str | None:
        if not self.storage.exists(key):
            return "no archive yet"
        try:
            data = self.storage.read_bytes(key)
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
                member = archive.extractfile(MANIFEST)
                manifest = json.loads(member.read()) if member else None
                if manifest != self._manifest(device):
                    return f"archive is for {manifest}, this process is {self._manifest(device)}"
                for entry in archive.getmembers():
                    # Never rewrite a file already there: this process may have loaded it.
                    if entry.name != MANIFEST and not (self.local_dir / entry.name).exists():
                        archive.extract(entry, self.local_dir, filter="data")
        except (OSError, EOFError, zlib.error, tarfile.TarError, ValueError, KeyError) as exc:
            # OSError: the storage read too (a GCS outage); ValueError: a bad manifest.
            return f"unreadable archive: {type(exc).__name__}: {exc}"
        return None

    def save_if_compiled(self, key: str, device: torch.device) -> bool:
        """Writes the local directory to `key` when inductor compiled anything since the last
        save; a failed write is logged, never raised (the step's results do not depend on it)."""
        with self._lock:
            misses = _compile_misses()
            if misses == self._saved_misses:
                return False
            self._saved_misses = misses
            try:
                self.storage.write_bytes(key, self._archive(device))
            except OSError as exc:
                log.warning("compile cache: could not write %s: %s", self.storage.uri(key), exc)
                self.events.append({"event": "save", "key": key, "error": str(exc)})
                return False
        self.events.append({"event": "save", "key": key})
        log.info("compile cache: saved %s", self.storage.uri(key))
        return True

    def _archive(self, device: torch.device) -> bytes:
        buf = io.BytesIO()
        # Level 1: compiled kernels compress well already; the save sits on the step's path.
        with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as archive:
            manifest = json.dumps(self._manifest(device)).encode()
            info = tarfile.TarInfo(MANIFEST)
            info.size = len(manifest)
            archive.addfile(info, io.BytesIO(manifest))
            for path in sorted(self.local_dir.rglob("*")):
                if path.is_file() and not path.name.endswith(".lock"):
                    archive.add(path, path.relative_to(self.local_dir).as_posix())
        return buf.getvalue()

    def tracking(self, module: nn.Module, compiled: Callable) -> Callable:
        """`compiled` after loading `module`'s archive; each call that compiles saves it."""
        device = next((t.device for t in module.parameters()), torch.device("cpu"))
        key = archive_key(module, device)
        self.load(key, device)

        def run(*args: Any, **kwargs: Any) -> Any:
            out = compiled(*args, **kwargs)
            self.save_if_compiled(key, device)
            return out

        return run


_ACTIVE: CompileCache | None = None


def configure(location: str | None, gcs_client_factory: Any = None) -> CompileCache | None:
    """Sets the process's compile cache at `location` (a directory or gs://bucket/prefix;
    None or "" turns it off). Call it before the first compile; the same location again keeps
    the active cache, so each step may call it."""
    global _ACTIVE
    if not location:
        _ACTIVE = None
    elif _ACTIVE is None or _ACTIVE.location != location:
        _ACTIVE = CompileCache(open_storage(location, gcs_client_factory), location=location)
    return _ACTIVE


def active() -> CompileCache | None:
    return _ACTIVE
