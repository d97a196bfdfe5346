"""Shared fixtures (small platform settings, the sample catalog, an in-process GCS emulator) and
the two test tiers.

The end-to-end tier (`-m e2e`) is every test under tests/e2e/, every test that takes a fixture
starting a server beside it, and the tests elsewhere that carry `@pytest.mark.e2e` with their
reason: real run processes, or minutes of work (a real compile, a week of days, a rollout on
both storages). Everything else is the fast tier (`-m "not e2e"`), the README's first command.
"""

from __future__ import annotations

import os
import socket
import tempfile
from datetime import date
from pathlib import Path

import pytest

from image_search_assets.demo.synthetic import generate_catalog
from image_search_assets.settings import ModelConfig, Settings, load_settings
from tests.net_guard import connects  # noqa: F401  (the network guard fixture)

TEST_CATEGORIES = ("tops", "pants", "hats")
TEST_MIX = {"tops": 3, "pants": 2, "hats": 1}
START = date(2026, 11, 1)
E2E_DIR = Path(__file__).resolve().parent / "e2e"
E2E_FIXTURES = {"postgres_url"}  # a real PostgreSQL server


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks the end-to-end tier by place and by fixture, so a new test joins it by itself."""
    for item in items:
        in_e2e = E2E_DIR in item.path.parents
        if in_e2e or E2E_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)


def small_settings(storage_root: str, catalog: str) -> Settings:
    """The real config, cut to three categories and tiny models so CPU tests stay fast."""
    base = load_settings()
    return base.with_overrides(
        categories=tuple(base.category(n) for n in TEST_CATEGORIES),
        start_date=START.isoformat(),
        storage_root=storage_root,
        catalog=catalog,
        device="cpu",
        detector=ModelConfig(
            arch="ssdlite320_mobilenet_v3_large",  # the demo's detector: the vectorised path
            weights="random",
            input_size=160,
            batch_size=4,
            score_threshold=0.5,
        ),
        embedder=ModelConfig(arch="resnet18", weights="random", input_size=64, batch_size=16),
    )


@pytest.fixture(scope="session")
def sample_catalog(tmp_path_factory) -> Path:
    """Three days of the synthetic catalog (bad rows included) at 96 px."""
    out = tmp_path_factory.mktemp("catalog")
    return generate_catalog(out, TEST_CATEGORIES, START, days=3, image_size=96, mix=TEST_MIX)


@pytest.fixture
def settings(tmp_path, sample_catalog) -> Settings:
    return small_settings(str(tmp_path / "storage"), str(sample_catalog))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def gcs_emulator():
    """The gcp-storage-emulator package served in-process on 127.0.0.1."""
    from gcp_storage_emulator.server import create_server

    port = _free_port()
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    old = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{port}"
    yield f"http://127.0.0.1:{port}"
    server.stop()
    if old is None:
        os.environ.pop("STORAGE_EMULATOR_HOST", None)
    else:
        os.environ["STORAGE_EMULATOR_HOST"] = old


@pytest.fixture
def gcs_bucket(gcs_emulator, request) -> str:
    """A fresh bucket on the emulator; returns its name."""
    from google.cloud import storage

    name = "test-" + request.node.name.lower().replace("_", "-").replace("[", "-")[:40].strip("]-")
    client = storage.Client(project="test")
    if client.lookup_bucket(name) is None:
        client.create_bucket(name)
    return name


def _pg_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory):
    """A real PostgreSQL server (Debian's package) on 127.0.0.1, started once per test run.

    `.ci/run` installs the package; elsewhere the tests that need it skip with the reason.
    """
    import shutil
    import subprocess

    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    # Not under pytest's tmp dir: that is private to root, and the server runs as `postgres`.
    base = Path(tempfile.mkdtemp(prefix="image-search-pg-"))
    base.chmod(0o755)
    data = base / "data"
    data.mkdir()
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_postgres:
        shutil.chown(data.parent, "postgres")
        shutil.chown(data, "postgres")
    port = _free_port()
    subprocess.run(
        [
            *as_postgres,
            str(bin_dir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            *as_postgres,
            str(bin_dir / "pg_ctl"),
            "-D",
            str(data),
            "-w",
            "-l",
            str(data / "log"),
            "-o",
            f"-p {port} -k {data} -c listen_addresses=127.0.0.1",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    try:
        subprocess.run(
            [
                *as_postgres,
                str(bin_dir / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-U",
                "postgres",
                "dagster",
            ],
            check=True,
            capture_output=True,
        )
        # SQLAlchemy 2.1 defaults postgresql:// to psycopg 3; dagster-postgres needs psycopg2.
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/dagster"
    finally:
        subprocess.run(
            [*as_postgres, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"],
            capture_output=True,
        )
