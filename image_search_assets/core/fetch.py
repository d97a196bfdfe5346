"""Fetch image bytes from http(s), gs:// or local paths, refusing anything unsafe or oversized.

Every failure is an ItemRejected with a stable reason code: bad_url, blocked_address, unreachable,
timeout, too_large, redirect_loop, too_many_redirects, http_<status>, connection_error, tls_error,
gcs_not_found, gcs_error, file_not_found, not_a_file, file_error.
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import ipaddress
import os
import socket
import ssl
import stat
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote, unquote, urljoin, urlsplit

from image_search_assets.core.images import ItemRejected

T = TypeVar("T")

_REDIRECTS = {301, 302, 303, 307, 308}
_CHUNK = 64 * 1024
_HEADERS = {
    "User-Agent": "image-search-assets/0.1",
    "Accept": "image/*,*/*;q=0.5",
    # We hand raw bytes to the decoder, so the body must not be compressed in transit.
    "Accept-Encoding": "identity",
    "Connection": "close",
}
# Keeps already-valid %-escapes and reserved characters, percent-encodes spaces and non-ASCII.
_URL_SAFE = "/?#[]@!$&'()*+,;=:%-._~"


@dataclass(frozen=True)
class FetchPolicy:
    """Limits for one fetch. The timeout is a total deadline per HTTP request, body included."""

    timeout_s: float = 10.0
    max_bytes: int = 20_000_000
    max_redirects: int = 5
    retries: int = 2  # bounded retries for 5xx/429/timeouts/connection errors
    retry_backoff_s: float = 0.5
    allow_private_hosts: tuple[str, ...] = ()  # hostnames or IPs allowed even if private/loopback
    resolver: Callable[[str, int], list[str]] | None = None  # (host, port) -> IP strings


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
    scheme = urlsplit(uri).scheme.lower()
    if scheme in ("http", "https"):
        return _fetch_http(uri, policy)
    if scheme == "gs":
        return _fetch_gcs(uri, policy, gcs_read)
    if scheme == "file":
        return _read_file(_file_uri_path(uri), policy)
    if "://" in uri:
        raise ItemRejected("bad_url", f"unsupported scheme {scheme!r}")
    path = Path(uri)
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    return _read_file(path, policy)


def fetch_many(
    items: Sequence[tuple[str, str]], fetch_one: Callable[[str], T], workers: int = 8
) -> tuple[dict[str, T], dict[str, ItemRejected]]:
    """Runs fetch_one(uri) on threads; returns (ok, rejected) keyed by item id, in input order.

    Only ItemRejected is collected: any other exception is a bug and propagates.
    """
    if workers < 1:
        raise ValueError("workers must be >= 1")
    ids = [item_id for item_id, _ in items]
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate item ids in fetch_many")
    ok: dict[str, T] = {}
    rejected: dict[str, ItemRejected] = {}
    if not items:
        return ok, rejected
    pool = ThreadPoolExecutor(max_workers=min(workers, len(items)), thread_name_prefix="fetch")
    try:
        futures = [(item_id, pool.submit(fetch_one, uri)) for item_id, uri in items]
        for item_id, future in futures:
            try:
                ok[item_id] = future.result()
            except ItemRejected as exc:
                rejected[item_id] = exc
    finally:
        # On an unexpected error, don't keep fetching the rest of the day in the background.
        pool.shutdown(wait=True, cancel_futures=True)
    return ok, rejected


# -- retries -------------------------------------------------------------------------------------
def _with_retries(policy: FetchPolicy, attempt: Callable[[], T]) -> T:
    for n in range(policy.retries + 1):
        try:
            return attempt()
        except _Retryable as exc:
            if n == policy.retries:
                raise ItemRejected(exc.reason, exc.detail) from exc
            time.sleep(policy.retry_backoff_s * (2**n))
    raise AssertionError("unreachable")  # the loop always returns or raises


# -- http(s) -------------------------------------------------------------------------------------
def _fetch_http(url: str, policy: FetchPolicy) -> bytes:
    seen = {url}
    for _hop in range(policy.max_redirects + 1):
        status, location, body = _with_retries(policy, lambda u=url: _request(u, policy))
        if location is None:
            return body
        url = urljoin(url, location)
        if urlsplit(url).scheme.lower() not in ("http", "https"):
            # Following a redirect to file:// or gs:// would let a remote server read our disks.
            raise ItemRejected("bad_url", f"redirect ({status}) to non-http URL")
        if url in seen:
            raise ItemRejected("redirect_loop", url[:200])
        seen.add(url)
    raise ItemRejected("too_many_redirects", f"more than {policy.max_redirects}")


def _parse_http_url(url: str) -> tuple[str, str, int, str]:
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        host.encode("idna")  # raises UnicodeError for hostnames DNS can't carry
    except (ValueError, UnicodeError) as exc:
        raise ItemRejected("bad_url", f"{type(exc).__name__}: {exc}"[:200]) from exc
    if not host:
        raise ItemRejected("bad_url", "no host")
    if parts.username is not None or parts.password is not None:
        raise ItemRejected("bad_url", "credentials in URL")
    target = quote(parts.path or "/", safe=_URL_SAFE)
    if parts.query:
        target += "?" + quote(parts.query, safe=_URL_SAFE)
    return parts.scheme.lower(), host, port, target


def _resolve_checked(host: str, port: int, policy: FetchPolicy) -> list[str]:
    """Resolves host and checks every address; the caller must connect only to these."""
    allowed = {_normalise_host(h) for h in policy.allow_private_hosts}
    try:
        ips = [str(ipaddress.ip_address(host))]
    except ValueError:
        try:
            resolve = policy.resolver or _default_resolver
            ips = list(dict.fromkeys(resolve(host, port)))
        except OSError as exc:
            # Only a temporary resolver failure is worth retrying; NXDOMAIN will not change.
            kind = _Retryable if getattr(exc, "errno", None) == socket.EAI_AGAIN else ItemRejected
            raise kind("unreachable", f"DNS: {exc}"[:200]) from exc
    if not ips:
        raise ItemRejected("unreachable", f"DNS: no address for {host}")
    if _normalise_host(host) in allowed:
        return ips
    for ip in ips:
        if _normalise_host(ip) not in allowed and _is_blocked(ip):
            raise ItemRejected("blocked_address", f"{host} -> {ip}")
    return ips


def _normalise_host(host: str) -> str:
    host = host.strip("[]").lower()
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def _default_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _is_blocked(ip: str) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return True  # a resolver answer we cannot parse is not one we can vouch for
    if addr.version == 6:
        # IPv4 embedded in IPv6 reaches the IPv4 host, so judge that host.
        embedded = addr.ipv4_mapped or addr.sixtofour
        if embedded is not None:
            return _is_blocked(str(embedded))
    # is_global already excludes private, loopback, link-local (169.254.169.254), unspecified
    # and CGNAT space, but counts multicast as global.
    return not addr.is_global or addr.is_multicast or addr.is_reserved


class _PinnedConnection(http.client.HTTPConnection):
    """Connects only to pre-checked IPs; the Host header and TLS name stay the original host."""

    def __init__(self, host: str, port: int, ips: list[str], timeout: float, tls: bool):
        super().__init__(host, port, timeout=timeout)
        self.ips, self.tls = ips, tls
        self.default_port = 443 if tls else 80  # so Host omits the default port

    def connect(self) -> None:
        last: OSError = OSError("no address")
        for ip in self.ips:
            try:
                sock = socket.create_connection((ip, self.port), self.timeout)
                break
            except OSError as exc:
                last = exc
        else:
            raise last
        if self.tls:
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=self.host)
        self.sock = sock


def _request(url: str, policy: FetchPolicy) -> tuple[int, str | None, bytes]:
    """One GET; returns (status, redirect location or None, body)."""
    scheme, host, port, target = _parse_http_url(url)
    ips = _resolve_checked(host, port, policy)
    deadline = time.monotonic() + policy.timeout_s
    conn = _PinnedConnection(host, port, ips, policy.timeout_s, tls=scheme == "https")
    # Socket timeouts bound each read, not the total; a server trickling a byte at a time could
    # stretch a fetch forever, so a watchdog closes the socket at the deadline.
    watchdog = threading.Timer(policy.timeout_s, _abort, args=(conn,))
    watchdog.daemon = True
    watchdog.start()
    try:
        conn.request("GET", target, headers=_HEADERS)
        resp = conn.getresponse()
        status = resp.status
        if status in _REDIRECTS:
            location = resp.getheader("Location")
            if location:
                return status, location, b""
        if status == 429 or status >= 500:
            raise _Retryable(f"http_{status}", resp.reason[:200])
        if not 200 <= status < 300:
            raise ItemRejected(f"http_{status}", resp.reason[:200])
        return status, None, _read_body(conn, resp, policy, deadline)
    except ItemRejected:
        raise
    except ssl.SSLError as exc:
        if time.monotonic() >= deadline:
            raise _Retryable("timeout", f"over {policy.timeout_s}s") from exc
        raise ItemRejected("tls_error", str(exc)[:200]) from exc
    except (OSError, http.client.HTTPException) as exc:
        raise _classify(exc, deadline, policy) from exc
    finally:
        watchdog.cancel()
        conn.close()


def _read_body(
    conn: http.client.HTTPConnection,
    resp: http.client.HTTPResponse,
    policy: FetchPolicy,
    deadline: float,
) -> bytes:
    if resp.length is not None and resp.length > policy.max_bytes:
        raise ItemRejected("too_large", f"Content-Length {resp.length} > {policy.max_bytes}")
    chunks: list[bytes] = []
    total = 0
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _Retryable("timeout", f"body not complete within {policy.timeout_s}s")
        if conn.sock is not None:
            conn.sock.settimeout(remaining)
        chunk = resp.read1(_CHUNK)  # at most one recv, so the deadline check stays tight
        if not chunk:
            break
        total += len(chunk)
        if total > policy.max_bytes:
            raise ItemRejected("too_large", f"body exceeds {policy.max_bytes} bytes")
        chunks.append(chunk)
    if time.monotonic() >= deadline:
        # The watchdog's shutdown looks like a clean EOF to read1; don't return a partial body.
        raise _Retryable("timeout", f"body not complete within {policy.timeout_s}s")
    if resp.length:
        # http.client reports an early EOF on a sized body as a short read, not an error.
        raise _Retryable("connection_error", f"body ended {resp.length} bytes short")
    return b"".join(chunks)


def _abort(conn: http.client.HTTPConnection) -> None:
    sock = conn.sock
    if sock is not None:
        # The request may have finished and closed the socket in the meantime; nothing to abort.
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _classify(exc: BaseException, deadline: float, policy: FetchPolicy) -> ItemRejected:
    detail = f"{type(exc).__name__}: {exc}"[:200]
    if isinstance(exc, TimeoutError) or time.monotonic() >= deadline:
        return _Retryable("timeout", f"over {policy.timeout_s}s ({detail})")
    if isinstance(exc, OSError) and exc.errno in (
        errno.ECONNREFUSED,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
    ):
        return _Retryable("unreachable", detail)
    return _Retryable("connection_error", detail)


# -- gs:// ---------------------------------------------------------------------------------------
def _fetch_gcs(uri: str, policy: FetchPolicy, gcs_read: Callable[[str], bytes] | None) -> bytes:
    if gcs_read is None:
        # A wiring mistake, not a bad item: fail loudly rather than quarantine the whole day.
        raise ValueError("gs:// URI given but no gcs_read was configured")
    parts = urlsplit(uri)
    if not parts.netloc or not parts.path.strip("/"):
        raise ItemRejected("bad_url", "gs:// URI needs a bucket and an object")
    from google.api_core import exceptions as gexc  # only needed when GCS is actually used

    transient = (
        gexc.TooManyRequests,
        gexc.ServerError,
        gexc.DeadlineExceeded,
        gexc.RetryError,
        OSError,  # requests' connection errors and socket timeouts
    )

    def attempt() -> bytes:
        try:
            data = gcs_read(uri)
        except gexc.NotFound as exc:
            raise ItemRejected("gcs_not_found", str(exc)[:200]) from exc
        except transient as exc:
            raise _Retryable("gcs_error", f"{type(exc).__name__}: {exc}"[:200]) from exc
        except gexc.GoogleAPIError as exc:
            raise ItemRejected("gcs_error", f"{type(exc).__name__}: {exc}"[:200]) from exc
        if len(data) > policy.max_bytes:
            raise ItemRejected("too_large", f"{len(data)} bytes > {policy.max_bytes}")
        return data

    return _with_retries(policy, attempt)


# -- local files ---------------------------------------------------------------------------------
def _file_uri_path(uri: str) -> Path:
    parts = urlsplit(uri)
    if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
        raise ItemRejected("bad_url", "file URI must be file:///absolute/path")
    return Path(unquote(parts.path))


def _read_file(path: Path, policy: FetchPolicy) -> bytes:
    try:
        # stat before open: opening a FIFO blocks until a writer shows up, and devices such as
        # /dev/zero never end.
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise ItemRejected("not_a_file", str(path)[:200])
        if info.st_size > policy.max_bytes:
            raise ItemRejected("too_large", f"{info.st_size} bytes > {policy.max_bytes}")
        with open(path, "rb") as fh:
            data = fh.read(policy.max_bytes + 1)
    except FileNotFoundError as exc:
        raise ItemRejected("file_not_found", str(path)[:200]) from exc
    except ValueError as exc:  # e.g. an embedded NUL byte in the path
        raise ItemRejected("bad_url", f"{exc}"[:200]) from exc
    except OSError as exc:
        raise ItemRejected("file_error", f"{type(exc).__name__}: {exc}"[:200]) from exc
    if len(data) > policy.max_bytes:
        raise ItemRejected("too_large", f"file grew past {policy.max_bytes} bytes")
    return data
