"""Scan paths for hardware (em_ssl.scan_paths): every scan kind survives every file format (the rasterised path is
the dwell map `em_ssl.scans.scan_mask` draws), segments and flybacks are where the probe jumps, positions follow one
documented convention (pixel centres at integers; fractions (p + 0.5) / size), and bad files are refused clearly."""
import json
import sys
import types

import h5py
import numpy as np
import pytest

from em_ssl import scan_paths as S
from em_ssl.scans import SCAN_TYPES, ScanPath, scan_mask, scan_path, dose_fraction

SHAPE = (64, 80)


@pytest.mark.parametrize("kind", SCAN_TYPES)
@pytest.mark.parametrize("ext", sorted(S.PATH_FORMATS))
def test_round_trip_rasterises_to_the_scan_mask(tmp_path, kind, ext):
    pp = S.hardware_path(kind, SHAPE, 0.08, seed=5, dwell_us=3.0, flyback_us=25.0)
    back = S.load_path(S.save_path(pp, tmp_path / f"path{ext}"))
    np.testing.assert_array_equal(back.to_mask(), scan_mask(kind, SHAPE, 0.08, seed=5))
    assert back.shape == SHAPE and len(back) == len(pp)
    np.testing.assert_allclose(back.positions, pp.positions, atol=1e-9)   # the Nion script stores fractions
    np.testing.assert_array_equal(back.segment, pp.segment)
    np.testing.assert_array_equal(back.dwell_us, pp.dwell_us)
    np.testing.assert_array_equal(back.flyback_us_before, pp.flyback_us_before)
    assert back.total_us == pytest.approx(pp.total_us)


def test_segments_and_flyback_are_where_the_probe_jumps():
    for kind in SCAN_TYPES:
        sp = scan_path(kind, SHAPE, 0.1, seed=1)
        pp = S.probe_path(sp, dwell_us=2.0, flyback_us=7.0)
        step = np.hypot(*np.diff(sp.positions, axis=0).T)
        jumps = np.flatnonzero(step > S.JUMP_PX) + 1
        np.testing.assert_array_equal(np.flatnonzero(pp.flyback_us_before), jumps)     # no flyback before the first point
        assert pp.n_segments == len(jumps) + 1
        assert pp.total_us == pytest.approx(2.0 * len(sp) + 7.0 * len(jumps))
        assert (np.diff(pp.segment) >= 0).all() and pp.segment[0] == 0
        assert dose_fraction(pp.to_mask()) == pytest.approx(len(sp) / (SHAPE[0] * SHAPE[1]))
    raster = S.hardware_path("raster", (64, 64), 0.25, seed=0)                         # 16 rows: 15 jumps
    assert raster.n_segments == 16


def test_fraction_convention_is_pixel_centres():
    pp = S.ProbePath([[0, 0], [63, 79], [-0.5, 79.4]], 1.0, 0.0, SHAPE)
    np.testing.assert_allclose(pp.fractions, [[0.5 / 64, 0.5 / 80], [63.5 / 64, 79.5 / 80], [0, 79.9 / 80]])
    assert (pp.fractions >= 0).all() and (pp.fractions < 1).all()


def test_relative_dwell_survives_formats_that_keep_the_full_dwell(tmp_path):
    sp = ScanPath([[2, 2], [2, 3], [10, 10]], [1.0, 0.5, 0.25], (16, 16))
    pp = S.probe_path(sp, dwell_us=4.0, flyback_us=1.0)
    for ext in (".npz", ".json", ".h5", ".s", ".py"):
        np.testing.assert_array_equal(S.load_path(S.save_path(pp, tmp_path / f"p{ext}")).to_mask(), sp.to_mask())
    # the CSV has no metadata: the longest dwell is taken as full dwell (here it is)
    np.testing.assert_array_equal(S.load_path(S.save_path(pp, tmp_path / "p.csv")).to_mask(), sp.to_mask())


def test_csv_layout(tmp_path):
    pp = S.hardware_path("grid", SHAPE, 0.05, seed=2)
    f = S.save_path(pp, tmp_path / "g.csv")
    lines = f.read_text().splitlines()
    assert lines[0] == "index,segment,y_px,x_px,y_frac,x_frac,dwell_us,flyback_us_before"
    assert len(lines) == len(pp) + 1
    first = [float(v) for v in lines[1].split(",")]
    assert first[0] == 0 and first[1] == 0 and first[4] == pytest.approx((first[2] + 0.5) / SHAPE[0])


def test_nexus_groups_and_units(tmp_path):
    f = S.save_path(S.hardware_path("spiral", SHAPE, 0.05, seed=0), tmp_path / "p.h5")
    with h5py.File(f) as h:
        assert h.attrs["NX_class"] == "NXroot" and h["entry"].attrs["NX_class"] == "NXentry"
        g = h["entry/scan_path"]
        assert g.attrs["NX_class"] == "NXdata" and g.attrs["signal"] == "dwell_us"
        assert list(g.attrs["shape"]) == list(SHAPE) and g.attrs["kind"] == "spiral"
        assert g["y_px"].attrs["units"] == "pixel" and g["flyback_us_before"].attrs["units"] == "us"
        assert set(S.CSV_COLUMNS) <= set(g)


def test_dm_script_moves_the_beam_in_order():
    pp = S.hardware_path("lissajous", SHAPE, 0.05, seed=0, dwell_us=2.5, flyback_us=12.0)
    text = S.dm_script(pp)
    assert text.index("DSSetScanControl(1)") < text.index("\nvisit(ref, ") < text.rindex("DSSetScanControl(0)")
    assert "DSPositionBeam(ref, x, y)" in text and "number width = 80, height = 64" in text
    visits = [l for l in text.splitlines() if l.startswith("visit(ref, ")]
    assert len(visits) == len(pp)
    x, y, dwell, flyback = (float(v) for v in visits[1][len("visit(ref, "):-1].split(", "))  # DM order: x, y
    assert (y, x) == tuple(pp.positions[1]) and dwell == 2.5 and flyback == pp.flyback_us_before[1]


def test_nion_script_parks_the_probe_at_each_fraction(monkeypatch):
    "The snippet runs against a stand-in for nion.utils.Registry and records where it sends the probe."
    pp = S.hardware_path("random", (64, 64), 0.02, seed=4, dwell_us=0.01, flyback_us=0.01)
    sent = []
    class Controller:
        def __setattr__(self, k, v): sent.append((k, v))
    registry = types.SimpleNamespace(get_component=lambda name: Controller() if name == "stem_controller" else None)
    monkeypatch.setitem(sys.modules, "nion", types.ModuleType("nion"))
    monkeypatch.setitem(sys.modules, "nion.utils", types.SimpleNamespace(Registry=registry))
    ns = {}
    exec(compile(S.nion_script(pp), "path.py", "exec"), ns)
    assert ns["SHAPE"] == (64, 64) and len(ns["PATH"]) == len(pp)
    broker = types.SimpleNamespace(get_interactive=lambda version: types.SimpleNamespace(cancelled=False))
    ns["script_main"](broker)
    assert {k for k, _ in sent} == {"probe_position"} and sent[-1][1] is None
    np.testing.assert_array_equal(np.array([v for _, v in sent[:-1]]), pp.fractions)


def test_bad_input(tmp_path):
    pp = S.hardware_path("spiral", SHAPE, 0.05, seed=0)
    with pytest.raises(ValueError, match=r"unknown scan path format '.txt'.*\.csv"): S.save_path(pp, tmp_path / "p.txt")
    f = tmp_path / "p.json"
    f.write_text("precious")
    with pytest.raises(FileExistsError, match="already exists"): S.save_path(pp, f)
    assert f.read_text() == "precious"
    S.save_path(pp, f, overwrite=True)
    assert json.loads(f.read_text())["kind"] == "spiral"
    with pytest.raises(FileNotFoundError, match="no such scan path file"): S.load_path(tmp_path / "none.csv")
    (tmp_path / "x.json").write_text('{"format": "something else", "columns": {}}')
    with pytest.raises(ValueError, match="not an em_ssl scan path"): S.load_path(tmp_path / "x.json")
    (tmp_path / "x.py").write_text("print('hello')\n")
    with pytest.raises(ValueError, match="em_ssl-meta"): S.load_path(tmp_path / "x.py")
    with h5py.File(tmp_path / "x.h5", "w") as h: h.create_group("other")
    with pytest.raises(ValueError, match="/entry/scan_path"): S.load_path(tmp_path / "x.h5")
    rows = S.path_csv(pp).splitlines()
    fields = rows[2].split(","); fields[4] = "0.9"                                      # y_frac of the 2nd point
    (tmp_path / "wrong_frac.csv").write_text("\n".join(rows[:2] + [",".join(fields)]) + "\n")
    with pytest.raises(ValueError, match="disagree"): S.load_path(tmp_path / "wrong_frac.csv")
    with pytest.raises(ValueError, match="outside the 64x80 px field"): S.ProbePath([[0, 80]], 1.0, 0.0, SHAPE)
    with pytest.raises(ValueError, match="flyback_us"): S.probe_path(scan_path("spiral", SHAPE, 0.05), flyback_us=-1)
