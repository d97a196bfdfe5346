"""A catalog of good, odd and broken product images served with fault injection on 127.0.0.1.

`ITEMS` names each image route with the reason it must be quarantined for (None: it must be
indexed). The handler serves them; `catalog_rows` writes a day's catalog pointing at them, plus
rows the catalog check itself must reject.
"""

from __future__ import annotations

import io
import struct
import time
import zlib
from http.server import BaseHTTPRequestHandler

import numpy as np
from PIL import Image

MAX_BYTES = 200_000  # the test's fetch.max_bytes
METADATA_URL = "http://169.254.169.254/computeMetadata/v1/instance/"


def picture(width: int = 48, height: int = 48, seed: int = 0) -> Image.Image:
    """A noisy RGB picture: noise keeps JPEG scan data large, so a cut lands inside it."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A well-formed PNG that only declares its size: what a decompression bomb looks like."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 16)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape-left: shown rotated 90 degrees clockwise
    return encode(picture(40, 64, seed=7), "JPEG", exif=exif.tobytes())


_JPEG = encode(picture(seed=1), "JPEG", quality=95)
_PNG = encode(picture(seed=2), "PNG")
_16BIT = (np.arange(48 * 48).reshape(48, 48) * 28).astype(np.uint16)

# path -> (body, expected quarantine reason or None)
ITEMS: dict[str, tuple[bytes, str | None]] = {
    "/ok/plain-1.jpg": (encode(picture(seed=11), "JPEG"), None),
    "/ok/plain-2.jpg": (encode(picture(seed=12), "JPEG"), None),
    "/ok/plain-3.jpg": (encode(picture(seed=13), "JPEG"), None),
    "/ok/cmyk.jpg": (encode(picture(seed=3).convert("CMYK"), "JPEG"), None),
    "/ok/grayscale.jpg": (encode(picture(seed=4).convert("L"), "JPEG"), None),
    "/ok/palette.png": (
        encode(picture(seed=5).convert("P", palette=Image.Palette.ADAPTIVE), "PNG"),
        None,
    ),
    "/ok/alpha.png": (encode(picture(seed=6).convert("RGBA"), "PNG"), None),
    "/ok/16bit.png": (encode(Image.fromarray(_16BIT), "PNG"), None),
    "/ok/exif-rotated.jpg": (_rotated(), None),
    "/ok/flaky.jpg": (encode(picture(seed=8), "JPEG"), None),  # one 503 first, then served
    "/bad/404.jpg": (b"", "http_404"),
    "/bad/410.jpg": (b"", "http_410"),
    "/bad/500.jpg": (encode(picture(seed=9), "JPEG"), "http_500"),  # healed on day 2
    "/bad/slow.jpg": (_JPEG, "timeout"),
    "/bad/loop-a.jpg": (b"", "redirect_loop"),
    "/bad/to-metadata.jpg": (b"", "blocked_address"),
    "/bad/page.html": (b"<html><body>Sold out</body></html>", "not_an_image"),
    "/bad/empty.jpg": (b"", "empty"),
    "/bad/truncated.jpg": (_JPEG[: len(_JPEG) * 3 // 4], "truncated"),
    "/bad/truncated.png": (_PNG[: len(_PNG) * 3 // 5], "truncated"),
    "/bad/bomb.png": (png_header(60_000, 60_000), "decompression_bomb"),
    "/bad/absurd.png": (png_header(30_000, 10), "bad_dimensions"),
    "/bad/huge.jpg": (_JPEG + b"\0" * MAX_BYTES, "too_large"),  # valid JPEG, padded past the cap
}
# Never dialled: refused before any connection (the guard would fail the test otherwise).
UNSERVED = {METADATA_URL: "blocked_address", "http://10.20.30.40/a.jpg": "blocked_address"}


class FaultyImageServer(BaseHTTPRequestHandler):
    """Serves ITEMS; statuses, redirects, trickling and first-time 503s by path."""

    def do_GET(self) -> None:
        path, server = self.path, self.server
        server.hits[path] = server.hits.get(path, 0) + 1
        body, _ = ITEMS.get(path, (b"", None))
        status, headers = 200, {"Content-Type": "image/jpeg"}
        if path in server.healed:
            pass
        elif path.startswith("/bad/4") or path == "/bad/500.jpg":
            status = int(path[5:8])
        elif path == "/ok/flaky.jpg" and server.hits[path] == 1:
            status = 503
        elif path == "/bad/loop-a.jpg":
            status, headers = 302, {"Location": "/bad/loop-b.jpg"}
        elif path == "/bad/loop-b.jpg":
            status, headers = 302, {"Location": "/bad/loop-a.jpg"}
        elif path == "/bad/to-metadata.jpg":
            status, headers = 302, {"Location": METADATA_URL}
        elif path == "/bad/page.html":
            headers = {"Content-Type": "text/html"}
        if status != 200:
            body = b""
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        try:
            if path == "/bad/slow.jpg" and path not in server.healed:
                for i in range(len(body)):  # a byte every 0.2 s: never done within the timeout
                    self.wfile.write(body[i : i + 1])
                    time.sleep(0.2)
            else:
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            return  # the client gave up on purpose (timeout, size cap)

    def log_message(self, *args) -> None:
        return  # keep test output quiet
