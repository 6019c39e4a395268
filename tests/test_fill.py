"""em_ssl.fill beyond the notebook's examples: non-square images, chunked rasterisation, sub-pixel positions and
scan kinds against scipy's griddata, the cache under dihedral mask banks, and the GPU-free torch paths."""
import numpy as np
import pytest
import torch
from scipy.interpolate import griddata

import em_ssl.fill as fill
from em_ssl.fill import (FillOperator, fill_operator, FILL_CACHE, OperatorCache, classical_inputs, linear_fill,
                         nearest_fill, distance_to_sample, rasterize_triangles, CLASSICAL_CHANNELS)
from em_ssl.scans import scan_mask, nn_infill, mask_batch, SCAN_TYPES


def reference(x, s):
    "griddata linear inside the hull, NaN outside."
    yy, xx = np.mgrid[:s.shape[0], :s.shape[1]]
    return griddata(np.argwhere(s), x[s], (yy, xx), method='linear')


@pytest.mark.parametrize("kind", SCAN_TYPES)
@pytest.mark.parametrize("shape", [(48, 80), (80, 48)])
def test_matches_griddata_non_square(kind, shape):
    m = scan_mask(kind, shape, 0.08, seed=5)
    s = m > 0
    x = np.random.default_rng(0).random(shape).astype(np.float32)
    op = FillOperator(m)
    f, g = op.apply_image(x), reference(x, s)
    assert np.array_equal(op.inside_hull, ~np.isnan(g))
    np.testing.assert_allclose(f[op.inside_hull], g[op.inside_hull], atol=1e-5)
    np.testing.assert_array_equal(f[s], x[s])
    np.testing.assert_array_equal(f[~op.inside_hull], nn_infill(x, m)[~op.inside_hull])
    np.testing.assert_array_equal(nearest_fill(x, m), nn_infill(x, m))


def test_chunked_rasterisation_is_identical(monkeypatch):
    from scipy.spatial import Delaunay
    m = scan_mask('spiral', (64, 64), 0.05, seed=0)
    P = np.argwhere(m > 0).astype(float)
    simp = Delaunay(P).simplices
    x = np.random.default_rng(1).random(len(P))
    values = lambda t, l: np.where(t >= 0, (l * x[simp[t]]).sum(1), np.nan)   # the fill a (tri, lam) pair gives
    tri, lam = rasterize_triangles(P[simp], (64, 64))
    monkeypatch.setattr(fill, "RASTER_CHUNK", 97)                             # many small chunks
    tri2, lam2 = rasterize_triangles(P[simp], (64, 64))
    assert np.array_equal(tri >= 0, tri2 >= 0)
    np.testing.assert_allclose(values(tri, lam), values(tri2, lam2), atol=1e-12)


def test_rasterise_big_triangle_and_empty():
    tri, lam = rasterize_triangles(np.array([[[-10., -10], [-10, 100], [100, -10]]]), (20, 30))
    assert (tri == 0).all() and np.allclose(lam.sum(1), 1)
    tri, lam = rasterize_triangles(np.zeros((0, 3, 2)), (4, 4))
    assert (tri == -1).all()
    tri, _ = rasterize_triangles(np.array([[[0., 0], [1, 1], [2, 2]]]), (4, 4))  # flat: no pixel
    assert (tri == -1).all()


def test_positions_match_griddata():
    rng = np.random.default_rng(3)
    pos = rng.uniform(0, 31, (200, 2))
    v = rng.random(200)
    op = FillOperator(positions_yx=torch.from_numpy(pos), shape=(32, 40))
    g = griddata(pos, v, tuple(np.mgrid[:32, :40]), method='linear')
    assert np.array_equal(op.inside_hull, ~np.isnan(g))
    np.testing.assert_allclose(op.apply(v)[op.inside_hull], g[op.inside_hull], atol=1e-5)
    d = np.hypot(*(np.mgrid[:32, :40][:, :, :, None] - pos.T[:, None, None])).min(-1)
    nearest = np.rint(op.apply(np.arange(200.))).astype(int)
    np.testing.assert_allclose(np.hypot(*(np.mgrid[:32, :40] - np.moveaxis(pos[nearest], -1, 0)))[~op.inside_hull],
                               d[~op.inside_hull], atol=1e-4)


def test_bad_inputs():
    with pytest.raises(ValueError, match="no sampled pixel"): FillOperator(np.zeros((5, 5)))
    with pytest.raises(ValueError, match="exactly one"): FillOperator(np.ones((5, 5)), positions_yx=[[0, 0]])
    with pytest.raises(ValueError, match="required"): FillOperator(positions_yx=[[0, 0]])
    with pytest.raises(ValueError, match="non-finite"): FillOperator(positions_yx=[[0, np.nan]], shape=(3, 3))
    with pytest.raises(ValueError, match="empty"): FillOperator(positions_yx=np.zeros((0, 2)), shape=(3, 3))
    with pytest.raises(ValueError, match="does not match"): FillOperator(np.ones((5, 5)), shape=(4, 5))
    with pytest.raises(TypeError, match="real numeric"): FillOperator(np.ones((3, 3), complex))
    with pytest.raises(ValueError, match="one per sample"): FillOperator(np.ones((3, 3))).apply(np.ones((2, 8)))


def test_cache_dihedral_bank_and_eviction():
    FILL_CACHE.clear()
    masks = mask_batch('grid', (32, 32), 0.1, n=64, seed=0, bank_size=2)   # at most 2 seeds x 8 dihedral variants
    for m in masks[:, 0]: fill_operator(m)
    info = FILL_CACHE.info()
    assert info['misses'] <= 16 and info['hits'] + info['misses'] == 64
    c = OperatorCache(maxsize=0)                         # a zero-size cache builds every time
    m = masks[0, 0]
    assert c(m) is not c(m) and len(c) == 0


def test_classical_inputs_torch_grad_and_shapes():
    m = torch.from_numpy(scan_mask('spiral', (32, 32), 0.1, seed=0))
    p = (torch.rand(2, 1, 32, 32) * m).requires_grad_()
    x = classical_inputs(p, m)
    assert x.shape == (2, len(CLASSICAL_CHANNELS), 32, 32)
    x[:, CLASSICAL_CHANNELS.index('linear')].sum().backward()      # differentiable through the sparse product
    assert p.grad is not None and p.grad[0, 0][m == 0].abs().max() == 0
    assert classical_inputs(p.detach()[0, 0].numpy(), m.numpy()).shape == (1, 5, 32, 32)
    with pytest.raises(ValueError, match="partial must be"): classical_inputs(torch.zeros(2, 3, 32, 32), m)


def test_linear_fill_numpy_torch_agree_and_dtype():
    m = scan_mask('random', (24, 24), 0.2, seed=0)
    x = np.random.default_rng(0).random((3, 24, 24))                        # float64 in -> float32 out
    f = linear_fill(x, m)
    assert f.dtype == np.float32 and f.shape == (3, 24, 24)
    np.testing.assert_array_equal(linear_fill(torch.from_numpy(x), torch.from_numpy(m)).numpy(), f)
    assert distance_to_sample(m).dtype == np.float32
