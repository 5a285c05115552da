"""The built site in a real browser: Debian's headless Chromium, driven by selenium through Debian's chromedriver.

The site (the ``docs_site`` fixture, built strictly) is served on localhost. For a tutorial page, the
configuration reference, an API page and a concepts page full of maths, the test checks that the page
renders with its headings, that MathJax typeset every formula (SVG output present, no raw ``$...$``,
``\\(...\\)`` or ``.. math::`` left in the text), that every image loaded (``naturalWidth > 0``), and that
search answers a query. A screenshot of each page is kept in the test's temporary folder, and also in
``$EQUIMOL_DOCS_SCREENSHOTS`` when set (``docs/screenshots/`` holds one committed set).
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import tempfile
import threading
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT_S = 60
# (page, screenshot name, the h1 it must show, the least number of h2 headings)
PAGES = [
    ("tutorials/train-3bpa/", "tutorial", "Train on 3BPA", 4),
    ("reference/configuration/", "configuration", "Configuration reference", 8),
    ("reference/api/tp/", "api", "equimol.tp", 3),
    ("concepts/tensor-products/", "concepts", "The TP interface", 5),
]
RAW_MATH = re.compile(r"\$\$|\\\(|\\\)|\\\[|\\\]|(?<![\w$])\$[^$\s][^$\n]*\$(?![\w$])|\.\. math::")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # the test's output stays readable
        pass


@pytest.fixture(scope="module")
def site_url(docs_site: Path):
    """The built site served over HTTP on a free localhost port for the module's tests."""
    handler = functools.partial(_QuietHandler, directory=str(docs_site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    """Headless Debian Chromium with a fresh profile; nothing is downloaded (the driver is Debian's)."""
    for path in (CHROMIUM, CHROMEDRIVER):
        assert Path(path).is_file(), f"{path} is missing: bash scripts/setup.sh installs chromium and chromium-driver"
    profile = tempfile.mkdtemp(prefix="equimol-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1280,900",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _screenshot(driver, name: str, folder: Path) -> None:
    targets = [folder]
    if os.environ.get("EQUIMOL_DOCS_SCREENSHOTS"):
        targets.append(Path(os.environ["EQUIMOL_DOCS_SCREENSHOTS"]))
    for target in targets:
        target.mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(target / f"{name}.png")), name


def _typeset(driver) -> bool:
    """MathJax has typeset every formula arithmatex marked (each holds MathJax's output element)."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('.arithmatex')).every(e => e.querySelector('mjx-container'))"
    )


@pytest.mark.parametrize("page, name, title, min_h2", PAGES, ids=[p[1] for p in PAGES])
def test_page_renders(browser, site_url: str, tmp_path: Path, page: str, name: str, title: str, min_h2: int):
    browser.get(site_url + page)
    WebDriverWait(browser, WAIT_S).until(lambda d: d.execute_script("return document.readyState") == "complete")
    heading = browser.find_element(By.CSS_SELECTOR, "article h1").text
    assert title in heading, heading
    assert len(browser.find_elements(By.CSS_SELECTOR, "article h2")) >= min_h2
    math = browser.find_elements(By.CSS_SELECTOR, ".arithmatex")
    if math:
        WebDriverWait(browser, WAIT_S).until(_typeset)
        assert browser.find_elements(By.CSS_SELECTOR, "mjx-container svg")
    article_text = browser.find_element(By.CSS_SELECTOR, "article").text
    code_text = "\n".join(e.text for e in browser.find_elements(By.CSS_SELECTOR, "article pre, article code"))
    prose = article_text
    for line in code_text.splitlines():
        prose = prose.replace(line, "")
    leftovers = RAW_MATH.findall(prose)
    assert not leftovers, f"untypeset maths on {page}: {leftovers[:5]}"
    WebDriverWait(browser, WAIT_S).until(
        lambda d: d.execute_script("return Array.from(document.images).every(i => i.complete)")
    )
    broken = browser.execute_script(
        "return Array.from(document.images).filter(i => i.naturalWidth === 0).map(i => i.src)"
    )
    assert not broken, f"images that did not load on {page}: {broken}"
    errors = [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not errors, f"errors in the browser console on {page}: {errors}"
    _screenshot(browser, name, tmp_path)


def test_concepts_page_has_maths(browser, site_url: str) -> None:
    """The maths check above is not vacuous: the concepts page holds formulas, and MathJax drew them."""
    browser.get(site_url + "concepts/tensor-products/")
    WebDriverWait(browser, WAIT_S).until(_typeset)
    assert len(browser.find_elements(By.CSS_SELECTOR, "mjx-container svg")) >= 10


def test_images_load(browser, site_url: str) -> None:
    """A page with plots rendered from benchmarks/: every image arrives (a broken src has naturalWidth 0)."""
    browser.get(site_url + "benchmarks/speed/")
    WebDriverWait(browser, WAIT_S).until(
        lambda d: d.execute_script("return Array.from(document.images).every(i => i.complete)")
    )
    widths = browser.execute_script("return Array.from(document.images).map(i => i.naturalWidth)")
    assert len(widths) >= 2 and min(widths) > 0, widths


def test_search_finds_a_page(browser, site_url: str, tmp_path: Path) -> None:
    browser.get(site_url)
    field = WebDriverWait(browser, WAIT_S).until(
        lambda d: next(
            (e for e in d.find_elements(By.CSS_SELECTOR, "input.md-search__input") if e.is_displayed()), False
        )
    )
    field.click()
    field.send_keys("Gaunt")
    results = WebDriverWait(browser, WAIT_S).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, ".md-search-result__item") or False
    )
    assert results
    assert any("gaunt" in item.text.lower() for item in results)
    _screenshot(browser, "search", tmp_path)
