"""The report in real headless Chromium: loads without console errors, sorts on header click.

Needs the Debian packages ``chromium`` and ``chromium-driver`` (``/usr/bin/chromium``,
``/usr/bin/chromedriver``) and ``selenium``; skipped, with the reason, when they are missing.
Set ``IQAGUARD_REPORT_SCREENSHOT=/path/shot.png`` to keep the screenshot (default: pytest tmp).
"""
import os
from pathlib import Path

import pytest
from conftest import load_synthetic

from iqaguard.bench import report

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip(f"headless Chromium not installed ({CHROMIUM}, {CHROMEDRIVER}): "
                "apt-get install chromium chromium-driver", allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed: pip install selenium")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402


# 12 images per group (>= MIN_N_CORRELATION): every row is ranked, as in tests/test_report.py
SMALL = dict(n_images=12, defenses=["jpeg", "flip", "diffpure"], metrics=["builtin-nr", "lpips-like"],
             datasets=["koniq10k", "nips2017"], attacks=["ifgsm"])

FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1280,2000")


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    store = load_synthetic().build_store(tmp / "s.duckdb", **SMALL)
    return report.write_report(store, tmp / "out")


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    os.environ.setdefault("SE_AVOID_STATS", "true")
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('profile')}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(options=opts, service=Service(str(CHROMEDRIVER)))
    drv.set_page_load_timeout(20)
    yield drv
    drv.quit()


def _column(table, key):
    """Values of the numeric column ``key`` in the current row order (None for empty cells)."""
    heads = table.find_elements(By.CSS_SELECTOR, "thead th")
    index = next(i for i, h in enumerate(heads) if h.get_attribute("data-key") == key)
    cells = table.find_elements(By.CSS_SELECTOR, f"tbody tr td:nth-child({index + 1})")
    return heads[index], [float(c.get_attribute("data-value")) if c.get_attribute("data-value") else None
                          for c in cells]


def test_page_loads_sorts_and_screenshots(driver, page, tmp_path):
    driver.get(page.resolve().as_uri())
    assert driver.title == "iqaguard benchmark report"
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
    assert driver.execute_script("return document.querySelectorAll('svg.chart').length") == 6

    table = driver.find_element(By.ID, "lb-purification-non-adaptive")
    rows = table.find_elements(By.CSS_SELECTOR, "tbody tr")
    assert sorted(r.get_attribute("data-defense") for r in rows) == ["diffpure", "flip", "jpeg", "none"]

    # the page opens in rank order (the "#" column; the ranks follow SROCC adv). Before, the SROCC adv
    # header claimed the order, which is wrong once unranked (n < 10) rows are listed last.
    head, ranks = _column(table, "rank")
    assert head.get_attribute("aria-sort") == "ascending" and ranks == sorted(ranks) == [1.0, 2.0, 3.0, 4.0]
    head, before = _column(table, "srocc_adv")
    assert head.get_attribute("aria-sort") == "none" and before == sorted(before, reverse=True)

    head, _ = _column(table, "d_score_d")
    head.click()
    head, values = _column(table, "d_score_d")
    assert head.get_attribute("aria-sort") == "ascending" and values == sorted(values)
    assert _column(table, "rank")[0].get_attribute("aria-sort") == "none"
    head.click()
    head, values = _column(table, "d_score_d")
    assert head.get_attribute("aria-sort") == "descending" and values == sorted(values, reverse=True)
    assert len(set(values)) > 1  # the order really changed between the two clicks

    other = driver.find_element(By.ID, "lb-purification-adaptive")
    assert _column(other, "d_score_d")[0].get_attribute("aria-sort") == "none"  # tables sort independently
    assert [e for e in driver.get_log("browser") if e["level"] == "SEVERE"] == []

    shot = Path(os.environ.get("IQAGUARD_REPORT_SCREENSHOT") or tmp_path / "report.png")
    shot.parent.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
