"""decode_image: every valid oddity decodes to sane RGB; every bad input gets its reason code."""

from __future__ import annotations

import contextlib
import io
import struct
import subprocess
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image, ImageFile

from image_search_assets.core.ingest.images import (
    ItemRejected,
    MemoryBudget,
    decode_cost,
    decode_image,
    to_jpeg_bytes,
)


def _encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height, with no pixel data: costs nothing to build."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def _reason(data: bytes, **kwargs) -> str:
    with pytest.raises(ItemRejected) as info:
        decode_image(data, **kwargs)
    return info.value.reason


def _assert_rgb(img: Image.Image, size: tuple[int, int]) -> np.ndarray:
    assert img.mode == "RGB"
    assert img.size == size
    return np.asarray(img)


def test_cmyk_jpeg_decodes_to_rgb_with_the_right_colour() -> None:
    data = _encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG")  # pure red in CMYK
    r, g, b = _assert_rgb(decode_image(data), (16, 16))[8, 8].tolist()
    assert r > 200 and g < 60 and b < 60


def test_greyscale_png_becomes_grey_rgb() -> None:
    data = _encode(Image.new("L", (10, 12), 100), "PNG")
    assert (_assert_rgb(decode_image(data), (10, 12)) == 100).all()


def test_palette_png_with_transparency_composites_on_white() -> None:
    img = Image.new("P", (10, 10), 0)
    img.putpalette([0, 0, 0] + [255, 0, 0] * 255)
    img.paste(1, (0, 0, 5, 10))  # left half red, right half palette index 0
    arr = _assert_rgb(decode_image(_encode(img, "PNG", transparency=0)), (10, 10))
    assert arr[5, 2].tolist() == [255, 0, 0]
    assert arr[5, 8].tolist() == [255, 255, 255]  # transparent black shows as white


@pytest.mark.parametrize(
    ("mode", "colour", "expected"),
    [
        ("RGBA", (0, 0, 0, 0), [255, 255, 255]),
        ("RGBA", (0, 0, 255, 255), [0, 0, 255]),
        ("RGBA", (0, 0, 0, 128), [127, 127, 127]),
        ("LA", (0, 0), [255, 255, 255]),
        ("LA", (50, 255), [50, 50, 50]),
    ],
)
def test_alpha_is_composited_on_white_not_black(mode, colour, expected) -> None:
    arr = _assert_rgb(decode_image(_encode(Image.new(mode, (9, 9), colour), "PNG")), (9, 9))
    assert np.abs(arr[4, 4].astype(int) - expected).max() <= 1


def test_16bit_png_is_scaled_not_clipped() -> None:
    ramp = np.linspace(0, 65535, 64 * 32).reshape(32, 64).astype(np.uint16)
    data = _encode(Image.fromarray(ramp), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")  # really a 16-bit image
    arr = _assert_rgb(decode_image(data), (64, 32))[..., 0]
    assert arr.min() == 0 and arr.max() == 255
    assert 120 <= arr[16, 32] <= 135  # mid-ramp is mid-grey
    assert (np.diff(arr.astype(int), axis=1) >= 0).all()  # still a monotone ramp


def test_dark_16bit_image_stays_dark() -> None:
    data = _encode(Image.fromarray(np.full((10, 10), 2570, dtype=np.uint16)), "PNG")
    assert (np.asarray(decode_image(data)) == 10).all()  # 2570 / 257


def test_exif_orientation_is_applied() -> None:
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 8, 8))  # red top-left corner as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # display needs a 90 degree clockwise turn
    arr = _assert_rgb(decode_image(_encode(img, "JPEG", exif=exif.tobytes())), (20, 40))
    r, g, b = arr[3, 16].tolist()  # turned clockwise, top-left lands top-right
    assert r > 200 and b < 60
    assert arr[36, 3].tolist()[2] > 200  # the opposite corner is still blue


def test_plain_rgb_roundtrips_through_jpeg_bytes() -> None:
    img = decode_image(_encode(Image.new("RGB", (30, 20), (10, 200, 30)), "PNG"))
    again = decode_image(to_jpeg_bytes(img))
    assert again.size == (30, 20)
    assert np.abs(np.asarray(again).astype(int) - [10, 200, 30]).max() < 8


def test_to_jpeg_bytes_converts_non_rgb() -> None:
    data = to_jpeg_bytes(Image.new("RGBA", (10, 10), (0, 0, 0, 0)))
    assert data[:2] == b"\xff\xd8"
    assert np.asarray(decode_image(data)).min() > 245  # flattened on white


def test_empty_bytes() -> None:
    assert _reason(b"") == "empty"


@pytest.mark.parametrize(
    "data", [b"hello, this is not an image", b"<html></html>", b"\x00" * 64, b"BMW 320d brochure"]
)
def test_not_an_image(data: bytes) -> None:
    assert _reason(data) == "not_an_image"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_image(fmt: str) -> None:
    noise = Image.effect_noise((128, 128), 64).convert("RGB")
    data = _encode(noise, fmt)
    assert _reason(data[: len(data) // 2]) == "truncated"
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # the global is left alone


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF"])
def test_an_image_cut_inside_its_header_is_truncated_not_a_non_image(fmt: str) -> None:
    data = _encode(Image.new("RGB", (64, 64), (200, 30, 40)), fmt)
    with pytest.raises(ItemRejected) as rejected:
        decode_image(data[:20])  # a download that broke off after 20 bytes
    assert rejected.value.reason == "truncated"
    assert rejected.value.detail == f"{fmt} header, but only 20 bytes can be read"


def test_decompression_bomb_rejected_from_header() -> None:
    assert _reason(_png_header_only(50_000, 50_000)) == "decompression_bomb"


def test_our_pixel_cap_applies_below_pils_own() -> None:
    # 7000 x 7000 = 49 MP: under PIL's warning threshold, over our 40 MP default.
    assert _reason(_png_header_only(7000, 7000)) == "decompression_bomb"
    assert _reason(_png_header_only(100, 100), max_pixels=5000) == "decompression_bomb"


@pytest.mark.parametrize(("width", "height"), [(1, 100_000), (30_000, 10), (4, 4), (100, 5)])
def test_absurd_dimensions(width: int, height: int) -> None:
    assert _reason(_png_header_only(width, height)) == "bad_dimensions"


def test_item_rejected_carries_reason_and_detail() -> None:
    exc = ItemRejected("http_404", "Not Found")
    assert (exc.reason, exc.detail, str(exc)) == ("http_404", "Not Found", "http_404: Not Found")
    assert ItemRejected("empty").detail == ""


def float_tiff(width: int, height: int) -> bytes:
    """A deflated all-zero float32 TIFF: a few hundred kB that decode to width x height x 4 B."""
    buf = io.BytesIO()
    Image.fromarray(np.zeros((height, width), np.float32), "F").save(
        buf, "TIFF", compression="tiff_deflate"
    )
    return buf.getvalue()


def test_decode_cost_counts_bytes_per_pixel() -> None:
    size = (100, 100)
    costs = {mode: decode_cost(mode, size) for mode in ("L", "RGB", "I;16", "F", "RGBA")}
    assert costs["L"] < costs["RGB"] < costs["I;16"] < costs["F"] <= costs["RGBA"]
    assert costs["RGB"] == 100 * 100 * 12  # raster, orientation copy, RGB result: 4 B each
    assert costs["F"] == 100 * 100 * 22  # + numpy copy, float32, uint8, grey


def test_a_float_image_over_the_byte_budget_is_refused_where_8_bit_rgb_passes() -> None:
    budget = decode_cost("RGB", (200, 200))
    assert decode_image(_encode(Image.new("RGB", (200, 200)), "PNG"), max_decode_bytes=budget)
    small_float = _encode(Image.new("F", (200, 200)), "TIFF")
    with pytest.raises(ItemRejected, match="decoded") as info:
        decode_image(small_float, max_decode_bytes=budget)
    assert info.value.reason == "decompression_bomb"


def test_the_memory_budget_bounds_decodes_in_flight() -> None:
    budget = MemoryBudget(decode_cost("RGB", (64, 64)) * 2)
    data = _encode(Image.new("RGB", (64, 64), (5, 6, 7)), "PNG")
    peak, lock = [0], threading.Lock()
    real_reserve = budget.reserve

    @contextlib.contextmanager
    def watched(nbytes: int):
        with real_reserve(nbytes):
            with lock:
                peak[0] = max(peak[0], budget.in_use)
            time.sleep(0.01)
            yield

    budget.reserve = watched  # type: ignore[method-assign]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: decode_image(data, budget=budget), range(16)))
    assert len(results) == 16 and peak[0] == budget.capacity and budget.in_use == 0
    with pytest.raises(ItemRejected, match="budget"):  # can never fit: refused, not a hang
        decode_image(_encode(Image.new("RGB", (200, 200)), "PNG"), budget=budget)


RSS_PROBE = """
import resource, sys
from image_search_assets.core.ingest.images import ItemRejected, decode_image
data = open(sys.argv[1], "rb").read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    decode_image(data)
    print("decoded")
except ItemRejected as exc:
    print(exc.reason)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""


def test_a_float_tiff_bomb_is_refused_without_allocating_its_pixels(tmp_path) -> None:
    # 6000 x 6600 is under max_pixels (40 M), ~0.2 MB deflated, 158 MB as a float raster and
    # over 1.5 GB through float64 conversion; the header alone decides.
    bomb = tmp_path / "bomb.tif"
    bomb.write_bytes(float_tiff(6000, 6600))
    assert bomb.stat().st_size < 1_000_000
    out = subprocess.run(
        [sys.executable, "-c", RSS_PROBE, str(bomb)], capture_output=True, text=True, check=True
    ).stdout.split()
    reason, grown_mib = out[0], int(out[1])
    assert reason == "decompression_bomb"
    assert grown_mib < 32  # peak RSS growth while judging it (the raster alone is 151 MiB)
