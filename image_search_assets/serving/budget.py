"""The service's image memory: ingestion's decode budget, shared by every image query in flight.

A query's cost is judged from the image header before any pixel is decoded (ingestion's
decode_cost, bytes per pixel for the mode) plus the detector's and embedder's float copies of
the full frame, and reserved from one budget for the whole query. The sum of reservations is
the bound on image memory: a query that does not fit within `wait_s` is answered 503 with
Retry-After, and one that could never fit is rejected like a decompression bomb.
"""

from __future__ import annotations

import io
from contextlib import AbstractContextManager

from PIL import Image, UnidentifiedImageError

from image_search_assets.core.ingest.images import MemoryBudget, decode_cost

# Peak bytes per pixel of detect + crop + embed on a decoded RGB frame, beyond the decode:
# pil_to_tensor's uint8 and float copies, the detector's normalised copy, the crop's tensors.
# Measured 45.5 B/px in all (decode included) on a 6000x6000 JPEG; decode_cost counts 12.
EMBED_BYTES_PER_PIXEL = 36


class Busy(RuntimeError):
    """No room in the budget within the wait: answered 503 with Retry-After."""

    def __init__(self, detail: str, retry_after_s: int) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


def query_cost(data: bytes) -> int:
    """Bytes an image query may hold at its peak, from the header alone; 0 when PIL cannot read
    the header (decode_image then rejects the bytes with its reason, before any pixel)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            mode, size = im.mode, im.size
    except (
        UnidentifiedImageError,
        Image.DecompressionBombError,
        OSError,
        SyntaxError,
        ValueError,
        EOFError,
    ):
        return 0
    return decode_cost(mode, size) + EMBED_BYTES_PER_PIXEL * size[0] * size[1]


class QueryBudget(MemoryBudget):
    """Ingestion's MemoryBudget with a deadline: a request cannot wait as a batch step can."""

    needs = "needs ~{} bytes to answer"

    def reserve_within(self, nbytes: int, wait_s: float) -> AbstractContextManager[None]:
        return self.reserve(nbytes, wait_s)

    def busy(self, nbytes: int, wait_s: float) -> Busy:
        return Busy(
            f"image memory is in use by other queries ({self._used} of {self.capacity}"
            f" bytes; this one needs {nbytes})",
            retry_after_s=max(1, round(wait_s / 2)),
        )
