"Tests for em_ssl.scans and em_ssl.scan_demo: coverage calibration, noise models, torch batch (CPU/GPU), fastai transform, demos."
import base64, json, re
import numpy as np
import pytest
import torch
from em_ssl.scans import (SCAN_TYPES, COVERAGE_RANGE, DEFAULT_DOSE, ScanPath, scan_path, scan_mask, spiral_scan, grid_scan,
                          random_scan, raster_scan, lissajous_scan, mask_coverage, dose_fraction, dwell_noise, poisson_noise,
                          simulate_partial_scan, nn_infill, mask_batch, simulate_batch, dwell_noise_batch,
                          poisson_noise_batch)
from em_ssl.data import PartialScanTransform
from em_ssl.scan_demo import scan_explorer, scan_demo_html
from em_ssl.io import dihedral, minmax
from em_ssl.metrics import gaussian_blur

SIZES = [(512, 512), (256, 384), (1024, 768), (200, 300), (97, 131)]
COVERAGES = [1 / 10, 1 / 20, 1 / 40, 1 / 70, 1 / 100]


def lattice(h=64, w=64, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w] / 6.0
    img = np.cos(2 * np.pi * xx) * np.cos(2 * np.pi * yy) + 0.2 * rng.standard_normal((h, w))
    return ((img - img.min()) / (img.max() - img.min())).astype(np.float32)


# ---------------------------------------------------------------- coverage calibration
@pytest.mark.parametrize("kind", SCAN_TYPES)
@pytest.mark.parametrize("shape", SIZES)
def test_coverage_is_exact(kind, shape):
    for c in COVERAGES:
        p = scan_path(kind, shape, c, seed=1)
        m = p.to_mask()
        assert m.shape == shape and m.dtype == np.float32
        k = round(c * shape[0] * shape[1])                       # the calibrated number of sampled pixels
        assert len(p) == k and int((m > 0).sum()) == k, (kind, shape, c)
        assert mask_coverage(m) == p.coverage == k / (shape[0] * shape[1])
        # blurred map: same dose fraction up to border/overlap effects, ~3x the non-zero area
        mb = p.to_mask(blur=True)
        assert 0 <= mb.min() and mb.max() <= 1
        assert abs(dose_fraction(mb) - c) / c < 0.05


@pytest.mark.parametrize("kind", SCAN_TYPES)
def test_path_is_valid_probe_list(kind):
    p = scan_path(kind, (120, 90), 0.05, seed=3)
    assert p.positions.shape == (len(p), 2) and p.dwell.shape == (len(p),)
    assert ((p.dwell > 0) & (p.dwell <= 1)).all()
    assert (p.positions[:, 0] >= 0).all() and (p.positions[:, 0] <= 119).all()
    assert (p.positions[:, 1] >= 0).all() and (p.positions[:, 1] <= 89).all()
    assert len(np.unique(p.positions, axis=0)) == len(p)          # each pixel visited once


def test_spiral_is_continuous_and_centred():
    p = spiral_scan((256, 256), 0.1)
    steps = np.abs(np.diff(p.positions, axis=0)).max(1)
    assert np.mean(steps <= 1) > 0.99                             # 8-connected, apart from arm hand-overs
    assert np.abs(p.positions[0] - 127.5).max() <= 1              # starts at the centre
    # arm spacing near 1/coverage (paper: k = 1/(2 pi coverage))
    row = p.to_mask()[128, 128:]
    gaps = np.diff(np.flatnonzero(row))
    assert 7 <= np.median(gaps[gaps > 1]) <= 13


def test_seeds():
    for kind in ("grid", "random", "lissajous", "spiral"):
        a, b = scan_mask(kind, (64, 64), 0.1, seed=0), scan_mask(kind, (64, 64), 0.1, seed=0)
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, scan_mask(kind, (64, 64), 0.1, seed=5)), kind
    np.testing.assert_array_equal(scan_mask("spiral", (64, 64), 0.1), scan_mask("spiral", (64, 64), 0.1))


def test_full_and_high_coverage():
    for kind in ("spiral", "raster", "random"):
        assert scan_path(kind, (40, 50), 1.0).coverage == 1.0
    for kind in ("grid", "lissajous"):
        assert scan_path(kind, (40, 50), 0.5, seed=0).coverage == 0.5
        with pytest.raises(ValueError, match="coverage 0.8 is above"):
            scan_path(kind, (40, 50), 0.8, seed=0)


@pytest.mark.parametrize("bad", [0, -0.1, 1.01, float("nan"), float("inf"), "x", None])
def test_bad_coverage(bad):
    with pytest.raises(ValueError, match="coverage"):
        scan_mask("spiral", (32, 32), bad)
    with pytest.raises(ValueError, match="coverage"):
        mask_batch("spiral", (32, 32), bad, 2)


@pytest.mark.parametrize("bad", [(32,), (32, 32, 3), (1, 32), (0, 0), "ab", (32.5, 32)])
def test_bad_shape(bad):
    with pytest.raises(ValueError, match="shape"):
        scan_mask("spiral", bad, 0.1)


def test_bad_kind_and_too_small():
    with pytest.raises(ValueError, match="unknown scan kind"):
        scan_path("zigzag", (32, 32), 0.1)
    with pytest.raises(ValueError, match="too small"):
        scan_path("spiral", (8, 8), 0.001)
    with pytest.raises(ValueError, match="dwell"):
        ScanPath(np.zeros((3, 2)), np.array([1.0, 2.0, 0.5]), (4, 4))


# ---------------------------------------------------------------- noise + simulate
def test_dwell_noise_model():
    img = lattice()
    m = scan_mask("spiral", img.shape, 0.1)
    np.testing.assert_allclose(dwell_noise(img, m, 0)[m > 0], img[m > 0], atol=1e-6)   # m = 1: noiseless
    mb = scan_mask("spiral", img.shape, 0.1, blur=True)
    d = dwell_noise(img, mb, 0)
    assert (d[mb == 0] == 0).all() and 0 <= d.min() and d.max() <= 1
    np.testing.assert_array_equal(d, dwell_noise(img, mb, 0))
    assert not np.array_equal(d, dwell_noise(img, mb, 1))
    # explicit formula at one pixel with m = 0.5
    u = np.random.default_rng(0).random(img.shape)
    b = minmax(gaussian_blur(torch.from_numpy(img.astype(np.float64))).numpy(), -1, 1)
    y, x = np.argwhere(np.isclose(mb, 0.5))[0]
    v = 0.5 * (0.5 * (2 * img[y, x] - 1) + 2 * 0.5 * u[y, x] * b[y, x])
    assert dwell_noise(img, mb, u=u)[y, x] == pytest.approx(np.clip((v + 1) / 2, 0, 1), abs=1e-6)


def test_poisson_noise_statistics():
    img = np.full((200, 200), 0.5, np.float32)
    m = np.ones_like(img)
    est = poisson_noise(img, m, dose=100, rng=0)
    assert est.mean() == pytest.approx(0.5, abs=0.01)
    assert est.std() == pytest.approx(np.sqrt(0.5 * 100) / 100, rel=0.1)     # sqrt(N)/dose
    with pytest.raises(ValueError, match="dose"):
        poisson_noise(img, m, dose=-1)


def test_simulate_partial_scan_contract():
    img = 500 + 2000 * lattice(48, 80)
    img[3, 3] = np.nan
    partial, mask = simulate_partial_scan(img, "grid", 0.1, noise=None, seed=0)
    assert partial.dtype == np.float32 and mask.dtype == np.float32 and partial.shape == mask.shape == img.shape
    assert mask_coverage(mask) == round(0.1 * 48 * 80) / (48 * 80)
    finite = np.where(np.isfinite(img), img, 0)
    np.testing.assert_allclose(partial[mask > 0], finite[mask > 0], rtol=1e-5)
    assert (partial[mask == 0] == 0).all()
    for noise in ("dwell", "poisson"):
        p, m = simulate_partial_scan(img, "spiral", 0.05, noise=noise, seed=2, blur=True)
        assert 0 <= m.min() and m.max() <= 1 and np.nanmin(finite) <= p[m > 0].min() and p.max() <= finite.max()
        p2, _ = simulate_partial_scan(img, "spiral", 0.05, noise=noise, seed=2, blur=True)
        np.testing.assert_array_equal(p, p2)
    const = simulate_partial_scan(np.full((32, 32), 7.0), "raster", 0.1, noise=None)[0]
    assert set(np.unique(const)) == {0.0, 7.0}


@pytest.mark.parametrize("bad, match", [(np.full((8, 8), np.nan), "no finite"), (np.zeros((4, 4, 3)), "2-D"),
                                        (np.zeros((0, 5)), "empty")])
def test_simulate_bad_image(bad, match):
    with pytest.raises(ValueError, match=match):
        simulate_partial_scan(bad)


def test_simulate_bad_noise():
    with pytest.raises(ValueError, match="unknown noise"):
        simulate_partial_scan(lattice(), noise="gaussian")


def test_nn_infill():
    partial = np.zeros((5, 5), np.float32); mask = np.zeros((5, 5), np.float32)
    partial[0, 0], mask[0, 0] = 1.0, 1.0
    partial[4, 4], mask[4, 4] = 2.0, 0.5
    out = nn_infill(partial, mask)
    assert out[1, 0] == 1.0 and out[3, 4] == 2.0 and out[0, 0] == 1.0 and out[4, 4] == 2.0
    with pytest.raises(ValueError, match="no sampled"):
        nn_infill(partial, np.zeros_like(mask))
    with pytest.raises(ValueError, match="shape"):
        nn_infill(partial, mask[:3])


# ---------------------------------------------------------------- torch batch
def test_torch_matches_numpy_and_float64():
    img = lattice(64, 96)
    mb = scan_mask("spiral", img.shape, 0.1, blur=True)
    u = np.random.default_rng(0).random(img.shape)
    ref = dwell_noise(img, mb, u=u)
    t = lambda a, dt=torch.float32: torch.as_tensor(a, dtype=dt)[None, None]
    out32 = dwell_noise_batch(t(img), t(mb), t(u))
    out64 = dwell_noise_batch(t(img, torch.float64), t(mb, torch.float64), t(u, torch.float64))
    np.testing.assert_allclose(out64[0, 0].numpy(), ref, atol=1e-6)
    np.testing.assert_allclose(out32.double().numpy(), out64.numpy(), atol=1e-5)
    # no-noise path is exact; poisson path unbiased
    imgs = torch.rand(4, 1, 32, 32)
    masks = mask_batch("random", (32, 32), 0.2, 4, seed=0)
    torch.testing.assert_close(simulate_batch(imgs, masks, noise=None), imgs * (masks > 0))
    big = torch.full((2, 1, 128, 128), 0.4)
    est = poisson_noise_batch(big, torch.ones_like(big), dose=200, generator=torch.Generator().manual_seed(0))
    assert float(est.mean()) == pytest.approx(0.4, abs=0.01)


def _dwell_reference(img, m, u):
    "Straightforward float64 dwell noise of one image: dense 5x5 reflect blur, min-max to [-1,1], the paper's formula."
    g = np.exp(-np.arange(-2, 3) ** 2 / (2 * 2.5 ** 2)); g /= g.sum()
    p = np.pad(img, 2, mode="reflect")
    h, w = img.shape
    b = sum(g[i] * g[j] * p[i:i + h, j:j + w] for i in range(5) for j in range(5))
    bb = 2 * (b - b.min()) / (b.max() - b.min()) - 1 if b.max() > b.min() else np.zeros_like(b)
    v = m * (m * (2 * img - 1) + 2 * (1 - m) * u * bb)
    return np.where(m != 0, np.clip((v + 1) / 2, 0, 1), 0)


@pytest.mark.parametrize("shape", [(3, 3), (5, 4), (37, 50), (64, 64), (131, 97)])
@pytest.mark.parametrize("chunk", [1, 10**9])
def test_optimised_batch_matches_float64_reference(shape, chunk, monkeypatch):
    "Chunked CPU path (numpy nonzero, factorised 3-tap blur, in-place formula) vs a dense float64 reference."
    from em_ssl import scans
    monkeypatch.setattr(scans, "CPU_CHUNK_PIXELS", chunk)        # one image per chunk / the whole batch at once
    rng = np.random.default_rng(sum(shape))
    imgs = rng.random((5, 1, *shape))
    imgs[2] = 0.3                                                  # constant image: B = 0
    masks = np.where(rng.random(imgs.shape) < 0.3, rng.choice([0.25, 0.5, 1.0], imgs.shape), 0.0)
    u = rng.random(imgs.shape)
    ref = np.stack([_dwell_reference(imgs[i, 0], masks[i, 0], u[i, 0]) for i in range(5)])[:, None]
    for dt, tol in ((torch.float64, 1e-12), (torch.float32, 2e-6)):
        t = lambda a: torch.as_tensor(a, dtype=dt)
        out = dwell_noise_batch(t(imgs), t(masks), t(u))
        np.testing.assert_allclose(out.double().numpy(), ref, atol=tol, rtol=0)
        # broadcast mask, non-contiguous images
        out1 = dwell_noise_batch(t(imgs).transpose(-1, -2).contiguous().transpose(-1, -2), t(masks[:1]), t(u))
        ref1 = np.stack([_dwell_reference(imgs[i, 0], masks[0, 0], u[i, 0]) for i in range(5)])[:, None]
        np.testing.assert_allclose(out1.double().numpy(), ref1, atol=tol, rtol=0)
    x, m = torch.as_tensor(imgs, dtype=torch.float32), torch.as_tensor(masks, dtype=torch.float32)
    torch.testing.assert_close(simulate_batch(x, m, noise=None), x * (m != 0))
    est = poisson_noise_batch(x, m, dose=50, generator=torch.Generator().manual_seed(0))
    assert ((est != 0) <= (m != 0)).all() and est.max() <= 1


def test_mask_batch_is_bank_dihedral():
    "mask_batch's single row gather gives exactly one of the 8 (or 4) `io.dihedral` variants of a bank map per item."
    from em_ssl.scans import _mask_bank
    for shape, ks in (((40, 40), range(8)), ((24, 40), (0, 2, 4, 6))):
        bank = _mask_bank(("grid",), shape, (0.1,), True, 3, torch.device("cpu"))[0]
        mb = mask_batch("grid", shape, 0.1, 96, seed=2, blur=True, bank_size=3)
        variants = [dihedral(bank[e], k) for e in range(3) for k in ks]
        assert all(any(torch.equal(x[0], v) for v in variants) for x in mb)
        assert len({tuple(x.flatten().tolist()) for x in mb}) == len({tuple(v.flatten().tolist()) for v in variants})
        nd = mask_batch("grid", shape, 0.1, 16, seed=2, blur=True, bank_size=3, dihedral=False)
        assert all(any(torch.equal(x[0], bank[e]) for e in range(3)) for x in nd)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_matches_cpu():
    img = torch.rand(8, 1, 128, 128)
    masks = mask_batch(("spiral", "grid"), (128, 128), (0.05, 0.1), 8, seed=0, blur=True)
    u = torch.rand(img.shape)
    cpu = dwell_noise_batch(img, masks, u)
    gpu = dwell_noise_batch(img.cuda(), masks.cuda(), u.cuda())
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-5, rtol=1e-5)
    gm = mask_batch("spiral", (128, 128), 0.05, 8, seed=0, device="cuda")
    assert gm.device.type == "cuda"
    torch.testing.assert_close(gm.cpu(), mask_batch("spiral", (128, 128), 0.05, 8, seed=0))
    g = torch.Generator(device="cuda").manual_seed(0)
    assert simulate_batch(img.cuda(), gm, noise="poisson", generator=g).device.type == "cuda"


def test_mask_batch():
    mb = mask_batch(("spiral", "lissajous"), (48, 80), (0.05, 0.1), 12, seed=0)
    assert mb.shape == (12, 1, 48, 80) and mb.dtype == torch.float32
    counts = (mb > 0).sum((1, 2, 3))
    assert set(counts.tolist()) <= {round(0.05 * 48 * 80), round(0.1 * 48 * 80)}           # exact pixel counts
    torch.testing.assert_close(mask_batch("grid", (32, 32), 0.1, 5, seed=7), mask_batch("grid", (32, 32), 0.1, 5, seed=7))
    # dihedral variants diversify a small bank
    many = mask_batch("spiral", (32, 32), 0.1, 64, seed=0, bank_size=1)
    assert len({tuple(x.flatten().tolist()) for x in many}) > 4
    with pytest.raises(ValueError, match="n must be"):
        mask_batch("spiral", (32, 32), 0.1, 0)


def test_simulate_batch_cpu_chunks(monkeypatch):
    from em_ssl import scans
    monkeypatch.setattr(scans, "CPU_CHUNK_PIXELS", 2 * 32 * 32)          # 5 images -> chunks of 2, 2, 1
    imgs = torch.rand(5, 1, 32, 32)
    masks = mask_batch("spiral", (32, 32), 0.1, 5, seed=0, blur=True)
    torch.testing.assert_close(simulate_batch(imgs, masks, noise=None), imgs * (masks > 0))
    torch.testing.assert_close(simulate_batch(imgs, masks[:1], noise=None), imgs * (masks[:1] > 0))   # broadcast mask
    a = simulate_batch(imgs, masks, generator=torch.Generator().manual_seed(1))
    b = simulate_batch(imgs, masks, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b)
    assert ((a > 0) <= (masks > 0)).all() and a.max() <= 1


def test_simulate_batch_bad_input():
    imgs, masks = torch.rand(2, 1, 16, 16), torch.ones(2, 1, 16, 16)
    with pytest.raises(ValueError, match=r"\[B,1,H,W\]"):
        simulate_batch(imgs[:, 0], masks)
    with pytest.raises(ValueError, match="masks must be"):
        simulate_batch(imgs, masks[..., :8])
    with pytest.raises(ValueError, match="unknown noise"):
        simulate_batch(imgs, masks, noise="salt")
    with pytest.raises(ValueError, match="dose"):
        simulate_batch(imgs, masks, noise="poisson", dose=0)


# ---------------------------------------------------------------- fastai
def test_partial_scan_transform_direct_and_1tuple():
    x = torch.rand(3, 1, 40, 40)
    from fastai.torch_core import TensorImage
    tfm = PartialScanTransform(kinds=("spiral", "grid"), coverage=(0.02, 0.1), seed=0)
    xb, yb = tfm((TensorImage(x),))
    assert isinstance(xb, TensorImage) and xb.shape == (3, 2, 40, 40) and yb.shape == (3, 1, 40, 40)
    torch.testing.assert_close(yb.as_subclass(torch.Tensor), x)
    assert (xb[:, 0][xb[:, 1] == 0] == 0).all() and xb.min() >= 0 and xb.max() <= 1
    dec = tfm.decode((xb, yb))
    assert dec[0].shape == (3, 1, 40, 40)
    with pytest.raises(ValueError, match="coverage range"):
        PartialScanTransform(coverage=(0.1, 0.01))
    with pytest.raises(ValueError, match="coverage"):
        PartialScanTransform(coverage=2.0)


def test_partial_scan_transform_in_dataloaders():
    from fastai.vision.all import DataBlock, ImageBlock, PILImageBW, noop, RandomSplitter
    arrays = [(lattice(32, 32, seed=i) * 255).astype(np.uint8) for i in range(6)]
    for blocks, kw in (((ImageBlock(cls=PILImageBW), ImageBlock(cls=PILImageBW)), dict(get_y=noop)),
                       ((ImageBlock(cls=PILImageBW),), {})):
        dblock = DataBlock(blocks=blocks, get_x=noop, splitter=RandomSplitter(0.34, seed=0),
                           batch_tfms=PartialScanTransform(coverage=0.1, seed=0), **kw)
        dls = dblock.dataloaders(arrays, bs=2, num_workers=0)
        b = dls.one_batch()
        assert len(b) == 2 and b[0].shape == (2, 2, 32, 32) and b[1].shape == (2, 1, 32, 32)
        assert float(b[1].max()) <= 1.0


# ---------------------------------------------------------------- demos
def test_scan_explorer_headless():
    ui = scan_explorer({"a": lattice(), "b": lattice(40, 60, seed=1)})
    img_widget, label = ui.children[-1], ui.children[1]
    assert img_widget.value[:4] == b"\x89PNG"
    before = img_widget.value
    ui.children[0].children[1].children[0].value = 0.1          # coverage slider
    assert img_widget.value != before and "0.1000" in label.value


def test_scan_demo_html():
    kinds, covs = ("spiral", "grid", "raster"), (0.1, 0.05, 0.02)
    html = scan_demo_html(lattice(150, 200), kinds=kinds, coverages=covs, size=64)
    assert html.startswith('<div id="em-ssl-scan-demo"') and len(html) < 1.5e6
    for sel in ('<select class="em-ssl-scan">', 'type="range" class="em-ssl-coverage"', 'class="em-ssl-frame"',
                'class="em-ssl-label"', 'max="2"'):
        assert sel in html, sel
    data = json.loads(re.search(r'<script type="application/json" class="em-ssl-data">(.*?)</script>', html).group(1))
    assert data["coverages"] == list(covs) and list(data["frames"]) == list(kinds)
    frames = [f for k in kinds for f in data["frames"][k]]
    assert len(frames) == 9 and len(set(frames)) == 9
    assert all(base64.b64decode(f)[:4] == b"\x89PNG" for f in frames)
    full = scan_demo_html(lattice(256, 256))       # default 5 kinds x 5 coverages at 128 px
    assert len(full) < 1.5e6


# ---------------------------------------------------------------- one blur: the former implementations agree
def _old_kernel():
    x = np.arange(5) - 2.0
    g = np.exp(-x**2 / (2 * 2.5**2))
    return g / g.sum()


def test_blur_matches_former_implementations():
    "scans used to carry its own 5x5 sigma=2.5 blurs (scipy numpy, depthwise conv torch, factored CPU passes)."
    from scipy import ndimage
    import torch.nn.functional as F
    from em_ssl.scans import _blur_minmax
    g = _old_kernel()
    img = lattice(37, 50).astype(np.float64)
    old_np = ndimage.correlate1d(ndimage.correlate1d(img, g, axis=0, mode='mirror'), g, axis=1, mode='mirror')
    np.testing.assert_allclose(gaussian_blur(torch.from_numpy(img)).numpy(), old_np, rtol=0, atol=1e-12)
    x = torch.rand(4, 1, 33, 29, dtype=torch.float64)
    gt = torch.from_numpy(g)
    old_torch = F.conv2d(F.pad(x, (2, 2, 2, 2), mode='reflect').view(1, 4, 37, 33), torch.outer(gt, gt).expand(4, 1, 5, 5),
                         groups=4).view(x.shape)
    torch.testing.assert_close(gaussian_blur(x), old_torch, rtol=0, atol=1e-12)
    b, bmin, bmax = _blur_minmax(x)                                  # old: the blur divided by g0^2
    torch.testing.assert_close(b * g[0] ** 2, old_torch.reshape(4, -1), rtol=0, atol=1e-12)
    # float32 on CPU (factored passes) agrees with the convolution to float tolerance
    torch.testing.assert_close(gaussian_blur(x.float()), old_torch.float(), rtol=1e-5, atol=1e-6)
    # the target blur of PartialScanTransform is the same blur
    tfm = PartialScanTransform(coverage=0.1, seed=0, target_blur=True)
    xb = torch.rand(2, 1, 32, 32)
    torch.testing.assert_close(tfm((xb,))[1].as_subclass(torch.Tensor), gaussian_blur(xb))


def test_simulate_constant_image_uses_minmax_middle():
    const = np.full((32, 32), 3.0)
    p, m = simulate_partial_scan(const, "raster", 0.1, noise="dwell", seed=0)
    assert set(np.unique(p[m > 0])) == {3.0}


def test_thin_images_blur_and_scan():
    "A 2-pixel-high strip (too thin to reflect-pad for the 5x5 blur) is blurred with edge padding and can be scanned."
    from em_ssl.scans import simulate_partial_scan
    x = torch.rand(1, 1, 2, 50)
    y = gaussian_blur(x)
    assert y.shape == x.shape and torch.isfinite(y).all() and y.std() < x.std()   # smoothed
    const = torch.full((2, 50), 0.3)
    assert torch.allclose(gaussian_blur(const), const)                           # a blur keeps a constant image
    img = np.random.default_rng(0).random((2, 300))
    for kind in SCAN_TYPES:
        for noise in ('dwell', 'poisson', 'none'):
            p, m = simulate_partial_scan(img, kind, 0.05, noise=noise, seed=0)
            assert p.shape == m.shape == (2, 300) and m.max() > 0
