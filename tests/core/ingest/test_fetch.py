"""fetch_bytes / fetch_many against a fault-injecting HTTP server on 127.0.0.1 and stub DNS.

An autouse guard fails any connect or name lookup outside 127.0.0.0/8."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from google.api_core import exceptions as gexc

from image_search_assets.core.ingest.fetch import FetchPolicy, fetch_bytes
from image_search_assets.core.ingest.images import ItemRejected
from image_search_assets.core.ingest.store_images import fetch_many
from image_search_assets.core.ingest.url_rules import LOCAL_KINDS, UrlRules

# No connection or name lookup may leave 127.0.0.0/8 (tests/net_guard.py).
pytestmark = pytest.mark.usefixtures("connects")

JPEG = b"\xff\xd8\xff\xe0fake-jpeg-payload\xff\xd9"
LOCAL = ("127.0.0.1",)
# Local mode's URL kinds (the demo's and these tests'); FetchPolicy's default is a deployment's.
RULES = UrlRules(LOCAL_KINDS, gcs_prefixes=("bucket",))
FAST = FetchPolicy(timeout_s=2.0, retry_backoff_s=0.01, allow_private_hosts=LOCAL, rules=RULES)
CAP = FetchPolicy(max_bytes=1000, retries=0, allow_private_hosts=LOCAL, rules=RULES)


def _raw(status: int, body: bytes = b"", **headers: str | None) -> bytes:
    """A whole HTTP/1.1 response; header names use _ for -, and None drops a header."""
    fields = {"Content-Length": str(len(body)), "Connection": "close"}
    fields |= {name.replace("_", "-"): value for name, value in headers.items()}
    head = "".join(f"{k}: {v}\r\n" for k, v in fields.items() if v is not None)
    return f"HTTP/1.1 {status} Status\r\n{head}\r\n".encode() + body


CHUNKS = (b"3e8\r\n" + b"z" * 1000 + b"\r\n") * 100 + b"0\r\n\r\n"  # 100 x 1000 bytes
ROUTES = {
    "/ok.jpg": _raw(200, JPEG),
    "/with%20space.jpg": _raw(200, JPEG),
    "/flaky": _raw(200, JPEG),
    "/countdown/0": _raw(200, JPEG),
    "/loop-a": _raw(302, Location="/loop-b"),
    "/loop-b": _raw(302, Location="/loop-a"),
    "/redirect-relative": _raw(307, Location="ok.jpg"),
    "/redirect-to-metadata": _raw(302, Location="http://169.254.169.254/computeMetadata/v1/"),
    "/redirect-to-file": _raw(302, Location="file:///etc/passwd"),
    "/big": _raw(200, Content_Length="10000000"),
    "/big-chunked": _raw(200, CHUNKS, Content_Length=None, Transfer_Encoding="chunked"),
    "/short": _raw(200, b"only ten b", Content_Length="1000"),
    "/slow": _raw(200, b"x" * 100),
    "/slow-headers": _raw(200, b"x" * 100, X_Padding="y" * 100),
}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        path, counts, port = self.path, self.server.counts, self.server.server_port
        counts[path] = counts.get(path, 0) + 1
        if path == "/flaky" and counts[path] == 1:
            response = _raw(503)  # once; the retry gets ROUTES["/flaky"]
        elif path.startswith("/countdown/") and path != "/countdown/0":
            response = _raw(302, Location=f"/countdown/{int(path.rsplit('/', 1)[1]) - 1}")
        elif path == "/redirect-to-ok":
            response = _raw(301, Location=f"http://127.0.0.1:{port}/ok.jpg")
        elif path == "/echo-host":
            response = _raw(200, self.headers["Host"].encode())
        elif path[1:].isdigit():
            response = _raw(int(path[1:]), b"status page")
        else:
            response = ROUTES.get(path, _raw(404))
        # /slow trickles its body and /slow-headers its headers, a byte every 0.3 s.
        fast = {"/slow": response.find(b"\r\n\r\n") + 4, "/slow-headers": 20}.get(path)
        try:
            self.wfile.write(response[:fast])
            for i in range(fast or len(response), len(response)):
                self.wfile.write(response[i : i + 1])
                time.sleep(0.3)
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


def _url(server, path: str, scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{server.server_port}{path}"


def _reason(uri: str, policy: FetchPolicy = FAST, **kwargs) -> str:
    with pytest.raises(ItemRejected) as info:
        fetch_bytes(uri, policy, **kwargs)
    return info.value.reason


def _resolver(table: dict[str, list[str]], calls: list[str]):
    def resolve(host: str, port: int) -> list[str]:
        calls.append(host)
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return table[host]

    return resolve


def test_successful_fetches(server, connects) -> None:
    for path in ("/ok.jpg", "/with space.jpg", "/redirect-to-ok", "/redirect-relative"):
        assert fetch_bytes(_url(server, path), FAST) == JPEG
    assert fetch_bytes(_url(server, "/countdown/3"), FAST) == JPEG  # 3 redirects, limit 5
    assert fetch_bytes(_url(server, "/ok.jpg"), CAP) == JPEG  # under the size cap
    assert fetch_bytes(_url(server, "/flaky"), FAST) == JPEG  # a 503, then a retry succeeds
    assert server.counts["/flaky"] == 2
    host_header = fetch_bytes(_url(server, "/echo-host"), FAST)
    assert host_header == f"127.0.0.1:{server.server_port}".encode()
    assert set(connects) == {"127.0.0.1"}


def test_loopback_refused_without_allowlist(server, connects) -> None:
    assert _reason(_url(server, "/ok.jpg"), FetchPolicy(rules=RULES)) == "blocked_address"
    assert connects == [] and server.counts == {}


@pytest.mark.parametrize("status", [403, 404, 410, 418, 429, 500, 503])
def test_http_status_errors(server, status: int) -> None:
    assert _reason(_url(server, f"/{status}")) == f"http_{status}"
    retried = status == 429 or status >= 500
    assert server.counts[f"/{status}"] == (3 if retried else 1)  # 1 try + 2 retries


@pytest.mark.parametrize("path", ["/slow", "/slow-headers"])
def test_trickling_server_hits_the_total_deadline(server, path: str) -> None:
    started = time.monotonic()
    policy = FetchPolicy(timeout_s=1.0, retries=0, allow_private_hosts=LOCAL, rules=RULES)
    assert _reason(_url(server, path), policy) == "timeout"
    assert time.monotonic() - started < 1.8


def test_other_http_failures(server) -> None:
    assert _reason(_url(server, "/big"), CAP) == "too_large"  # by Content-Length
    assert _reason(_url(server, "/big-chunked"), CAP) == "too_large"  # while streaming
    assert _reason(_url(server, "/short")) == "connection_error"  # body cut short, retried
    assert server.counts["/short"] == 3
    assert _reason(_url(server, "/loop-a")) == "redirect_loop"
    two_hops = FetchPolicy(max_redirects=2, allow_private_hosts=LOCAL, rules=RULES)
    assert _reason(_url(server, "/countdown/3"), two_hops) == "too_many_redirects"
    assert _reason(_url(server, "/redirect-to-file")) == "bad_url"
    assert _reason(_url(server, "/ok.jpg", scheme="https")) == "tls_error"  # plain-http server
    with socket.socket() as probe:  # a port that was free a moment ago: connection refused
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    assert _reason(f"http://127.0.0.1:{closed_port}/x.jpg") == "unreachable"


def test_redirect_to_metadata_server_is_blocked_before_connecting(server, connects) -> None:
    assert _reason(_url(server, "/redirect-to-metadata")) == "blocked_address"
    assert set(connects) == {"127.0.0.1"}  # only the first hop; 169.254.169.254 never dialled


# Metadata server, loopback, IPv4-mapped and 6to4-wrapped private, unspecified, multicast, CGNAT.
LITERALS = "169.254.169.254 [::1]:80 [::ffff:10.0.0.1] [2002:a00:1::] 0.0.0.0 224.0.0.1 100.64.0.1"


def test_private_and_special_addresses_are_blocked(connects) -> None:
    table = {
        "images.example.com": ["10.0.0.5"],
        "meta.example": ["169.254.169.254"],
        "mixed.example": ["93.184.216.34", "10.0.0.5"],  # one public address is not enough
    }
    policy = FetchPolicy(resolver=_resolver(table, calls=[]), rules=RULES)
    for host in [*table, *LITERALS.split()]:
        for scheme in ("http", "https"):
            assert _reason(f"{scheme}://{host}/a.jpg", policy) == "blocked_address", host
    assert connects == []


def test_allowlisted_name_connects_to_the_checked_ip_with_original_host(server, connects) -> None:
    calls: list[str] = []
    resolver = _resolver({"imgs.internal": ["127.0.0.1"]}, calls)
    policy = FetchPolicy(resolver=resolver, allow_private_hosts=("imgs.internal",), rules=RULES)
    body = fetch_bytes(f"http://imgs.internal:{server.server_port}/echo-host", policy)
    assert body == f"imgs.internal:{server.server_port}".encode()
    assert calls == ["imgs.internal"] and connects == ["127.0.0.1"]  # resolved once, pinned


def test_unknown_host_is_unreachable_without_retrying() -> None:
    calls: list[str] = []
    policy = FetchPolicy(resolver=_resolver({}, calls), retry_backoff_s=0.01, rules=RULES)
    assert _reason("http://nowhere.invalid/a.jpg", policy) == "unreachable"
    assert calls == ["nowhere.invalid"]


def test_bad_urls(connects) -> None:
    malformed = ["http://", "https:///a", "", "http://[::1", "http://h:99999/"]
    malformed += ["http://exa mple.com/", "http://a,b/", "http://" + "a" * 70 + ".com/"]
    for uri in malformed:  # all refused before any DNS lookup or connect
        assert _reason(uri) == "bad_url", uri
    assert _reason("gs://bucket-only", gcs_read=lambda uri: b"") == "bad_url"
    assert _reason("file://otherhost/etc/passwd") == "bad_url"
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
    assert (
        _reason("img/a.jpg", FetchPolicy(max_bytes=5, rules=RULES), base_dir=tmp_path)
        == "too_large"
    )


def test_gcs() -> None:
    calls: list[str] = []
    errors = {"missing": gexc.NotFound("gone"), "denied": gexc.Forbidden("no")}

    def gcs_read(uri: str) -> bytes:
        calls.append(uri)
        name = uri.rsplit("/", 1)[1]
        if name in errors:
            raise errors[name]
        if name == "down" or (name == "flaky" and len(calls) == 1):
            raise gexc.ServiceUnavailable("try again")
        return JPEG

    assert fetch_bytes("gs://bucket/flaky", FAST, gcs_read=gcs_read) == JPEG
    assert len(calls) == 2
    assert _reason("gs://bucket/missing", gcs_read=gcs_read) == "gcs_not_found"
    calls.clear()
    assert _reason("gs://bucket/denied", gcs_read=gcs_read) == "gcs_error"
    assert _reason("gs://bucket/down", gcs_read=gcs_read) == "gcs_error"
    assert len(calls) == 1 + 3  # Forbidden is final; ServiceUnavailable is retried twice
    with pytest.raises(ValueError):
        fetch_bytes("gs://bucket/a.jpg", FAST)  # no reader wired in: a bug, not a bad item


def test_fetch_many(server, tmp_path) -> None:
    (tmp_path / "a.jpg").write_bytes(JPEG)
    uris = ["a.jpg", _url(server, "/ok.jpg"), _url(server, "/410"), "b.jpg", "ftp://x/y"]
    items = list(zip(["local", "http", "gone", "missing", "bad"], uris, strict=True))
    ok, rejected = fetch_many(items, lambda u: len(fetch_bytes(u, FAST, base_dir=tmp_path)), 3)
    assert ok == {"local": len(JPEG), "http": len(JPEG)}
    reasons = {k: v.reason for k, v in rejected.items()}
    assert reasons == {"gone": "http_410", "missing": "file_not_found", "bad": "scheme_not_allowed"}
    assert fetch_many([], len) == ({}, {})
    with pytest.raises(ValueError):
        fetch_many([("a", "x"), ("a", "y")], len)  # duplicate ids
    with pytest.raises(ZeroDivisionError):  # anything but ItemRejected is a bug and propagates
        fetch_many([("a", "x"), ("b", "y")], lambda uri: 1 // 0, workers=2)
