"""The documentation renders, and its kernel-free partial-scan demo responds to the reader in a browser.

Quarto cannot be installed here, so the pages are made by `nbdev-proc-nbs` + nbconvert (tests/docs_render.py)
and opened in headless Chromium (Debian's package) driven by Playwright."""
import json
import shutil
from pathlib import Path

import pytest

from docs_render import build_docs

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    build_docs(out, tmp_path_factory.mktemp("work"))
    return out


def test_every_notebook_has_a_page(site):
    nbs = {p.stem for p in (Path(__file__).resolve().parents[1] / "nbs").glob("*.ipynb")}
    pages = {p.stem for p in site.glob("*.html")}
    assert nbs <= pages, f"no page for {sorted(nbs - pages)}"
    errors = json.loads((site / "errors.json").read_text())
    assert not errors, f"pages that show an error output: {errors}"


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None: pytest.skip("Debian chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def test_pages_open_in_chromium(site, browser):
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    for html in sorted(site.glob("*.html")):
        page.goto(html.as_uri())
        assert page.locator("body").inner_text().strip(), f"{html.name} is empty"
    assert not [e for e in errors if "em-ssl" in e or "em_ssl" in e], errors
    page.goto((site / "index.html").as_uri())
    assert page.locator("#em-ssl-chapters a").count() >= 3


def test_scan_demo_responds_without_kernel(site, browser, tmp_path):
    page = browser.new_page()
    page.goto((site / "01_scans.html").as_uri())
    demo = page.locator("#em-ssl-scan-demo").first
    assert demo.count() == 1, "the rendered 01_scans page has no kernel-free demo"
    frame, label = demo.locator("img.em-ssl-frame"), demo.locator(".em-ssl-label")
    slider, scan = demo.locator("input.em-ssl-coverage"), demo.locator("select.em-ssl-scan")
    src0, label0 = frame.get_attribute("src"), label.inner_text()
    lo, hi = slider.get_attribute("min"), slider.get_attribute("max")
    slider.fill(hi if slider.input_value() != hi else lo)  # fires input/change like a drag would
    src1, label1 = frame.get_attribute("src"), label.inner_text()
    assert src1 != src0 and label1 != label0, "moving the coverage slider changed nothing"
    options = scan.locator("option").all_inner_texts()
    assert len(options) >= 2
    current = scan.input_value()
    other = next(v for v in scan.locator("option").evaluate_all("os => os.map(o => o.value)") if v != current)
    scan.select_option(other)
    assert frame.get_attribute("src") != src1 and other in label.inner_text().lower(), "changing the scan type changed nothing"
    demo.screenshot(path=str(tmp_path / "scan_demo.png"))
