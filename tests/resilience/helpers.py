"""Shared helpers of the resilience tests: fast settings, a day's run, a local HTTP server."""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg

from image_search_assets.core.planning.retry import BackoffPolicy
from image_search_assets.definitions import DAILY_JOB, build_definitions
from image_search_assets.settings import Settings
from tests.conftest import small_settings

# The platform policy's shape at test speed: 0.05 s first delay, capped at 0.2 s.
FAST_RETRY = BackoffPolicy(
    first_delay_s=0.05, max_delay_s=0.2, max_retries=5, deadline_s=60.0, jitter=0.25
)


def fast_settings(storage_root: str, catalog: str, **overrides) -> Settings:
    return small_settings(storage_root, catalog).with_overrides(retry=FAST_RETRY, **overrides)


def run_day(
    settings: Settings,
    day: str,
    instance: dg.DagsterInstance,
    assets: Sequence[Sequence[str]] | None = None,
) -> dg.ExecuteInProcessResult:
    """The daily job for one day (or only `assets` of it), in process, never raising."""
    job = build_definitions(settings).resolve_job_def(DAILY_JOB)
    return job.execute_in_process(
        partition_key=day,
        instance=instance,
        raise_on_error=False,
        asset_selection=[dg.AssetKey(list(a)) for a in assets] if assets else None,
    )


def events(result: dg.ExecuteInProcessResult, kind: str, step: str | None = None) -> list:
    """The run's events of one type (e.g. "STEP_UP_FOR_RETRY"), optionally of one step."""
    return [
        e
        for e in result.all_events
        if e.event_type_value == kind and (step is None or e.step_key == step)
    ]


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls getfqdn(), a reverse DNS lookup; skip it.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_port}{path}"


@contextmanager
def serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[QuietServer]:
    """A threaded HTTP server on 127.0.0.1 (a free port) for the duration of the block."""
    server = QuietServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
