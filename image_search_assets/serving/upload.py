"""A multipart image upload read as a stream into memory, with hard caps, never to disk.

FastAPI's File()/Form() spool a part to a temporary file with no size cap: a 1 GiB part was
written out in full before a size check could refuse it. Here the body is fed chunk by chunk
to python-multipart's parser and refused with 413 the moment the image part passes its cap,
the body passes its total, or a field passes its own; nothing is written anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import Request
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

IMAGE_FIELD = "image"
FIELDS = ("k", "category")  # the form fields besides the image
MAX_FIELD_BYTES = 1024
MAX_PARTS = 8
ENVELOPE_BYTES = 64 * 1024  # part headers and small fields around the image


class UploadRefused(Exception):
    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


@dataclass
class _Part:
    name: str = ""
    is_file: bool = False
    data: bytearray = field(default_factory=bytearray)


@dataclass
class Upload:
    image: bytes
    fields: dict[str, str]


class _Reader:
    def __init__(self, max_image_bytes: int) -> None:
        self.max_image_bytes = max_image_bytes
        self.parts: list[_Part] = []
        self._header_name = self._header_value = b""
        self._disposition = b""
        self.ended = False

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self.part_begin,
            "on_part_data": self.part_data,
            "on_header_field": lambda d, s, e: self._grow("_header_name", d[s:e]),
            "on_header_value": lambda d, s, e: self._grow("_header_value", d[s:e]),
            "on_header_end": self.header_end,
            "on_headers_finished": self.headers_finished,
            "on_end": lambda: setattr(self, "ended", True),
        }

    def _grow(self, attr: str, data: bytes) -> None:
        value = getattr(self, attr) + data
        if len(value) > MAX_FIELD_BYTES:
            raise UploadRefused(413, "too_large", f"a part header is over {MAX_FIELD_BYTES} bytes")
        setattr(self, attr, value)

    def part_begin(self) -> None:
        if len(self.parts) >= MAX_PARTS:
            raise UploadRefused(400, "bad_request", f"over {MAX_PARTS} parts in the form")
        self.parts.append(_Part())
        self._disposition = b""

    def header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name = self._header_value = b""

    def headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        part = self.parts[-1]
        part.name = options.get(b"name", b"").decode("utf-8", "replace")
        part.is_file = b"filename" in options
        if part.name not in (IMAGE_FIELD, *FIELDS):
            raise UploadRefused(
                422,
                "invalid_parameter",
                f"unknown form field {part.name[:64]!r}; "
                f"expected {IMAGE_FIELD!r} and optionally {', '.join(FIELDS)}",
            )

    def part_data(self, data: bytes, start: int, end: int) -> None:
        part = self.parts[-1]
        cap = self.max_image_bytes if part.name == IMAGE_FIELD else MAX_FIELD_BYTES
        if len(part.data) + end - start > cap:
            raise UploadRefused(413, "too_large", f"form part {part.name!r} is over {cap} bytes")
        part.data += data[start:end]


async def read_upload(request: Request, max_image_bytes: int) -> Upload:
    """The image part's bytes and the small fields of a multipart/form-data request."""
    content_type, params = parse_options_header(request.headers.get("content-type"))
    if content_type != b"multipart/form-data" or b"boundary" not in params:
        raise UploadRefused(
            422, "invalid_parameter", "the body must be multipart/form-data with an 'image' part"
        )
    max_body = max_image_bytes + ENVELOPE_BYTES
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_body:
        # Refused before a byte of the body is read: the client's Expect: 100-continue, if it
        # sent one, is never answered, so it need not send the body at all.
        raise UploadRefused(413, "too_large", f"the body is {declared} bytes, over {max_body}")
    reader = _Reader(max_image_bytes)
    parser = MultipartParser(params[b"boundary"], reader.callbacks())  # type: ignore[arg-type]
    received = 0
    more = True
    try:
        while more:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                raise UploadRefused(400, "bad_request", "the client went away mid-body")
            chunk, more = message.get("body", b""), message.get("more_body", False)
            received += len(chunk)
            if received > max_body:
                raise UploadRefused(413, "too_large", f"the body is over {max_body} bytes")
            parser.write(chunk)
        parser.finalize()
    except FormParserError as e:
        raise UploadRefused(400, "bad_request", f"invalid multipart body: {e}") from e
    if not reader.ended:
        raise UploadRefused(400, "bad_request", "invalid multipart body: no closing boundary")
    images = [p for p in reader.parts if p.name == IMAGE_FIELD]
    if len(images) != 1:
        raise UploadRefused(422, "invalid_parameter", "exactly one 'image' part is required")
    fields = {p.name: p.data.decode("utf-8", "replace") for p in reader.parts if p.name in FIELDS}
    return Upload(bytes(images[0].data), fields)
