"""decode_batch against PIL, for the formats stored images can have; prefetch order."""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from image_search_assets.core.inference.engine import decode_batch
from image_search_assets.core.inference.engine.reader import jpeg_components, prefetched
from tests.core.inference.engine.conftest import jpeg, product

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:torchvision")


def pil_rgb(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def encoded(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def test_decodes_every_format_like_pil():
    rgb = product(1, size=96)
    blobs = {
        "jpeg": jpeg(rgb),
        "png": encoded(rgb, "PNG"),
        "grey_jpeg": jpeg(rgb.convert("L")),
        "cmyk_jpeg": jpeg(rgb.convert("CMYK")),
        "rgba_png": encoded(rgb.convert("RGBA"), "PNG"),
    }
    decoded = decode_batch(list(blobs.values()), torch.device("cpu"))
    for (name, data), img in zip(blobs.items(), decoded, strict=True):
        assert img.dtype == torch.uint8 and img.shape == (3, 96, 96), name
        diff = np.abs(img.permute(1, 2, 0).numpy().astype(int) - pil_rgb(data).astype(int))
        # Both use libjpeg-turbo here; another build's IDCT may differ by a level or two.
        assert diff.max() <= 2, name


def test_jpeg_components_reads_the_frame_header():
    rgb = product(2, size=64)
    assert jpeg_components(jpeg(rgb)) == 3
    assert jpeg_components(jpeg(rgb.convert("L"))) == 1
    assert jpeg_components(jpeg(rgb.convert("CMYK"))) == 4
    assert jpeg_components(encoded(rgb, "PNG")) is None
    assert jpeg_components(b"\xff\xd8\xff") is None  # truncated


def test_unreadable_bytes_raise():
    with pytest.raises(OSError):
        decode_batch([b"not an image"], torch.device("cpu"))


def test_prefetched_keeps_order_and_runs_ahead():
    second_loaded = threading.Event()

    def load(i: int) -> int:
        if i == 1:
            second_loaded.set()
        return i * 10

    stream = prefetched(range(5), load, depth=1)
    assert next(stream) == 0
    # Batch 1 decodes in the background while the consumer still holds batch 0.
    assert second_loaded.wait(timeout=10)
    assert list(stream) == [10, 20, 30, 40]
    assert list(prefetched(range(3), load, depth=0)) == [0, 10, 20]
