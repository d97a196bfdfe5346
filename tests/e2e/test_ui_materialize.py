"""A person's path through the UI: asset graph → select one category → one partition → run."""

import contextlib
from datetime import timedelta

import pytest

from image_search_assets.core.index.annoy_index import load_current
from image_search_assets.core.storage import open_storage
from image_search_assets.settings import load_settings
from tests.e2e.browser import Browser, require_browser
from tests.e2e.harness import (
    ARTIFACTS,
    GPU_BUDGET,
    GPU_POOL,
    DagsterDev,
    today_in_zone,
    write_instance,
    write_platform,
)

pytestmark = pytest.mark.e2e

SELECTION = '+key:"tops/annoy_index"'  # tops' chain and the ingest it reads: 6 assets
RUN = """
query($id: ID!) {
  runOrError(runId: $id) {
    ... on Run { status tags { key value } assetSelection { path } assetCheckSelection { name } }
  }
}"""
LOGS = """
query($id: ID!) {
  logsForRun(runId: $id) {
    ... on EventConnection { events { ... on MessageEvent { message stepKey } } }
  }
}"""


@pytest.fixture
def browser(tmp_path):
    require_browser()
    browser = Browser(tmp_path / "process-logs")
    yield browser
    browser.close()


def dismiss_community_modal(browser: Browser) -> None:
    """A fresh instance greets its first visitor with a newsletter dialog; skip it."""
    from selenium.common.exceptions import TimeoutException

    with contextlib.suppress(TimeoutException):  # no dialog: nothing to dismiss
        browser.button("Skip", timeout=5).click()


def test_materialise_one_partition_of_one_category_from_the_ui(tmp_path, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    day = today_in_zone() - timedelta(days=2)
    config = write_platform(tmp_path, day, days=1)
    with DagsterDev(write_instance(tmp_path / "home"), config) as dagster:
        page = browser.driver
        page.get(f"{dagster.url}/asset-groups")
        browser.button("Materialize all")
        dismiss_community_modal(browser)

        # The asset selection box is a CodeMirror editor: type into its hidden textarea.
        editor = page.find_element(By.CSS_SELECTOR, ".CodeMirror")
        editor.click()
        editor.find_element(By.CSS_SELECTOR, "textarea").send_keys(SELECTION, Keys.ENTER)
        browser.until(lambda d: "tops%2Fannoy_index" in d.current_url)

        browser.button("Materialize all").click()
        dialog = browser.until(lambda d: d.find_element(By.CSS_SELECTOR, "[role=dialog]"))
        assert "materialize 6 assets" in dialog.text
        partitions = dialog.find_element(By.CSS_SELECTOR, "input")
        partitions.click()
        partitions.send_keys(day.isoformat(), Keys.ENTER)
        browser.button("Launch 1 run").click()

        link = browser.until(lambda d: d.find_element(By.CSS_SELECTOR, "a[href*='/runs/']"))
        run_id = link.get_attribute("href").rstrip("/").rsplit("/", 1)[1]
        page.get(f"{dagster.url}/runs/{run_id}")
        assert dagster.wait_run(run_id, timeout=300) == "SUCCESS"
        # The run page's status tag turns to "Success" as the UI receives the run's events.
        browser.until(lambda d: d.find_elements(By.XPATH, "//*[normalize-space(text())='Success']"))
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.save_screenshot(str(ARTIFACTS / "ui_materialize.png"))

        page.get(f"{dagster.url}/assets/tops/annoy_index?view=checks")
        browser.until(lambda d: d.page_source.count("Succeeded") >= 4, 60)
        page.save_screenshot(str(ARTIFACTS / "ui_checks.png"))
        run = dagster.graphql(RUN, id=run_id)["runOrError"]
        events = dagster.graphql(LOGS, id=run_id)["logsForRun"]["events"]

    tags = {t["key"]: t["value"] for t in run["tags"]}
    assert tags["dagster/partition"] == day.isoformat()
    assert sorted("/".join(a["path"]) for a in run["assetSelection"]) == [
        "new_products",
        "product_images",
        "removals",
        "tops/annoy_index",
        "tops/detections",
        "tops/embeddings",
    ]
    # tops' index checks ran with it: recall, vectors, accounting, reach, served ids, freshness.
    assert len(run["assetCheckSelection"]) == 6
    # The UI's run went through the weighted GPU pool: each tops GPU step was granted 4 GPUs.
    granted = {
        e["stepKey"]: e["message"]
        for e in events
        if e.get("message", "").startswith(f"GPU pool {GPU_POOL}: granted")
    }
    assert sorted(granted) == ["tops__detections", "tops__embeddings"], granted
    assert all(f"granted 4 GPU(s); 3 of {GPU_BUDGET} left free" in m for m in granted.values())
    served = load_current(open_storage(load_settings(config).storage_root), "tops")
    assert (served.manifest["date"], served.manifest["count"]) == (day.isoformat(), 4)
