"""The architecture rules, pinned so they cannot regress. Read from the exported sources under em_ssl/ with `ast`
(no imports, fast), except the last test, which imports the training modules in a subprocess.

Layers, top to bottom (a module may import from its own layer or a lower one, never a higher one):
  1. cli
  2. inference, finetune, pretrain, partial_scan
  3. gan, training, alrc, replay, corruption
  4. data, models (the package and every models.*), checkpoint, tiling
  5. layers
  6. io, scans, scan_demo, synthetic, metrics
`em_ssl/__init__.py` (the package's public face) and `_modidx.py` (nbdev's index) are exempt."""
import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "em_ssl"
PKG_NAME = "em_ssl"
EXEMPT = {"__init__", "_modidx"}
LAYERS = {"cli": 1, "cli_scan": 1,
          "inference": 2, "finetune": 2, "pretrain": 2, "partial_scan": 2, "points": 2, "adaptive": 2,
          "gan": 3, "training": 3, "alrc": 3, "replay": 3, "corruption": 3,
          "data": 4, "models": 4, "checkpoint": 4, "tiling": 4, "labels": 4,
          "layers": 5,
          "io": 6, "scans": 6, "scan_paths": 6, "scan_demo": 6, "synthetic": 6, "metrics": 6, "fill": 6}
TRAINING_MODULES = {"partial_scan", "pretrain", "finetune", "gan", "training"}
MAX_LINES = 500


def module_name(path: Path) -> str:
    "Dotted name inside the package: em_ssl/models/unet.py -> 'models.unet', em_ssl/models/__init__.py -> 'models'."
    parts = list(path.relative_to(PKG).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1: parts = parts[:-1]
    return ".".join(parts)


SOURCES = {module_name(p): p for p in sorted(PKG.rglob("*.py")) if "__pycache__" not in p.parts}
CHECKED = {m: p for m, p in SOURCES.items() if m not in EXEMPT}
TREES = {m: ast.parse(p.read_text(encoding="utf-8"), filename=str(p)) for m, p in SOURCES.items()}


def layer(mod: str) -> int | None:
    "The layer of module `mod` (models.* share the layer of the models package)."
    return LAYERS.get(mod.split(".")[0])


def _resolve_from(mod: str, node: ast.ImportFrom) -> str | None:
    "The em_ssl-relative module a `from ... import` reads from (None when it is not em_ssl)."
    if node.level == 0:
        if node.module == PKG_NAME: return ""
        if node.module and node.module.startswith(PKG_NAME + "."): return node.module[len(PKG_NAME) + 1:]
        return None
    is_pkg = SOURCES[mod].name == "__init__.py"
    base = mod.split(".") if mod else []
    if not is_pkg: base = base[:-1]  # a module's package
    if node.level > 1: base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _known(name: str) -> str | None:
    "The longest prefix of `name` that is a module of the package (None if none)."
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in SOURCES: return ".".join(parts[:i])
    return None


def imports(mod: str) -> list[tuple[str, int, list[str]]]:
    """Every em_ssl module that `mod` imports (module level and inside functions): (target, line, names).
    `from .models import unet` counts as importing `models.unet` when that is a module."""
    out = []
    for node in ast.walk(TREES[mod]):
        if isinstance(node, ast.ImportFrom):
            base = _resolve_from(mod, node)
            if base is None: continue
            names = [a.name for a in node.names]
            for n in names:
                sub = f"{base}.{n}" if base else n
                target = sub if sub in SOURCES else _known(base) if base else None
                if target: out.append((target, node.lineno, [n] if target != sub else []))
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name == PKG_NAME or a.name.startswith(PKG_NAME + "."):
                    target = _known(a.name[len(PKG_NAME) + 1:]) if a.name != PKG_NAME else ""
                    if target is not None: out.append((target, node.lineno, []))
    return out


def graph() -> dict[str, set[str]]:
    "Module -> the em_ssl modules it imports (the exempt ones left out)."
    return {m: {t for t, _, _ in imports(m) if t not in EXEMPT and t != "" and t != m} for m in CHECKED}


def test_every_module_has_a_layer():
    missing = sorted(m for m in CHECKED if layer(m) is None)
    assert not missing, f"modules without a layer in tests/test_architecture.py LAYERS: {missing}"


def test_dependencies_point_down():
    bad = [f"{SOURCES[m].relative_to(ROOT)}:{line} ({m}, layer {layer(m)}) imports {t} (layer {layer(t)})"
           for m in CHECKED for t, line, _ in imports(m)
           if t not in EXEMPT and t != "" and layer(m) is not None and layer(t) is not None and layer(t) < layer(m)]
    assert not bad, "imports from a higher layer:\n" + "\n".join(bad)


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    "One cycle of the directed graph `g` as a list of nodes (first == last), or None."
    WHITE, GREY, BLACK = 0, 1, 2
    color, stack = {n: WHITE for n in g}, []

    def visit(n):
        color[n] = GREY; stack.append(n)
        for t in sorted(g.get(n, ())):
            if color.get(t, BLACK) == GREY: return stack[stack.index(t):] + [t]
            if color.get(t) == WHITE and (c := visit(t)): return c
        color[n] = BLACK; stack.pop()
        return None

    for n in sorted(g):
        if color[n] == WHITE and (c := visit(n)): return c
    return None


def test_find_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_cycles():
    "Same-layer imports are allowed, cycles are not (module level and function level imports both count)."
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_inference_imports_no_training_module():
    direct = [f"{SOURCES['inference'].relative_to(ROOT)}:{line} imports {t}" for t, line, _ in imports("inference")
              if t.split(".")[0] in TRAINING_MODULES]
    assert not direct, "em_ssl.inference imports training modules:\n" + "\n".join(direct)
    g = graph()
    reach, todo = set(), ["inference"]
    while todo:  # everything inference imports, directly or through other modules
        for t in g.get(todo.pop(), ()):
            if t not in reach: reach.add(t); todo.append(t)
    bad = sorted(t for t in reach if t.split(".")[0] in TRAINING_MODULES)
    assert not bad, f"em_ssl.inference imports training modules {bad} (directly or indirectly)"


def private_uses(mod: str, tree: ast.Module | None = None) -> list[str]:
    "`from .x import _y` and `x._y` where x is another em_ssl module bound in `mod` (parsed `tree`, default its source)."
    tree, bad, aliases = tree or TREES[mod], [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (base := _resolve_from(mod, node)) is not None:
            for a in node.names:
                sub = f"{base}.{a.name}" if base else a.name
                if sub in SOURCES: aliases[a.asname or a.name] = sub
                elif a.name.startswith("_") and not a.name.startswith("__"):
                    bad.append(f"{SOURCES[mod].relative_to(ROOT)}:{node.lineno} imports {a.name} from {base or PKG_NAME}")
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name == PKG_NAME or a.name.startswith(PKG_NAME + "."):
                    if a.asname: aliases[a.asname] = a.name[len(PKG_NAME) + 1:]
                    else: aliases[PKG_NAME] = ""  # `import em_ssl.io` binds `em_ssl`
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")): continue
        chain, v = [], node.value
        while isinstance(v, ast.Attribute): chain.append(v.attr); v = v.value
        if not isinstance(v, ast.Name) or v.id not in aliases: continue
        target = ".".join(([aliases[v.id]] if aliases[v.id] else []) + chain[::-1])
        if target in SOURCES and target != mod:
            bad.append(f"{SOURCES[mod].relative_to(ROOT)}:{node.lineno} uses {target or PKG_NAME}.{node.attr}")
    return bad


def test_private_uses_detects():
    src = ("from .layers import _WNConvBase, WNConv\nfrom . import io\nimport em_ssl.scans\nimport em_ssl.metrics as mt\n"
           "def f(self):\n    return io._x, em_ssl.scans._y, mt._z, self._ok, io.__name__\n")
    found = private_uses("inference", ast.parse(src))
    assert [b.split(" ", 1)[1] for b in found] == ["imports _WNConvBase from layers", "uses io._x", "uses scans._y", "uses metrics._z"], found


def test_no_private_imports():
    bad = [b for m in CHECKED for b in private_uses(m)]
    assert not bad, "modules using another module's private names:\n" + "\n".join(bad)


def test_modules_are_short():
    long = {str(p.relative_to(ROOT)): n for m, p in CHECKED.items() if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them): {long}"


# ---------------------------------------------------------------- no citations of development notes or outside paths
FORBIDDEN = re.compile(r"shared/notes|notes §|(?i:\bnotes sec)|_facts\.md|/work/")
SCANNED = ["em_ssl", "nbs", "benchmarks", "README.md"]
SKIP_DIRS = {"__pycache__", ".ipynb_checkpoints", "_proc", "_docs"}


def scanned_files() -> list[Path]:
    files = []
    for name in SCANNED:
        p = ROOT / name
        if p.is_file(): files.append(p)
        elif p.is_dir(): files += [f for f in sorted(p.rglob("*")) if f.is_file() and not SKIP_DIRS & set(f.relative_to(ROOT).parts)]
    return files


def test_forbidden_pattern():
    for s in ["see notes §3", "shared/notes/x.md", "Notes Sec. 2", "paper_facts.md", "/work/shared/data"]:
        assert FORBIDDEN.search(s), s
    for s in ["Ede & Beanland 2020, sec. 2.3", "footnotes section", "Jeffrey-Ede/partial-STEM @9167660, train.py", "network/work"]:
        assert not FORBIDDEN.search(s), s


def test_no_citations_of_notes_or_outside_paths():
    bad = []
    for f in scanned_files():
        data = f.read_bytes()
        if b"\0" in data[:8192] or f.suffix in {".pth", ".pt", ".png", ".jpg", ".tif", ".tiff", ".npy", ".npz"}:
            if b"/work/" in data: bad.append(f"{f.relative_to(ROOT)}: contains b'/work/'")
            continue
        for i, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
            if m := FORBIDDEN.search(line): bad.append(f"{f.relative_to(ROOT)}:{i}: {m.group(0)!r}")
    assert not bad, "cite the paper or the upstream repository, never the development notes or outside paths:\n" + "\n".join(bad[:50])


# ---------------------------------------------------------------- no global patching of fastai
PATCH_CHECK = """
from fastai.learner import Learner
before = {n: getattr(Learner, n) for n in ("save", "load")}
import em_ssl.training, em_ssl.alrc, em_ssl.replay, em_ssl.gan
changed = [n for n, f in before.items() if getattr(Learner, n) is not f]
print("changed:" + ",".join(changed))
"""


def test_importing_training_modules_does_not_patch_learner():
    res = subprocess.run([sys.executable, "-c", PATCH_CHECK], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "changed:\n" in res.stdout or res.stdout.strip().endswith("changed:"), \
        f"importing em_ssl's training modules patches fastai's Learner: {res.stdout.strip()}"


def test_inference_path_needs_no_fastai():
    "Completing a scan (the CLI's simulate/complete/info) imports no fastai: it is only needed for training."
    code = ("import sys, em_ssl.inference, em_ssl.scans, em_ssl.fill, em_ssl.checkpoint, em_ssl.models, em_ssl.io\n"
            "from em_ssl.checkpoint import load_model\nload_model('partial_scan_small', 'completion')\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'fastai'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout
