"""The load generator of serve_load.py, run in its own process: closed and open loops.

Closed loop: `concurrency` keep-alive clients, each sending its next query when the last is
answered. Open loop: requests started on a fixed schedule, so a slow answer never delays the
next start (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import time
from typing import Any

import numpy as np

CATEGORIES = ("tops", "pants")


def percentiles(latencies_s: list[float]) -> dict[str, float]:
    ms = np.asarray(latencies_s) * 1000
    if not len(ms):
        return {}
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "p99_9_ms": round(float(np.percentile(ms, 99.9)), 3),
        "max_ms": round(float(ms.max()), 3),
    }


def qps(latencies: list[float]) -> float:
    return round(len(latencies) / sum(latencies), 1)


async def _closed(url: str, n: int, concurrency: int, seconds: float, k: int) -> dict[str, Any]:
    import aiohttp

    lat: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client(seed: int) -> None:
            nonlocal errors
            rng = np.random.default_rng(seed)
            while time.perf_counter() < deadline:
                cat = CATEGORIES[int(rng.integers(2))]
                path = f"{url}/v1/similar/{cat}-{int(rng.integers(n)):06d}?k={k}"
                t = time.perf_counter()
                async with session.get(path) as r:
                    await r.read()
                    errors += r.status != 200
                lat.append(time.perf_counter() - t)

        started = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(concurrency)))
        wall = time.perf_counter() - started
    return {
        "concurrency": concurrency,
        "requests": len(lat),
        "errors": errors,
        "qps": round(len(lat) / wall, 1),
        **percentiles(lat),
    }


async def _open(url: str, n: int, rate: float, seconds: float, k: int) -> dict[str, Any]:
    """Requests started on a fixed schedule (no coordinated omission); latency per start."""
    import aiohttp

    starts: list[tuple[float, float, int]] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as session:
        rng = np.random.default_rng(7)
        origin = time.perf_counter()

        async def one(i: int, due: float) -> None:
            cat = CATEGORIES[i % 2]
            path = f"{url}/v1/similar/{cat}-{int(rng.integers(n)):06d}?k={k}"
            async with session.get(path) as r:
                await r.read()
                starts.append((due - origin, time.perf_counter() - due, r.status))

        tasks = []
        for i in range(int(rate * seconds)):
            due = origin + i / rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            tasks.append(asyncio.create_task(one(i, due)))
        await asyncio.gather(*tasks)
    lat = [s[1] for s in starts]
    return {
        "rate": rate,
        "requests": len(lat),
        "errors": sum(s[2] != 200 for s in starts),
        **percentiles(lat),
        "timeline": sorted((round(a, 4), round(b * 1000, 3)) for a, b, _ in starts),
    }


def _loadgen(kind: str, args: tuple, out: Any) -> None:
    fn = _closed if kind == "closed" else _open
    out.put(asyncio.run(fn(*args)))


def run_loadgen(kind: str, *args: Any) -> Any:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_loadgen, args=(kind, args, out))
    proc.start()
    return proc, out
