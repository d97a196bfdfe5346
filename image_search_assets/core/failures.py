"""The failure taxonomy as code: is a step's error worth a retry? (Dagster-free)

Retryable: preemption or eviction (SIGTERM), transient network and GCS errors (429, 5xx,
timeouts, resets) and CUDA OOM (the next attempt halves the batch, see core/inference/chunks.py).
Permanent: bad configuration, a catalog schema violation, a lost compare-and-swap, a failed index
verification, a corrupt or missing stored file, a full disk and code errors. A full disk is not
retried: it does not empty itself within a retry's wait, and retrying holds the day's GPUs for
hours of backoff; the alert names the path, someone frees space and re-executes. Anything
unknown is permanent too: a retry must be earned, because retrying what cannot succeed only
burns GPU hours. Per-item failures never get here: they are
quarantined where they happen (core/ingest/fetch.py, core/ingest/images.py).
"""

from __future__ import annotations

import functools
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from image_search_assets.core.config import ConfigError
from image_search_assets.core.index.annoy_index import IndexVerificationError
from image_search_assets.core.inference.gpu_memory import GpuMemoryExhausted, is_cuda_oom
from image_search_assets.core.ingest.catalog import CatalogSchemaError
from image_search_assets.core.storage.errors import (
    CorruptObject,
    MissingObject,
    PreconditionFailed,
    StorageFull,
)

CODE_ERRORS = (
    TypeError,
    LookupError,  # KeyError, IndexError
    ValueError,
    AttributeError,
    NameError,
    AssertionError,
    NotImplementedError,
    ImportError,
    ArithmeticError,
)
RERUN = "then re-execute the run from failure"


class Preempted(Exception):
    """The node is going away (GKE preemption, pod eviction): the work can resume elsewhere."""


@dataclass(frozen=True)
class Verdict:
    retryable: bool
    kind: str
    message: str  # what happened and, for permanent failures, what to fix


@functools.cache
def _transient_google() -> tuple[type[BaseException], ...]:
    from google.api_core import exceptions as gexc
    from google.auth.exceptions import TransportError

    return (gexc.TooManyRequests, gexc.ServerError, TransportError)


@functools.cache
def _transient_network() -> tuple[type[BaseException], ...]:
    import requests

    # requests' errors subclass OSError, so they need naming; ConnectionError covers resets,
    # refusals and http.client.RemoteDisconnected.
    exc = requests.exceptions
    return (
        ConnectionError,
        TimeoutError,
        exc.ConnectionError,
        exc.Timeout,
        exc.ChunkedEncodingError,
    )


def _classify_one(exc: BaseException) -> Verdict | None:
    what = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, Preempted):
        return Verdict(True, "preempted", what)
    if isinstance(exc, GpuMemoryExhausted):
        fix = "use a GPU with more memory or a smaller model input_size in platform.yaml"
        return Verdict(False, "gpu_memory", f"{what}. Fix: {fix}, {RERUN}.")
    if is_cuda_oom(exc):
        return Verdict(True, "cuda_oom", f"{what} (the next attempt halves the batch)")
    if isinstance(exc, ConfigError):
        fix = "correct platform.yaml (or the file IMAGE_SEARCH_CONFIG names, or its env overrides)"
        return Verdict(False, "config", f"Bad configuration: {exc}. Fix: {fix}, {RERUN}.")
    if isinstance(exc, CatalogSchemaError):
        return Verdict(False, "catalog_schema", f"{exc} Fix: correct the catalog, {RERUN}.")
    if isinstance(exc, PreconditionFailed):
        fix = "another run published this category at the same time; keep one active run per job"
        return Verdict(False, "concurrent_write", f"{exc}. Fix: {fix}, {RERUN}.")
    if isinstance(exc, StorageFull):
        fix = "free space under the storage root (or grow its volume)"
        return Verdict(False, "storage_full", f"{exc}. Fix: {fix}, {RERUN}.")
    if isinstance(exc, CorruptObject):
        fix = (
            "the file is damaged (a truncated or partial write): restore it from a backup, or "
            "delete it and re-materialise the asset partition that writes it"
        )
        return Verdict(False, "corrupt_file", f"{exc}. Fix: {fix}, {RERUN}.")
    if isinstance(exc, MissingObject):
        fix = "materialise the asset partition that writes it (or restore it from a backup)"
        return Verdict(False, "missing_file", f"{exc}. Fix: {fix}, {RERUN}.")
    if isinstance(exc, IndexVerificationError):
        fix = "the previous version still serves; inspect the new version's files"
        return Verdict(False, "index_verification", f"{exc}. Fix: {fix}, {RERUN}.")
    if isinstance(exc, _transient_google() + _transient_network()):
        return Verdict(True, "transient_network", what)
    if isinstance(exc, CODE_ERRORS):
        fix = "a code or data error, not a transient failure, so it is not retried; correct it"
        return Verdict(False, "code_error", f"{what}. Fix: {fix}, {RERUN}.")
    return None


def classify(exc: BaseException) -> Verdict:
    """The verdict on a step's error; an unknown error's causes decide, else it is permanent."""
    link: BaseException | None = exc
    seen: set[int] = set()
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        verdict = _classify_one(link)
        if verdict is not None:
            if link is not exc:  # name the outer error too: it says where the cause surfaced
                message = f"{type(exc).__name__}: {exc} <- {verdict.message}"
                verdict = Verdict(verdict.retryable, verdict.kind, message)
            return verdict
        link = link.__cause__ or link.__context__
    fix = "not a known transient failure, so it is not retried; correct the cause"
    return Verdict(False, "unclassified", f"{type(exc).__name__}: {exc}. Fix: {fix}, {RERUN}.")


@contextmanager
def sigterm_as_preemption() -> Iterator[None]:
    """Within the block, SIGTERM raises Preempted instead of cancelling the step.

    Kubernetes sends SIGTERM when a node is preempted or a pod evicted, and Dagster would
    otherwise treat it as a cancel (no retry). SIGINT, a person's cancel, is left alone. A
    terminated run's step pods get SIGTERM too: the caller tells the two apart by the run's
    status (assets/retrying.py).
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def preempted(signum: int, frame: object) -> None:
        raise Preempted("SIGTERM received: node preemption or pod eviction")

    previous = signal.signal(signal.SIGTERM, preempted)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
