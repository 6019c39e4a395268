"""Run every notebook in nbs/ and nbs/tutorials/ as a test, the way `nbdev-test` does (cells flagged `slow` or `notest` skipped).

The notebooks are the library's source and its documentation; their test cells pin behaviour."""
import warnings
from pathlib import Path

import pytest
from nbdev.test import test_nb as run_nb  # aliased: pytest would collect a name starting with `test_`

ROOT = Path(__file__).resolve().parents[1]
NBS = sorted((ROOT / "nbs").glob("*.ipynb")) + sorted((ROOT / "nbs" / "tutorials").glob("*.ipynb"))


@pytest.mark.parametrize("nb", NBS, ids=[p.relative_to(ROOT / "nbs").with_suffix("").as_posix() for p in NBS])
def test_notebook_runs(nb, monkeypatch):
    monkeypatch.chdir(nb.parent)
    # Warnings a notebook raises on purpose (e.g. a class defined in the notebook, whose module is __main__) stay
    # here: pytest-xdist would otherwise ship them to the controller, which cannot rebuild such a class.
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        ok, secs = run_nb(nb, skip_flags=["notest", "slow"], basepath=ROOT)
    assert ok, f"{nb.name} failed (see the traceback above)"
