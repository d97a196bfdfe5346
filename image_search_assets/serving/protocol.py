"""uvicorn's httptools protocol with the limits it lacks: head size, head and body timeouts.

uvicorn has a keep-alive timeout and a concurrency limit, and its h11 protocol a head size
limit, but neither protocol bounds how long a client may take to send a request: a client that
trickles one header byte every few seconds holds its connection for ever, and httptools joins
a long header's pieces quadratically (a 64 MiB header stalled every request for seconds).
h11 would bound the head size but parses in Python at about half httptools' speed, so the
service keeps httptools and this subclass adds, per connection:
- a head budget: request line and headers are fed to the parser at most `max_header_bytes`
  in all; one byte more is answered 431 (414 when the request line is most of it) and closed;
- a head deadline from the connection's start (or the request's first byte after a kept-alive
  idle) to the end of the headers, answered 408 and closed;
- a body deadline from the end of the headers to the end of the body, closed;
- a connection cap at accept time, and uvicorn's own limit_concurrency answered in the
  service's JSON error format instead of plain text (also for unparseable requests).
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from image_search_assets.serving.errors import error_json, raw_response
from image_search_assets.serving.limits import ServeLimits

RETRY_AFTER_S = 1


async def _busy(scope: Any, receive: Any, send: Any) -> None:
    """uvicorn's limit_concurrency answer, in the service's error format."""
    body = error_json("unavailable", "the service is at its connection limit; retry shortly")
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(RETRY_AFTER_S).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class GuardedHttpProtocol(HttpToolsProtocol):
    """One connection; `limits` is set on the subclass that guarded_protocol() makes."""

    limits: ClassVar[ServeLimits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reading_head = True  # until the current request's headers are complete
        self._head_bytes = 0
        self._deadline: asyncio.TimerHandle | None = None

    # -- deadlines ---------------------------------------------------------------------------
    def _arm(self, seconds: float, expired: Any) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _head_expired(self) -> None:
        self._deadline = None
        if self.cycle is None or self.cycle.response_complete:
            limit = self.limits.header_timeout_s
            self._refuse(408, "request_timeout", f"the request's headers took over {limit:g} s")
        else:  # a pipelined request behind one in flight: no response may interleave
            self.transport.close()

    def _body_expired(self) -> None:
        self._deadline = None
        if self.cycle is not None:  # the app's receive() sees a disconnect; its sends are void
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        self.transport.close()

    def _refuse(self, status: int, code: str, detail: str, **headers: str) -> None:
        if not self.transport.is_closing():
            self.transport.write(raw_response(status, code, detail, headers))
            self.transport.close()

    # -- connection --------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            detail = f"over {self.limits.max_connections} open connections; retry shortly"
            self._refuse(503, "unavailable", detail, **{"retry-after": str(RETRY_AFTER_S)})
            return
        self._arm(self.limits.header_timeout_s, self._head_expired)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        while data and not self.transport.is_closing():
            if not self._reading_head:
                super().data_received(data)
                return
            room = self.limits.max_header_bytes - self._head_bytes
            piece, data = data[:room], data[room:]
            self._head_bytes += len(piece)
            super().data_received(piece)
            if self._reading_head and self._head_bytes >= self.limits.max_header_bytes:
                self._too_large()

    def _too_large(self) -> None:
        limit = self.limits.max_header_bytes
        if len(getattr(self, "url", b"")) * 2 > limit:  # most of the head is the request line
            self._refuse(414, "uri_too_long", f"the request line is over {limit} bytes")
        else:
            self._refuse(431, "headers_too_large", f"request line and headers over {limit} bytes")

    def send_400_response(self, msg: str) -> None:
        self._refuse(400, "bad_request", msg)

    # -- parser callbacks --------------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self._deadline is None:  # the first byte after a kept-alive idle
            self._arm(self.limits.header_timeout_s, self._head_expired)
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._arm(self.limits.body_timeout_s, self._body_expired)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        self._reading_head, self._head_bytes = True, 0
        super().on_message_complete()

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        super()._start_asgi_task(cycle, _busy if app is service_unavailable else app)


def guarded_protocol(limits: ServeLimits) -> type[GuardedHttpProtocol]:
    """The protocol class to give uvicorn (`http=`), holding these limits."""
    return type("ServiceHttpProtocol", (GuardedHttpProtocol,), {"limits": limits})
