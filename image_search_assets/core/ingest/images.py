"""Decode untrusted image bytes into a plain RGB image, or reject the item with a reason code.

Reason codes: empty, not_an_image, truncated, decompression_bomb, bad_dimensions,
unsupported_mode. PIL global settings are never changed here.
"""

from __future__ import annotations

import functools
import io
import struct

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Formats a product catalog plausibly serves. Restricting the list keeps PIL from trying exotic
# decoders on hostile bytes (EPS, for one, shells out to Ghostscript).
_WANTED_FORMATS = ("JPEG", "MPO", "PNG", "GIF", "WEBP", "BMP", "TIFF", "AVIF")

# What a PIL decoder raises on corrupt or cut-off data.
_DECODER_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error)

_WHITE = (255, 255, 255)

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


def decode_image(
    data: bytes, *, max_pixels: int = 40_000_000, max_side: int = 20_000, min_side: int = 8
) -> Image.Image:
    """Fully decodes `data` to RGB with EXIF orientation applied; raises ItemRejected."""
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
        if mode in ("RGBA", "LA", "La", "RGBa", "PA") or "transparency" in im.info:
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
    """Scales 16-bit / 32-bit integer and float greyscale to 8 bits instead of clipping."""
    arr = np.asarray(im)
    if im.mode.startswith("I;16"):
        scaled = arr.astype(np.float64) / 257.0
    elif im.mode == "I" and arr.size and arr.min() >= 0 and arr.max() <= 65535:
        # Mode I from PNG/PGM holds 16-bit samples; assume that range rather than stretching,
        # so a dark 16-bit photo stays dark.
        scaled = arr.astype(np.float64) / 257.0
    else:
        # Float or out-of-range 32-bit data has no standard white point: stretch min..max.
        data = np.nan_to_num(arr.astype(np.float64))
        low, high = (float(data.min()), float(data.max())) if data.size else (0.0, 0.0)
        scaled = (data - low) * (255.0 / (high - low)) if high > low else np.zeros_like(data)
    grey = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")


def to_jpeg_bytes(img: Image.Image, quality: int = 92) -> bytes:
    """Encodes an image as baseline JPEG (converted to RGB first if needed)."""
    rgb = img if img.mode == "RGB" else _to_rgb(img)
    buf = io.BytesIO()
    rgb.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
