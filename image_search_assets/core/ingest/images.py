"""Decode untrusted image bytes into a plain RGB image, or reject the item with a reason code.

Reason codes: empty, not_an_image, truncated, decompression_bomb, bad_dimensions,
unsupported_mode. PIL global settings are never changed here.

Memory is judged from the header before any pixel is decoded: a pixel cap alone lets a small
float TIFF (4 bytes a sample, plus the conversion's working arrays) cost several times an 8-bit
photo of the same size, so decode_cost() counts bytes per pixel for the mode, and a MemoryBudget
shared by the fetch workers bounds the decodes in flight together.
"""

from __future__ import annotations

import contextlib
import functools
import io
import struct
import threading
from collections.abc import Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Formats a product catalog plausibly serves. Restricting the list keeps PIL from trying exotic
# decoders on hostile bytes (EPS, for one, shells out to Ghostscript).
_WANTED_FORMATS = ("JPEG", "MPO", "PNG", "GIF", "WEBP", "BMP", "TIFF", "AVIF")

# What a PIL decoder raises on corrupt or cut-off data.
_DECODER_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error)

_WHITE = (255, 255, 255)
_ALPHA_MODES = ("RGBA", "LA", "La", "RGBa", "PA")

# Leading bytes of the formats above: bytes that start like an image but cannot be opened were
# cut short (a broken download), which the catalog team fixes differently from a wrong URL.
_SIGNATURES = {
    b"\xff\xd8\xff": "JPEG",
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
}


def _signature(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[:2] == b"BM" and data[6:10] == b"\x00\x00\x00\x00":  # BMP's reserved zeros, not "BMW"
        return "BMP"
    return next((fmt for sig, fmt in _SIGNATURES.items() if data.startswith(sig)), None)


def _unopenable(data: bytes, exc: BaseException) -> ItemRejected:
    """Why bytes PIL could not open were rejected: truncated if they start like an image."""
    fmt = _signature(data)
    if fmt is not None:
        return ItemRejected("truncated", f"{fmt} header, but only {len(data)} bytes can be read")
    if isinstance(exc, UnidentifiedImageError):
        # PIL's message names the BytesIO object's address; keep the detail reproducible.
        return ItemRejected("not_an_image", "no image format recognised in the bytes")
    return ItemRejected.from_exc("not_an_image", exc)


class ItemRejected(Exception):
    """An unusable item (image): quarantined with a reason code, never fatal to the day."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail

    @classmethod
    def from_exc(cls, reason: str, exc: BaseException) -> ItemRejected:
        """The reason, with the exception's type and message as a short detail."""
        return cls(reason, f"{type(exc).__name__}: {exc}"[:200])


@functools.cache
def _formats() -> tuple[str, ...]:
    # Image.open raises KeyError for a format whose plugin is missing (AVIF on older builds).
    Image.init()
    return tuple(f for f in _WANTED_FORMATS if f in Image.OPEN)


class MemoryBudget:
    """Bytes of decode memory shared by concurrent decodes: each waits until its estimate fits.

    A caller that cannot wait forever (a request) passes `wait_s`; past it, `busy()` says why.
    """

    needs = "needs {} bytes to decode"  # the refusal of what could never fit

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"a memory budget needs capacity >= 1, got {capacity}")
        self.capacity = capacity
        self._used = 0
        self._cond = threading.Condition()

    @property
    def in_use(self) -> int:
        with self._cond:
            return self._used

    @contextlib.contextmanager
    def reserve(self, nbytes: int, wait_s: float | None = None) -> Iterator[None]:
        if nbytes > self.capacity:  # would wait forever
            raise ItemRejected(
                "decompression_bomb", f"{self.needs.format(nbytes)}, budget {self.capacity}"
            )
        with self._cond:
            if not self._cond.wait_for(lambda: self._used + nbytes <= self.capacity, wait_s):
                raise self.busy(nbytes, wait_s or 0.0)
            self._used += nbytes
        try:
            yield
        finally:
            with self._cond:
                self._used -= nbytes
                self._cond.notify_all()

    def busy(self, nbytes: int, wait_s: float) -> Exception:
        """What `reserve` raises when `nbytes` found no room within `wait_s` (lock held)."""
        return TimeoutError(f"{nbytes} bytes found no room within {wait_s}s")


_RGB_BPP = 4  # PIL keeps RGB in 32-bit pixels
MAX_DECODE_BYTES = 512_000_000  # fits a 40 Mpx 8-bit RGB photo (12 B/px), not a float one


def _raster_bpp(mode: str) -> int:
    """Bytes per pixel of PIL's decoded raster for `mode`."""
    if mode in ("1", "L", "P"):
        return 1
    if mode.startswith("I;16"):
        return 2
    return 4  # every other mode (I, F, RGB, RGBA, LA, CMYK, YCbCr, ...) uses 32-bit pixels


def decode_cost(mode: str, size: tuple[int, int]) -> int:
    """Peak bytes decode_image may hold for an image of this mode and size, from its header:
    the raster, its orientation copy, the conversion's working arrays and the RGB result."""
    raster = _raster_bpp(mode)
    if mode.startswith("I") or mode == "F":
        work = raster + 4 + 1 + 1  # numpy copy of the raster, float32, uint8, 8-bit grey
    elif mode in _ALPHA_MODES:
        work = 3 * 4  # RGBA, the white background, the composite
    else:
        work = 0
    return size[0] * size[1] * (2 * raster + work + _RGB_BPP)


def decode_image(
    data: bytes,
    *,
    max_pixels: int = 40_000_000,
    max_side: int = 20_000,
    min_side: int = 8,
    max_decode_bytes: int | None = MAX_DECODE_BYTES,
    budget: MemoryBudget | None = None,
) -> Image.Image:
    """Fully decodes `data` to RGB with EXIF orientation applied; raises ItemRejected.

    An image whose decode_cost() exceeds `max_decode_bytes` is refused before decoding; with a
    `budget`, the decode waits until its cost fits beside the other decodes in flight.
    """
    if not data:
        raise ItemRejected("empty", "zero bytes")
    try:
        im = Image.open(io.BytesIO(data), formats=_formats())
    except UnidentifiedImageError as exc:
        raise _unopenable(data, exc) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # The warning only arrives as an exception when the caller runs with -W error; either
        # way PIL judged the header size absurd before decoding any pixels.
        raise ItemRejected("decompression_bomb", str(exc)[:200]) from exc
    except _DECODER_ERRORS as exc:
        raise _unopenable(data, exc) from exc
    with im:
        _check_size(im.size, max_pixels=max_pixels, max_side=max_side, min_side=min_side)
        cost = decode_cost(im.mode, im.size)
        if max_decode_bytes is not None and cost > max_decode_bytes:
            width, height = im.size
            raise ItemRejected(
                "decompression_bomb",
                f"{width}x{height} {im.mode} needs ~{cost} bytes decoded, over {max_decode_bytes}",
            )
        with budget.reserve(cost) if budget is not None else contextlib.nullcontext():
            try:
                im.load()
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                raise ItemRejected("decompression_bomb", str(exc)[:200]) from exc
            except _DECODER_ERRORS as exc:
                raise ItemRejected.from_exc("truncated", exc) from exc
            return _to_rgb(_apply_orientation(im))


def _check_size(size: tuple[int, int], *, max_pixels: int, max_side: int, min_side: int) -> None:
    width, height = size
    if width * height > max_pixels:
        raise ItemRejected("decompression_bomb", f"{width}x{height} exceeds {max_pixels} pixels")
    if max(width, height) > max_side or min(width, height) < min_side:
        raise ItemRejected(
            "bad_dimensions", f"{width}x{height} outside [{min_side}, {max_side}] per side"
        )


def _apply_orientation(im: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(im)
    except _DECODER_ERRORS + (KeyError, TypeError, ZeroDivisionError):
        # Malformed EXIF says nothing reliable about orientation; the pixels themselves decoded
        # fine, so the upright-as-stored image is the best available answer.
        return im


def _to_rgb(im: Image.Image) -> Image.Image:
    mode = im.mode
    try:
        if mode == "RGB":
            return im.copy()
        if mode.startswith("I") or mode == "F":
            return _high_depth_to_rgb(im)
        if mode in _ALPHA_MODES or "transparency" in im.info:
            return _flatten_on_white(im.convert("RGBA"))
        return im.convert("RGB")
    except ValueError as exc:
        # e.g. LAB or HSV TIFFs, which PIL cannot convert straight to RGB.
        raise ItemRejected("unsupported_mode", f"{mode}: {exc}"[:200]) from exc


def _flatten_on_white(rgba: Image.Image) -> Image.Image:
    # Product shots with transparent backgrounds are meant to be seen on white; compositing on
    # black (what a bare convert("RGB") effectively does) turns them into dark silhouettes.
    background = Image.new("RGBA", rgba.size, _WHITE + (255,))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _high_depth_to_rgb(im: Image.Image) -> Image.Image:
    """Scales 16-bit / 32-bit integer and float greyscale to 8 bits instead of clipping.

    Works in one float32 array, in place: float64 temporaries made a 40 Mpx float image cost
    over 1.5 GB here (decode_cost() counts what this keeps)."""
    data = np.asarray(im).astype(np.float32)
    if im.mode.startswith("I;16") or (
        im.mode == "I" and data.size and data.min() >= 0 and data.max() <= 65535
    ):
        # Mode I from PNG/PGM holds 16-bit samples; assume that range rather than stretching,
        # so a dark 16-bit photo stays dark.
        data /= 257.0
    else:
        # Float or out-of-range 32-bit data has no standard white point: stretch min..max.
        np.nan_to_num(data, copy=False)
        low, high = (float(data.min()), float(data.max())) if data.size else (0.0, 0.0)
        if high > low:
            data -= low
            data *= 255.0 / (high - low)
        else:
            data.fill(0.0)
    np.rint(data, out=data)
    np.clip(data, 0, 255, out=data)
    return Image.fromarray(data.astype(np.uint8)).convert("RGB")


def to_jpeg_bytes(img: Image.Image, quality: int = 92) -> bytes:
    """Encodes an image as baseline JPEG (converted to RGB first if needed)."""
    rgb = img if img.mode == "RGB" else _to_rgb(img)
    buf = io.BytesIO()
    rgb.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
