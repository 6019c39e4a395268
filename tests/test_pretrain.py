"""Tests of em_ssl.pretrain outside the notebook: multi-process (torchrun, gloo on CPU), CLI entry, bad input."""
import os, re, subprocess, sys, json
from pathlib import Path

import pytest
import torch

from em_ssl.pretrain import Corruption, corrupt, ssl_pretrain_dls, load_pretrained, save_pretrained, pretrain_folder
from em_ssl.checkpoint import load_checkpoint
from em_ssl.models import build_model
from em_ssl.synthetic import make_synthetic_dataset

TINY_ARCH_KWARGS = {"base_width": 4}          # U-Net_2_44 with widths (4, 8, 16)
TINY_CRITIC_KWARGS = {"ndf": 8}               # PatchGAN with 8 base filters
TINY = dict(arch_kwargs=TINY_ARCH_KWARGS, critic_kwargs=TINY_CRITIC_KWARGS, crop=32, n_crops=16)


@pytest.fixture(scope="module")
def lattices(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("data")/"lattices", n=6, kind="lattice", size=64, seed=0)


def _cpu_env():
    env = dict(os.environ)
    env.update(CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env.pop("WORLD_SIZE", None); env.pop("RANK", None); env.pop("LOCAL_RANK", None)
    return env


def test_torchrun_two_cpu_processes(lattices, tmp_path):
    "Two gloo ranks train a few steps through fastai's distrib_ctx; rank 0 alone writes the checkpoint."
    out = tmp_path/"run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           "-m", "em_ssl.cli", "pretrain", str(lattices), "--out", str(out), "--epochs", "1", "--crop", "32", "--bs", "4",
           "--n-crops", "16", "--arch-kwargs", json.dumps(TINY_ARCH_KWARGS), "--critic-kwargs", json.dumps(TINY_CRITIC_KWARGS),
           "--threads", "1"]
    res = subprocess.run(cmd, env=_cpu_env(), capture_output=True, text=True, timeout=240)
    log = res.stdout + res.stderr
    assert res.returncode == 0, log[-4000:]
    found = re.findall(r"rank (\d+)/2: (\d+) training batches, generator checksum ([-\d.]+)", res.stdout)
    ranks = {f"{r}/2": (int(n), chk) for r, n, chk in found}
    assert set(ranks) == {"0/2", "1/2"}, log[-4000:]
    assert all(n > 0 for n, _ in ranks.values())                      # both ranks trained
    assert ranks["0/2"][1] == ranks["1/2"][1]                         # DDP kept the generators identical
    assert re.findall(r"saved checkpoint \S+ \(epoch (\d+), rank (\d+)\)", res.stdout) == [("0", "0")]  # once, by rank 0
    gen, meta = load_pretrained(out/"pretrained.pth")
    assert meta["kind"] == "pretrained" and meta["provenance"]["run"]["world_size"] == 2
    assert len(meta["provenance"]["history"]) == 1
    assert meta["provenance"]["command"].startswith("em-ssl pretrain") and meta["provenance"]["run"]["threads"] == 1
    assert not list(out.glob(".*"))                                   # no temporary files left behind
    assert (out/"metrics.csv").read_text().count("\n") == 2          # header + 1 epoch, written once


def test_resume_equals_uninterrupted(lattices, tmp_path):
    "A run stopped after 1 of 2 epochs and resumed ends with exactly the weights of an uninterrupted run."
    full = pretrain_folder(lattices, tmp_path/"full", epochs=2, bs=4, **TINY)
    run = tmp_path/"run"
    assert pretrain_folder(lattices, run, epochs=1, bs=4, **TINY) == run/"pretrained.pth"
    with pytest.raises(FileExistsError, match="overwrite=True"): pretrain_folder(lattices, run, epochs=1, bs=4, **TINY)
    pretrain_folder(lattices, run, epochs=2, bs=4, resume=True, **TINY)
    a, b = load_checkpoint(full), load_checkpoint(run/"pretrained.pth")
    for k, v in a["weights"].items(): assert torch.equal(v, b["weights"][k]), k
    for k, v in a["extra"]["critic"]["weights"].items(): assert torch.equal(v, b["extra"]["critic"]["weights"][k]), k
    assert [h["epoch"] for h in b["provenance"]["history"]] == [0, 1]
    assert b["model"]["config"]["base_width"] == 4 and b["extra"]["critic"]["config"]["ndf"] == 8
    state = load_checkpoint(run/"last_state.pth", "training_state")
    assert state["state"]["epoch"] == 2 and set(state["state"]["callbacks"]) == {"critic_step", "pretrain_history"}
    with pytest.raises(ValueError, match="unet_2_44"):      # resuming with another architecture is refused
        pretrain_folder(lattices, run, arch="unet_2_84", epochs=3, resume=True, **TINY)
    with pytest.warns(UserWarning, match="nothing to do"): pretrain_folder(lattices, run, epochs=2, resume=True, **TINY)


@pytest.mark.parametrize("kw,msg", [(dict(bs=0), "bs must be an integer >= 1, got 0"), (dict(epochs=0), "epochs must be"),
                                    (dict(crop=8), "crop must be an integer >= 16"),
                                    (dict(crop=16), "crop must be >= 24 pixels for this critic"), (dict(lr=-1.), "lr must be"),
                                    (dict(valid_pct=1.), "valid_pct must be in"), (dict(n_crops=0), "n_crops must be"),
                                    (dict(max_minutes=0), "max_minutes must be")])
def test_bad_options_name_the_parameter(lattices, tmp_path, kw, msg):
    with pytest.raises(ValueError, match=re.escape(msg)): pretrain_folder(lattices, tmp_path/"out", **kw)
    assert not (tmp_path/"out").exists()                              # nothing written


def test_bad_inputs(tmp_path):
    (tmp_path/"empty").mkdir()
    with pytest.raises(ValueError, match="empty"): ssl_pretrain_dls(tmp_path/"empty")
    with pytest.raises(FileNotFoundError, match="missing_dir"): ssl_pretrain_dls(tmp_path/"missing_dir")
    with pytest.raises(FileNotFoundError, match="nope.pth"): load_pretrained(tmp_path/"nope.pth")
    with pytest.raises(FileNotFoundError, match="cannot resume"):
        pretrain_folder(tmp_path/"empty", tmp_path/"out", resume=True)
    torch.save({"format": "something/else"}, tmp_path/"x.pth")
    with pytest.raises(ValueError, match="something/else"): load_pretrained(tmp_path/"x.pth")
    with pytest.raises(ValueError, match="unknown model"): build_model("vgg")
    with pytest.raises(ValueError, match="shape"): corrupt(torch.zeros(2, 2, 1, 8, 8))
    with pytest.raises(ValueError, match="geometric"): Corruption(geometric="target")
    with pytest.raises(TypeError): save_pretrained("not a model", tmp_path/"y.pth")


def test_odd_sized_files_and_stacks(tmp_path):
    "CEM500K edge patches can be smaller than the crop: they are padded; non-square micrographs and stacks work."
    import numpy as np, tifffile
    d = tmp_path/"mixed"; d.mkdir()
    rng = np.random.default_rng(0)
    tifffile.imwrite(d/"small.tif", rng.integers(0, 255, (20, 27), dtype=np.uint8))
    tifffile.imwrite(d/"wide.tif", rng.random((40, 130), dtype=np.float32))
    tifffile.imwrite(d/"stack.tif", rng.random((3, 48, 48), dtype=np.float32), photometric="minisblack")
    np.save(d/"arr.npy", rng.random((64, 64)).astype(np.float32))
    dls = ssl_pretrain_dls(d, crop=32, bs=4, valid_pct=0.3, seed=0, device="cpu")
    xb, yb = dls.train.one_batch()
    assert xb.shape[1:] == (1, 32, 32) and yb.shape[1:] == (1, 32, 32)
    assert float(yb.min()) >= 0 and float(yb.max()) <= 1
    pages = [r.image.page for r in dls.train_ds.regions + dls.valid_ds.regions if r.image.path.name == "stack.tif"]
    assert sorted(pages) == [0, 1, 2]                                 # every page of the stack is an image


def test_single_file_never_validates_on_training_pixels(tmp_path):
    import numpy as np, tifffile
    tifffile.imwrite(tmp_path/"one.tif", np.random.default_rng(0).random((64, 200), dtype=np.float32))
    dls = ssl_pretrain_dls(tmp_path/"one.tif", crop=32, bs=4, valid_pct=0.1, device="cpu")
    (t,), (v,) = dls.train_ds.regions, dls.valid_ds.regions
    assert t.x1 <= v.x0 and v.x1 - v.x0 >= 32 and len(dls.train_ds) == 256   # MIN_EPOCH_CROPS


def test_default_bundled_weights_load():
    gen, meta = load_pretrained("default")
    assert meta["kind"] == "pretrained" and meta["model"]["name"].startswith("unet_2_")
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad(): y = gen.eval()(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert Path(meta["path"]).stat().st_size < 20 * 2**20
    prov = json.dumps(meta["provenance"], default=str)
    assert "/work/" not in prov                                       # data paths relative to the data root


def test_time_budget_stops_and_logs_aligned_row(lattices, tmp_path):
    "max_minutes cuts the epoch after the first batch; the partial epoch is validated, saved and logged aligned."
    out = pretrain_folder(lattices, tmp_path/"budget", epochs=5, bs=4, max_minutes=1e-6, **TINY)
    ck = load_checkpoint(out, "pretrained")
    assert len(ck["provenance"]["history"]) == 1
    row = ck["provenance"]["history"][0]
    assert row["partial_epoch"] is True and row["epoch"] == 0
    assert row["psnr"] < 100 and row["l1"] > 0
    assert row["valid_loss"] == pytest.approx(100 * row["l1"], rel=1e-4)   # columns not shifted: valid loss = 100 L1
    assert isinstance(row["time"], str)
    assert load_checkpoint(tmp_path/"budget"/"last_state.pth", "training_state")["state"]["epoch"] == 1
