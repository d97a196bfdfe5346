"""The service's HTML page in headless Chromium: pick a product, see its neighbours."""

from __future__ import annotations

import pytest

from image_search_assets.core.storage import LocalStorage
from tests.e2e.browser import Browser, require_browser
from tests.e2e.harness import ARTIFACTS
from tests.e2e.service import CATEGORIES, DAY1, Server, store_images, write_config
from tests.serving.conftest import day_ids, publish_day

pytestmark = pytest.mark.e2e


def test_page_shows_a_products_neighbours_as_pictures(tmp_path):
    require_browser()
    storage = LocalStorage(tmp_path / "storage")
    for category, n in zip(CATEGORIES, (24, 12), strict=True):
        ids = day_ids(category, DAY1, n)
        publish_day(storage, category, DAY1, ids)
        store_images(storage, category, DAY1, ids)
    config = write_config(tmp_path, str(tmp_path / "storage"))
    server = Server(config, tmp_path / "cache", tmp_path / "logs", "--no-image-queries")
    browser = Browser(tmp_path / "logs")
    try:
        from selenium.webdriver.common.by import By

        d = browser.driver
        d.get(server.url + "/")
        browser.until(lambda dr: dr.find_element(By.ID, "product").get_attribute("value"))
        field = d.find_element(By.ID, "product")
        field.clear()
        field.send_keys("tops-2026-11-01-005")
        browser.button("Show neighbours").click()
        loaded = (
            "return [...document.querySelectorAll('#results img, #query img')]"
            ".filter(i => i.complete && i.naturalWidth > 0).length"
        )
        browser.until(lambda dr: dr.execute_script(loaded) == 9)  # the query + k=8 neighbours
        captions = [f.text for f in d.find_elements(By.CSS_SELECTOR, "#results figcaption")]
        assert len(captions) == 8 and all("tops" in c and "distance" in c for c in captions)
        assert "tops-2026-11-01-005" not in " ".join(captions)
        assert "8 neighbours from tops" in d.find_element(By.ID, "status").text
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        d.save_screenshot(str(ARTIFACTS / "serving_page.png"))
        field.clear()
        field.send_keys("nobody")
        browser.button("Show neighbours").click()
        browser.until(lambda dr: "in no served index" in dr.find_element(By.ID, "status").text)
    finally:
        browser.close()
        server.service.stop()
