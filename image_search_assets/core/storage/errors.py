"""Storage errors that name their operation and object (Dagster-free).

`names_object` wraps each Storage method that takes a key (core/storage.py): corrupt Parquet, a
missing file and a full disk all surface as a StorageError naming the operation and the URI,
with the original error chained for core/failures.py to classify.
"""

from __future__ import annotations

import errno
import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Concatenate, ParamSpec, Protocol, TypeVar


class PreconditionFailed(RuntimeError):
    """A conditional write lost a race: someone else changed the object first."""


class StorageError(Exception):
    """A storage operation failed: names the operation and the object, with the cause chained.

    The subclasses are also the built-in errors callers already catch (FileNotFoundError for a
    missing object); core/failures.py gives each its verdict and fix.
    """

    def __init__(self, op: str, key: str, uri: str, cause: BaseException):
        super().__init__(f"{op} {uri} failed: {type(cause).__name__}: {cause}")
        self.op, self.key, self.uri = op, key, uri


class MissingObject(StorageError, FileNotFoundError):
    """The object does not exist (a local file or a GCS blob)."""


class CorruptObject(StorageError, ValueError):
    """The object exists but does not decode: a truncated or partial file."""


class StorageFull(StorageError, OSError):
    """The filesystem under the storage root is full (or the write exceeds a size limit)."""


class StorageValueError(StorageError, ValueError):
    """A bad argument, such as a key escaping the storage root: a code error."""


FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
DECODING = ("reading Parquet", "reading JSON", "reading .npy")


def _error_class(op: str, exc: Exception) -> type[StorageError]:
    if isinstance(exc, FileNotFoundError) or type(exc).__name__ == "NotFound":  # GCS's 404
        return MissingObject
    if isinstance(exc, OSError) and exc.errno in FULL_ERRNOS:
        return StorageFull
    if op in DECODING and isinstance(exc, ValueError | EOFError) or _is_arrow_error(exc):
        return CorruptObject
    if isinstance(exc, ValueError):
        return StorageValueError
    return StorageError


def _is_arrow_error(exc: Exception) -> bool:
    return any(c.__name__ == "ArrowException" for c in type(exc).__mro__)


class _Named(Protocol):
    def uri(self, key: str) -> str: ...


S = TypeVar("S", bound=_Named)
P = ParamSpec("P")
R = TypeVar("R")


@contextmanager
def naming(storage: _Named, op: str, key: str) -> Iterator[None]:
    """Within the block, an error names `op` and the object: for decoding outside Storage."""
    try:
        yield
    except (StorageError, PreconditionFailed):
        raise  # named already, or a lost race the caller handles
    except Exception as exc:
        try:
            uri = storage.uri(key)
        except ValueError:  # a key escaping the root has no URI
            uri = repr(key)
        raise _error_class(op, exc)(op, key, uri, exc) from exc


def names_object(
    op: str,
) -> Callable[[Callable[Concatenate[S, str, P], R]], Callable[Concatenate[S, str, P], R]]:
    """Decorates a Storage method taking a key first: whatever it raises names `op` and the
    object (a StorageError chained to the cause), so that no error says only "[Errno 28]"."""

    def decorate(
        method: Callable[Concatenate[S, str, P], R],
    ) -> Callable[Concatenate[S, str, P], R]:
        @functools.wraps(method)
        def named(self: S, key: str, *args: P.args, **kwargs: P.kwargs) -> R:
            with naming(self, op, key):
                return method(self, key, *args, **kwargs)

        return named

    return decorate
