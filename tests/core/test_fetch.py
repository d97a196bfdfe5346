"""fetch_bytes / fetch_many against a fault-injecting HTTP server on 127.0.0.1 and stub DNS.

No test may reach beyond 127.0.0.0/8: an autouse guard fails any other connect or name lookup.
"""

from __future__ import annotations

import ipaddress
import socket
import socketserver
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from google.api_core import exceptions as gexc

from image_search_assets.core.fetch import FetchPolicy, fetch_bytes, fetch_many
from image_search_assets.core.images import ItemRejected

JPEG = b"\xff\xd8\xff\xe0fake-jpeg-payload\xff\xd9"
FAST = FetchPolicy(
    timeout_s=2.0, retries=2, retry_backoff_s=0.01, allow_private_hosts=("127.0.0.1",)
)


def _is_loopback(host: object) -> bool:
    try:
        return ipaddress.ip_address(str(host)) in ipaddress.ip_network("127.0.0.0/8")
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def connects(monkeypatch) -> list[str]:
    """Records every outgoing connect; fails the test on any target outside 127.0.0.0/8."""
    seen: list[str] = []
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def check(address: object) -> None:
        host = address[0] if isinstance(address, tuple) else address
        seen.append(str(host))
        if not _is_loopback(host):
            pytest.fail(f"connection attempted to {host!r}")

    def connect(self, address):
        check(address)
        return real_connect(self, address)

    def connect_ex(self, address):
        check(address)
        return real_connect_ex(self, address)

    def getaddrinfo(host, *args, **kwargs):
        if not _is_loopback(host):  # a real name lookup would query DNS servers
            pytest.fail(f"name lookup attempted for {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return seen


def _send(h: BaseHTTPRequestHandler, status: int, body: bytes = b"", **headers: str) -> None:
    h.send_response(status)
    headers = {"Content-Length": str(len(body))} | {
        k.replace("_", "-"): v for k, v in headers.items()
    }
    for name, value in headers.items():
        h.send_header(name, value)
    h.send_header("Connection", "close")
    h.end_headers()
    h.wfile.write(body)


def _trickle(h: BaseHTTPRequestHandler, data: bytes) -> None:
    for i in range(len(data)):
        h.wfile.write(data[i : i + 1])
        time.sleep(0.3)


def _route(h: Handler) -> None:
    path, port = h.path, h.server.server_address[1]
    counts = h.server.counts
    counts[path] = counts.get(path, 0) + 1
    if path in ("/ok.jpg", "/with%20space.jpg"):
        _send(h, 200, JPEG, Content_Type="image/jpeg")
    elif path == "/echo-host":
        _send(h, 200, h.headers["Host"].encode())
    elif path[1:].isdigit():
        _send(h, int(path[1:]), b"status page")
    elif path == "/flaky":
        _send(h, 503) if counts[path] == 1 else _send(h, 200, JPEG)
    elif path == "/slow":
        h.send_response(200)
        h.send_header("Content-Length", "100")
        h.end_headers()
        _trickle(h, b"x" * 100)
    elif path == "/slow-headers":
        _trickle(h, b"HTTP/1.1 200 OK\r\n" + b"X-Pad: y\r\n" * 20)
    elif path in ("/loop-a", "/loop-b"):
        _send(h, 302, Location="/loop-b" if path == "/loop-a" else "/loop-a")
    elif path == "/redirect-to-ok":
        _send(h, 301, Location=f"http://127.0.0.1:{port}/ok.jpg")
    elif path == "/redirect-relative":
        _send(h, 307, Location="ok.jpg")
    elif path.startswith("/countdown/"):
        n = int(path.rsplit("/", 1)[1])
        _send(h, 302, Location=f"/countdown/{n - 1}") if n else _send(h, 200, JPEG)
    elif path == "/redirect-to-metadata":
        _send(h, 302, Location="http://169.254.169.254/computeMetadata/v1/")
    elif path == "/redirect-to-file":
        _send(h, 302, Location="file:///etc/passwd")
    elif path == "/big":
        _send(h, 200, b"", Content_Length="10000000")
    elif path == "/big-chunked":
        h.send_response(200)
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        for _ in range(100):
            h.wfile.write(b"3e8\r\n" + b"z" * 1000 + b"\r\n")
        h.wfile.write(b"0\r\n\r\n")
    elif path == "/short":
        h.send_response(200)
        h.send_header("Content-Length", "1000")
        h.end_headers()
        h.wfile.write(b"only ten b")
    else:
        _send(h, 404)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        try:
            _route(self)
        except (BrokenPipeError, ConnectionResetError):
            return  # the client hung up early on purpose (timeouts, size caps)

    def log_message(self, *args) -> None:
        return  # keep test output quiet


class _Server(ThreadingHTTPServer):
    def server_bind(self) -> None:
        # HTTPServer.server_bind calls getfqdn(), a reverse DNS lookup; skip it.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


@pytest.fixture
def server():
    srv = _Server(("127.0.0.1", 0), Handler)
    srv.counts = {}
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02})
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join()


def _url(server, path: str) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}{path}"


def _reason(uri: str, policy: FetchPolicy = FAST, **kwargs) -> str:
    with pytest.raises(ItemRejected) as info:
        fetch_bytes(uri, policy, **kwargs)
    return info.value.reason


def _resolver(table: dict[str, list[str]], calls: list[str] | None = None):
    def resolve(host: str, port: int) -> list[str]:
        if calls is not None:
            calls.append(host)
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return table[host]

    return resolve


def test_ok_and_host_header(server) -> None:
    assert fetch_bytes(_url(server, "/ok.jpg"), FAST) == JPEG
    port = server.server_address[1]
    assert fetch_bytes(_url(server, "/echo-host"), FAST) == f"127.0.0.1:{port}".encode()
    assert fetch_bytes(_url(server, "/with space.jpg"), FAST) == JPEG  # quoted, not refused


def test_loopback_refused_without_allowlist(server, connects) -> None:
    assert _reason(_url(server, "/ok.jpg"), FetchPolicy()) == "blocked_address"
    assert connects == [] and server.counts == {}


@pytest.mark.parametrize("status", [403, 404, 410, 418])
def test_client_errors_are_not_retried(server, status: int) -> None:
    assert _reason(_url(server, f"/{status}")) == f"http_{status}"
    assert server.counts == {f"/{status}": 1}


@pytest.mark.parametrize("status", [500, 503, 429])
def test_server_errors_are_retried_then_rejected(server, status: int) -> None:
    assert _reason(_url(server, f"/{status}")) == f"http_{status}"
    assert server.counts == {f"/{status}": 3}  # 1 try + 2 retries


def test_flaky_server_succeeds_on_retry(server) -> None:
    assert fetch_bytes(_url(server, "/flaky"), FAST) == JPEG
    assert server.counts == {"/flaky": 2}


@pytest.mark.parametrize("path", ["/slow", "/slow-headers"])
def test_trickling_server_hits_the_total_deadline(server, path: str) -> None:
    policy = FetchPolicy(timeout_s=1.0, retries=0, allow_private_hosts=("127.0.0.1",))
    started = time.monotonic()
    assert _reason(_url(server, path), policy) == "timeout"
    assert time.monotonic() - started < 1.8


def test_redirects(server) -> None:
    assert fetch_bytes(_url(server, "/redirect-to-ok"), FAST) == JPEG
    assert fetch_bytes(_url(server, "/redirect-relative"), FAST) == JPEG
    assert fetch_bytes(_url(server, "/countdown/3"), FAST) == JPEG
    assert _reason(_url(server, "/loop-a")) == "redirect_loop"
    two_hops = FetchPolicy(max_redirects=2, allow_private_hosts=("127.0.0.1",))
    assert _reason(_url(server, "/countdown/3"), two_hops) == "too_many_redirects"
    assert _reason(_url(server, "/redirect-to-file")) == "bad_url"


def test_redirect_to_metadata_server_is_blocked_before_connecting(server, connects) -> None:
    assert _reason(_url(server, "/redirect-to-metadata")) == "blocked_address"
    assert set(connects) == {"127.0.0.1"}  # only the first hop; 169.254.169.254 never dialled


def test_size_caps(server) -> None:
    small = FetchPolicy(max_bytes=1000, retries=0, allow_private_hosts=("127.0.0.1",))
    assert _reason(_url(server, "/big"), small) == "too_large"
    assert _reason(_url(server, "/big-chunked"), small) == "too_large"
    assert fetch_bytes(_url(server, "/ok.jpg"), small) == JPEG


def test_short_body_is_a_connection_error(server) -> None:
    assert _reason(_url(server, "/short")) == "connection_error"
    assert server.counts == {"/short": 3}


def test_closed_port_is_unreachable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert _reason(f"http://127.0.0.1:{port}/x.jpg") == "unreachable"


def test_tls_to_a_plain_http_server_is_a_tls_error(server) -> None:
    url = _url(server, "/ok.jpg").replace("http://", "https://")
    assert _reason(url) == "tls_error"


@pytest.mark.parametrize(
    "url",
    [
        "http://images.example.com/a.jpg",  # stub DNS: 10.0.0.5
        "http://meta.example/computeMetadata/v1/",  # stub DNS: 169.254.169.254
        "http://mixed.example/a.jpg",  # one public, one private address
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:8080/a.jpg",
        "http://[::ffff:10.0.0.1]/a.jpg",
        "http://[2002:a00:1::]/a.jpg",  # 6to4 wrapping 10.0.0.1
        "http://0.0.0.0/a.jpg",
        "http://224.0.0.1/a.jpg",
        "https://100.64.0.1/a.jpg",
    ],
)
def test_private_and_special_addresses_are_blocked(url: str, connects) -> None:
    table = {
        "images.example.com": ["10.0.0.5"],
        "meta.example": ["169.254.169.254"],
        "mixed.example": ["93.184.216.34", "10.0.0.5"],
    }
    assert _reason(url, FetchPolicy(resolver=_resolver(table))) == "blocked_address"
    assert connects == []


def test_allowlisted_name_connects_to_the_checked_ip_with_original_host(server, connects) -> None:
    calls: list[str] = []
    policy = FetchPolicy(
        resolver=_resolver({"imgs.internal": ["127.0.0.1"]}, calls),
        allow_private_hosts=("imgs.internal",),
    )
    port = server.server_address[1]
    body = fetch_bytes(f"http://imgs.internal:{port}/echo-host", policy)
    assert body == f"imgs.internal:{port}".encode()
    assert calls == ["imgs.internal"] and connects == ["127.0.0.1"]  # resolved once, pinned


def test_unknown_host_is_unreachable_without_retrying() -> None:
    calls: list[str] = []
    policy = FetchPolicy(resolver=_resolver({}, calls), retries=2, retry_backoff_s=0.01)
    assert _reason("http://nowhere.invalid/a.jpg", policy) == "unreachable"
    assert calls == ["nowhere.invalid"]


@pytest.mark.parametrize(
    "uri", ["ftp://x/a.jpg", "http://", "https:///a.jpg", "", "http://[::1", "http://h:99999/"]
)
def test_bad_urls(uri: str, connects) -> None:
    assert _reason(uri) == "bad_url"
    assert connects == []


def test_local_files(tmp_path) -> None:
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.jpg").write_bytes(JPEG)
    assert fetch_bytes((tmp_path / "img" / "a.jpg").as_uri(), FAST) == JPEG
    assert fetch_bytes("img/a.jpg", FAST, base_dir=tmp_path) == JPEG
    assert fetch_bytes(str(tmp_path / "img" / "a.jpg"), FAST) == JPEG
    assert _reason("img/missing.jpg", base_dir=tmp_path) == "file_not_found"
    assert _reason((tmp_path / "nope.jpg").as_uri()) == "file_not_found"
    assert _reason("img", base_dir=tmp_path) == "not_a_file"
    assert _reason("img/a.jpg", FetchPolicy(max_bytes=5), base_dir=tmp_path) == "too_large"
    assert _reason("file://otherhost/etc/passwd") == "bad_url"


def test_gcs() -> None:
    calls: list[str] = []

    def gcs_read(uri: str) -> bytes:
        calls.append(uri)
        if uri.endswith("missing.jpg"):
            raise gexc.NotFound("no such object")
        if uri.endswith("denied.jpg"):
            raise gexc.Forbidden("denied")
        if uri.endswith("flaky.jpg") and len(calls) == 1:
            raise gexc.ServiceUnavailable("try again")
        if uri.endswith("down.jpg"):
            raise gexc.ServiceUnavailable("still down")
        return JPEG

    assert fetch_bytes("gs://bucket/flaky.jpg", FAST, gcs_read=gcs_read) == JPEG
    assert len(calls) == 2
    assert _reason("gs://bucket/missing.jpg", gcs_read=gcs_read) == "gcs_not_found"
    calls.clear()
    assert _reason("gs://bucket/denied.jpg", gcs_read=gcs_read) == "gcs_error"
    assert _reason("gs://bucket/down.jpg", gcs_read=gcs_read) == "gcs_error"
    assert len(calls) == 1 + 3  # Forbidden is final; ServiceUnavailable is retried twice
    assert _reason("gs://bucket", gcs_read=gcs_read) == "bad_url"
    with pytest.raises(ValueError):
        fetch_bytes("gs://bucket/a.jpg", FAST)  # no reader wired in: a bug, not a bad item


def test_fetch_many_collects_good_and_rejected(server, tmp_path) -> None:
    (tmp_path / "a.jpg").write_bytes(JPEG)
    items = [
        ("local", "a.jpg"),
        ("http", _url(server, "/ok.jpg")),
        ("gone", _url(server, "/410")),
        ("missing", "b.jpg"),
        ("bad", "ftp://x/y"),
    ]
    ok, rejected = fetch_many(
        items, lambda uri: len(fetch_bytes(uri, FAST, base_dir=tmp_path)), workers=3
    )
    assert ok == {"local": len(JPEG), "http": len(JPEG)}
    assert {k: v.reason for k, v in rejected.items()} == {
        "gone": "http_410",
        "missing": "file_not_found",
        "bad": "bad_url",
    }
    assert fetch_many([], len) == ({}, {})


def test_fetch_many_propagates_bugs_and_refuses_duplicate_ids() -> None:
    def boom(uri: str) -> int:
        raise RuntimeError(uri)

    with pytest.raises(RuntimeError):
        fetch_many([("a", "x"), ("b", "y")], boom, workers=2)
    with pytest.raises(ValueError):
        fetch_many([("a", "x"), ("a", "y")], len)
