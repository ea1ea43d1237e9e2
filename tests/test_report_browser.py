"""The review page from a real run, opened in real headless Chromium (Debian's chromium + chromedriver)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import ARTIFACTS
from videogen import write_stamped_video

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1280,1600"]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("needs Debian's chromium and chromium-driver (make test installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS + [f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def run_output(tmp_path_factory, samples, stamped, tiny_models) -> Path:
    videos = tmp_path_factory.mktemp("videos")
    for name in ("bikes.mp4", "carphone_pristine.mp4"):
        shutil.copyfile(samples / name, videos / name)
    shutil.copyfile(stamped(600, 30), videos / "stamped.mp4")
    write_stamped_video(videos / "strip.mp4", 60, 30, width=1680, height=8)  # windows fail: aspect ratio
    (videos / "broken.mp4").write_text("not a video")
    output = tmp_path_factory.mktemp("run") / "out"
    result = subprocess.run(
        [sys.executable, "-m", "daskcap.cli", "run", str(videos), str(output), "--captioning-model", str(tiny_models["vlm"]),
         "--captioning-stage2-caption", "--enhance-captions", "--enhance-captions-model", str(tiny_models["lm"]),
         "--captioning-max-output-tokens", "16", "--enhance-captions-max-output-tokens", "16", "--quiet"],
        capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stderr
    assert "report/index.html" in result.stdout
    return output


def _open(driver, page: Path) -> None:
    driver.get(page.as_uri())
    deadline = time.time() + 30
    while time.time() < deadline:
        if driver.execute_script("return [...document.images].every((i) => i.complete)"):
            return
        time.sleep(0.2)
    raise AssertionError("images did not finish loading")


def _cards(driver) -> int:
    return driver.execute_script("return document.querySelectorAll('#grid .card').length")


def _set(driver, element_id: str, value: str) -> None:
    driver.execute_script(
        "const el = document.getElementById(arguments[0]); el.value = arguments[1];"
        "el.dispatchEvent(new Event(el.tagName === 'SELECT' ? 'change' : 'input'));",
        element_id, value,
    )
    time.sleep(0.4)  # the search box debounces its input


def test_report_in_chromium(browser, run_output):
    windows = pd.read_parquet(run_output / "windows")
    page = run_output / "report" / "index.html"
    _open(browser, page)

    # Every window is on the page, each visible preview decoded.
    assert _cards(browser) == len(windows) == 5
    widths = browser.execute_script("return [...document.querySelectorAll('#grid img.preview')].map((i) => i.naturalWidth)")
    assert len(widths) == int(windows["preview_path"].notna().sum()) == 4 and all(w > 0 for w in widths)
    # Self-contained: no external script or stylesheet; images are local preview files.
    assert browser.execute_script("return document.querySelectorAll('script[src], link[href]').length") == 0
    sources = browser.execute_script("return [...document.images].map((i) => i.src)")
    assert all(src.startswith((run_output / "previews").as_uri()) for src in sources)
    # Captions, stage-1 and enhanced captions are on the cards.
    ok = windows[windows["status"] == "ok"].iloc[0]
    body = browser.execute_script("return document.getElementById('grid').textContent")
    assert ok["caption"] in body and ok["enhanced_caption"] in body
    expandable = browser.execute_script("return document.querySelectorAll('#grid details.enhanced').length")
    assert expandable == int(windows["enhanced_caption"].notna().sum()) == 4

    # Search narrows the grid.
    _set(browser, "search", ok["caption"])
    assert 1 <= _cards(browser) < len(windows)
    _set(browser, "search", "")
    assert _cards(browser) == len(windows)

    # The status filter shows the failed windows, with their messages.
    _set(browser, "status-filter", "encode_failed")
    assert _cards(browser) == int((windows["status"] == "encode_failed").sum()) == 1
    assert "aspect ratio" in browser.execute_script("return document.getElementById('grid').textContent")
    _set(browser, "status-filter", "")

    # Errors list the failures and the broken input.
    errors = browser.execute_script("return document.getElementById('error-list').textContent")
    assert "broken.mp4" in errors and "read_failed" in errors and "encode_failed" in errors

    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "report.png"))
    severe = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert severe == []


def test_ten_thousand_windows_page_and_filter(browser, run_output, tmp_path):
    """A synthetic 10,000-window table (reusing the run's previews) renders one page at a time."""
    from daskcap.report import build_report

    big = tmp_path / "big"
    shutil.copytree(run_output / "previews", big / "previews")
    summary = json.loads((run_output / "summary.json").read_text())
    windows = pd.read_parquet(run_output / "windows")
    windows = windows[windows["preview_path"].notna()]
    rows = pd.concat([windows] * (10_000 // len(windows) + 1), ignore_index=True).iloc[:10_000].copy()
    rows["window_index"] = range(len(rows))
    rows.loc[rows.index % 1000 == 7, "caption"] = "needle in the haystack"
    (big / "windows").mkdir()
    rows.to_parquet(big / "windows" / "part-00000.parquet")
    shutil.copytree(run_output / "videos", big / "videos")
    (big / "summary.json").write_text(json.dumps(summary))
    page = Path(build_report(str(big)))

    _open(browser, page)
    assert _cards(browser) == 48
    assert "10000 of 10000 windows" in browser.execute_script("return document.getElementById('count').textContent")
    _set(browser, "search", "needle in the haystack")
    assert _cards(browser) == 10
    browser.execute_script("document.getElementById('next').click()")
    assert browser.execute_script("return document.getElementById('page-info').textContent") == "page 1 of 1"
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []


def test_the_grid_filters_by_caption_flag(browser, run_output):
    windows = pd.read_parquet(run_output / "windows")
    cut = int(sum("truncated" in (flags if flags is not None else []) for flags in windows["enhance_flags"]))
    assert cut > 0  # 16 tokens cut every enhanced caption of these windows
    _open(browser, run_output / "report" / "index.html")
    options = browser.execute_script("return [...document.getElementById('flag-filter').options].map((o) => o.value)")
    assert "enhanced truncated" in options
    _set(browser, "flag-filter", "enhanced truncated")
    assert _cards(browser) == min(cut, 48)
    assert browser.execute_script("return [...document.querySelectorAll('#grid .badge.flag')].every((b) => b.closest('.card').textContent.includes('enhanced truncated'))")
    _set(browser, "flag-filter", "-")
    size = lambda flags: 0 if flags is None else len(flags)  # noqa: E731
    unflagged = sum(size(c) + size(e) == 0 for c, e in zip(windows["caption_flags"], windows["enhance_flags"], strict=True))
    assert _cards(browser) == min(unflagged, 48)
    assert "flagged captions" in browser.execute_script("return document.getElementById('summary').textContent")
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
