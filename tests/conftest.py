"Shared fixtures: the repository root and small synthetic micrographs written to temporary files."
import os
from pathlib import Path

# Under `pytest -n N` each worker gets one thread: N single-threaded workers beat N workers fighting over
# the same cores (CI has 2). Set before torch is first imported by a test or notebook.
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture
def lattice_tif(tmp_path) -> Path:
    "A 128x128 synthetic HAADF-like lattice saved as a 16-bit TIFF (a common microscope export)."
    import tifffile
    from em_ssl.synthetic import lattice_image
    img = lattice_image(size=128, seed=3)
    path = tmp_path / "lattice.tif"
    tifffile.imwrite(path, (img * 60000).astype(np.uint16))
    return path


@pytest.fixture(scope="module")
def tiny():
    "A tiny untrained completion model (seeded), for tests that need a model but not a good one."
    import torch
    from em_ssl.models import build_model
    torch.manual_seed(0)
    return build_model("completion", size="tiny").init_weights(torch.rand(2, 2, 64, 64)).eval()
