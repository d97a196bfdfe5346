"""The reader: encoded image bytes to uint8 CHW RGB tensors on the device, prefetched.

JPEGs with three components decode with torchvision (nvjpeg, batched, on CUDA; libjpeg-turbo in
threads on the CPU); anything else (PNG, grayscale or CMYK JPEG, 12-bit JPEG) goes through PIL,
whose RGB conversion is what the naive path uses. Stored images are already orientation-
normalised RGB JPEGs (core/ingest/images.py), so EXIF orientation is not applied here.
"""

from __future__ import annotations

import io
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar, overload

import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms.functional import pil_to_tensor

T = TypeVar("T")
R = TypeVar("R")

MAX_DECODE_THREADS = 8
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # not DHT, JPG, DAC


def jpeg_components(data: bytes) -> int | None:
    """The colour component count of a JPEG's frame header (1 grey, 3 YCbCr/RGB, 4 CMYK/YCCK),
    or None when `data` is not a JPEG whose header we can read."""
    if data[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte before a marker
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        if marker in _SOF_MARKERS:
            return data[i + 9] if i + 9 < len(data) else None
        if marker == 0xDA:  # start of scan before any frame header: malformed
            return None
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None


def _byte_tensor(data: bytes) -> torch.Tensor:
    # bytearray: torch.frombuffer needs a writable buffer, and the copy is small next to decode.
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


@overload
def _decode_jpeg(data: bytes, device: str | torch.device) -> torch.Tensor: ...
@overload
def _decode_jpeg(data: list[torch.Tensor], device: str | torch.device) -> list[torch.Tensor]: ...
def _decode_jpeg(
    data: bytes | list[torch.Tensor], device: str | torch.device
) -> torch.Tensor | list[torch.Tensor]:
    # torchvision 0.29 deprecates its decoders for torchcodec (a DeprecationWarning, silent
    # outside tests); they still work, and catch_warnings would not be thread-safe here.
    # decode_jpeg returns one tensor for one input and a list for a list.
    src = _byte_tensor(data) if isinstance(data, bytes) else data
    return decode_jpeg(src, mode=ImageReadMode.RGB, device=device)


def decode_pil(data: bytes) -> torch.Tensor:
    with Image.open(io.BytesIO(data)) as img:
        return pil_to_tensor(img.convert("RGB"))


def decode_cpu(data: bytes) -> torch.Tensor:
    """One image as a uint8 (3, H, W) CPU tensor."""
    if jpeg_components(data) == 3:
        try:
            return _decode_jpeg(data, "cpu")
        except RuntimeError:
            pass  # e.g. a 12-bit or arithmetic-coded JPEG libjpeg-turbo was built without
    return decode_pil(data)


def _to_device(img: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type != "cuda":
        return img
    # Pinned host memory lets the copy run asynchronously with the compute of the last batch.
    return img.pin_memory().to(device, non_blocking=True)


def decode_batch(blobs: Sequence[bytes], device: torch.device) -> list[torch.Tensor]:
    """Decodes `blobs` to uint8 (3, H, W) RGB tensors on `device`, in order.

    On CUDA the RGB JPEGs decode in one batched nvjpeg call; if nvjpeg rejects the batch, they
    decode on the CPU instead. On the CPU, decoding runs in threads (libjpeg releases the GIL).

    On CUDA everything is allocated on a decode stream of its own, never on the stream the
    engine computes on (the device's current stream). nvJPEG's hardware decoder writes its
    outputs without waiting for work queued on the allocating stream, and PyTorch's caching
    allocator hands out a block as soon as it is freed on that stream, so decoding next to the
    compute could overwrite tensors that queued kernels have yet to read (pytorch/vision#9606,
    meta-pytorch/torchcodec#1634; measured by benchmarks/decode_race.py). The decode
    stream's pool only holds blocks of earlier decoded images, whose uses on the compute stream
    are recorded (record_stream), so none is reused before those kernels are done.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return _decode_all(blobs, device)
    compute, stream = torch.cuda.current_stream(device), _decode_stream(device)
    with torch.cuda.device(device), torch.cuda.stream(stream):
        images = _decode_all(blobs, device)
    ready = torch.cuda.Event()
    ready.record(stream)
    compute.wait_event(ready)  # the compute stream reads the images only once they are written
    for img in images:
        img.record_stream(compute)
    return images


_DECODE_STREAMS: dict[torch.device, torch.cuda.Stream] = {}
_DECODE_STREAMS_LOCK = threading.Lock()


def _decode_stream(device: torch.device) -> torch.cuda.Stream:
    with _DECODE_STREAMS_LOCK:
        if device not in _DECODE_STREAMS:
            _DECODE_STREAMS[device] = torch.cuda.Stream(device)
        return _DECODE_STREAMS[device]


def _decode_all(blobs: Sequence[bytes], device: torch.device) -> list[torch.Tensor]:
    out: list[torch.Tensor | None] = [None] * len(blobs)
    cpu_idx = list(range(len(blobs)))
    if device.type == "cuda":
        gpu_idx = [i for i, b in enumerate(blobs) if jpeg_components(b) == 3]
        if gpu_idx:
            try:
                decoded = _decode_jpeg([_byte_tensor(blobs[i]) for i in gpu_idx], device)
                for i, img in zip(gpu_idx, decoded, strict=True):
                    out[i] = img
                cpu_idx = [i for i in cpu_idx if out[i] is None]
            except RuntimeError:
                pass  # nvjpeg refused one image (e.g. an odd subsampling): decode all on CPU
    threads = min(len(cpu_idx), os.cpu_count() or 1, MAX_DECODE_THREADS)
    if threads > 1:
        with ThreadPoolExecutor(threads) as pool:
            host = list(pool.map(lambda i: decode_cpu(blobs[i]), cpu_idx))
    else:
        host = [decode_cpu(blobs[i]) for i in cpu_idx]
    for i, img in zip(cpu_idx, host, strict=True):
        out[i] = _to_device(img, device)
    return out  # type: ignore[return-value]  # every slot was filled above


def prefetched(chunks: Iterable[T], load: Callable[[T], R], depth: int = 1) -> Iterator[R]:
    """`load(chunk)` for each chunk, in order, with up to `depth` loads running ahead in a
    background thread, so decoding batch k+1 overlaps the compute of batch k. depth 0: inline."""
    if depth <= 0:
        yield from map(load, chunks)
        return
    source = iter(chunks)
    with ThreadPoolExecutor(1, thread_name_prefix="engine-reader") as pool:
        pending: deque[Future[R]] = deque()
        for chunk in source:
            pending.append(pool.submit(load, chunk))
            if len(pending) > depth:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
