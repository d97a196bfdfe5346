"""How a step reads its stored images: one by one vs `pipeline.read_images`' concurrent reads
(GCS's `read_concurrency`),
in one run, on the same objects, through the real google-cloud-storage client against the
gcp-storage-emulator on 127.0.0.1 (and the local backend for reference).

Three stores: the stock emulator (one thread, in memory, about a millisecond per read: the
client's own cost), the same emulator served by a threaded HTTP server that waits `--latency-ms`
before answering each read (a model of GCS's first-byte latency, not a measurement of GCS), and
the local disk.

    python benchmarks/read_images.py [--images 300] [--kb 25] [--latency-ms 20]
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import ThreadingHTTPServer

from image_search_assets.core.inference.stages import read_images
from image_search_assets.core.storage import GCSStorage, open_storage

CONCURRENT = GCSStorage.read_concurrency


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def emulator(latency_s: float) -> Iterator[None]:
    """The gcp-storage-emulator on 127.0.0.1, STORAGE_EMULATOR_HOST pointing at it; with a
    latency, served by a threaded server whose GETs each wait that long first."""
    from gcp_storage_emulator import server as emu

    port = free_port()
    if latency_s:

        class Slow(emu.RequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                time.sleep(latency_s)
                super().do_GET()

        httpd = ThreadingHTTPServer(
            ("127.0.0.1", port), partial(Slow, emu.Storage(use_memory_fs=True))
        )
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        stop = httpd.shutdown
    else:
        stock = emu.create_server("127.0.0.1", port, in_memory=True)
        stock.start()
        stop = stock.stop
    os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{port}"
    try:
        yield
    finally:
        stop()


def fill(storage, keys: list[str], payload: bytes):
    for key in keys:
        storage.write_bytes(key, payload)
    return storage


def measure(storage, keys: list[str]) -> dict[str, float]:
    out = {}
    for name, workers in (("one_by_one", 1), (f"concurrent_{CONCURRENT}", CONCURRENT)):
        read_images(storage, keys[:10], workers)  # warm the connection pool
        started = time.perf_counter()
        data = read_images(storage, keys, workers)
        out[name] = round(len(data) / (time.perf_counter() - started), 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--kb", type=int, default=25)
    parser.add_argument("--latency-ms", type=int, default=20)
    args = parser.parse_args()
    from google.cloud import storage as gcs

    payload = os.urandom(args.kb * 1024)
    keys = [f"images/{i:05d}.jpg" for i in range(args.images)]
    latency = args.latency_ms / 1000
    stores = {"gcs_emulator": 0.0, f"gcs_emulator_{args.latency_ms}ms_threaded": latency}
    results = {}
    for label, wait in stores.items():
        with emulator(wait):
            gcs.Client(project="bench").create_bucket("bench")
            results[label] = measure(fill(open_storage("gs://bench/run"), keys, payload), keys)
    with tempfile.TemporaryDirectory() as tmp:
        results["local_disk"] = measure(fill(open_storage(tmp), keys, payload), keys)
    print(f"{args.images} objects of {args.kb} KB; {platform.machine()}, {os.cpu_count()} cores")
    for label, figures in results.items():
        ratio = figures[f"concurrent_{CONCURRENT}"] / figures["one_by_one"]
        print(f"{label:>28}: reads/s {figures}  concurrent / one by one = {ratio:.2f}x")


if __name__ == "__main__":
    main()
