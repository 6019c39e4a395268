"""Render the documentation without Quarto: `nbdev-proc-nbs` (nbdev's own pre-processing, exactly what
`nbdev-docs` feeds Quarto) followed by an nbconvert HTML page per processed notebook and an index page.

Users with Quarto installed run `nbdev-docs` instead. Usage: `python tests/docs_render.py [OUT_DIR]`.
(`--doc-cells`, run in a project folder, is used internally to name every notebook whose docs cells fail.)"""
from __future__ import annotations

import html
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


def _front_matter_to_title(nb) -> None:
    "Quarto reads the raw front-matter cell nbdev writes; for plain nbconvert turn it into a title and summary."
    import nbformat, yaml
    if nb.cells and nb.cells[0].cell_type == "raw" and nb.cells[0].source.startswith("---"):
        meta = yaml.safe_load(nb.cells[0].source.strip().strip("-")) or {}
        text = f"# {meta.get('title', '')}" + (f"\n\n> {meta['description']}" if meta.get("description") else "")
        nb.cells[0] = nbformat.v4.new_markdown_cell(text)


def _apply_cell_directives(nb) -> None:
    "Do what Quarto does with cell directives: `echo: false` hides the code, and no `#|` line is shown."
    for cell in nb.cells:
        if cell.cell_type != "code": continue
        lines = cell.source.splitlines()
        directives = [l[2:].strip() for l in lines if l.startswith("#|")]
        cell.source = "\n".join(l for l in lines if not l.startswith("#|")).strip()
        if "echo: false" in directives: cell.metadata.setdefault("tags", []).append("remove_input")
        for out in cell.get("outputs", []):  # Quarto link attributes in show_doc's markdown
            md = out.get("data", {}).get("text/markdown")
            if md: out["data"]["text/markdown"] = re.sub(r'\{target="_blank"[^}]*\}', "", md)


def render_html(proc: Path, out: Path) -> list[Path]:
    """Render each processed notebook in `proc` to `out/NAME.html`, plus `out/index.html` linking them.
    Error outputs saved in the notebooks are listed in `out/errors.json`."""
    import json
    import nbformat
    from nbconvert import HTMLExporter
    out.mkdir(parents=True, exist_ok=True)
    from nbconvert.preprocessors import TagRemovePreprocessor
    exporter = HTMLExporter(template_name="lab")
    exporter.register_preprocessor(TagRemovePreprocessor(remove_input_tags={"remove_input"}), enabled=True)
    pages, errors = [], {}
    for nb_path in sorted(proc.glob("*.ipynb")):
        nb = nbformat.read(nb_path, as_version=4)
        if errs := error_outputs(nb): errors[nb_path.stem] = errs
        _front_matter_to_title(nb)
        _apply_cell_directives(nb)
        for cell in nb.cells:  # nbdev's processing adds cell keys that nbformat's schema rejects
            cell.pop("has_sd", None)
            for key in ("has_sd", "execution"): cell.metadata.pop(key, None)
        body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": nb_path.stem}})
        page = out / f"{nb_path.stem}.html"
        page.write_text(body, encoding="utf-8")
        pages.append(page)
    if (proc / "images").is_dir(): shutil.copytree(proc / "images", out / "images", dirs_exist_ok=True)
    (out / "errors.json").write_text(json.dumps(errors, indent=1))
    links = "\n".join(f'<li><a href="{p.name}">{html.escape(p.stem)}</a></li>' for p in pages if p.stem != "index")
    home = out / "index.html"
    home_body = (out / "index.html").read_text(encoding="utf-8") if (out / "index.html").exists() else ""
    nav = f'<nav id="em-ssl-chapters"><h2>Chapters</h2><ul>{links}</ul></nav>'
    home.write_text(home_body.replace("</body>", nav + "</body>") if home_body else f"<html><body>{nav}</body></html>", encoding="utf-8")
    return pages


def build_docs(out: Path, work: Path) -> list[Path]:
    "Process the notebooks in a copy under `work` and write the HTML pages to `out`."
    return render_html(proc_nbs(work), out)


if __name__ == "__main__" and sys.argv[1:] == ["--doc-cells"]:
    _doc_cells_main()
elif __name__ == "__main__":
    import tempfile
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "_site")
    with tempfile.TemporaryDirectory() as tmp:
        pages = build_docs(out, Path(tmp))
    print(f"wrote {len(pages)} pages to {out}; open {out / 'index.html'}")
