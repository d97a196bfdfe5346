"""requirements.lock is the one environment: CI, the tests and the image install it.

The lock pins every package with its hashes; the torch and torchvision it pins are the ones
these tests run on; the Dockerfile installs that lock with --require-hashes, from a base
image pinned by digest; and pyproject's floors sit above the known CVEs.
"""

import re
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOCK = (ROOT / "requirements.lock").read_text()
DOCKERFILE = (ROOT / "k8s" / "Dockerfile").read_text()
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", re.M)


def locked() -> dict[str, str]:
    return {re.sub(r"[-_.]+", "-", n).lower(): v for n, v in PIN.findall(LOCK)}


def requirement_blocks() -> list[str]:
    """One block per requirement: its pin line and the --hash lines that follow."""
    body = "\n".join(line for line in LOCK.splitlines() if not line.lstrip().startswith("#"))
    return [b for b in re.split(r"\n(?=\S)", body.strip()) if b.strip()]


def test_every_locked_requirement_is_pinned_with_hashes():
    blocks = requirement_blocks()
    assert len(blocks) == len(locked()) > 100
    for block in blocks:
        assert PIN.match(block), block.splitlines()[0]
        assert re.search(r"--hash=sha256:[0-9a-f]{64}", block), block.splitlines()[0]


@pytest.mark.parametrize("name", ["torch", "torchvision", "dagster", "dagster-k8s", "pyarrow"])
def test_lock_pins_the_tested_versions(name):
    # The local version label (+cu130) is the build's; the lock pins PyPI's CUDA wheels.
    assert locked()[name] == version(name).split("+")[0]


def test_lock_covers_every_declared_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    names = {re.sub(r"[-_.]+", "-", re.split(r"[<>=!\[ ]", d)[0]).lower() for d in declared}
    assert names - set(locked()) == set()


def test_dockerfile_installs_the_lock_with_hashes_from_a_pinned_base():
    assert "COPY requirements.lock /tmp/requirements.lock" in DOCKERFILE
    assert "pip install --require-hashes -r /tmp/requirements.lock" in DOCKERFILE
    assert "pip install --no-deps /tmp/project" in DOCKERFILE
    assert "download.pytorch.org" not in DOCKERFILE  # torch comes from the lock, nowhere else
    assert not re.search(r"pip install [^\n]*\b(torch|torchvision)==", DOCKERFILE)
    (base,) = re.findall(r"^ARG BASE_IMAGE=(\S+)$", DOCKERFILE, re.M)
    assert re.fullmatch(r"python:3\.11[\w.-]*-slim-bookworm@sha256:[0-9a-f]{64}", base)
    froms = re.findall(r"^FROM (\S+)", DOCKERFILE, re.M)
    assert froms and all(f == "${BASE_IMAGE}" for f in froms)


@pytest.mark.parametrize(
    ("name", "floor"),
    [("pyarrow", (14, 0, 1)), ("pillow", (10, 3)), ("torch", (2, 6))],  # CVE-2023-47248,
)  # CVE-2024-28219, CVE-2025-32434
def test_floors_sit_above_known_cves(name, floor):
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (spec,) = [d for d in deps if re.match(rf"{name}\b", d)]
    lower = tuple(int(p) for p in re.search(r">=([\d.]+)", spec).group(1).split("."))
    assert lower >= floor
    assert tuple(int(p) for p in locked()[name].split(".")[:3]) >= floor
