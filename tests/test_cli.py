"""The `em-ssl` console script, end to end through a subprocess: the fixed contract other tools rely on,
and its behaviour on bad input (one clear line, non-zero status, no traceback, no overwritten files)."""
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

EM_SSL = [shutil.which("em-ssl")] if shutil.which("em-ssl") else [sys.executable, "-m", "em_ssl.cli"]


def em_ssl(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([*EM_SSL, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=600)


def assert_clean_error(res, *words, status=1):
    assert res.returncode == status, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr, res.stderr
    lines = [l for l in res.stderr.strip().splitlines() if l.startswith("em-ssl")]
    assert lines, res.stderr
    for w in words: assert w.lower() in res.stderr.lower(), (w, res.stderr)


def test_help_and_version():
    res = em_ssl("--help")
    assert res.returncode == 0
    for cmd in ("simulate", "complete", "demo", "pretrain", "finetune", "predict"): assert cmd in res.stdout
    assert em_ssl("--version").stdout.startswith("em-ssl ")


@pytest.mark.parametrize("scan", ["spiral", "grid", "random", "raster", "lissajous"])
def test_simulate_contract(lattice_tif, tmp_path, scan):
    part, mask = tmp_path / "partial.tif", tmp_path / "mask.tif"
    res = em_ssl("simulate", lattice_tif, "--scan", scan, "--coverage", "1/10", "--seed", 1, "-o", part, "--mask-out", mask)
    assert res.returncode == 0, res.stderr
    src, p, m = tifffile.imread(lattice_tif).astype(np.float32), tifffile.imread(part), tifffile.imread(mask)
    assert p.dtype == np.float32 and m.dtype == np.float32 and p.shape == m.shape == src.shape
    assert m.min() >= 0 and m.max() <= 1
    assert abs((m > 0).mean() - 0.1) < 0.1 * 0.1 + 1e-3  # within the 2% target with room for rounding
    sampled = p[m > 0]
    # the partial scan is in the input's intensity scale (16-bit counts here), not in [0, 1]
    assert sampled.max() > 10 and sampled.max() <= src.max() * 2.5 and np.isfinite(p).all()


def test_simulate_is_seeded(lattice_tif, tmp_path):
    outs = []
    for i in range(2):
        part, mask = tmp_path / f"p{i}.tif", tmp_path / f"m{i}.tif"
        assert em_ssl("simulate", lattice_tif, "--scan", "grid", "--coverage", "0.05", "--seed", 7, "-o", part, "--mask-out", mask).returncode == 0
        outs.append(tifffile.imread(part))
    np.testing.assert_array_equal(*outs)


def test_simulate_bad_input(tmp_path, lattice_tif):
    out = ["-o", tmp_path / "p.tif", "--mask-out", tmp_path / "m.tif"]
    assert_clean_error(em_ssl("simulate", tmp_path / "missing.tif", *out), "missing.tif")
    (tmp_path / "notes.xyz").write_text("hello")
    assert_clean_error(em_ssl("simulate", tmp_path / "notes.xyz", *out), ".xyz")
    broken = tmp_path / "broken.tif"
    broken.write_bytes(lattice_tif.read_bytes()[:300])
    assert_clean_error(em_ssl("simulate", broken, *out), "broken.tif")
    nan = tmp_path / "nan.npy"
    np.save(nan, np.full((64, 64), np.nan, np.float32))
    assert_clean_error(em_ssl("simulate", nan, *out), "nan")
    assert_clean_error(em_ssl("simulate", lattice_tif, "--coverage", "0", *out), "coverage", status=2)


def test_simulate_never_overwrites(lattice_tif, tmp_path):
    part, mask = tmp_path / "p.tif", tmp_path / "m.tif"
    part.write_bytes(b"precious")
    assert_clean_error(em_ssl("simulate", lattice_tif, "-o", part, "--mask-out", mask), "exists", "--overwrite")
    assert part.read_bytes() == b"precious" and not mask.exists()
    assert em_ssl("simulate", lattice_tif, "-o", part, "--mask-out", mask, "--overwrite").returncode == 0
    assert tifffile.imread(part).shape == (128, 128)


def test_complete_round_trip(lattice_tif, tmp_path):
    part, mask, out = tmp_path / "p.tif", tmp_path / "m.tif", tmp_path / "c.tif"
    assert em_ssl("simulate", lattice_tif, "--coverage", "1/20", "--seed", 0, "-o", part, "--mask-out", mask).returncode == 0
    res = em_ssl("complete", part, "--mask", mask, "-o", out)
    assert res.returncode == 0, res.stderr
    c = tifffile.imread(out)
    assert c.dtype == np.float32 and c.shape == (128, 128) and np.isfinite(c).all()
    src = tifffile.imread(lattice_tif).astype(np.float32)
    assert c.std() > 0 and 0.1 * src.mean() < c.mean() < 10 * src.mean()  # the input's intensity scale


def test_complete_bad_input(lattice_tif, tmp_path):
    part, mask = tmp_path / "p.tif", tmp_path / "m.tif"
    assert em_ssl("simulate", lattice_tif, "-o", part, "--mask-out", mask).returncode == 0
    small = tmp_path / "small_mask.tif"
    tifffile.imwrite(small, np.ones((64, 96), np.float32))
    assert_clean_error(em_ssl("complete", part, "--mask", small, "-o", tmp_path / "c.tif"), "shape")
    empty = tmp_path / "empty_mask.tif"
    tifffile.imwrite(empty, np.zeros((128, 128), np.float32))
    assert_clean_error(em_ssl("complete", part, "--mask", empty, "-o", tmp_path / "c.tif"), "mask")
    assert_clean_error(em_ssl("complete", part, "--mask", mask, "--model", tmp_path / "nope.pth", "-o", tmp_path / "c.tif"), "nope.pth")


def test_demo(tmp_path):
    res = em_ssl("demo", "--out", tmp_path / "demo")
    assert res.returncode == 0, res.stderr
    assert list((tmp_path / "demo").glob("*.png")), "the demo writes a figure"
    assert "rms" in res.stdout.lower()
    assert_clean_error(em_ssl("demo", "--out", tmp_path / "demo"), "exists")  # refuses to overwrite
