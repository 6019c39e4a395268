"Tests for the per-pixel uncertainty of em_ssl.inference.complete(..., return_uncertainty=True). No GPU, no real data."
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from scipy.ndimage import gaussian_filter

from em_ssl.inference import (complete, complete_normalised, normalise_partial, dihedral_completions, completion_spread,
                              UNCERTAINTY_SCALE, UNCERTAINTY_Z95, UNCERTAINTY_WINDOW)
from em_ssl.fill import fill_operator, linear_blur_fill
from em_ssl.metrics import gaussian_blur
from em_ssl.scans import simulate_partial_scan
from em_ssl.synthetic import lattice_image

RESULTS = Path(__file__).resolve().parents[1] / 'benchmarks' / 'results' / 'uncertainty_calibration.json'


class Echo(nn.Module):
    "Returns the partial-scan channel: exactly equivariant under the dihedral transforms."
    divisor = 1
    def __init__(self): super().__init__(); self.w = nn.Parameter(torch.ones(()))
    def forward(self, x): return x[:, :1] * self.w


@pytest.fixture(scope='module')
def scan():
    img = lattice_image(96, seed=4)
    partial, mask = simulate_partial_scan(img, kind='spiral', coverage=1 / 10, seed=0, noise=None)
    return img, partial, mask


def test_returns_completion_and_uncertainty(tiny, scan):
    _, p, m = scan
    c, u = complete(p, m, model=tiny, return_uncertainty=True)
    assert c.shape == u.shape == p.shape and c.dtype == u.dtype == np.float32
    assert (u >= 0).all() and u.max() > 0
    np.testing.assert_allclose(c, complete(p, m, model=tiny), atol=1e-4)   # the flag does not change the completion


def test_intensity_units_and_stream(tiny, scan):
    _, p, m = scan
    _, u = complete(p, m, model=tiny, return_uncertainty=True)
    _, u2 = complete(p * 250 + 7, m, model=tiny, return_uncertainty=True)
    np.testing.assert_allclose(u2, 250 * u, rtol=1e-3, atol=1e-3)
    cs, us = complete(np.stack([p, 3 * p]), m, model=tiny, return_uncertainty=True, batch_size=3)
    assert us.shape == (2, *p.shape)
    np.testing.assert_allclose(us[0], u, atol=1e-5); np.testing.assert_allclose(us[1], 3 * u, atol=1e-4)


def test_flat_scan_has_no_uncertainty(tiny, scan):
    _, p, m = scan
    c, u = complete(np.full_like(p, 2.), m, model=tiny, return_uncertainty=True)
    assert (c == 2).all() and (u == 0).all()


def test_equivariant_model_has_no_dihedral_spread(scan):
    _, p, m = scan
    x01, _, _ = normalise_partial(p, m)
    d8 = dihedral_completions(Echo(), x01, m)
    assert d8.shape == (8, *x01.shape) and np.abs(d8 - x01).max() < 1e-6
    s = completion_spread(d8, x01, m)          # only the disagreement with linear + blur remains
    want = np.sqrt(gaussian_filter((x01 - linear_blur_fill(x01, m)) ** 2, UNCERTAINTY_WINDOW)) * np.sqrt(1 + fill_operator(m).distance)
    np.testing.assert_allclose(s, want, atol=1e-5)


def test_batched_transforms_match_one_by_one(tiny, scan):
    _, p, m = scan
    x01, _, _ = normalise_partial(p, m)
    a = dihedral_completions(tiny, x01, m, batch_size=8)
    b = dihedral_completions(tiny, x01[:, :90].copy(), m[:, :90].copy())     # non-square: transform by transform
    np.testing.assert_allclose(a[0], np.clip(complete_normalised(tiny, x01, m), 0, 1), atol=1e-4)
    assert b.shape == (8, 96, 90)


def test_uncertainty_is_higher_where_errors_are(scan):
    img, p, m = scan
    c, u = complete(p, m, return_uncertainty=True)      # the bundled model
    err = np.abs(c - gaussian_blur(torch.from_numpy(img)).numpy())
    d = fill_operator(m).distance
    assert u[d >= 4].mean() > 2 * u[d == 0].mean()
    assert err[u >= np.quantile(u, 0.8)].mean() > err[u <= np.quantile(u, 0.2)].mean()


@pytest.mark.skipif(not RESULTS.exists(), reason='benchmarks/bench_uncertainty.py has not been run')
def test_constants_are_the_measured_calibration():
    fitted = json.loads(RESULTS.read_text())['fitted']
    assert abs(fitted['k68'] / UNCERTAINTY_SCALE - 1) < 0.02
    assert abs(fitted['z95'] / UNCERTAINTY_Z95 - 1) < 0.05
