"""The notebooks are the source of truth: exporting them must reproduce em_ssl/ exactly, and cleaning them
must change nothing. Checked on a copy of the repository, so the test works with or without git."""
import filecmp
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COPY = ["nbs", "em_ssl", "pyproject.toml", "settings.ini", "setup.py", "_quarto.yml", "README.md"]


@pytest.fixture(scope="module")
def repo_copy(tmp_path_factory) -> Path:
    dst = tmp_path_factory.mktemp("repo")
    for name in COPY:
        src = ROOT / name
        if src.is_dir(): shutil.copytree(src, dst / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"))
        else: shutil.copy2(src, dst / name)
    return dst


def _differences(a: Path, b: Path, pattern: str) -> list[str]:
    files = sorted(p.relative_to(a) for p in a.rglob(pattern) if "__pycache__" not in p.parts)
    files += [p.relative_to(b) for p in b.rglob(pattern) if "__pycache__" not in p.parts and not (a / p.relative_to(b)).exists()]
    return [str(f) for f in files if not (b / f).exists() or not filecmp.cmp(a / f, b / f, shallow=False)]


def test_export_reproduces_package(repo_copy):
    subprocess.run(["nbdev-export"], cwd=repo_copy, check=True, capture_output=True)
    diff = _differences(ROOT / "em_ssl", repo_copy / "em_ssl", "*.py")
    assert not diff, f"nbdev-export changes {diff}: export the notebooks and commit the modules"


def test_clean_changes_nothing(repo_copy):
    subprocess.run(["nbdev-clean"], cwd=repo_copy, check=True, capture_output=True)
    diff = _differences(ROOT / "nbs", repo_copy / "nbs", "*.ipynb")
    assert not diff, f"nbdev-clean changes {diff}: run nbdev-clean and commit"
