"""The documentation renders, and its kernel-free partial-scan demo responds to the reader in a browser.

Quarto cannot be installed here, so the pages are made by `nbdev-proc-nbs` + nbconvert (tests/docs_render.py)
and opened in headless Chromium (Debian's package) driven by Playwright, with every non-file:// request refused:
the site must work offline (math by KaTeX from Debian's libjs-katex, copied into the site)."""
import json
import shutil
from pathlib import Path

import pytest

from docs_render import build_docs

ROOT = Path(__file__).resolve().parents[1]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    build_docs(out, tmp_path_factory.mktemp("work"))
    return out


def source_notebooks() -> list[str]:
    "The notebooks of the site, as page names: `04_alrc`, `tutorials/01_partial_scans_of_your_micrograph`, `results`."
    nbs = ROOT / "nbs"
    return sorted(p.relative_to(nbs).with_suffix("").as_posix() for p in nbs.rglob("*.ipynb")
                  if not any(part.startswith((".", "_")) for part in p.relative_to(nbs).parts))


def test_every_notebook_has_a_page(site):
    nbs = set(source_notebooks())
    pages = {p.relative_to(site).with_suffix("").as_posix() for p in site.rglob("*.html")}
    assert {"results", "tutorials/01_partial_scans_of_your_micrograph"} <= nbs
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


# What the browser sees on each page: collected once per session, in one pass over the pages
PAGE_SCAN_JS = """() => {
  const attrs = (sel, a) => Array.from(document.querySelectorAll(sel)).map(e => e.getAttribute(a)).filter(v => v);
  const text = Array.from(document.querySelectorAll(".jp-RenderedMarkdown, .jp-RenderedLatex")).map(el => {
    const c = el.cloneNode(true);
    c.querySelectorAll("pre, code, .katex, script, style").forEach(x => x.remove());
    return c.textContent;
  }).join("\\n");
  const sources = Array.from(document.querySelectorAll("a")).filter(a => a.textContent.trim() == "source").map(a => a.getAttribute("href"));
  return {body: document.body.innerText, links: attrs("a[href]", "href"),
          assets: attrs("img[src]", "src").concat(attrs("script[src]", "src"), attrs("link[href]", "href")),
          markdown: text, sources: sources, katex: document.querySelectorAll(".katex").length,
          katex_errors: Array.from(document.querySelectorAll(".katex-error")).map(e => e.getAttribute("title") || e.textContent),
          current: Array.from(document.querySelectorAll("#em-ssl-chapters a.em-ssl-current")).map(a => a.getAttribute("href"))};
}"""


@pytest.fixture(scope="module")
def seen(site, browser) -> dict:
    "{page path relative to the site: what Chromium shows}, every page opened once, offline (all requests but file:// fail)."
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.route(lambda url: not url.startswith("file:"), lambda route: route.abort())
    res = {}
    for html in sorted(site.rglob("*.html")):
        page.goto(html.as_uri())
        page.wait_for_load_state("load")
        res[html.relative_to(site).as_posix()] = page.evaluate(PAGE_SCAN_JS)
    page.close()
    res["__errors__"] = errors
    return res


def test_pages_open_in_chromium(seen):
    errors = seen.pop("__errors__", [])
    for name, s in seen.items(): assert s["body"].strip(), f"{name} is empty"
    assert not errors, f"JavaScript errors: {errors}"
    assert len(seen["index.html"]["links"]) >= 3


def test_sidebar_on_every_page(seen):
    "Every page's sidebar links every chapter, tutorial and the results page, and highlights the page itself."
    import posixpath
    pages = {k: v for k, v in seen.items() if not k.startswith("__")}
    for name, s in pages.items():
        here = posixpath.dirname(name)
        current = [posixpath.normpath(posixpath.join(here, h)) for h in s["current"]]
        if name != "index.html": assert current == [name], f"{name}: the sidebar does not highlight it ({s['current']})"
        linked = {posixpath.normpath(posixpath.join(here, l)).removesuffix(".html") for l in s["links"] if l.endswith(".html")}
        missing = set(source_notebooks()) - linked
        assert not missing, f"{name}: the sidebar does not list {sorted(missing)}"
    for page in ("04_alrc.html", "tutorials/01_partial_scans_of_your_micrograph.html"):
        for group in ("Foundations", "Core layer", "Methods", "Command line", "Tutorials", "Results"):
            assert group.upper() in seen[page]["body"].upper(), f"{page}: no sidebar group {group}"


def test_no_broken_local_link_or_asset(site, seen):
    import re
    from docs_render import repo_settings
    repo = repo_settings()
    broken, bad_source = [], []
    pending = {m.split(": ", 1)[1] for m in json.loads((site / "missing_images.json").read_text())}  # test_benchmark_figures_exist
    for name, s in seen.items():
        if name.startswith("__"): continue
        here = (site / name).parent
        for url in s["links"] + s["assets"]:
            if re.match(r"[a-z]+:", url) or url.startswith("//"):
                assert not url.startswith("http://") or "localhost" in url, f"{name}: insecure link {url}"
                continue
            path, _, anchor = url.partition("#")
            target = (here / path) if path else site / name
            if not target.is_file() and not any(url.endswith(p.split("/", 1)[-1]) for p in pending): broken.append(f"{name}: {url}")
            elif anchor and target.suffix == ".html" and f'id="{anchor}"' not in target.read_text(encoding="utf-8"):
                broken.append(f"{name}: {url} (no such anchor)")
        for url in s["sources"]:
            prefix = f"{repo['git_url']}/blob/{repo['branch']}/"
            if not (url.startswith("https://github.com/") and url.startswith(prefix)
                    and (ROOT / url[len(prefix):].partition("#")[0]).is_file()): bad_source.append(f"{name}: {url}")
    assert not broken, f"broken local links or assets: {broken[:20]}"
    assert not bad_source, f"source links not to {repo}: {bad_source[:10]}"
    assert any(s["sources"] for k, s in seen.items() if not k.startswith("__")), "no source link at all"


def test_math_renders_offline(seen):
    import re
    assert seen["04_alrc.html"]["katex"] > 5, "KaTeX rendered no math on the 04_alrc page"
    raw = {k: re.findall(r"\$[^$\n]{1,60}\$|\\\(.{0,40}", s["markdown"]) for k, s in seen.items() if not k.startswith("__")}
    assert not {k: v for k, v in raw.items() if v}, f"raw LaTeX left on pages: { {k: v[:3] for k, v in raw.items() if v} }"
    errors = {k: s["katex_errors"][:3] for k, s in seen.items() if not k.startswith("__") and s["katex_errors"]}
    assert not errors, f"math KaTeX cannot render: {errors}"


def test_no_prompts_progress_bars_or_warnings(site, seen):
    for name, s in seen.items():
        if name.startswith("__"): continue
        assert "In [" not in s["body"] and "In\xa0[" not in s["body"] and "Out[" not in s["body"], f"{name} shows prompts"
    for html in site.rglob("*.html"):
        text = html.read_text(encoding="utf-8")
        assert "<progress" not in text and "jp-OutputArea-stderr" not in text and 'data-mime-type="application/vnd.jupyter.stderr"' not in text, \
            f"{html.name} shows a stored progress bar or warning"


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


def test_benchmark_figures_exist(site):
    "Pages link figures of benchmarks/results by relative paths: every one exists (the build copies it into the site)."
    missing = json.loads((site / "missing_images.json").read_text())
    assert not missing, f"pages link figures that are not in the repository (run the benchmark that makes them): {missing}"


def test_tutorial_pages_show_benchmark_figures(site, seen):
    "The tutorials link figures in ../../benchmarks/results: the site carries copies and the pages show them."
    tutorials = {k: v for k, v in seen.items() if k.startswith("tutorials/")}
    assert len(tutorials) >= 4, sorted(tutorials)
    shown = [a for a in seen["tutorials/01_partial_scans_of_your_micrograph.html"]["assets"] if "benchmarks/results/" in a]
    assert any(a.endswith("completion_matrix_ws2.png") for a in shown) and any(a.endswith("completion_worst_ws2.png") for a in shown), shown
    for a in shown: assert (site / "tutorials" / a).resolve().is_file(), a


def test_results_page_shows_every_table(site, seen):
    "The results page is built afresh: it shows a line of every table in benchmarks/results, and their figures."
    import re
    body = " ".join(seen["results.html"]["body"].split())
    for table in sorted((ROOT / "benchmarks" / "results").glob("*.md")):
        rows = [l for l in table.read_text(encoding="utf-8").splitlines() if l.startswith("|") and not set(l) <= set("|-: ")]
        if not rows: continue
        cells = [re.sub(r"[*`]", "", c).strip() for c in rows[1 if len(rows) > 1 else 0].strip("|").split("|")]
        words = max(cells, key=len)                                    # the most telling cell of the first data row
        assert words and " ".join(words.split()) in body, f"results page does not show {table.name} ({words!r})"
    assert "Results" in seen["index.html"]["body"] or "RESULTS" in seen["index.html"]["body"].upper()
    assert sum(1 for a in seen["results.html"]["assets"] if a.startswith("data:image/png")) >= 3


def test_scan_demo_page_completion_demo_responds(site, browser):
    "The completion demo on the 01a_scan_demo page: every selector changes the frames, the coverage also the stated dose."
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto((site / "01a_scan_demo.html").as_uri())
    demo = page.locator("#em-ssl-completion-demo")
    assert demo.count() == 1, "the rendered 01a_scan_demo page has no completion demo"
    frames = lambda: tuple(demo.locator(f"img.em-ssl-{k}").get_attribute("src") for k in ("partial", "completed", "error"))
    dose, label = demo.locator(".em-ssl-dose"), demo.locator(".em-ssl-label")
    assert dose.inner_text().startswith("1/20 coverage: 20x less dose, 5.0 % of the full-scan time")
    assert all(src.startswith("data:image/") for src in frames())
    assert demo.locator("img.em-ssl-original").get_attribute("src").startswith("data:image/png")
    for cls, value, text in (("coverage", "3", "1/100 coverage: 100x less dose, 1.0 % of the full-scan time"),
                             ("noise", "Poisson 20 e/px", None), ("scan", "random", None)):
        before, before_label = frames(), label.inner_text()
        demo.locator(f"select.em-ssl-{cls}").select_option(value)
        after = frames()
        assert all(a != b for a, b in zip(after, before)), f"choosing {cls}={value} did not change every frame"
        assert label.inner_text() != before_label
        if text: assert dose.inner_text() == text, dose.inner_text()
    assert "random scan, 1/100 coverage, noise: Poisson 20 e/px" in label.inner_text()
    assert not errors, errors
    page.close()
