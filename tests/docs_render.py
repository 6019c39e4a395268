"""Render the documentation without Quarto: `nbdev-proc-nbs` (nbdev's own pre-processing, exactly what
`nbdev-docs` feeds Quarto) followed by an nbconvert HTML page per processed notebook, each with a chapter sidebar.
The site is static and works offline (file:// or any static server): KaTeX, from Debian's `libjs-katex` or npm's
`katex`, is copied into `OUT_DIR/_static` with nbs/styles.css, and nothing is fetched at build or read time.

Users with Quarto installed run `nbdev-docs` instead. Usage: `python tests/docs_render.py [OUT_DIR]`.
(`--doc-cells`, run in a project folder, is used internally to name every notebook whose docs cells fail.)"""
from __future__ import annotations

import html
import posixpath
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT_FILES = ["nbs", "em_ssl", "pyproject.toml", "settings.ini", "setup.py", "_quarto.yml", "README.md"]


def proc_nbs(work: Path) -> Path:
    "Copy the project to `work` and run `nbdev-proc-nbs` there; returns the `_proc` folder."
    for name in PROJECT_FILES:
        src = ROOT / name
        if src.is_dir(): shutil.copytree(src, work / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        else: shutil.copy2(src, work / name)
    res = subprocess.run(["nbdev-proc-nbs"], cwd=work, capture_output=True, text=True)
    if res.returncode != 0:
        # nbdev-proc-nbs stops at the first failing notebook: name every one, then show nbdev's own output
        failing = doc_cell_failures(work)
        listing = "\n\n".join(f"{name}: {err}" for name, err in failing.items())
        raise RuntimeError(f"nbdev-proc-nbs failed. Notebooks whose documentation cells fail ({len(failing)}):\n{listing}\n\n"
                           f"nbdev-proc-nbs output:\n{res.stdout}\n{res.stderr[-5000:]}")
    return work / "_proc"


DOC_CELLS_HINT = ("nbdev runs only some cells when it builds the docs: exported cells, show_doc cells and any cell that "
                  "contains an import; such a cell must not use names that only other (test) cells define. Move the "
                  "import into an imports-only cell.")


def doc_cell_failures(work: Path) -> dict[str, str]:
    """Run, notebook by notebook, the cells nbdev executes while building the docs (its `add_show_docs` and
    `exec_show_docs` processors) in a subprocess in `work`; {notebook: error} for each notebook that fails."""
    import json
    res = subprocess.run([sys.executable, __file__, "--doc-cells"], cwd=work, capture_output=True, text=True)
    try: failures = json.loads(res.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError): return {"(all)": f"could not check the documentation cells:\n{res.stderr[-3000:]}"}
    return {k: v + "\n" + DOC_CELLS_HINT for k, v in failures.items()}


def _doc_cells_main() -> None:
    "`--doc-cells`: print a JSON {notebook: error} for the notebooks in ./nbs whose documentation cells fail."
    import json, warnings
    from nbdev.process import NBProcessor
    from nbdev.processors import add_show_docs, exec_show_docs
    warnings.filterwarnings("ignore")
    failures = {}
    for nb in sorted(Path("nbs").glob("*.ipynb")):
        try: NBProcessor(nb, [add_show_docs, exec_show_docs], rm_directives=False).process()
        except Exception as e: failures[nb.name] = str(e)[-2000:]
    print(json.dumps(failures))


def error_outputs(nb) -> list[str]:
    "The `ename: evalue` of every error output saved in notebook `nb`."
    return [f"{o.get('ename')}: {o.get('evalue')}" for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]


def repo_settings() -> dict:
    "`git_url` and `branch` from settings.ini: the source links point at `{git_url}/blob/{branch}/{module path}`."
    import configparser
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "settings.ini")
    d = cfg["DEFAULT"]
    return {"git_url": d.get("git_url", "").rstrip("/"), "branch": d.get("branch", "main")}


# KaTeX renders the math offline. It comes from a package registry, never from a CDN at build or read time:
# Debian's `libjs-katex` (/usr/share/javascript/katex), npm's `katex` (node_modules/katex/dist), or KATEX_DIR.
KATEX_FILES = ["katex.min.js", "katex.min.css", "contrib/auto-render.js"]
KATEX_HINT = ("KaTeX (renders the math offline) not found: install it with `apt-get install libjs-katex` "
              "(Debian/Ubuntu), or `npm install katex` in the project folder, or set KATEX_DIR to a KaTeX dist folder")


def find_katex() -> Path:
    "The folder holding KaTeX's katex.min.js, katex.min.css, contrib/auto-render.js and fonts/."
    import os
    candidates = [os.environ.get("KATEX_DIR"), "/usr/share/javascript/katex", ROOT / "node_modules/katex/dist"]
    for c in candidates:
        if c and all((Path(c) / f).is_file() for f in KATEX_FILES) and (Path(c) / "fonts").is_dir(): return Path(c)
    raise FileNotFoundError(KATEX_HINT)


def copy_assets(out: Path) -> None:
    "Copy KaTeX (JS, CSS, fonts) and nbs/styles.css into `out/_static`, so the site works with no network."
    katex = find_katex()
    dest = out / "_static" / "katex"
    (dest / "contrib").mkdir(parents=True, exist_ok=True)
    for f in KATEX_FILES: shutil.copyfile(katex / f, dest / f)  # follows Debian's symlinks
    (dest / "fonts").mkdir(exist_ok=True)
    for font in (katex / "fonts").iterdir():
        if font.suffix in (".woff2", ".woff", ".ttf"): shutil.copyfile(font, dest / "fonts" / font.name)
    shutil.copyfile(ROOT / "nbs" / "styles.css", out / "_static" / "styles.css")
    (out / "_static" / "render-math.js").write_text(RENDER_MATH_JS, encoding="utf-8")


RENDER_MATH_JS = """// Typeset the $...$, $$...$$, \\\\(...\\\\) and \\\\[...\\\\] math of markdown cells and outputs with KaTeX.
document.addEventListener("DOMContentLoaded", function () {
  var opts = {delimiters: [{left: "$$", right: "$$", display: true}, {left: "\\\\[", right: "\\\\]", display: true},
                           {left: "$", right: "$", display: false}, {left: "\\\\(", right: "\\\\)", display: false}],
              // MathJax reads L_\\max; KaTeX needs the operator braced to use it as a subscript
              macros: {"\\\\max": "{\\\\operatorname*{max}}", "\\\\min": "{\\\\operatorname*{min}}"},
              throwOnError: false};
  document.querySelectorAll(".jp-RenderedMarkdown, .jp-RenderedLatex").forEach(function (el) { renderMathInElement(el, opts); });
});
"""

PAGE_TEMPLATE = """{%- extends 'index.html.j2' -%}
{% block html_head_js_requirejs %}{% endblock html_head_js_requirejs %}
{% block jupyter_widgets %}{% endblock jupyter_widgets %}
{% block html_head_js_mermaidjs %}{% endblock html_head_js_mermaidjs %}
{% block html_head_js_mathjax %}
<link rel="stylesheet" href="{{ resources.em_ssl.rel }}_static/katex/katex.min.css">
<script defer src="{{ resources.em_ssl.rel }}_static/katex/katex.min.js"></script>
<script defer src="{{ resources.em_ssl.rel }}_static/katex/contrib/auto-render.js"></script>
<script defer src="{{ resources.em_ssl.rel }}_static/render-math.js"></script>
{% endblock html_head_js_mathjax %}
{% block html_head_css %}<link rel="stylesheet" href="{{ resources.em_ssl.rel }}_static/styles.css">{% endblock html_head_css %}
{%- block body_header -%}
<body class="jp-Notebook em-ssl-site" data-jp-theme-light="true" data-jp-theme-name="JupyterLab Light">
{{ resources.em_ssl.sidebar }}
<main class="em-ssl-main">
{%- endblock body_header -%}
"""

# Sidebar groups: (title, test on the page's name, e.g. "04_alrc" or "tutorials/x")
GROUPS = [("Foundations", lambda n: re.match(r"0[0-3][a-z]?_", n)),
          ("Core layer", lambda n: re.match(r"(0[4-9]|1[0-6])[a-z]?_", n)),
          ("Methods", lambda n: re.match(r"(1[7-9]|20|2[2-9])[a-z]?_", n)),
          ("Command line", lambda n: re.match(r"21[a-z]?_", n)),
          ("Tutorials", lambda n: n.startswith("tutorials/")),
          ("Results", lambda n: n == "results"),
          ("More", lambda n: True)]


def page_title(nb, default: str) -> str:
    "The notebook's title: nbdev's front matter `title`, else its first `# Title` markdown cell."
    import yaml
    for cell in nb.cells:
        if cell.cell_type == "raw" and cell.source.startswith("---"):
            meta = yaml.safe_load(cell.source.strip().strip("-")) or {}
            if meta.get("title"): return str(meta["title"])
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "): return line[2:].strip()
    return default


def output_file(nb, name: str) -> str:
    "The page name Quarto would give (nbdev's front matter `output-file`, e.g. `io.html` for 00_io): nbdev's links use it."
    import yaml
    if nb.cells and nb.cells[0].cell_type == "raw" and nb.cells[0].source.startswith("---"):
        meta = yaml.safe_load(nb.cells[0].source.strip().strip("-")) or {}
        if meta.get("output-file"): return str(Path(name).parent / meta["output-file"]).removeprefix("./")
    return name + ".html"


def sidebar_html(pages: dict[str, str], current: str) -> str:
    "The navigation on every page: the chapters grouped, the current page highlighted; `pages` is {name: title}."
    rel = "../" * current.count("/")
    def item(name):
        cls = ' class="em-ssl-current" aria-current="page"' if name == current else ""
        return f'<li><a href="{rel}{name}.html"{cls}>{html.escape(pages[name])}</a></li>'
    parts, done = [], {"index"}
    if "index" in pages:
        cls = ' class="em-ssl-current" aria-current="page"' if current == "index" else ""
        parts.append(f'<a class="em-ssl-home" href="{rel}index.html"{cls}>em_ssl</a>')
    for title, test in GROUPS:
        names = [n for n in pages if n not in done and test(n)]
        done.update(names)
        if names: parts.append(f'<h2>{title}</h2><ul>{"".join(item(n) for n in names)}</ul>')
    return f'<nav id="em-ssl-chapters" class="em-ssl-sidebar" aria-label="Chapters">{"".join(parts)}</nav>'


def _is_progress(out) -> bool:
    "A stored progress bar (fastprogress/tqdm HTML) or the empty HTML display fastprogress leaves behind."
    data = out.get("data", {})
    htm = data.get("text/html", "")
    htm = "".join(htm) if isinstance(htm, list) else htm
    return "<progress" in htm or "progress::-webkit" in htm or (
        "text/html" in data and not htm.strip() and "IPython.core.display.HTML" in str(data.get("text/plain", "")))


def _strip_outputs(nb) -> list[str]:
    "Remove stored progress bars and stored warnings (stderr streams); what was removed, for the report."
    removed = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code": continue
        keep = []
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stderr": removed.append(f"cell {i}: stderr (warning)")
            elif _is_progress(out): removed.append(f"cell {i}: progress bar")
            else: keep.append(out)
        cell.outputs = keep
    return removed


def _front_matter_to_title(nb) -> None:
    "Quarto reads the raw front-matter cell nbdev writes; for plain nbconvert turn it into a title and summary."
    import nbformat, yaml
    if nb.cells and nb.cells[0].cell_type == "raw" and nb.cells[0].source.startswith("---"):
        meta = yaml.safe_load(nb.cells[0].source.strip().strip("-")) or {}
        text = f"# {meta.get('title', '')}" + (f"\n\n> {meta['description']}" if meta.get("description") else "")
        nb.cells[0] = nbformat.v4.new_markdown_cell(text)


def _apply_cell_directives(nb) -> None:
    """Do what Quarto does with cell directives: `echo: false` hides the code (its outputs stay), `output: false`
    hides the outputs, `include: false` hides both; no `#|` line is shown."""
    cells = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            cells.append(cell)
            continue
        lines = cell.source.splitlines()
        directives = {l[2:].strip().replace(" ", "") for l in lines if l.startswith("#|")}
        if "include:false" in directives: continue
        cell.source = "\n".join(l for l in lines if not l.startswith("#|")).strip()
        if "echo:false" in directives: cell.metadata.setdefault("tags", []).append("remove_input")
        if "output:false" in directives: cell.outputs = []
        if not cell.source and not cell.get("outputs"): continue
        for out in cell.get("outputs", []):  # Quarto link attributes in show_doc's markdown
            md = out.get("data", {}).get("text/markdown")
            if md: out["data"]["text/markdown"] = re.sub(r'\{target="_blank"[^}]*\}', "", md)
        cells.append(cell)
    nb.cells = cells


def _fix_links(body: str, name: str, targets: dict[str, str], ids: dict[str, dict[str, str]], repo: dict) -> str:
    """Point links at this site: source links at `{git_url}/blob/{branch}/PATH`, nbdev's doc links (`/io.html#x`)
    and links to notebooks (`04_alrc.ipynb`) at the rendered pages, anchors matched case-insensitively."""
    rel = "../" * name.count("/")
    def source(m):
        return f'href="{repo["git_url"]}/blob/{repo["branch"]}/{m.group(1)}"'
    body = re.sub(r'href="(?:\.?/)?blob/[^/"]+/([^"]+)"', source, body)
    def local(m):
        url = m.group(1)
        if re.match(r"[a-z]+:|#|//", url): return m.group(0)
        path, _, anchor = url.partition("#")
        key = path.lstrip("/") if path.startswith("/") else posixpath.normpath(posixpath.join(posixpath.dirname(name), path))
        key = re.sub(r"\.ipynb$", ".html", key)
        page = targets.get(key) or targets.get(key.removeprefix("nbs/"))
        if page is None: return m.group(0)
        anchor = ids.get(page, {}).get(anchor.lower(), "") if anchor else ""
        return f'href="{rel}{page}.html' + (f"#{anchor}" if anchor else "") + '"'
    return re.sub(r'href="([^"]+)"', local, body)


def _copy_images(body: str, name: str, out: Path, missing: list) -> str:
    """Images a page links relatively to files outside the site (e.g. `../../benchmarks/results/x.png` from
    nbs/tutorials/x.ipynb) are resolved against the notebook's folder in the project, copied into `out/_assets/` and
    linked there; a missing one is named in `missing` and left as it is (the broken-link test reports it)."""
    rel = "../" * name.count("/")
    src_dir = ROOT / "nbs" / posixpath.dirname(name)
    def fix(m):
        url = html.unescape(m.group(2))
        if re.match(r"[a-z]+:|#|//|/", url) or (out / posixpath.dirname(name) / url).is_file(): return m.group(0)
        src = (src_dir / url).resolve()
        if not src.is_relative_to(ROOT): return m.group(0)
        if not src.is_file():
            missing.append(f"{name}: {src.relative_to(ROOT)}")
            return m.group(0)
        dest = out / "_assets" / src.relative_to(ROOT)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        return f'{m.group(1)}"{rel}_assets/{src.relative_to(ROOT).as_posix()}"'
    return re.sub(r'(<img\b[^>]*?\ssrc=)"([^"]+)"', fix, body)


EXECUTE_AT_BUILD = ("results",)  # pages run afresh at every build: they show files (benchmarks/results) that change


def execute_notebook(nb, cwd: Path):
    "Run `nb` in a fresh python3 kernel in folder `cwd` (nbclient), so its outputs are today's, not those saved."
    from nbclient import NotebookClient
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def render_html(proc: Path, out: Path) -> list[Path]:
    """Render each processed notebook in `proc` (and `proc/tutorials`) to `out/NAME.html` with a chapter sidebar,
    prompts and stored progress bars/warnings left out, math by KaTeX copied into `out/_static`. Error outputs saved
    in the notebooks are listed in `out/errors.json`, removed progress bars and warnings in `out/stripped.json`, linked
    figures that do not exist in `out/missing_images.json`. The notebooks of `EXECUTE_AT_BUILD` are run afresh first."""
    import json
    import nbformat
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import TagRemovePreprocessor
    out.mkdir(parents=True, exist_ok=True)
    copy_assets(out)
    exporter = HTMLExporter(template_name="lab", extra_loaders=[DictLoader({"em_ssl_page.html.j2": PAGE_TEMPLATE})],
                            template_file="em_ssl_page.html.j2", exclude_input_prompt=True, exclude_output_prompt=True)
    exporter.register_preprocessor(TagRemovePreprocessor(remove_input_tags={"remove_input"}), enabled=True)
    paths = sorted(proc.glob("*.ipynb")) + sorted((proc / "tutorials").glob("*.ipynb"))
    nbs, titles, targets, errors, stripped = {}, {}, {}, {}, {}
    for nb_path in paths:
        name = nb_path.relative_to(proc).with_suffix("").as_posix()
        nb = nbformat.read(nb_path, as_version=4)
        if name in EXECUTE_AT_BUILD: execute_notebook(nb, ROOT / "nbs" / posixpath.dirname(name))
        if errs := error_outputs(nb): errors[name] = errs
        if removed := _strip_outputs(nb): stripped[name] = removed
        titles[name] = "Home" if name == "index" else page_title(nb, name)
        for key in (output_file(nb, name), name + ".html"): targets[key] = name
        nbs[name] = nb
    bodies, ids = {}, {}
    for name, nb in nbs.items():
        _front_matter_to_title(nb)
        _apply_cell_directives(nb)
        for cell in nb.cells:  # nbdev's processing adds cell keys that nbformat's schema rejects
            cell.pop("has_sd", None)
            for key in ("has_sd", "execution"): cell.metadata.pop(key, None)
        em = {"rel": "../" * name.count("/"), "sidebar": sidebar_html(titles, name)}
        bodies[name], _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": titles[name]}, "em_ssl": em})
        ids[name] = {i.lower(): i for i in re.findall(r'\sid="([^"]+)"', bodies[name])}
    for images in proc.rglob("images"):
        if images.is_dir(): shutil.copytree(images, out / images.relative_to(proc), dirs_exist_ok=True)
    repo, pages, missing = repo_settings(), [], []
    for name, body in bodies.items():
        page = out / f"{name}.html"
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text(_copy_images(_fix_links(body, name, targets, ids, repo), name, out, missing), encoding="utf-8")
        pages.append(page)
    if "index" not in bodies:
        (out / "index.html").write_text(f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>em_ssl</title>'
                                        f'<link rel="stylesheet" href="_static/styles.css"></head><body class="em-ssl-site">'
                                        f'{sidebar_html(titles, "index")}<main class="em-ssl-main"><h1>em_ssl</h1></main></body></html>')
    (out / "missing_images.json").write_text(json.dumps(missing, indent=1))
    (out / "errors.json").write_text(json.dumps(errors, indent=1))
    (out / "stripped.json").write_text(json.dumps(stripped, indent=1))
    return pages


def build_docs(out: Path, work: Path) -> list[Path]:
    "Process the notebooks in a copy under `work` and write the HTML pages to `out`."
    find_katex()  # fail at once, with the package to install, rather than after processing the notebooks
    return render_html(proc_nbs(work), out)


if __name__ == "__main__" and sys.argv[1:] == ["--doc-cells"]:
    _doc_cells_main()
elif __name__ == "__main__":
    import tempfile
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "_site")
    with tempfile.TemporaryDirectory() as tmp:
        try: pages = build_docs(out, Path(tmp))
        except FileNotFoundError as e: sys.exit(str(e))
    print(f"wrote {len(pages)} pages to {out}; open {out / 'index.html'}")
    import json
    if missing := json.loads((out / "missing_images.json").read_text()):
        print("figures linked but not in the repository: " + "; ".join(missing))
    if stripped := json.loads((out / "stripped.json").read_text()):
        print("left out of the pages, still stored in the notebooks: " + "; ".join(f"{k}: {len(v)} ({', '.join(sorted({x.split(': ')[1] for x in v}))})" for k, v in stripped.items()))
