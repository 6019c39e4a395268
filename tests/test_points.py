"""Completion from scattered samples (em_ssl.points): equal to `complete` when the samples sit on pixel centres (the
bundled model and a perturbed tiny one, in one pass and in tiles, any sample order), the classical base built from the
true positions otherwise (and better than rounding them), duplicates averaged, bad samples refused."""
import subprocess
import sys

import numpy as np
import pytest
import tifffile
import torch
import torch.nn.functional as F

from em_ssl.fill import FillOperator
from em_ssl.inference import complete, complete_normalised, normalise_partial
from em_ssl.metrics import gaussian_blur
from em_ssl.models import build_model
from em_ssl.points import (complete_points, complete_points_file, points_to_partial, read_points, merge_duplicates,
                           PointsRefiner, pixel_of, MIN_POINTS)
from em_ssl.scans import SCAN_TYPES, scan_path, simulate_partial_scan
from em_ssl.synthetic import lattice_image


@pytest.fixture(scope="module")
def tiny():
    "A tiny fill-refining model with a non-zero residual (so it is not just its classical base)."
    torch.manual_seed(0)
    m = build_model("fill_refiner", size="tiny").eval()
    with torch.no_grad():
        for p in m.parameters(): p.add_(0.05 * torch.randn_like(p))
    return m


def samples(kind, shape=(100, 100), seed=0, noise="dwell"):
    "A simulated partial scan and its samples as (positions, values), in a shuffled order."
    img = lattice_image(max(shape), seed=seed)[:shape[0], :shape[1]] * 900 + 50
    part, mask = simulate_partial_scan(img, kind, 0.1, noise=noise, seed=seed)
    ys, xs = np.nonzero(mask)
    order = np.random.default_rng(seed).permutation(len(ys))
    return part, mask, np.stack([ys, xs], 1)[order], part[ys, xs][order]


@pytest.mark.parametrize("kind", SCAN_TYPES)
def test_equals_complete_on_pixel_centres_bundled_model(kind):
    part, mask, pos, vals = samples(kind)
    np.testing.assert_array_equal(complete_points(pos, vals, part.shape), complete(part, mask))


@pytest.mark.parametrize("shape", [(100, 100), (64, 130), (97, 71)])
def test_equals_complete_on_pixel_centres_tiny_model(tiny, shape):
    part, mask, pos, vals = samples("spiral", shape)
    out = complete_points(pos.astype(np.float32), vals, shape, model=tiny)    # float positions on the grid count too
    np.testing.assert_array_equal(out, complete(part, mask, model=tiny))


def test_equals_complete_in_tiles(tiny):
    part, mask, pos, vals = samples("random", (100, 150))
    x01, lo, hi = normalise_partial(part, mask)
    lo, hi = np.float32(lo), np.float32(hi)
    ref = np.clip(complete_normalised(tiny, x01, mask, tile=64, overlap=16, tile_max=70), 0, 1) * (hi - lo) + lo
    np.testing.assert_array_equal(complete_points(pos, vals, part.shape, model=tiny, tile=64, overlap=16, tile_max=70), ref)


def test_off_grid_base_is_the_linear_fill_of_the_true_positions():
    "An untrained FillRefiner returns its base: the blurred Delaunay fill of the true (sub-pixel) positions."
    torch.manual_seed(1)
    base_only = build_model("fill_refiner", size="tiny").eval()     # zero residual: output = blur(linear)
    rng = np.random.default_rng(0)
    pos = rng.uniform(-0.5, 63.49, (500, 2))                        # 64 x 64: a multiple of the divisor, no padding
    vals = rng.random(500).astype(np.float32)
    out = complete_points(pos, vals, (64, 64), model=base_only)
    v01, lo, hi = normalise_partial(vals[None], np.ones((1, 500), np.float32))
    u, v = merge_duplicates(pos, v01[0])
    ref = gaussian_blur(torch.from_numpy(FillOperator(positions_yx=u, shape=(64, 64)).apply(v))).numpy()
    np.testing.assert_allclose(out, np.clip(ref, 0, 1) * np.float32(hi - lo) + np.float32(lo), atol=1e-5)


def test_canvas_mirrors_like_reflect_padding():
    rng = np.random.default_rng(3)
    pts = rng.uniform(-0.45, 0.45, (900, 2)) + rng.integers(0, [90, 120], (900, 2))
    pts, v = merge_duplicates(pts, rng.random(900).astype(np.float32))
    net = PointsRefiner(build_model("fill_refiner", size="tiny"), pts, v)
    raster = torch.from_numpy(np.stack(points_to_partial(pts, v, (90, 120))))[None]
    for y0, x0, h, w, ph, pw in [(0, 0, 90, 120, 6, 8), (10, 30, 64, 70, 0, 26), (26, 0, 64, 120, 31, 0)]:
        cp, cv = net.canvas(y0, x0, h, w, ph, pw)
        padded = F.pad(raster[..., y0:y0 + h, x0:x0 + w], (0, pw, 0, ph), mode="reflect")[0].numpy()
        np.testing.assert_array_equal(np.stack(points_to_partial(cp, cv, (h + ph, w + pw))), padded)


def atoms(y, x, spacing=10.0, sigma=2.0, angle=0.3):
    c, s = np.cos(angle), np.sin(angle)
    u, v = (c * x + s * y) / spacing, (-s * x + c * y) / spacing
    du, dv = (u - np.round(u)) * spacing, (v - np.round(v)) * spacing
    return np.exp(-(du ** 2 + dv ** 2) / (2 * sigma ** 2))


@pytest.mark.parametrize("kind,cov", [("raster", 0.25), ("spiral", 0.3)])
def test_true_positions_beat_rounding(kind, cov):
    "Samples half a pixel off the grid: completing from where they were is closer to the truth than rounding them."
    shape = (128, 128)
    target = gaussian_blur(torch.from_numpy(atoms(*np.mgrid[:128, :128].astype(float)).astype(np.float32))).numpy()
    sp = scan_path(kind, shape, cov, seed=0)
    pos = np.clip(sp.positions + np.random.default_rng(1).uniform(-0.5, 0.5, sp.positions.shape), -0.5, 127.49)
    vals = atoms(pos[:, 0], pos[:, 1])
    rms = lambda z: np.sqrt(np.mean((z - target) ** 2))
    true_pos, rounded = complete_points(pos, vals, shape), complete(*points_to_partial(pos, vals, shape))
    assert rms(true_pos) < 0.98 * rms(rounded), (rms(true_pos), rms(rounded))


def test_duplicates_are_averaged(tiny):
    _, _, pos, vals = samples("grid")
    twice = complete_points(np.concatenate([pos, pos[::-1]]), np.concatenate([vals, vals[::-1]]), (100, 100), model=tiny)
    np.testing.assert_array_equal(twice, complete_points(pos, vals, (100, 100), model=tiny))
    lo_hi = complete_points(np.concatenate([pos, pos]) + 0.3, np.concatenate([vals - 4, vals + 4]), (100, 100), model=tiny)
    np.testing.assert_allclose(lo_hi, complete_points(pos + 0.3, vals, (100, 100), model=tiny), rtol=1e-5, atol=1e-3)
    u, m = merge_duplicates(np.array([[1., 2.], [1., 2.], [0., 9.]]), np.array([1., 4., 7.], np.float32))
    np.testing.assert_array_equal(u, [[0, 9], [1, 2]]); np.testing.assert_array_equal(m, [7, 2.5])


def test_constant_samples():
    _, _, pos, vals = samples("spiral")
    np.testing.assert_array_equal(complete_points(pos + 0.1, np.full(len(pos), 3.5), (100, 100)), np.full((100, 100), 3.5, np.float32))


@pytest.mark.parametrize("pos,vals,shape,exc,msg", [
    ([[0, 0], [1, 1], [64, 0]], [1, 2, 3], (64, 64), ValueError, r"1 position\(s\) lie outside the 64x64 px field"),
    ([[0, 0], [1, 1], [0, -0.51]], [1, 2, 3], (64, 64), ValueError, "outside"),
    ([[0, 0], [1, 1], [0, 0]], [1, 2, 3], (64, 64), ValueError, "too few samples: 2 distinct"),
    ([[0, 0], [1, 1], [2, np.nan]], [1, 2, 3], (64, 64), ValueError, "NaN"),
    ([[0, 0], [1, 1], [2, 2]], [1, 2, np.inf], (64, 64), ValueError, "NaN or infinite"),
    ([[0, 0, 0]], [1], (64, 64), ValueError, r"shape \(N, 2\)"),
    ([[0, 0], [1, 1]], [1], (64, 64), ValueError, "one per position"),
    ([[0, 0], [1, 1], [2, 2]], [True, False, True], (64, 64), TypeError, "real numeric"),
    ([[0, 0], [1, 1], [2, 2]], [1, 2, 3], (32, 64), ValueError, "too small"),
    ([[0, 0], [1, 1], [2, 2]], [1, 2, 3], "64", ValueError, "shape must be"),
    (np.zeros((0, 2)), np.zeros(0), (64, 64), ValueError, "no samples"),
])
def test_bad_samples_are_refused(pos, vals, shape, exc, msg):
    with pytest.raises(exc, match=msg): complete_points(pos, vals, shape)


def test_field_edges_are_accepted():
    pos = [[-0.5, -0.5], [63.49, 0], [0, 63.49], [63.49, 63.49]]
    assert complete_points(pos, [1, 2, 3, 4], (64, 64)).shape == (64, 64)
    assert MIN_POINTS == 3
    np.testing.assert_array_equal(pixel_of(pos), [[0, 0], [63, 0], [0, 63], [63, 63]])


def test_read_points_and_file(tmp_path):
    _, _, pos, vals = samples("lissajous")
    pos = pos + 0.25
    f = tmp_path / "s.csv"
    f.write_text("y_px,x_px,value\n" + "".join(f"{y!r},{x!r},{v!r}\n" for (y, x), v in zip(pos.tolist(), vals.tolist())))
    p, v = read_points(f, (100, 100))
    np.testing.assert_array_equal(p, pos); np.testing.assert_array_equal(v, vals.astype(np.float64))
    out = complete_points_file(f, (100, 100), tmp_path / "c.tif")
    np.testing.assert_array_equal(tifffile.imread(out), complete_points(pos, vals, (100, 100)))
    with pytest.raises(FileExistsError, match="exists"): complete_points_file(f, (100, 100), out)
    (tmp_path / "frac.csv").write_text("y_frac,x_frac,value\n0.5,0.25,1\n")
    np.testing.assert_allclose(read_points(tmp_path / "frac.csv", (100, 200))[0], [[49.5, 49.5]])
    (tmp_path / "nopos.csv").write_text("a,b,value\n1,2,3\n")
    with pytest.raises(ValueError, match="no position columns"): read_points(tmp_path / "nopos.csv", (64, 64))


def test_points_need_no_fastai():
    code = "import sys, em_ssl.points; print(sorted(m for m in sys.modules if m.split('.')[0] == 'fastai'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout
