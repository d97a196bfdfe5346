"""Fetch image bytes from http(s), gs:// or local paths, refusing anything unsafe or oversized.

Every failure is an ItemRejected with a stable reason code: scheme_not_allowed (url_rules.py),
bad_url, blocked_address, unreachable, timeout, too_large, redirect_loop, too_many_redirects,
http_<status>, connection_error, tls_error, gcs_not_found, gcs_error, file_not_found, not_a_file,
file_error.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import ipaddress
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.client import HTTPConnection, HTTPException, HTTPResponse, HTTPSConnection
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, unquote, urljoin, urlsplit, urlunsplit

from image_search_assets.core.ingest.images import MAX_DECODE_BYTES, ItemRejected, MemoryBudget
from image_search_assets.core.ingest.reads import read_blob, read_file
from image_search_assets.core.ingest.url_rules import UrlRules
from image_search_assets.core.storage import split_gs_uri

T = TypeVar("T")

_REDIRECTS = {301, 302, 303, 307, 308}
_UNREACHABLE = {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH}
# Accept-Encoding identity: the decoder gets the raw bytes, so nothing may be compressed.
_HEADERS = {"User-Agent": "image-search/0.1", "Accept-Encoding": "identity", "Connection": "close"}
_TLS = ssl.create_default_context()  # shared: loading the CA bundle per request is slow
# Keeps valid %-escapes and reserved characters; percent-encodes spaces and non-ASCII.
_URL_SAFE = "/?#[]@!$&'()*+,;=:%-._~"


@dataclass(frozen=True)
class FetchPolicy:
    """Limits for one fetch. timeout_s is a total deadline per HTTP request, body included."""

    timeout_s: float = 10.0
    max_bytes: int = 20_000_000
    max_redirects: int = 5
    retries: int = 2  # bounded retries for 5xx/429/timeouts/connection errors
    retry_backoff_s: float = 0.5
    allow_private_hosts: tuple[str, ...] = ()  # hostnames or IPs allowed even if private/loopback
    resolver: Callable[[str, int], list[str]] | None = None  # (host, port) -> IP strings
    rules: UrlRules = UrlRules()  # the URL kinds and gs:// prefixes fetched at all
    # (bucket, name) -> a google-cloud-storage Blob: its size is read before any content.
    gcs_blob: Callable[[str, str], Any] | None = None
    # Decoding (images.decode_image), set here so one policy carries a step's whole item limits.
    max_decode_bytes: int | None = MAX_DECODE_BYTES
    decode_budget: MemoryBudget | None = None


class _Retryable(ItemRejected):
    """A failure worth another attempt (5xx, 429, timeouts, resets)."""


def fetch_bytes(
    uri: str,
    policy: FetchPolicy,
    *,
    base_dir: Path | None = None,
    gcs_read: Callable[[str], bytes] | None = None,
) -> bytes:
    """Returns the bytes behind `uri` or raises ItemRejected."""
    if not isinstance(uri, str) or not uri:
        raise ItemRejected("bad_url", "empty URI")
    try:
        parts = urlsplit(uri)
    except ValueError as exc:
        raise ItemRejected.from_exc("bad_url", exc) from exc
    kind = policy.rules.check(uri, parts)  # before any read: no oracle for what exists
    if kind in ("http", "https"):
        return _fetch_http(uri, policy)
    if kind == "gs":
        bucket, name = split_gs_uri("gs://" + uri[len("gs://") :])  # any case of "gs"
        if not name:
            raise ItemRejected("bad_url", "gs:// URI needs a bucket and an object name")
        policy.rules.check_gcs(bucket, name)
        return _fetch_gcs(uri, bucket, name, policy, gcs_read)
    if parts.scheme.lower() == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ItemRejected("bad_url", "file URI must be file:///absolute/path")
        return read_file(Path(unquote(parts.path)), policy.max_bytes)
    path = Path(uri)
    return read_file(path if path.is_absolute() else Path(base_dir or ".") / path, policy.max_bytes)


def _with_retries(policy: FetchPolicy, attempt: Callable[[], T]) -> T:
    for n in range(policy.retries):
        try:
            return attempt()
        except _Retryable:
            time.sleep(policy.retry_backoff_s * (2**n))
    return attempt()  # the last failure reaches the caller as the ItemRejected it is


def _fetch_http(url: str, policy: FetchPolicy) -> bytes:
    seen = {url}
    for _hop in range(policy.max_redirects + 1):
        location, body = _with_retries(policy, lambda u=url: _request(u, policy))
        if location is None:
            return body
        try:
            url = urljoin(url, location)
            if urlsplit(url).scheme.lower() not in ("http", "https"):
                # Following a redirect to file:// or gs:// would let a remote server read our data.
                raise ValueError("redirect to a non-http URL")
            policy.rules.check(url, urlsplit(url))  # no https -> http downgrade unless allowed
        except ValueError as exc:
            raise ItemRejected.from_exc("bad_url", exc) from exc
        if url in seen:
            raise ItemRejected("redirect_loop", url[:200])
        seen.add(url)
    raise ItemRejected("too_many_redirects", f"more than {policy.max_redirects}")


def _resolve_checked(host: str, port: int, policy: FetchPolicy) -> list[str]:
    """Resolves host and vets every address; the caller must connect only to these."""
    try:
        ips = [str(ipaddress.ip_address(host))]
    except ValueError:  # a name, not an IP literal
        resolve = policy.resolver or _getaddrinfo
        try:
            ips = [str(ipaddress.ip_address(ip)) for ip in resolve(host, port)]
        except (OSError, ValueError) as exc:
            # Only a temporary resolver failure is worth retrying; NXDOMAIN will not change.
            kind = _Retryable if getattr(exc, "errno", None) == socket.EAI_AGAIN else ItemRejected
            raise kind("unreachable", f"DNS: {exc}"[:200]) from exc
    if not ips:
        raise ItemRejected("unreachable", f"DNS: no address for {host}")
    allowed = {h.strip("[]").lower() for h in policy.allow_private_hosts}
    if host.strip("[]").lower() not in allowed:
        for ip in ips:
            if ip not in allowed and _is_blocked(ip):
                raise ItemRejected("blocked_address", f"{host} -> {ip}")
    return list(dict.fromkeys(ips))


def _getaddrinfo(host: str, port: int) -> list[str]:
    return [str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


def _is_blocked(ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    # IPv4 embedded in IPv6 reaches the IPv4 host, so judge that host.
    if addr.version == 6 and (embedded := addr.ipv4_mapped or addr.sixtofour):
        return _is_blocked(str(embedded))
    # is_global excludes private, loopback, link-local, unspecified, CGNAT; not multicast.
    return not addr.is_global or addr.is_multicast or addr.is_reserved


def _connect(ips: list[str], port: int, timeout: float, tls_host: str | None) -> socket.socket:
    """Connects to the first reachable pre-vetted IP, never re-resolving the name."""
    for n, ip in enumerate(ips, 1):
        try:
            sock = socket.create_connection((ip, port), timeout)
            break
        except OSError:
            if n == len(ips):
                raise
    if tls_host:
        sock = _TLS.wrap_socket(sock, server_hostname=tls_host)
    return sock


def _request(url: str, policy: FetchPolicy) -> tuple[str | None, bytes]:
    """One GET; returns (redirect location, b"") or (None, body)."""
    try:
        parts = urlsplit(url)
        tls, port = parts.scheme.lower() == "https", parts.port
        host = (parts.hostname or "").encode("idna").decode("ascii")  # DNS and Host need ASCII
    except (ValueError, UnicodeError) as exc:
        raise ItemRejected.from_exc("bad_url", exc) from exc
    if not re.fullmatch(r"[\w.:%-]+", host, re.ASCII):  # names, IPv4, IPv6 (with zone)
        raise ItemRejected("bad_url", f"malformed host {host!r}"[:200])
    port = port or (443 if tls else 80)
    target = quote(urlunsplit(("", "", parts.path or "/", parts.query, "")), safe=_URL_SAFE)
    ips = _resolve_checked(host, port, policy)
    deadline = time.monotonic() + policy.timeout_s
    # The Host header and TLS name stay the original host while the socket goes to a vetted IP.
    conn = HTTPSConnection(host, port, context=_TLS) if tls else HTTPConnection(host, port)
    # Socket timeouts bound each recv, not the total: a server trickling headers byte by byte
    # could stretch a fetch forever, so a watchdog shuts the socket at the deadline.
    watchdog = threading.Timer(policy.timeout_s, _abort, args=(conn,))
    try:
        conn.sock = sock = _connect(ips, port, policy.timeout_s, host if tls else None)
        watchdog.interval = max(0.0, deadline - time.monotonic())  # connecting used some
        watchdog.start()
        conn.request("GET", target, headers=_HEADERS)
        resp = conn.getresponse()
        watchdog.cancel()  # headers are in; _read_body enforces the deadline per recv
        status, location = resp.status, resp.getheader("Location")
        if status in _REDIRECTS and location:
            return location, b""
        if status == 429 or status >= 500:
            raise _Retryable(f"http_{status}", resp.reason[:200])
        if not 200 <= status < 300:
            raise ItemRejected(f"http_{status}", resp.reason[:200])
        return None, _read_body(resp, sock, policy, deadline)
    except (OSError, HTTPException) as exc:
        if isinstance(exc, TimeoutError) or time.monotonic() >= deadline:
            raise _Retryable("timeout", f"over {policy.timeout_s}s: {exc}"[:200]) from exc
        if isinstance(exc, ssl.SSLError):
            raise ItemRejected.from_exc("tls_error", exc) from exc
        reason = "unreachable" if getattr(exc, "errno", None) in _UNREACHABLE else ""
        raise _Retryable.from_exc(reason or "connection_error", exc) from exc
    finally:
        watchdog.cancel()
        conn.close()


def _read_body(resp: HTTPResponse, sock: socket.socket, p: FetchPolicy, deadline: float) -> bytes:
    if resp.length is not None and resp.length > p.max_bytes:
        raise ItemRejected("too_large", f"Content-Length {resp.length} > {p.max_bytes}")
    body = bytearray()
    while (remaining := deadline - time.monotonic()) > 0:
        sock.settimeout(remaining)
        chunk = resp.read1(65536)  # at most one recv, so the deadline check stays tight
        if not chunk:
            break
        body += chunk
        if len(body) > p.max_bytes:
            raise ItemRejected("too_large", f"body exceeds {p.max_bytes} bytes")
    if time.monotonic() >= deadline:
        raise _Retryable("timeout", f"body not complete within {p.timeout_s}s")
    if resp.length:
        # http.client reports an early EOF on a sized body as a short read, not an error.
        raise _Retryable("connection_error", f"body ended {resp.length} bytes short")
    return bytes(body)


def _abort(conn: HTTPConnection) -> None:
    # conn.sock is None or closed if the headers arrived just now: nothing left to abort.
    with contextlib.suppress(OSError, AttributeError):
        conn.sock.shutdown(socket.SHUT_RDWR)


def _fetch_gcs(
    uri: str,
    bucket: str,
    name: str,
    policy: FetchPolicy,
    gcs_read: Callable[[str], bytes] | None,
) -> bytes:
    if policy.gcs_blob is not None:
        gcs_blob = policy.gcs_blob
        read = lambda: read_blob(gcs_blob(bucket, name), policy.max_bytes)  # noqa: E731
    elif gcs_read is not None:
        # A plain reader downloads the whole object: callers that fetch untrusted rows set
        # policy.gcs_blob instead (resources/catalog.py does).
        read = functools.partial(gcs_read, uri)
    else:
        # A wiring mistake, not a bad item: fail loudly rather than quarantine the whole day.
        raise ValueError("gs:// URI given but no gcs_read was configured")
    from google.api_core import exceptions as gexc  # only needed once GCS is actually used

    def attempt() -> bytes:
        try:
            data = read()
        except gexc.NotFound as exc:
            raise ItemRejected("gcs_not_found", str(exc)[:200]) from exc
        # OSError covers the transport's connection errors and socket timeouts.
        except (gexc.TooManyRequests, gexc.ServerError, gexc.DeadlineExceeded, OSError) as exc:
            raise _Retryable.from_exc("gcs_error", exc) from exc
        except gexc.GoogleAPIError as exc:
            raise ItemRejected.from_exc("gcs_error", exc) from exc
        if len(data) > policy.max_bytes:
            raise ItemRejected("too_large", f"{len(data)} bytes > {policy.max_bytes}")
        return data

    return _with_retries(policy, attempt)
