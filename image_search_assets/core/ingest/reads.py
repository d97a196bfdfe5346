"""Bounded reads of local files and gs:// objects: never more than the cap is read into memory."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from image_search_assets.core.ingest.images import ItemRejected


def read_blob(blob: Any, max_bytes: int) -> bytes:
    """The object's bytes, its size read from metadata first; never more than max_bytes + 1."""
    blob.reload()  # a metadata GET: the size, before any content moves
    if blob.size is None or blob.size > max_bytes:
        raise ItemRejected("too_large", f"object is {blob.size} bytes > {max_bytes}")
    # The object can be replaced between the two requests: the range bounds the read anyway.
    return blob.download_as_bytes(start=0, end=max_bytes, if_generation_match=blob.generation)


def read_file(path: Path, max_bytes: int) -> bytes:
    """A regular file's bytes, never more than max_bytes + 1 read."""
    try:
        # stat first: opening a FIFO blocks until a writer shows up; /dev/zero never ends.
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise ItemRejected("not_a_file", str(path)[:200])
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except FileNotFoundError as exc:
        raise ItemRejected("file_not_found", str(path)[:200]) from exc
    except ValueError as exc:  # e.g. an embedded NUL byte in the path
        raise ItemRejected.from_exc("bad_url", exc) from exc
    except OSError as exc:
        raise ItemRejected.from_exc("file_error", exc) from exc
    if len(data) > max_bytes:
        raise ItemRejected("too_large", f"file exceeds {max_bytes} bytes")
    return data
