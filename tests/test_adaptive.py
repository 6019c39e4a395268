"Tests for em_ssl.adaptive: path costs, the planner, plan_next and the simulated closed loop. No GPU, no real data."
import numpy as np
import pytest
from scipy import ndimage

from em_ssl.adaptive import (check_budget, path_cost, segment_starts, plan_segments, plan_next, apply_path, adaptive_scan,
                             SEGMENT_LENGTH, TRAVEL_COST)
from em_ssl.scans import ScanPath, scan_path
from em_ssl.synthetic import lattice_image


@pytest.fixture(scope='module')
def first_pass():
    img = lattice_image(96, seed=1)
    sp = scan_path('spiral', img.shape, 1 / 40, seed=0)
    m = sp.to_mask()
    return img, np.where(m > 0, img, 0).astype(np.float32), m, sp


def rows_sampled(n=96, every=8):
    s = np.zeros((n, n), bool); s[::every] = True
    return s


# ------------------------------------------------------------------ cost model
@pytest.mark.parametrize('budget,want', [(10, 10.), (0.5, 0.5 * 64 * 64), (1, 1.)])
def test_check_budget(budget, want): assert check_budget(budget, (64, 64)) == want

@pytest.mark.parametrize('budget,msg', [(0, '> 0'), (-3, '> 0'), (float('nan'), '> 0'), ('a', 'number'), (None, 'number'),
                                        (1e-6, 'less than one probe position')])
def test_check_budget_errors(budget, msg):
    with pytest.raises(ValueError, match=msg): check_budget(budget, (64, 64))

def test_path_cost_and_segments():
    p = ScanPath([[0, 0], [1, 1], [1, 2], [1, 9], [2, 9], [6, 9]], np.ones(6), (10, 10))
    assert path_cost(p) == 6 + 7 + 4
    assert path_cost(p, travel_cost=0) == 6
    assert path_cost(p, travel_cost=2, start=(0, 3)) == 6 + 2 * (3 + 7 + 4)
    assert segment_starts(p).tolist() == [0, 3, 5]
    assert path_cost(ScanPath([[0, 0]], [0.5], (4, 4))) == 0.5          # dwell-weighted


# ------------------------------------------------------------------ planner
@pytest.mark.parametrize('length', [1, 5, 12])
def test_planner_goes_where_it_is_uncertain(length):
    gain = np.full((96, 96), 0.01); gain[60:80, 10:30] = 1.
    s = rows_sampled()
    plan = plan_segments(gain, s, 150, segment_length=length, start=(50, 35))
    ys, xs = plan.positions.T.astype(int)
    assert len(plan) > 10
    assert ((ys >= 60) & (ys < 80) & (xs >= 10) & (xs < 30)).mean() > 0.9


@pytest.mark.parametrize('length,travel', [(1, 1.), (1, 0.), (6, 1.), (6, 3.)])
@pytest.mark.parametrize('budget', [1, 37, 400])
def test_planner_respects_budget_and_never_resamples(length, travel, budget):
    gain = np.random.default_rng(0).random((96, 96))
    s = rows_sampled()
    plan = plan_segments(gain, s, budget, segment_length=length, travel_cost=travel, start=(5, 5))
    assert path_cost(plan, travel, start=(5, 5)) <= budget + 1e-9
    flat = plan.positions[:, 0].astype(int) * 96 + plan.positions[:, 1].astype(int)
    assert len(np.unique(flat)) == len(plan)                          # no position twice
    assert not s.flat[flat].any()                                     # no sampled pixel again
    assert np.array_equal(plan.positions, np.rint(plan.positions)) and (plan.dwell == 1).all()
    if budget >= 37: assert len(plan) > 0


def test_segments_are_continuous_runs():
    plan = plan_segments(np.ones((96, 96)), rows_sampled(), 300, segment_length=10, travel_cost=1.)
    starts = segment_starts(plan)
    runs = np.diff(np.append(starts, len(plan)))
    assert len(starts) < len(plan) / 3 and runs.max() <= 10           # long runs, none longer than a segment


def test_uniform_gain_fills_the_largest_gaps():
    s = rows_sampled()
    plan = plan_segments(np.ones((96, 96)), s, 60, travel_cost=0.)
    gap = ndimage.distance_transform_edt(~s)[tuple(plan.positions.astype(int).T)]
    assert gap.min() >= 4


def test_nothing_left_to_plan():
    assert len(plan_segments(np.ones((32, 32)), np.ones((32, 32), bool), 100)) == 0
    assert len(plan_segments(np.zeros((32, 32)), rows_sampled(32), 100)) == 0


# ------------------------------------------------------------------ plan_next
def test_plan_next_with_a_model(tiny, first_pass):
    img, p, m, sp = first_pass
    plan = plan_next(p, m, 1 / 40, model=tiny, start=sp.positions[-1])
    assert plan.kind == 'adaptive' and plan.shape == (96, 96) and len(plan) > 0
    assert path_cost(plan, TRAVEL_COST, start=sp.positions[-1]) <= 96 * 96 / 40
    assert not (m[tuple(plan.positions.astype(int).T)] > 0).any()


def test_plan_next_with_a_given_uncertainty(first_pass):
    img, p, m, _ = first_pass
    u = np.full(m.shape, 0.01, np.float32); u[:30, :30] = 1
    plan = plan_next(p * 40 + 3, m, 120, uncertainty=u, segment_length=SEGMENT_LENGTH)
    ys, xs = plan.positions.T
    assert ((ys < 32) & (xs < 32)).mean() > 0.9


@pytest.mark.parametrize('kw,msg', [(dict(budget=0), 'budget'), (dict(budget=10, uncertainty=np.ones((9, 9))), 'uncertainty has shape'),
                                    (dict(budget=10, uncertainty=-np.ones((96, 96))), '>= 0'),
                                    (dict(budget=10, segment_length=0), 'segment_length'),
                                    (dict(budget=10, travel_cost=-1), 'travel_cost'),
                                    (dict(budget=10, start=(1, 2, 3)), 'start')])
def test_plan_next_errors(first_pass, kw, msg):
    _, p, m, _ = first_pass
    with pytest.raises(ValueError, match=msg): plan_next(p, m, uncertainty=kw.pop('uncertainty', np.ones((96, 96))), **kw)


def test_plan_next_input_errors(first_pass):
    _, p, m, _ = first_pass
    with pytest.raises(ValueError, match='one \\(H, W\\) scan'): plan_next(np.stack([p, p]), m, 10)
    with pytest.raises(ValueError, match='shape mismatch'): plan_next(p, m[:64], 10)
    with pytest.raises(ValueError, match='no sampled pixel'): plan_next(p, np.zeros_like(m), 10)


# ------------------------------------------------------------------ closed loop
def test_apply_path(first_pass):
    img, p, m, _ = first_pass
    path = ScanPath([[50, 50], [50, 51]], np.ones(2), (96, 96))
    p2, m2 = apply_path(img, p, m, path)
    assert m2[50, 50] == m2[50, 51] == 1 and p2[50, 51] == img[50, 51]
    assert ((m2 > 0).sum() - (m > 0).sum()) == 2 - int((m[50, 50:52] > 0).sum())


@pytest.mark.parametrize('guide', ['uncertainty', 'uniform'])
def test_adaptive_scan_records(tiny, guide):
    img = lattice_image(96, seed=2)
    runs = adaptive_scan(img, steps=2, step_budget=1 / 40, model=tiny, guide=guide)
    assert [r['step'] for r in runs] == [0, 1, 2]
    doses, lengths = [r['dose'] for r in runs], [r['path_length'] for r in runs]
    assert doses[0] == pytest.approx(1 / 40, rel=0.02) and all(np.diff(doses) > 0) and all(np.diff(lengths) > 0)
    for r in runs:
        assert r['path_length'] >= r['dose'] * img.size - 1e-6          # travel is charged, never free
        assert r['completion'].shape == img.shape
        assert (r['uncertainty'] is None) == (guide == 'uniform')
    assert all(d <= img.size / 40 + 1e-6 for d in np.diff(lengths))    # each pass within its budget


def test_adaptive_scan_bad_guide():
    with pytest.raises(ValueError, match='guide'): adaptive_scan(lattice_image(64, seed=0), guide='random')
