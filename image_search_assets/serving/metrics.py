"""Prometheus metrics: request latency (a middleware) and each category's served index."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from image_search_assets.serving.reader import IndexReader

if TYPE_CHECKING:
    from image_search_assets.serving.image_query import ImageQueries

# Sub-millisecond to a second: a product query is ~1 ms, an image query a few hundred.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ReaderCollector(Collector):
    """Reads the reader's state at scrape time, so the figures are never stale."""

    def __init__(self, reader: IndexReader) -> None:
        self.reader = reader

    def collect(self) -> Iterator[Any]:
        info = GaugeMetricFamily(
            "image_search_index_info",
            "The served index version (1)",
            labels=["category", "version", "day"],
        )
        age = GaugeMetricFamily(
            "image_search_index_age_seconds",
            "Seconds since the served version was loaded",
            labels=["category"],
        )
        items = GaugeMetricFamily(
            "image_search_index_items", "Items in the served version", labels=["category"]
        )
        swaps = CounterMetricFamily(
            "image_search_index_swaps", "Swaps to a newer verified version", labels=["category"]
        )
        failed = CounterMetricFamily(
            "image_search_index_failed_loads",
            "Versions refused because they failed verification",
            labels=["category"],
        )
        ready = GaugeMetricFamily("image_search_ready", "1 when every category serves an index")
        now = time.time()
        for category in self.reader.categories:
            state = self.reader.state(category)
            served = state.served
            if served is not None:
                info.add_metric([category, served.version, served.day], 1)
                age.add_metric([category], now - served.loaded_at)
                items.add_metric([category], len(served.ids))
            swaps.add_metric([category], state.swaps)
            failed.add_metric([category], state.failed_loads)
        ready.add_metric([], float(self.reader.ready()))
        yield from (info, age, items, swaps, failed, ready)


class ImageQueryCollector(Collector):
    """Whether image queries are answered per category, and the decode memory in use."""

    def __init__(self, images: ImageQueries) -> None:
        self.images = images

    def collect(self) -> Iterator[Any]:
        answered = GaugeMetricFamily(
            "image_search_image_queries_answered",
            "1 when the served version's embedder is this service's; 0 when image queries are"
            " refused for the category (model mismatch) or disabled",
            labels=["category"],
        )
        refused = self.images.refusals()
        for category in self.images.reader.categories:
            ok = self.images.identity is not None and category not in refused
            answered.add_metric([category], float(ok))
        in_flight = GaugeMetricFamily(
            "image_search_image_queries_in_flight", "Image queries being read, decoded or embedded"
        )
        in_flight.add_metric([], self.images.in_flight)
        in_use = GaugeMetricFamily(
            "image_search_decode_bytes_in_use", "Bytes of the image memory budget reserved now"
        )
        budget = None if self.images.embedder is None else self.images.embedder.budget
        in_use.add_metric([], 0 if budget is None else budget.in_use)
        yield from (answered, in_flight, in_use)


def build_registry(
    reader: IndexReader, images: ImageQueries
) -> tuple[CollectorRegistry, Histogram]:
    registry = CollectorRegistry()
    registry.register(ReaderCollector(reader))
    registry.register(ImageQueryCollector(images))
    latency = Histogram(
        "image_search_request_seconds",
        "HTTP request latency by route and status",
        ["method", "route", "status"],
        buckets=LATENCY_BUCKETS,
        registry=registry,
    )
    return registry, latency


class LatencyMiddleware:
    """Times every request into the histogram, labelled by route template (not raw path)."""

    def __init__(self, app: Any, histogram: Any) -> None:
        self.app, self.histogram = app, histogram

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), [500]

        async def record(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            labels = (scope["method"], route, str(status[0]))
            self.histogram.labels(*labels).observe(time.perf_counter() - started)
