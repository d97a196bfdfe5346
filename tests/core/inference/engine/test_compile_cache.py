"""The persistent compile cache (engine/compile_cache.py), compiled for real by inductor on the
CPU: each process below is a fresh one, as each step's pod is, and compiles a small network
through runtime.maybe_compiled at two batch sizes (a static graph, then a dynamic one).

A warm process must compile nothing (every graph a cache hit) and give the same outputs, bit
for bit; an archive that is corrupt or from another torch must fall back to a cold compile
without failing. About 15 s per process.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from torch import nn

from image_search_assets.core.inference.engine import compile_cache

REPO = Path(__file__).resolve().parents[4]

STEP = """
import json, sys, time
import torch
from torch._dynamo.utils import counters
from image_search_assets.core.inference.engine import compile_cache
from image_search_assets.core.inference.engine.runtime import maybe_compiled
from tests.core.inference.engine.test_compile_cache import inputs, small_net

cache = compile_cache.configure(sys.argv[1])
net = small_net()
started = time.perf_counter()
run, compiled = maybe_compiled(net, True)
with torch.inference_mode():
    outputs = [run(x).tolist() for x in inputs()]
    eager = [net(x).tolist() for x in inputs()]
print(json.dumps({
    "compiled": compiled,
    "seconds": time.perf_counter() - started,
    "outputs": outputs,
    "eager": eager,
    "events": cache.events,
    "inductor": dict(counters["inductor"]),
    "aot_autograd": dict(counters["aot_autograd"]),
}))
"""


def small_net() -> nn.Module:
    """Seeded, so that every process builds the same weights."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    ).eval()


def inputs() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [torch.randn(n, 3, 24, 24, generator=generator) for n in (4, 3)]


def step(location: Path) -> dict:
    """One fresh process compiling and running small_net with the cache at `location`."""
    out = subprocess.run(
        [sys.executable, "-c", STEP, str(location)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.splitlines()[-1])


def key() -> str:
    """The archive's key for small_net on this CPU, as a step computes it."""
    return compile_cache.archive_key(small_net(), torch.device("cpu"))


def assert_matches_eager(result: dict) -> None:
    assert result["compiled"]
    for got, want in zip(result["outputs"], result["eager"], strict=True):
        assert torch.tensor(got) == pytest.approx(torch.tensor(want), abs=1e-5)


@pytest.fixture(scope="module")
def cold(tmp_path_factory) -> tuple[Path, dict]:
    location = tmp_path_factory.mktemp("compile-cache")
    return location, step(location)


@pytest.mark.e2e  # minutes: fresh step processes compile for real
def test_a_cold_step_compiles_and_leaves_an_archive(cold):
    location, result = cold
    assert_matches_eager(result)
    assert result["events"][0] == {
        "event": "load",
        "key": key(),
        "hit": False,
        "reason": "no archive yet",
    }
    assert result["inductor"]["fxgraph_cache_miss"] >= 2  # the static graph, then the dynamic
    assert {"event": "save", "key": key()} in result["events"]
    assert (location / key()).is_file()


@pytest.mark.e2e  # minutes: fresh step processes compile for real
def test_a_warm_step_compiles_nothing_and_gives_the_same_outputs(cold):
    location, first = cold
    archive = (location / key()).read_bytes()
    warm = step(location)
    assert warm["events"] == [{"event": "load", "key": key(), "hit": True}]  # and no save
    assert warm["inductor"].get("fxgraph_cache_miss", 0) == 0
    assert warm["inductor"]["fxgraph_cache_hit"] == first["inductor"]["fxgraph_cache_miss"]
    assert warm["aot_autograd"].get("autograd_cache_miss", 0) == 0
    assert warm["outputs"] == first["outputs"]  # the same compiled code: bit for bit
    assert (location / key()).read_bytes() == archive
    print(f"compile + 2 batches: cold {first['seconds']:.1f} s, warm {warm['seconds']:.1f} s")


def with_manifest(archive: bytes, manifest: dict) -> bytes:
    """`archive` with its manifest replaced: what another torch or device would have written."""
    out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as src,
        tarfile.open(fileobj=out, mode="w:gz") as dst,
    ):
        for entry in src.getmembers():
            data = src.extractfile(entry)
            if entry.name == compile_cache.MANIFEST:
                text = json.dumps(manifest).encode()
                entry.size, data = len(text), io.BytesIO(text)
            dst.addfile(entry, data)
    return out.getvalue()


@pytest.mark.e2e  # minutes: fresh step processes compile for real
@pytest.mark.parametrize("kind", ["corrupt", "truncated", "foreign torch"])
def test_a_bad_archive_falls_back_to_a_cold_compile(cold, tmp_path, kind):
    good = (cold[0] / key()).read_bytes()
    foreign = {"format": compile_cache.FORMAT, "torch": "2.0.0", "device": "another"}
    bad = {
        "corrupt": b"not a tar archive" * 100,
        "truncated": good[: len(good) // 2],
        "foreign torch": with_manifest(good, foreign),
    }[kind]
    (tmp_path / key()).parent.mkdir(parents=True)
    (tmp_path / key()).write_bytes(bad)
    result = step(tmp_path)
    assert_matches_eager(result)
    load = result["events"][0]
    assert load["hit"] is False
    want = "archive is for" if kind == "foreign torch" else "unreadable archive"
    assert load["reason"].startswith(want), load
    assert result["inductor"]["fxgraph_cache_miss"] >= 2  # compiled cold
    assert (tmp_path / key()).read_bytes() != bad  # and replaced by a good archive


def test_the_key_names_torch_and_device_and_off_means_off(tmp_path, monkeypatch):
    parts = key().split("/")
    assert parts[0] == f"torch-{torch.__version__}"
    assert torch.backends.cpu.get_cpu_capability() in parts[1]
    assert parts[2].startswith("Sequential-") and parts[2].endswith(".tar.gz")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))  # restored after
    assert compile_cache.configure(str(tmp_path)) is compile_cache.configure(str(tmp_path))
    assert compile_cache.configure(None) is None and compile_cache.active() is None
