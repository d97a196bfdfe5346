"""The hostile clients of benchmarks/serve_load.py, each while a fixed-rate load runs.

The clients are the end-to-end tests' (tests/e2e/hostile.py): a 64 MiB header, 200 slow
connections trickling a header byte every 3 s, a 1 GiB chunked upload. Each case reports its
own outcome next to the latency the well-behaved load saw meanwhile.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.e2e.hostile import MIB, Trickle, chunked, exchange, multipart_head, request

MULTIPART = {"Content-Type": "multipart/form-data; boundary=b0und"}


def big_header(port: int) -> dict[str, Any]:
    opening = request("GET", "/v1/similar/x").removesuffix(b"\r\n") + b"X-Big: "
    reply = exchange(port, itertools.chain([opening], itertools.repeat(b"a" * MIB, 64)))
    return {
        "status": reply.status,
        "answered_after_s": round(reply.elapsed_s, 3),
        "bytes_taken": reply.sent,
    }


def slow_clients(port: int, header_timeout_s: float) -> dict[str, Any]:
    ended = Trickle(port, 200, request("GET", "/healthz"), every_s=3.0).run(header_timeout_s + 10)
    times = [t for t, _ in ended.values()]
    return {
        "connections": 200,
        "dropped": len(ended),
        "max_held_s": round(max(times), 2),
        "statuses": sorted({s for _, s in ended.values() if s is not None}),
    }


def upload_1gib(port: int, tmp: Path) -> dict[str, Any]:
    opening = request("POST", "/v1/similar", {**MULTIPART, "Transfer-Encoding": "chunked"})
    body = itertools.chain(
        [multipart_head("b0und", "image", "a.jpg")], itertools.repeat(b"\0" * MIB, 1024)
    )
    reply = exchange(port, itertools.chain([opening], chunked(body)), timeout=60)
    written = sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file())
    return {
        "status": reply.status,
        "answered_after_s": round(reply.elapsed_s, 3),
        "bytes_taken": reply.sent,
        "temp_bytes_written": written,
    }


def hostile_cases(
    run_open_load: Callable[[float], Any], port: int, tmp: Path, header_timeout_s: float
) -> list[dict[str, Any]]:
    """Each case during `run_open_load(seconds)` (returns (process, queue) of a fixed-rate
    load); the load's own figures go beside the case's."""
    cases: list[tuple[str, Callable[[], dict[str, Any]], float]] = [
        ("header_64_mib", lambda: big_header(port), 6),
        ("slow_clients_200", lambda: slow_clients(port, header_timeout_s), header_timeout_s + 6),
        ("upload_1_gib", lambda: upload_1gib(port, tmp), 6),
    ]
    results = []
    for name, case, seconds in cases:
        proc, out = run_open_load(seconds)
        time.sleep(1)
        outcome = case()
        load = {k: v for k, v in out.get().items() if k != "timeline"}
        proc.join()
        results.append({"case": name, **outcome, "load_meanwhile": load})
        print("hostile:", results[-1])
    return results
