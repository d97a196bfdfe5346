"""What one client may cost the service: the `image-search serve` flags and their defaults.

Light on purpose (argparse and a dataclass): the CLI builds its parser from `add_arguments`
without importing the service, and k8s/serving/deployment.yaml states every value.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class ServeLimits:
    """Per-connection and per-request limits; docs/serving.md says why each value."""

    # Request line and headers together. 16 KiB holds any browser's cookies and is the default
    # of h11 and of most proxies; a client over it gets 431 (414 for the request line alone)
    # before the parser has buffered more.
    max_header_bytes: int = 16_384
    # From the connection's first byte (or the end of the previous response) to the end of its
    # headers; a client trickling a header byte at a time is dropped with 408 when it passes.
    header_timeout_s: float = 10.0
    # From the end of the headers to the end of the body: 20 MB (fetch.max_bytes) at 1 MB/s
    # with room to spare. A slower upload is dropped.
    body_timeout_s: float = 30.0
    # Idle time a kept-alive connection is held for its next request; announced in every
    # response's Keep-Alive header (one second less, so a client never races the close).
    keep_alive_s: int = 75
    # Open connections and requests in flight (uvicorn's limit_concurrency): a request beyond
    # it, or a connection opened beyond it, gets 503 with Retry-After and is closed.
    max_connections: int = 512
    # Image queries in flight (reading, waiting, decoding, embedding): each holds up to
    # fetch.max_bytes of upload in memory, so this times that bounds the bodies held.
    max_image_queries: int = 16
    # Bytes of decode and embedding memory all image queries share (serving/budget.py); one
    # 6000x6000 photo needs ~1.7 GB of it.
    decode_memory_bytes: int = 2_000_000_000
    # How long an image query waits for room in the decode budget before a 503 Retry-After.
    decode_wait_s: float = 10.0
    # Load the detector and embedder before reporting ready; off, image queries get 503.
    image_queries: bool = True


_HELP = {
    "max_header_bytes": "request line + headers over this: 431 (414 for the line alone)",
    "header_timeout_s": "seconds to receive a request's headers, else 408 and closed",
    "body_timeout_s": "seconds to receive a request's body after its headers, else closed",
    "keep_alive_s": "seconds an idle kept-alive connection is held",
    "max_connections": "open connections / requests in flight; beyond it 503 and closed",
    "max_image_queries": "image queries in flight; beyond it 503",
    "decode_memory_bytes": "decode + embedding memory shared by image queries",
    "decode_wait_s": "seconds an image query waits for decode memory, else 503",
}


def flag(name: str) -> str:
    """The command-line flag of a ServeLimits field."""
    return "--" + name.removesuffix("_s").replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The limit flags of `image-search serve` (--max-header-bytes, --header-timeout, ...)."""
    defaults = ServeLimits()
    for f in fields(ServeLimits):
        if f.name == "image_queries":
            parser.add_argument(
                "--image-queries",
                action=argparse.BooleanOptionalAction,
                default=True,
                help="load the models before ready and answer POST /v1/similar",
            )
            continue
        kind = float if f.name.endswith("_s") and f.name != "keep_alive_s" else int
        parser.add_argument(
            flag(f.name),
            dest=f.name,
            type=kind,
            default=getattr(defaults, f.name),
            help=f"{_HELP[f.name]} (default %(default)s)",
        )


def from_args(args: argparse.Namespace) -> ServeLimits:
    return ServeLimits(**{f.name: getattr(args, f.name) for f in fields(ServeLimits)})
