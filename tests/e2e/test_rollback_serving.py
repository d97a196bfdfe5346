"""A running `image-search serve` follows an operator's rollback and unpin, as real processes."""

from __future__ import annotations

import pytest
import requests

from image_search_assets.core.index import current
from image_search_assets.core.storage import LocalStorage
from tests.e2e.harness import platform_env, run_command, wait_for
from tests.e2e.service import CATEGORIES, CLI, DAY1, DAY2, Server, store_images, write_config
from tests.serving.conftest import day_ids, publish_day

pytestmark = pytest.mark.e2e


def served_version(server: Server, category: str) -> str | None:
    return server.readyz()["categories"][category]["version"]


def answers(server: Server, product_id: str) -> int:
    return requests.get(f"{server.url}/v1/similar/{product_id}?k=3", timeout=5).status_code


def test_the_service_follows_a_rollback_and_an_unpin(tmp_path):
    storage = LocalStorage(tmp_path / "storage")
    published = {}
    for day, n in ((DAY1, 30), (DAY2, 40)):
        for category in CATEGORIES:
            ids = day_ids(category, DAY1, 30) + day_ids(category, DAY2, n - 30)
            published[category, day] = publish_day(storage, category, day, ids)["version"]
            store_images(storage, category, day, ids)
    config = write_config(tmp_path, str(tmp_path / "storage"))
    env = platform_env(config)
    server = Server(config, tmp_path / "cache", tmp_path / "logs")
    try:
        assert served_version(server, "tops") == published["tops", DAY2]
        added_on_day2 = day_ids("tops", DAY2, 10)[0]
        assert answers(server, added_on_day2) == 200

        rolled = run_command(
            [CLI, "rollback", "--category", "tops", "--day", DAY1, "--reason", "bad crops"],
            env,
            timeout=120,
        )
        assert rolled.returncode == 0, rolled.stderr[-2000:]
        assert f"tops serves {DAY1}" in rolled.stdout and "PINNED" in rolled.stdout
        wait_for(
            lambda: served_version(server, "tops") == published["tops", DAY1],
            30,
            "the service to serve the rolled-back version",
            every=0.2,
        )
        # Answered from the older version: day 2's product is unknown again, day 1's are served.
        assert answers(server, added_on_day2) == 404
        assert answers(server, day_ids("tops", DAY1, 1)[0]) == 200
        assert served_version(server, "pants") == published["pants", DAY2]  # untouched

        refused = run_command(
            [CLI, "rollback", "--category", "tops", "--day", "2026-10-01"], env, 60
        )
        assert refused.returncode != 0 and "no kept version of 2026-10-01" in refused.stderr

        unpinned = run_command([CLI, "unpin", "--category", "tops"], env, timeout=120)
        assert unpinned.returncode == 0, unpinned.stderr[-2000:]
        wait_for(
            lambda: served_version(server, "tops") == published["tops", DAY2],
            30,
            "the service to serve the newest version again",
            every=0.2,
        )
        pointer = current.read_pointer(storage, "tops")
        assert pointer is not None and pointer.pin is None
    finally:
        server.service.stop()
