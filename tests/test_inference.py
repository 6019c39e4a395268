"Tests for em_ssl.inference (complete, bundled model, files, demo) and em_ssl.partial_scan training state. No GPU, no real data."
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from em_ssl.inference import (complete, load_completion_model, linear_infill, complete_file, run_demo,
                              check_partial_scan, normalise_partial, complete_normalised, default_completion_model,
                              DEFAULT_WEIGHTS, DEMO_MICROGRAPH, evaluate_completion, summarize_completion,
                              completion_table, parse_noise, demo_summary)
from em_ssl.fill import linear_blur_fill, linear_fill
from em_ssl.metrics import gaussian_blur
from em_ssl.scans import scan_mask
from em_ssl.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, weights_digest
from em_ssl.io import save_tiff, load_image
from em_ssl.models import build_model
from em_ssl.models.partial_scan import (PartialScanConfig, PartialScanGenerator, GapFilledGenerator, push_pull_fill,
                                        fuse_for_inference)
from em_ssl.partial_scan import partial_scan_learner
from em_ssl.training import TrainingCheckpoint, StopAfterEpochs
from em_ssl.scans import simulate_partial_scan
from em_ssl.data import PartialScanTransform
from em_ssl.synthetic import lattice_image


@pytest.fixture(scope='module')
def scan():
    img = lattice_image(128, seed=0)
    partial, mask = simulate_partial_scan(img, kind='spiral', coverage=0.1, seed=0)
    return img, partial, mask


@pytest.fixture(scope='module')
def tiny_model():
    torch.manual_seed(0)
    return PartialScanGenerator(PartialScanConfig.tiny()).init_weights(torch.rand(2, 2, 64, 64)).eval()


# ---------------------------------------------------------------- bad input
def _pm(n=64):
    m = np.zeros((n, n), np.float32); m[::3, ::3] = 1
    return np.random.default_rng(0).random((n, n)).astype(np.float32), m

@pytest.mark.parametrize('make,exc,msg', [
    (lambda p, m: (p, m[:, :32]), ValueError, 'shape mismatch'),
    (lambda p, m: (np.zeros((0, 0)), np.zeros((0, 0))), ValueError, 'empty'),
    (lambda p, m: (p, np.zeros_like(m)), ValueError, 'no sampled pixel'),
    (lambda p, m: (np.where(m > 0, np.nan, p), m), ValueError, 'NaN'),
    (lambda p, m: (p, np.where(m > 0, np.inf, m)), ValueError, 'NaN or infinite'),
    (lambda p, m: (p.astype(complex), m), TypeError, 'complex'),
    (lambda p, m: (p.astype(object), m), TypeError, 'object'),
    (lambda p, m: (p > 0.5, m), TypeError, 'bool'),
    (lambda p, m: (p.astype(str), m), TypeError, 'dtype'),
    (lambda p, m: (p, m * 2), ValueError, 'mask values must be in [0, 1]'),
    (lambda p, m: (p, m - 0.5), ValueError, 'mask values must be in [0, 1]'),
    (lambda p, m: (p[:40, :40], m[:40, :40]), ValueError, 'too small'),
    (lambda p, m: (p[None], m[None]), ValueError, '2-D'),
    (lambda p, m: (np.stack([p, p]), np.stack([m, m])), ValueError, 'one mask per stream'),
    (lambda p, m: (p[None, None], m), ValueError, '(B, H, W)'),
    (lambda p, m: (np.stack([p, p])[:, :, :40], m), ValueError, 'shape mismatch'),
    (lambda p, m: (np.stack([p, np.where(m > 0, np.nan, p)]), m), ValueError, 'NaN'),
    (lambda p, m: (None, m), TypeError, 'None'),
])
def test_complete_bad_input(make, exc, msg, tiny_model):
    p, m = make(*_pm())
    with pytest.raises(exc, match=None) as e: complete(p, m, model=tiny_model)
    assert msg in str(e.value)


def test_missing_checkpoint_names_path(tmp_path):
    f = tmp_path / 'nope.pth'
    with pytest.raises(FileNotFoundError, match='nope.pth'): load_completion_model(f)
    with pytest.raises(FileNotFoundError, match='nope.pth'): complete(*_pm(), model=f)


def test_not_a_checkpoint(tmp_path):
    f = tmp_path / 'x.pth'; torch.save({'a': 1}, f)
    with pytest.raises(CheckpointError, match='not an em_ssl checkpoint'): load_completion_model(f)
    g = save_checkpoint(tmp_path / 'u.pth', build_model('unet_2_44', base_width=4), kind='pretrained')
    with pytest.raises(CheckpointError, match='expected a completion checkpoint'): load_completion_model(g)


# ---------------------------------------------------------------- behaviour
def test_bundled_model_loads_and_is_small():
    assert DEFAULT_WEIGHTS.is_file() and DEFAULT_WEIGHTS.stat().st_size < 20e6
    m = load_completion_model('default')
    assert not m.training
    rec = json.loads(DEFAULT_WEIGHTS.with_suffix('.json').read_text())
    assert rec['data']['holdout_files'] and rec['command']
    assert '/work/' not in json.dumps(rec)                                  # no machine-specific paths
    ck = load_checkpoint('default', 'completion')
    assert '/work/' not in json.dumps(ck['provenance'])
    assert weights_digest(ck['weights']) == rec['weights_sha256']
    assert rec['size_bytes'] == DEFAULT_WEIGHTS.stat().st_size


def test_complete_shapes_scale_and_dtype(scan):
    img, partial, mask = scan
    out = complete(partial, mask)
    assert out.shape == img.shape and out.dtype == np.float32 and np.isfinite(out).all()
    out2 = complete(partial * 500 + 20, mask)                      # input intensity scale is preserved
    np.testing.assert_allclose(out2, out * 500 + 20, atol=0.5)
    assert out2.min() >= 20 - 1e-3 and out2.max() <= 520 + 1e-3  # within the sampled range


def test_complete_beats_linear_on_demo_micrograph():
    from em_ssl.io import normalize
    from em_ssl.metrics import gaussian_blur
    img = normalize(load_image(DEMO_MICROGRAPH))
    target = gaussian_blur(torch.from_numpy(img)).numpy()
    partial, mask = simulate_partial_scan(img, kind='spiral', coverage=1 / 20, seed=3)
    rms = lambda a: np.sqrt(np.mean((a - target) ** 2))
    assert rms(complete(partial, mask)) < rms(linear_infill(partial, mask))


@pytest.mark.parametrize('shape', [(64, 64), (100, 130), (97, 64), (1100, 200)])
def test_complete_any_size(shape, tiny_model):
    img = lattice_image(max(shape), seed=1)[:shape[0], :shape[1]]
    p, m = simulate_partial_scan(img, kind='grid', coverage=0.1, seed=0)
    out = complete(p, m, model=tiny_model)
    assert out.shape == shape and np.isfinite(out).all()


def test_fractional_mask_and_bool_mask(scan, tiny_model):
    img, partial, mask = scan
    assert complete(partial, mask * 0.5, model=tiny_model).shape == img.shape
    assert complete(partial, mask > 0, model=tiny_model).shape == img.shape


def test_constant_samples_give_constant_output(tiny_model):
    p, m = _pm(); p[:] = 3.5
    np.testing.assert_array_equal(complete(p, m, model=tiny_model), np.full(p.shape, 3.5, np.float32))


def test_tiling_matches_single_pass():
    model = default_completion_model("cpu")  # trained: output depends on local context, unlike random weights
    img = lattice_image(1200, seed=4)[:1100, :700]
    p, m = simulate_partial_scan(img, kind='spiral', coverage=0.1, seed=0)
    x01, lo, hi = normalise_partial(p, m)
    tiled = complete_normalised(model, x01, m, tile_max=512)
    single = complete_normalised(model, x01, m, tile_max=10_000)
    assert tiled.shape == single.shape == img.shape
    assert np.abs(tiled - single).mean() < 0.02


def test_linear_infill_matches_griddata():
    from scipy.interpolate import griddata
    rng = np.random.default_rng(1)
    m = (rng.random((80, 90)) < 0.08).astype(np.float32); p = rng.random((80, 90)).astype(np.float32) * m
    ys, xs = np.nonzero(m); gy, gx = np.mgrid[:80, :90]
    ref = griddata((ys, xs), p[ys, xs], (gy, gx), method='linear')
    ok = ~np.isnan(ref)
    np.testing.assert_allclose(linear_infill(p, m)[ok], ref[ok], atol=1e-5)
    assert np.isfinite(linear_infill(p, m)).all()


def test_save_load_roundtrip_and_fusion(tmp_path):
    torch.manual_seed(0)
    g = build_model('completion', size='tiny').init_weights(torch.rand(2, 2, 64, 64)).eval()
    f = save_checkpoint(tmp_path / 'm.pth', g, kind='completion', provenance={'command': 'test'})
    with pytest.raises(FileExistsError): save_checkpoint(f, g, kind='completion')
    h = load_completion_model(f)
    assert isinstance(h, GapFilledGenerator) and not h.training
    x = torch.rand(2, 2, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(h(x), g(x))
        torch.testing.assert_close(fuse_for_inference(h)(x), g(x), atol=1e-5, rtol=1e-4)


def test_push_pull_fill_keeps_samples():
    x = torch.rand(2, 1, 70, 90); m = (torch.rand_like(x) < 0.05).float()
    f = push_pull_fill(x * m, m)
    assert torch.equal(f[m > 0], x[m > 0]) and torch.isfinite(f).all()


def test_default_model_cached():
    assert default_completion_model('cpu') is default_completion_model('cpu')


# ---------------------------------------------------------------- files and demo
def test_complete_file(tmp_path, scan):
    img, partial, mask = scan
    fp, fm, out = tmp_path / 'p.tif', tmp_path / 'm.tif', tmp_path / 'c.tif'
    save_tiff(fp, partial); save_tiff(fm, mask)
    assert complete_file(fp, fm, out) == out
    res = load_image(out)
    assert res.shape == img.shape and res.dtype == np.float32
    with pytest.raises(FileExistsError): complete_file(fp, fm, out)
    complete_file(fp, fm, out, overwrite=True)
    with pytest.raises(FileNotFoundError): complete_file(tmp_path / 'missing.tif', fm, tmp_path / 'd.tif')


def test_run_demo_writes(tmp_path):   # timing targets: benchmarks/bench_completion.py
    res = run_demo(tmp_path, scan='spiral', coverage=1 / 20, seed=0)
    assert res['seconds_model'] > 0 and res['seconds_linear'] > 0
    assert res['summary'] == demo_summary(res) and 'against the blurred micrograph (lower is better)' in res['summary']
    assert f"linear + blur {res['rms_percent_linear_blur']:.1f} %" in res['summary']
    assert Path(res['figure']).is_file() and Path(res['json']).is_file()
    saved = json.loads(Path(res['json']).read_text())
    assert saved['rms_percent_model'] == pytest.approx(res['rms_percent_model'])
    assert 0 < res['rms_percent_model'] < res['rms_percent_linear']
    with pytest.raises(FileExistsError): run_demo(tmp_path)
    assert run_demo(tmp_path, scan='grid', coverage=0.1)['scan'] == 'grid'


# ---------------------------------------------------------------- training checkpoints
def _fixed_dls(n=6, size=64, bs=2):
    from fastai.data.core import DataLoaders
    from fastai.vision.core import TensorImage
    imgs = torch.stack([torch.from_numpy(lattice_image(size, seed=i))[None] for i in range(n)])
    x, y = PartialScanTransform(kinds=('spiral',), coverage=0.1, seed=0)((TensorImage(imgs),))
    items = [(x[i], y[i]) for i in range(n)]
    return DataLoaders.from_dsets(items, items[:2], bs=bs, shuffle=False, device='cpu')


def _learner(path, stage):
    from fastai.torch_core import set_seed
    set_seed(1)
    return partial_scan_learner(_fixed_dls(), PartialScanConfig.tiny(), stage=stage, path=path, seed=0,
                                replay_size=2, fill_gaps=True)


@pytest.mark.parametrize('stage', [1, 2])
def test_interrupt_and_resume_matches_uninterrupted(tmp_path, stage):
    a = _learner(tmp_path / 'a', stage)
    with a.no_bar(), a.no_logging(): a.fit_paper(4, lr=1e-3)
    b = _learner(tmp_path / 'b', stage)
    with b.no_bar(), b.no_logging(): b.fit_paper(4, lr=1e-3, cbs=[TrainingCheckpoint('ck'), StopAfterEpochs(2)])
    assert sorted(p.name for p in (tmp_path / 'b' / 'models').iterdir()) == ['ck.pth']   # one file
    ck = load_checkpoint(tmp_path / 'b' / 'models' / 'ck.pth', 'training_state')
    assert ck['model']['name'] == 'completion' and ck['state']['learner'] == {'stage': stage}
    c = _learner(tmp_path / 'b', stage)                # fresh learner, different in-memory state
    assert c.load_training_state('ck') == 2
    torch.testing.assert_close(c.loss_func.alrc_out.mu1, b.loss_func.alrc_out.mu1, rtol=0, atol=0)
    with c.no_bar(), c.no_logging(): c.fit_paper(4, lr=1e-3, start_epoch=2)
    for k, v in a.model.state_dict().items(): torch.testing.assert_close(c.model.state_dict()[k], v, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(c.loss_func.alrc_out.mu2, a.loss_func.alrc_out.mu2)
    sa, sc = a.opt.state_dict()['state'], c.opt.state_dict()['state']    # Adam moments restored and continued
    assert len(sa) == len(sc)
    for da, dc in zip(sa, sc):
        for k in da:
            if isinstance(da[k], torch.Tensor): torch.testing.assert_close(dc[k], da[k], atol=1e-6, rtol=1e-5)
    if stage == 2:
        da, dc = a.critic.state_dict(), c.critic.state_dict()
        for k in da: torch.testing.assert_close(dc[k], da[k], atol=1e-6, rtol=1e-5)
        assert a.trainer_cb.replay.full and a.trainer_cb.replay.n_seen == c.trainer_cb.replay.n_seen


def test_missing_training_checkpoint(tmp_path):
    c = _learner(tmp_path, 1)
    with pytest.raises(FileNotFoundError, match='nothere'): c.load_training_state('nothere')


def test_training_state_of_other_stage_refused(tmp_path):
    b = _learner(tmp_path, 1)
    with b.no_bar(), b.no_logging(): b.fit_paper(1, lr=1e-3, cbs=[TrainingCheckpoint('ck')])
    with pytest.raises(ValueError, match='stage-1 training state'): _learner(tmp_path, 2).load_training_state('ck')


# ---------------------------------------------------------------- streams: many frames, one scan path
def test_stream_matches_frame_by_frame(tiny_model):
    img = lattice_image(96, seed=2)
    p, m = simulate_partial_scan(img, kind='spiral', coverage=0.1, seed=0)
    frames = np.stack([p, 0.5 * p + 3, p ** 2, np.where(m > 0, 7., 0.)])   # the last: constant samples
    out = complete(frames, m, model=tiny_model, batch_size=3)
    assert out.shape == frames.shape and out.dtype == np.float32
    for f, o in zip(frames, out): np.testing.assert_allclose(o, complete(f, m, model=tiny_model), atol=1e-4)
    np.testing.assert_array_equal(out[3], np.full(p.shape, 7, np.float32))
    np.testing.assert_allclose(linear_infill(frames, m)[1], linear_infill(frames[1], m), atol=1e-5)


def test_normalise_partial_per_frame():
    m = np.zeros((64, 64), np.float32); m[::4, ::4] = 1
    p = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    s, lo, hi = normalise_partial(np.stack([p, 10 * p + 1]), m)
    np.testing.assert_allclose(s[0], s[1], atol=1e-6)
    assert lo.shape == hi.shape == (2,) and np.isclose(lo[1], 10 * lo[0] + 1)


# ---------------------------------------------------------------- evaluation API
class LinearBlurModel(torch.nn.Module):
    "Stand-in completion model returning the paper-blurred linear fill (what an untrained fill_refiner returns)."
    divisor = 1
    def __init__(self): super().__init__(); self.p = torch.nn.Parameter(torch.zeros(1))
    def forward(self, x): return linear_blur_fill(x[:, :1], x[0, 1])


class TextureModel(torch.nn.Module):
    "Stand-in that paints a fixed texture over the linear + blur fill (a model misled by an unfamiliar image)."
    divisor = 1
    def __init__(self, amplitude=0.4):
        super().__init__(); self.a = torch.nn.Parameter(torch.tensor(float(amplitude)))
    def forward(self, x):
        h, w = x.shape[-2:]
        yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing='ij')
        return linear_blur_fill(x[:, :1], x[0, 1]) + self.a * torch.sin(yy / 1.5) * torch.cos(xx / 1.5)


def test_gate_falls_back_to_the_classical_fill(clean_images):
    "Without the held-out check a texture-painting model is far worse than interpolation; with it, about as good."
    kw = dict(kinds=('spiral', 'random'), coverages=(1 / 10, 1 / 20), noises=('none', 'poisson:100'))   # >= 32 held-out samples
    raw = evaluate_completion(clean_images, TextureModel(), gate=False, **kw)
    gated = evaluate_completion(clean_images, TextureModel(), gate=True, **kw)
    assert min(r['ratio'] for r in raw) > 1 and np.mean([r['ratio'] for r in raw]) > 1.5
    assert max(r['model'] / r['linear_blur'] for r in gated) < 1.05   # back to (about) the classical base


class Oracle(torch.nn.Module):
    "Stand-in returning fixed outputs (the targets) in order, whatever the batch size."
    divisor = 1
    def __init__(self, outs): super().__init__(); self.t, self.i = torch.nn.Parameter(torch.from_numpy(np.stack(outs))[:, None]), 0
    def forward(self, x):
        self.i += len(x)
        return self.t[self.i - len(x):self.i]


@pytest.fixture(scope='module')
def clean_images():
    return [lattice_image(96, seed=s) for s in range(3)] + [lattice_image(128, seed=9)[:64, :128]]


def test_parse_noise():
    assert parse_noise('poisson:20') == ('poisson', 20.) and parse_noise('none') == ('none', None)
    assert parse_noise('dwell') == ('dwell', None)
    for bad in ('poisson:0', 'poisson:x', 'gauss', 'poisson:nan'):
        with pytest.raises(ValueError, match='poisson:DOSE'): parse_noise(bad)


def test_evaluate_linear_blur_standin(clean_images):
    kw = dict(kinds=('spiral', 'grid', 'random'), coverages=(1 / 10, 1 / 20), noises=('none', 'dwell', 'poisson:100', 'poisson:20'))
    rows = evaluate_completion(clean_images, LinearBlurModel(), gate=False, **kw)
    assert len(rows) == len(clean_images) * 3 * 2 * 4
    assert set(rows[0]) == {'image', 'kind', 'coverage', 'noise', 'nearest', 'linear', 'linear_blur', 'model',
                            'best_classical', 'ratio'}
    for r in rows:
        assert r['model'] == pytest.approx(r['linear_blur'], abs=1e-3)
        assert r['best_classical'] == min(r['linear'], r['linear_blur'])
        assert r['ratio'] == pytest.approx(r['model'] / r['best_classical'])
        if abs(r['linear'] - r['linear_blur']) > 1e-2: assert (r['ratio'] <= 1 + 1e-4) == (r['linear_blur'] < r['linear'])
    assert evaluate_completion(clean_images, LinearBlurModel(), **kw) == rows   # seeded: the same scans every run
    # noise changes the scans, binary masks make 'dwell' equal to 'none' (the paper's dwell noise acts on fractional pixels)
    by = {(r['image'], r['kind'], r['coverage'], r['noise']): r for r in rows}
    k = (0, 'spiral', 0.1)
    assert by[(*k, 'dwell')]['linear'] == by[(*k, 'none')]['linear'] != by[(*k, 'poisson:20')]['linear']
    assert by[(*k, 'poisson:20')]['linear'] > by[(*k, 'poisson:100')]['linear']


def test_evaluate_oracle_scores_zero():
    m = scan_mask('spiral', (96, 96), 0.1, seed=0)
    s = np.flatnonzero(m > 0)
    ims = []
    for i in range(2):   # extremes 0 and 1 at sampled pixels: complete's per-frame normalisation is the identity
        a = (0.2 + 0.6 * lattice_image(96, seed=i)).astype(np.float32)
        a.flat[s[0]], a.flat[s[-1]] = 0., 1.
        ims.append(a)
    oracle = Oracle([gaussian_blur(torch.from_numpy(a)).numpy() for a in ims])
    for r in evaluate_completion(ims, oracle, coverages=(0.1,), gate=False):
        assert r['model'] == pytest.approx(0, abs=1e-3) and r['ratio'] == pytest.approx(0, abs=1e-4) and r['linear'] > 0.1


def test_summary_and_table(clean_images):
    rows = evaluate_completion(clean_images, LinearBlurModel(), kinds=('spiral', 'grid'), coverages=(1 / 20,), noises=('none', 'poisson:20'))
    summ = summarize_completion(rows)
    assert [(s['kind'], s['noise']) for s in summ] == [('spiral', 'none'), ('spiral', 'poisson:20'), ('grid', 'none'), ('grid', 'poisson:20')]
    for s in summ:
        rs = [r for r in rows if (r['kind'], r['coverage'], r['noise']) == (s['kind'], s['coverage'], s['noise'])]
        assert s['n_images'] == len(clean_images)
        for k in ('nearest', 'linear', 'linear_blur', 'model', 'best_classical'): assert s[k] == pytest.approx(np.mean([r[k] for r in rs]))
        assert s['ratio'] == pytest.approx(s['model'] / s['best_classical'])
        w = max(rs, key=lambda r: r['ratio'])
        assert (s['worst_ratio'], s['worst_image']) == (w['ratio'], w['image'])
    t = completion_table(summ).splitlines()
    assert len(t) == 2 + len(summ) and t[0].startswith('| scan | coverage | noise |') and '| 1/20 |' in t[2]


def test_evaluate_bad_input(clean_images):
    with pytest.raises(ValueError, match=r'images\[0\] must be a clean micrograph scaled to \[0, 1\]'):
        evaluate_completion([clean_images[0] * 5], LinearBlurModel())
    with pytest.raises(ValueError, match='empty'): evaluate_completion([], LinearBlurModel())
    with pytest.raises(ValueError, match='unknown scan kind'): evaluate_completion(clean_images[:1], LinearBlurModel(), kinds=('zigzag',))
    with pytest.raises(ValueError, match='coverage'): evaluate_completion(clean_images[:1], LinearBlurModel(), coverages=(0,))
    with pytest.raises(ValueError, match="'loud'"): evaluate_completion(clean_images[:1], LinearBlurModel(), noises=('loud',))


def test_evaluate_bundled_model_runs():
    rows = evaluate_completion([lattice_image(128, seed=1)], coverages=(1 / 10,))
    assert len(rows) == 1 and np.isfinite(rows[0]['model']) and rows[0]['model'] > 0


# ---------------------------------------------------------------- the fill-refining completion model
def _fill_refiner_or_skip():
    from em_ssl.models import list_models
    if 'fill_refiner' not in list_models(): pytest.skip("registry model 'fill_refiner' not available")
    torch.manual_seed(0)
    return build_model('fill_refiner', size='tiny').eval()


def test_untrained_fill_refiner_is_linear_blur(clean_images):
    model = _fill_refiner_or_skip()
    for r in evaluate_completion(clean_images[:2], model, kinds=('spiral', 'grid'), coverages=(1 / 10,), gate=False):
        assert r['model'] == pytest.approx(r['linear_blur'], abs=1e-3)


def test_fill_refiner_checkpoint_loads_and_fuses(tmp_path):
    model = _fill_refiner_or_skip()
    with torch.no_grad():   # a non-zero residual, so fusing has something to fold
        for p in model.parameters(): p.add_(0.01 * torch.randn_like(p))
    f = save_checkpoint(tmp_path / 'fr.pth', model, kind='completion')
    img = lattice_image(128, seed=3)
    p, m = simulate_partial_scan(img, kind='spiral', coverage=0.1, seed=0)
    ref = complete(p, m, model=model)
    np.testing.assert_allclose(complete(p, m, model=f), ref, atol=1e-3)                      # loaded + fused
    np.testing.assert_allclose(complete(p, m, model=load_completion_model(f, 'cpu')), ref, atol=1e-5)
    out = complete(np.stack([p, p * 2]), m, model=f)
    np.testing.assert_allclose(out[0], ref, atol=1e-3)


def test_complete_file_page_and_pixel_size(tmp_path, scan):
    from em_ssl.io import load_micrograph
    img, partial, mask = scan
    stack, fm = tmp_path / 's.tif', tmp_path / 'm.tif'
    save_tiff(stack, np.stack([partial, 2 * partial]), pixel_size=0.25, unit='nm'); save_tiff(fm, mask)
    out = complete_file(stack, fm, tmp_path / 'c.tif', page=1)
    mg = load_micrograph(out)
    assert mg.data.shape == img.shape and mg.pixel_size == pytest.approx(0.25) and mg.unit == 'nm'
    with pytest.raises(ValueError, match='page='): complete_file(stack, fm, tmp_path / 'd.tif')
    with pytest.raises(ValueError, match='mask must be one image'): complete_file(fm, stack, tmp_path / 'e.tif')
