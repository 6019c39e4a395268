"""Tests of em_ssl.pretrain outside the notebook: multi-process (torchrun, gloo on CPU), CLI entry, bad input."""
import json, os, re, subprocess, sys
from pathlib import Path

import pytest
import torch

from em_ssl.pretrain import (Corruption, corrupt, ssl_pretrain_dls, load_pretrained, read_checkpoint,
                             save_pretrained, pretrain_folder, pretrain_main, PRETRAINED_FORMAT, build_generator)
from em_ssl.synthetic import make_synthetic_dataset

TINY_ARCH_KWARGS = {"base_width": 4}          # U-Net_2_44 with widths (4, 8, 16)
TINY_CRITIC_KWARGS = {"ndf": 8}               # PatchGAN with 8 base filters


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
           "-m", "em_ssl.pretrain", str(lattices), "--out", str(out), "--epochs", "1", "--crop", "32", "--bs", "4",
           "--arch-kwargs", json.dumps(TINY_ARCH_KWARGS), "--critic-kwargs", json.dumps(TINY_CRITIC_KWARGS),
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
    assert meta["format"] == PRETRAINED_FORMAT and meta["extra"]["world_size"] == 2
    assert len(meta["history"]) == 1
    assert not list(out.glob(".*tmp*"))                               # no temporary files left behind
    assert (out/"metrics.csv").read_text().count("\n") == 2          # header + 1 epoch, written once


def test_script_entry_and_resume(lattices, tmp_path):
    out = tmp_path/"cli"
    args = [str(lattices), "--out", str(out), "--epochs", "1", "--crop", "32", "--bs", "8",
            "--arch-kwargs", json.dumps(TINY_ARCH_KWARGS), "--critic-kwargs", json.dumps(TINY_CRITIC_KWARGS)]
    assert pretrain_main(args) == out/"pretrained.pth"
    with pytest.raises(FileExistsError, match="overwrite=True"): pretrain_main(args)
    args[args.index("--epochs") + 1] = "2"
    pretrain_main(args + ["--resume"])
    ck = read_checkpoint(out/"pretrained.pth")
    assert [h["epoch"] for h in ck["history"]] == [0, 1]
    assert ck["arch_kwargs"] == TINY_ARCH_KWARGS and ck["critic_kwargs"] == TINY_CRITIC_KWARGS
    assert "command" in ck["extra"]
    with pytest.raises(ValueError, match="arch"):      # resuming with another architecture is refused
        pretrain_folder(lattices, out, arch="unet_2_84", epochs=3, crop=32, resume=True,
                        arch_kwargs=TINY_ARCH_KWARGS, critic_kwargs=TINY_CRITIC_KWARGS)


def test_bad_inputs(tmp_path):
    (tmp_path/"empty").mkdir()
    with pytest.raises(ValueError, match="empty"): ssl_pretrain_dls(tmp_path/"empty")
    with pytest.raises(FileNotFoundError, match="missing_dir"): ssl_pretrain_dls(tmp_path/"missing_dir")
    with pytest.raises(FileNotFoundError, match="nope.pth"): load_pretrained(tmp_path/"nope.pth")
    with pytest.raises(FileNotFoundError, match="cannot resume"):
        pretrain_folder(tmp_path/"empty", tmp_path/"out", resume=True)
    torch.save({"format": "something/else"}, tmp_path/"x.pth")
    with pytest.raises(ValueError, match="something/else"): load_pretrained(tmp_path/"x.pth")
    with pytest.raises(ValueError, match="unknown arch"): build_generator("vgg")
    with pytest.raises(ValueError, match="shape"): corrupt(torch.zeros(2, 2, 1, 8, 8))
    with pytest.raises(ValueError, match="geometric"): Corruption(geometric="target")
    with pytest.raises(TypeError): save_pretrained("not a model", tmp_path/"y.pth", arch="unet_2_44")


def test_odd_sized_and_small_files(tmp_path):
    "CEM500K edge patches can be smaller than the crop: they are padded; non-square micrographs work."
    import numpy as np, tifffile
    d = tmp_path/"mixed"; d.mkdir()
    rng = np.random.default_rng(0)
    tifffile.imwrite(d/"small.tif", rng.integers(0, 255, (20, 27), dtype=np.uint8))
    tifffile.imwrite(d/"wide.tif", rng.random((40, 130), dtype=np.float32))
    np.save(d/"arr.npy", rng.random((64, 64)).astype(np.float32))
    dls = ssl_pretrain_dls(d, crop=32, bs=4, valid_pct=0.3, seed=0, device="cpu")
    xb, yb = dls.train.one_batch()
    assert xb.shape[1:] == (1, 32, 32) and yb.shape[1:] == (1, 32, 32)
    assert float(yb.min()) >= 0 and float(yb.max()) <= 1


def test_default_bundled_weights_load():
    gen, meta = load_pretrained("default")
    assert meta["format"] == PRETRAINED_FORMAT and meta["arch"].startswith("unet_2_")
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad(): y = gen.eval()(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert Path(meta["path"]).stat().st_size < 20 * 2**20


def test_time_budget_stops_and_logs_aligned_row(lattices, tmp_path):
    "max_minutes cuts the epoch after the first batch; the partial epoch is validated, saved and logged aligned."
    out = pretrain_folder(lattices, tmp_path/"budget", epochs=5, crop=32, bs=4, max_minutes=1e-6,
                          arch_kwargs=TINY_ARCH_KWARGS, critic_kwargs=TINY_CRITIC_KWARGS)
    ck = read_checkpoint(out)
    assert len(ck["history"]) == 1
    row = ck["history"][0]
    assert row["partial_epoch"] is True and row["epoch"] == 0
    assert 0 < row["psnr"] < 100 and 0 <= row["l1"] <= 1 and row["valid_loss"] > row["l1"]   # not shifted
    assert isinstance(row["time"], str)
