"""Hostile HTTP clients for the service's end-to-end tests: raw sockets, streamed bodies.

Nothing here allocates what it sends: a 1 GiB body is 1 MiB written 1,024 times.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import requests

MIB = 1 << 20


@dataclass
class Reply:
    status: int | None  # None: the server closed without a response
    headers: dict[str, str]
    body: bytes
    sent: int  # bytes the client got into its socket before the server stopped taking them
    elapsed_s: float

    def json(self) -> dict:
        return json.loads(self.body)


def parse(raw: bytes) -> tuple[int | None, dict[str, str], bytes]:
    if not raw:
        return None, {}, b""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def exchange(port: int, chunks: Iterable[bytes], timeout: float = 10.0) -> Reply:
    """Sends `chunks` until the server stops taking them, then reads what it answered."""
    started, sent = time.monotonic(), 0
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        for chunk in chunks:
            try:
                sock.sendall(chunk)
            except OSError:  # reset or closed: the server has answered or dropped us
                break
            sent += len(chunk)
            if select.select([sock], [], [], 0)[0]:  # an early answer: stop sending
                break
        raw = read_reply(sock)
    status, headers, body = parse(raw)
    return Reply(status, headers, body, sent, time.monotonic() - started)


def read_reply(sock: socket.socket) -> bytes:
    """One response (to its Content-Length), or what came before the server closed."""
    raw = b""
    try:
        while data := sock.recv(65536):
            raw += data
            _, headers, body = parse(raw)
            if "content-length" in headers and len(body) >= int(headers["content-length"]):
                break
    except OSError:  # a reset after the answer was read
        pass
    return raw


def request(method: str, path: str, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def chunked(parts: Iterable[bytes]) -> Iterator[bytes]:
    """Transfer-Encoding: chunked framing of `parts`."""
    for part in parts:
        yield b"%x\r\n" % len(part) + part + b"\r\n"
    yield b"0\r\n\r\n"


def multipart_head(boundary: str, name: str, filename: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    return f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()


@dataclass
class LatencyProbe:
    """A well-behaved client asking `url` in a loop (one kept-alive session) meanwhile."""

    url: str
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def __enter__(self) -> LatencyProbe:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        session = requests.Session()
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                r = session.get(self.url, timeout=10)
                ok = r.status_code == 200
            except requests.RequestException as e:
                ok, r = False, repr(e)
            self.latencies.append(time.monotonic() - started)
            if not ok:
                self.failures.append(str(r))
            time.sleep(0.01)

    def p99(self) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


class Trickle:
    """`n` connections each sending one byte of `opening` every `every_s`: when did each end?"""

    def __init__(
        self, port: int, n: int, opening: bytes, every_s: float = 0.5, preamble: bytes = b""
    ) -> None:
        self.socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
        for sock in self.socks:
            sock.sendall(preamble)
        self.opening, self.every_s = opening, every_s
        self.ended: dict[int, tuple[float, int | None]] = {}  # index -> (seconds, status)

    def run(self, limit_s: float) -> dict[int, tuple[float, int | None]]:
        started, sent, answers = time.monotonic(), 0, {i: b"" for i in range(len(self.socks))}
        next_send = started
        while len(self.ended) < len(self.socks) and time.monotonic() - started < limit_s:
            if time.monotonic() >= next_send:
                for i, sock in enumerate(self.socks):
                    if i not in self.ended:
                        at = sent % len(self.opening)
                        try:
                            sock.send(self.opening[at : at + 1])
                        except OSError:
                            self.ended[i] = (time.monotonic() - started, parse(answers[i])[0])
                sent += 1
                next_send += self.every_s
            live = [s for i, s in enumerate(self.socks) if i not in self.ended]
            for sock in select.select(live, [], [], 0.05)[0]:
                i = self.socks.index(sock)
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                answers[i] += data
                if not data:
                    self.ended[i] = (time.monotonic() - started, parse(answers[i])[0])
        for sock in self.socks:
            sock.close()
        return self.ended
