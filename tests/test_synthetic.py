"Tests of em_ssl.synthetic: determinism, ranges, ground-truth exactness, argument checks, datasets on disk."
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from scipy import ndimage
from scipy.spatial import cKDTree

from em_ssl.synthetic import (DATASET_KINDS, DEGRADATION_TASKS, HAADF_Z_EXPONENT, MIN_SIZE, SYMMETRIES,
                              ScanDistortion, degraded_pair, lattice_image, lattice_with_positions,
                              make_synthetic_dataset, nanoparticle_image, position_labels, render_columns,
                              simulate_lattice)
from em_ssl.synthetic import _particle


def _clean(size=64, seed=0, symmetry="square"):
    return simulate_lattice(size, symmetry, scan_noise=0, background=0, seed=seed).clean


# ---------------------------------------------------------------- determinism, dtype, range, shape
GENERATORS = {
    "lattice_image": lambda seed, size=64: lattice_image(size, seed=seed),
    "lattice_positions": lambda seed, size=64: lattice_with_positions(size, seed=seed, grain_boundary=True, drift=0.05,
                                                                      line_jitter=0.3, flyback=2.0, contamination=0.3),
    "nanoparticle": lambda seed, size=64: nanoparticle_image(size, 2, seed=seed),
    **{f"pair_{t}": (lambda t: lambda seed, size=64: degraded_pair(_clean(size), t, seed=seed))(t) for t in DEGRADATION_TASKS},
}


def _as_tuple(out):
    return out if isinstance(out, tuple) else (out,)


@pytest.mark.parametrize("name", GENERATORS)
def test_same_seed_identical_different_seed_differs(name):
    a, b, c = (_as_tuple(GENERATORS[name](s)) for s in (7, 7, 8))
    for x, y in zip(a, b): np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize("name", GENERATORS)
@pytest.mark.parametrize("size", [MIN_SIZE, 50, 97])
def test_float32_in_unit_range_and_shape(name, size):
    out = _as_tuple(GENERATORS[name](0, size))
    img = out[0]
    assert img.shape == (size, size) and img.dtype == np.float32
    assert np.isfinite(img).all() and img.min() >= 0 and img.max() <= 1
    if name.startswith("pair"):
        assert out[1].shape == (size, size) and out[1].dtype == np.float32
    if name == "nanoparticle":
        assert out[1].dtype == np.uint8 and set(np.unique(out[1])) <= {0, 1}


@pytest.mark.parametrize("symmetry", SYMMETRIES)
def test_every_symmetry_renders_with_all_artefacts(symmetry):
    lat = simulate_lattice(96, symmetry, grain_boundary=True, drift=0.05, line_jitter=0.5, flyback=3.0,
                           background=0.3, contamination=0.3, seed=3)
    assert lat.image.dtype == np.float32 and lat.image.min() == 0 and lat.image.max() == 1
    assert lat.clean.dtype == np.float32 and len(lat.positions) > 10


def test_lattice_image_256_contract():
    "The 256 px image that docs and tests render everywhere (its speed target lives in benchmarks/, not here)."
    a, b = lattice_image(256, seed=1), lattice_image(256, seed=1)
    assert a.shape == (256, 256) and a.dtype == np.float32 and a.min() == 0 and a.max() == 1
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, lattice_image(256, seed=2))


# ---------------------------------------------------------------- lattice ground truth
@pytest.mark.parametrize("symmetry", SYMMETRIES)
@pytest.mark.parametrize("kw", [{}, dict(drift=0.1, flyback=3.0), dict(grain_boundary=True, line_jitter=0.4)])
def test_positions_in_frame_and_brighter_than_random_points(symmetry, kw):
    lat = simulate_lattice(128, symmetry, scan_noise=0.1, background=0.2, seed=5, **kw)
    p = lat.positions
    assert p.ndim == 2 and p.shape[1] == 2 and len(p) == len(lat.species) == len(lat.heights)
    assert (p >= 0).all() and (p <= 127).all()
    iy, ix = np.rint(p).astype(int).T
    ry, rx = np.random.default_rng(0).integers(0, 128, (2, 2000))
    assert lat.image[iy, ix].mean() > lat.image[ry, rx].mean() + 0.15
    assert lat.clean[iy, ix].mean() > 3 * lat.clean[ry, rx].mean()


@pytest.mark.parametrize("kw", [{}, dict(drift=0.15, drift_angle=1.0), dict(drift=0.2, drift_angle=-2.0, flyback=4.0)])
def test_positions_are_peaks_of_the_clean_image(kw):
    "Each label sits on a local maximum of the noise-free image (within 1 px), also under drift and flyback."
    lat = simulate_lattice(128, "square", spacing=14, vacancy_rate=0, scan_noise=0, background=0, seed=2, **kw)
    clean = lat.clean
    peaks = np.argwhere((clean == ndimage.maximum_filter(clean, size=5)) & (clean > 0.3))
    d, _ = cKDTree(peaks).query(lat.positions)
    interior = ((lat.positions > 3) & (lat.positions < 124)).all(1)
    assert interior.sum() > 40
    assert d[interior].max() <= 1.0


def test_column_count_matches_lattice_density_and_vacancies():
    size, spacing = 160, 10.0
    full = simulate_lattice(size, "square", spacing, vacancy_rate=0, seed=1).positions
    expected = (size - 1) ** 2 / spacing**2
    assert abs(len(full) - expected) < 0.1 * expected
    perov = simulate_lattice(size, "perovskite", spacing, vacancy_rate=0, seed=1)
    assert abs(len(perov.positions) - 2 * expected) < 0.1 * 2 * expected
    holes = simulate_lattice(size, "square", spacing, vacancy_rate=0.3, seed=1).positions
    assert 0.6 * len(full) < len(holes) < 0.8 * len(full)


def test_z_contrast_heights_of_two_species():
    lat = simulate_lattice(128, "perovskite", thickness_variation=0.0, seed=0)
    assert set(lat.species) == {0, 1}
    np.testing.assert_allclose(lat.heights[lat.species == 0], 1.0)
    np.testing.assert_allclose(lat.heights[lat.species == 1], (22 / 38) ** HAADF_Z_EXPONENT)
    iy, ix = np.rint(lat.positions).astype(int).T
    heavy, light = lat.clean[iy, ix][lat.species == 0], lat.clean[iy, ix][lat.species == 1]
    assert heavy.mean() > 1.5 * light.mean()


def test_grain_boundary_keeps_columns_apart_and_changes_image():
    for symmetry in SYMMETRIES:
        lat = simulate_lattice(128, symmetry, spacing=12, grain_boundary=True, vacancy_rate=0, seed=4)
        d, _ = cKDTree(lat.positions).query(lat.positions, k=2)
        assert d[:, 1].min() >= 0.5 * 12 - 1e-6
    a = lattice_image(128, grain_boundary=False, seed=4)
    b = lattice_image(128, grain_boundary=True, seed=4)
    assert not np.array_equal(a, b)


def test_noise_level_does_not_move_atoms():
    a = simulate_lattice(96, "hexagonal", scan_noise=0.0, seed=9)
    b = simulate_lattice(96, "hexagonal", scan_noise=0.3, seed=9)
    np.testing.assert_array_equal(a.positions, b.positions)
    np.testing.assert_array_equal(a.clean, b.clean)
    assert np.abs(a.image - b.image).mean() > 0.02


def test_render_columns_matches_brute_force_under_distortion():
    rng = np.random.default_rng(0)
    dist = ScanDistortion(0.2, -0.3, rng.normal(0, 0.5, 64), 3.0)
    pos, h, sigma = rng.uniform(-10, 74, (60, 2)), rng.uniform(0.5, 1, 60), 1.7
    ys, xs = dist.specimen_coordinates(64)
    brute = (h[:, None, None] * np.exp(-((ys - pos[:, :1, None]) ** 2 + (xs - pos[:, 1:, None]) ** 2) / (2 * sigma**2))).sum(0)
    np.testing.assert_allclose(render_columns(pos, h, sigma, 64, dist), brute, atol=1e-3)


def test_position_labels():
    pos = np.array([[5.0, 5.0], [5.0, 20.0]])
    disk = position_labels(pos, (12, 30), 2.0)
    assert disk.dtype == np.float32 and disk.sum() == 26  # 13 pixels within distance 2 of each centre
    gauss = position_labels(pos, (12, 30), 1.5, "gaussian")
    assert gauss[5, 5] == 1 and gauss[5, 20] == 1 and 0 < gauss[5, 7] < 1 and gauss.max() <= 1
    np.testing.assert_allclose(gauss[5, 7], np.exp(-4 / (2 * 1.5**2)), rtol=1e-6)
    img, p = lattice_with_positions(96, seed=1)
    lab = position_labels(p, img.shape, 3.0)
    assert img[lab == 1].mean() > img[lab == 0].mean() + 0.2
    with pytest.raises(ValueError, match="'gaussian'"): position_labels(p, img.shape, kind="box")
    with pytest.raises(ValueError, match="radius"): position_labels(p, img.shape, radius=0)


# ---------------------------------------------------------------- nanoparticles
@pytest.mark.parametrize("seed", range(5))
def test_mask_is_exactly_where_particles_are_drawn(seed):
    img, mask = nanoparticle_image(96, 4, seed=seed, noise=0, blur=0)
    support, empty = nanoparticle_image(96, 0, seed=seed, noise=0, blur=0)
    assert empty.sum() == 0 and mask.sum() > 0
    np.testing.assert_array_equal(img != support, mask.astype(bool))
    assert img[mask == 1].min() > img[mask == 0].max()  # particles brighter than support everywhere
    _, noisy_mask = nanoparticle_image(96, 4, seed=seed)  # noise and blur do not change the mask
    np.testing.assert_array_equal(noisy_mask, mask)


def test_particle_window_holds_whole_particle():
    "Particles are drawn in a window around the centre; the shape must never reach the window's edge."
    for seed in range(300):
        rng = np.random.default_rng(seed)
        _, m, _ = _particle(200, rng, np.array([100.3, 99.7]), rng.uniform(3, 30))
        assert m.any() and not (m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any())


def test_more_particles_cover_more():
    areas = [nanoparticle_image(128, n, seed=1)[1].mean() for n in (1, 3, 6)]
    assert areas[0] < areas[1] < areas[2]


# ---------------------------------------------------------------- degraded pairs
def test_degraded_pairs_keep_clean_target_and_degrade_input():
    clean = _clean(128, 1)
    for task in DEGRADATION_TASKS:
        x, y = degraded_pair(clean, task, seed=0)
        np.testing.assert_array_equal(y, clean)
        assert np.abs(x - clean).mean() > 0.01
    x, _ = degraded_pair(clean, "denoise", seed=0, noise=0)
    np.testing.assert_array_equal(x, clean)
    x, _ = degraded_pair(clean, "denoise_bg", seed=0, noise=0, background=0)
    np.testing.assert_allclose(x, clean, atol=1e-6)
    # background is smooth: low-pass of the input deviates from low-pass of the clean image
    xb, _ = degraded_pair(clean, "denoise_bg", seed=0, noise=0, background=1.0)
    lp = lambda a: ndimage.gaussian_filter(a.astype(float), 8)
    assert np.abs(lp(xb) - lp(clean) / 2).max() > 0.05
    # super-resolution: more detail lost at factor 4 than 2, and a constant image survives down/up-sampling
    e2 = np.abs(degraded_pair(clean, "superres", noise=0, factor=2)[0] - clean).mean()
    e4 = np.abs(degraded_pair(clean, "superres", noise=0, factor=4)[0] - clean).mean()
    assert 0 < e2 < e4
    flat = np.full((50, 50), 0.4, np.float32)
    np.testing.assert_allclose(degraded_pair(flat, "superres", noise=0, factor=4)[0], flat, atol=1e-6)


def test_superres_averages_detail_finer_than_factor():
    checker = (np.indices((32, 32)).sum(0) % 2).astype(np.float32)
    for factor in (2, 4):
        np.testing.assert_allclose(degraded_pair(checker, "superres", noise=0, factor=factor)[0], 0.5, atol=1e-6)


def test_denoise_noise_statistics():
    clean = np.full((256, 256), 0.5, np.float32)
    x, _ = degraded_pair(clean, "denoise", seed=3, noise=0.1)
    assert abs(x.mean() - 0.5) < 0.01
    assert abs(x.std() - np.sqrt(0.5 * 0.1**2 + 0.05**2)) < 0.01


# ---------------------------------------------------------------- bad input
BAD_CALLS = [
    (lambda: lattice_image(8), "size must be >= 16"),
    (lambda: lattice_image(64.0), "integer"),
    (lambda: lattice_image(64, "cubic"), "'hexagonal'"),
    (lambda: lattice_image(64, vacancy_rate=1.0), "vacancy_rate"),
    (lambda: lattice_image(64, drift=0.5), "drift"),
    (lambda: lattice_image(64, scan_noise=-0.1), "scan_noise"),
    (lambda: lattice_image(64, spacing=1.0), "spacing"),
    (lambda: lattice_image(64, "honeycomb", species_z=(7,)), "species_z"),
    (lambda: nanoparticle_image(10), "size must be >= 16"),
    (lambda: nanoparticle_image(64, -1), "n_particles"),
    (lambda: nanoparticle_image(64, 2, radius_range=(0.2, 0.1)), "radius_range"),
    (lambda: degraded_pair(_clean(), "deblur"), "'denoise_bg'"),
    (lambda: degraded_pair(np.zeros((2, 32, 32)), "denoise"), "2-D"),
    (lambda: degraded_pair(np.zeros((8, 8)), "denoise"), "at least 16"),
    (lambda: degraded_pair(np.full((32, 32), np.nan), "denoise"), "NaN"),
    (lambda: degraded_pair(np.full((32, 32), 2.0), "denoise"), "[0, 1]"),
    (lambda: degraded_pair(_clean(), "superres", factor=3), "factor"),
]


@pytest.mark.parametrize("call,msg", BAD_CALLS)
def test_bad_arguments_raise_clear_errors(call, msg):
    with pytest.raises((ValueError, TypeError)) as e:
        call()
    assert msg in str(e.value)


@pytest.mark.parametrize("kw,msg", [(dict(kind="cells"), "'nanoparticle'"), (dict(fmt="jpg"), "'png'"),
                                    (dict(size=8), "size must be >= 16"), (dict(n=0), "n must be")])
def test_dataset_bad_arguments(tmp_path, kw, msg):
    with pytest.raises((ValueError, TypeError)) as e:
        make_synthetic_dataset(tmp_path / "d", **kw)
    assert msg in str(e.value)
    assert not (tmp_path / "d").exists()  # nothing written on bad arguments


# ---------------------------------------------------------------- datasets on disk
EXPECTED_FOLDERS = {"lattice": ["images"], "atoms": ["coords", "images"], "nanoparticle": ["images", "masks"],
                    "denoise": ["images", "targets"], "denoise_bg": ["images", "targets"], "superres": ["images", "targets"]}


def _read(p: Path) -> np.ndarray:
    return tifffile.imread(p) if p.suffix == ".tif" else np.array(Image.open(p))


@pytest.mark.parametrize("kind", DATASET_KINDS)
@pytest.mark.parametrize("fmt", ["tif", "png"])
def test_dataset_layout_and_file_names(tmp_path, kind, fmt):
    p = make_synthetic_dataset(tmp_path / "ds", n=3, kind=kind, size=48, seed=1, fmt=fmt)
    assert p == tmp_path / "ds"
    assert sorted(f.name for f in p.iterdir()) == EXPECTED_FOLDERS[kind]
    images = sorted((p / "images").iterdir())
    assert [f.name for f in images] == [f"{i:04d}.{fmt}" for i in range(3)]
    for f in images:
        a = _read(f)
        assert a.shape == (48, 48)
        if fmt == "tif": assert a.dtype == np.float32 and a.min() >= 0 and a.max() <= 1
        else: assert a.dtype == np.uint8
    if kind == "nanoparticle":
        masks = sorted((p / "masks").iterdir())
        assert [f.stem for f in masks] == [f.stem for f in images] and all(f.suffix == ".png" for f in masks)
        for f in masks:
            m = _read(f)
            assert m.dtype == np.uint8 and set(np.unique(m)) <= {0, 255}
    if kind in DEGRADATION_TASKS:
        targets = sorted((p / "targets").iterdir())
        assert [f.name for f in targets] == [f.name for f in images]
        for fi, ft in zip(images, targets):
            assert _read(ft).shape == (48, 48) and not np.array_equal(_read(fi), _read(ft))
    if kind == "atoms":
        coords = sorted((p / "coords").iterdir())
        assert [f.name for f in coords] == [f"{f.stem}.csv" for f in images]
        for fi, fc in zip(images, coords):
            assert fc.read_text().splitlines()[0] == "x,y"
            xy = np.loadtxt(fc, delimiter=",", skiprows=1, ndmin=2)
            assert len(xy) > 3 and (xy >= 0).all() and (xy <= 47).all()
            img = _read(fi).astype(float)
            assert img[np.rint(xy[:, 1]).astype(int), np.rint(xy[:, 0]).astype(int)].mean() > img.mean()


def test_dataset_is_deterministic(tmp_path):
    a = make_synthetic_dataset(tmp_path / "a", n=2, kind="nanoparticle", size=32, seed=3)
    b = make_synthetic_dataset(tmp_path / "b", n=2, kind="nanoparticle", size=32, seed=3)
    c = make_synthetic_dataset(tmp_path / "c", n=2, kind="nanoparticle", size=32, seed=4)
    for sub, name in [("images", "0001.tif"), ("masks", "0001.png")]:
        np.testing.assert_array_equal(_read(a / sub / name), _read(b / sub / name))
    assert not np.array_equal(_read(a / "images/0001.tif"), _read(c / "images/0001.tif"))


def test_dataset_refuses_non_empty_folder_and_overwrites_only_its_own(tmp_path):
    d = tmp_path / "ds"
    d.mkdir()
    (d / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        make_synthetic_dataset(d, n=2, kind="lattice", size=32)
    assert sorted(f.name for f in d.iterdir()) == ["notes.txt"]
    make_synthetic_dataset(d, n=4, kind="nanoparticle", size=32, overwrite=True)
    make_synthetic_dataset(d, n=2, kind="denoise", size=32, overwrite=True)
    assert sorted(f.name for f in d.iterdir()) == ["images", "notes.txt", "targets"]  # stale masks/ removed
    assert len(list((d / "images").iterdir())) == 2  # stale 0002, 0003 removed
    assert (d / "notes.txt").read_text() == "keep me"
    make_synthetic_dataset(tmp_path / "empty_ok", n=1, size=32)  # an empty existing folder is fine too
    (tmp_path / "e").mkdir()
    make_synthetic_dataset(tmp_path / "e", n=1, size=32)
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(FileExistsError, match="not a folder"):
        make_synthetic_dataset(f, n=1, size=32, overwrite=True)
