"""Installation: the wheel carries the modules, the bundled models and data, and installs into a fresh
virtual environment where `import em_ssl` and the `em-ssl` console script work from any folder."""
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_WHEEL_MB = 50  # DEVELOPERS.md: bundled weights a few tens of MB at most


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
                   check=True, capture_output=True)
    (whl,) = out.glob("em_ssl-*.whl")
    return whl


def test_wheel_contents(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "em_ssl").rglob("*.py")}
    assert modules <= set(names), f"missing from wheel: {sorted(modules - set(names))}"
    bundled = {p.relative_to(ROOT).as_posix() for d in ("weights", "data") for p in (ROOT / "em_ssl" / d).glob("*") if p.is_file()}
    assert bundled <= set(names), f"bundled files missing from wheel: {sorted(bundled - set(names))}"
    assert wheel.stat().st_size < MAX_WHEEL_MB * 2**20, f"wheel is {wheel.stat().st_size / 2**20:.1f} MB"


def test_wheel_installs_and_runs(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, system_site_packages=True, with_pip=True)
    py = env_dir / "bin" / "python"
    # the dependencies come from the surrounding environment; the package itself from the wheel only
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(wheel)], check=True, capture_output=True)
    code = "import em_ssl, pathlib; print(pathlib.Path(em_ssl.__file__).parent)"
    where = subprocess.run([py, "-c", code], cwd=tmp_path, check=True, capture_output=True, text=True).stdout.strip()
    assert str(env_dir) in where, f"em_ssl imported from {where}, not from the installed wheel"
    out = subprocess.run([env_dir / "bin" / "em-ssl", "--version"], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("em-ssl "), out.stderr
