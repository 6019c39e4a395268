"""The `em-ssl` command line, run in-process through `em_ssl.cli.main` (plus two smoke tests of the installed
console script): the fixed contract other tools rely on, options generated from documented signatures, and
behaviour on bad input (one clear line naming the flag that fixes it, non-zero status, no traceback, no
overwritten files)."""
import argparse
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from em_ssl import cli
from em_ssl.cli import main, build_parser, missing_docments

COMMANDS = ("simulate", "complete", "demo", "info", "pretrain", "finetune", "predict")  # train-completion: tested below
LIBRARY = {"pretrain": "em_ssl.pretrain:pretrain_folder", "finetune": "em_ssl.finetune:finetune_folders",
           "predict": "em_ssl.finetune:predict_files"}


def run(capsys, *args):
    "`(status, stdout, stderr)` of `em-ssl ARGS` run in-process (usage errors: argparse's status 2)."
    try: status = main([str(a) for a in args])
    except SystemExit as e: status = e.code
    out, err = capsys.readouterr()
    return status, out, err


def assert_clean_error(res, *words, status=1):
    code, out, err = res
    assert code == status, (code, out, err)
    assert "Traceback" not in err, err
    lines = [l for l in err.strip().splitlines() if l.startswith("em-ssl")]
    assert lines, err
    if status == 1: assert len(err.strip().splitlines()) == 1 and err.startswith("em-ssl: error: "), err
    for w in words: assert w.lower() in err.lower(), (w, err)


def subparsers(parser):
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


# ---------------------------------------------------------------------------------------------- the parser

def test_help_lists_commands(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for cmd in COMMANDS: assert cmd in out


@pytest.mark.parametrize("name", COMMANDS)
def test_every_option_has_help_and_default(name):
    "Every argument has help text; every optional one shows its default (or says it is required)."
    sp = subparsers(build_parser([name]))[name]
    actions = [a for a in sp._actions if not isinstance(a, argparse._HelpAction)]
    assert actions
    for a in actions:
        assert a.help and a.help.strip(), (name, a.dest)
        if a.option_strings:
            assert ("(required)" if a.required else "(default: ") in a.help, (name, a.option_strings, a.help)
    sp.format_help()  # no formatting error (e.g. a bare % in a docment)


@pytest.mark.parametrize("name", sorted(LIBRARY))
def test_library_options_follow_signatures(name):
    "pretrain/finetune/predict expose every parameter of the library function they call, exclusions aside."
    import inspect
    func = cli._resolve(LIBRARY[name])
    spec = cli.COMMANDS[name]
    dests = {a.dest for a in subparsers(build_parser([name]))[name]._actions}
    params = [k for k, p in inspect.signature(func).parameters.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    assert set(params) - set(spec.get("exclude", {})) <= dests
    for k, why in spec.get("exclude", {}).items(): assert len(why) > 10, (k, "exclusions give their reason")


@pytest.mark.parametrize("name", sorted(LIBRARY))
def test_library_docments(name):
    missing = missing_docments(LIBRARY[name], exclude=cli.COMMANDS[name].get("exclude", {}))
    assert not missing, f"{LIBRARY[name]} lacks docments for: {', '.join(missing)}"


def test_undocumented_parameter_is_refused():
    def cmd(a: int, # documented
            b: int = 0): ...
    with pytest.raises(ValueError, match=r"cmd\(b\)"): cli.add_command(argparse.ArgumentParser().add_subparsers(), cmd)


def test_pretrain_has_every_pretrain_main_option(capsys):
    "`em-ssl pretrain` exposes every option the old `python -m em_ssl.pretrain` had (merged into one CLI)."
    import em_ssl.pretrain as pt
    expected = {"--out", "--arch", "--arch-kwargs", "--critic-kwargs", "--epochs", "--crop", "--bs", "--lr", "--seed",
                "--valid-pct", "--n-crops", "--num-workers", "--max-minutes", "--threads",
                "--channels-last", "--no-fp16", "--resume", "--overwrite"}
    if hasattr(pt, "pretrain_main"):
        with pytest.raises(SystemExit): pt.pretrain_main(["--help"])
        expected |= set(re.findall(r"--[a-z][\w-]*", capsys.readouterr().out)) - {"--help"}
    sp = subparsers(build_parser(["pretrain"]))["pretrain"]
    have = {s for a in sp._actions for s in a.option_strings}
    assert expected <= have, expected - have


def test_pretrain_parses_and_forwards(monkeypatch, tmp_path, capsys):
    "The parsed options reach pretrain_folder as its keywords (training itself: tests/test_pretrain.py)."
    import em_ssl.pretrain as pt
    args = build_parser(["pretrain"]).parse_args(
        ["pretrain", str(tmp_path), "--out", str(tmp_path / "o"), "--epochs", "2", "--no-fp16", "--threads", "1",
         "--arch-kwargs", '{"base": 8}', "--valid-pct", "0", "--channels-last"])
    seen = {}
    monkeypatch.setattr(pt, "pretrain_folder", lambda **kw: seen.update(kw) or tmp_path / "o" / "pretrained.pth")
    args._command(**{k: getattr(args, k) for k in args._params})
    assert seen["data_dir"] == str(tmp_path) and seen["out_dir"] == str(tmp_path / "o")
    assert (seen["epochs"], seen["fp16"], seen["arch_kwargs"], seen["valid_pct"], seen["channels_last"]) == (2, False, {"base": 8}, 0.0, True)
    if "extra" in seen: assert seen["extra"]["threads"] == 1
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize("argv,flag", [
    (["simulate", "x.tif", "-o", "p", "--mask-out", "m", "--seed", "-1"], "--seed: must be a non-negative integer, got -1"),
    (["simulate", "x.tif", "-o", "p", "--mask-out", "m", "--page", "two"], "--page: must be a non-negative integer, got two"),
    (["pretrain", "d", "--out", "o", "--epochs", "0"], "--epochs: must be a positive integer, got 0"),
    (["pretrain", "d", "--out", "o", "--valid-pct", "1.5"], "--valid-pct: must be a fraction"),
    (["pretrain", "d", "--out", "o", "--arch-kwargs", "{base: 8}"], "--arch-kwargs: must be a JSON object"),
    (["finetune", "paint", "--images", "i", "--targets", "t"], "invalid choice: 'paint'"),
    (["predict", "c.pth", "x.tif", "-o", "out", "--tile", "-5"], "--tile: must be a positive integer"),
    (["finetune", "segment", "--images", "i", "--targets", "t", "--lr-mult", "0"], "--lr-mult: must be a positive number, got 0"),
    (["finetune", "segment", "--images", "i", "--targets", "t", "--loss", "dice"], "invalid choice: 'dice'"),
    (["finetune", "segment", "--images", "i", "--targets", "t", "--invert-p", "1.5"], "--invert-p: must be a probability in [0, 1], got 1.5"),
])
def test_bad_values_name_the_option(capsys, argv, flag):
    code, _, err = run(capsys, *argv)
    assert code == 2 and f"em-ssl {argv[0]}: error: " in err and flag in err, err


def test_model_names_in_help(capsys):
    try: from em_ssl.models import list_models
    except ImportError: pytest.skip("em_ssl.models.list_models does not exist yet")
    for cmd in ("pretrain", "finetune"):
        code, out, _ = run(capsys, cmd, "--help")
        assert code == 0
        for name in list_models(): assert name in out, (cmd, name)


def test_finetune_task_accepts_dashes():
    args = build_parser(["finetune"]).parse_args(["finetune", "denoise-bg", "--images", "i", "--targets", "t", "--pretrained", "none"])
    assert (args.task, args.pretrained) == ("denoise_bg", None)


# --------------------------------------------------------------------------------------------- simulate

@pytest.mark.parametrize("scan", ["spiral", "grid", "random", "raster", "lissajous"])
def test_simulate_contract(lattice_tif, tmp_path, scan, capsys):
    part, mask = tmp_path / "partial.tif", tmp_path / "mask.tif"
    code, _, err = run(capsys, "simulate", lattice_tif, "--scan", scan, "--coverage", "1/10", "--seed", 1, "-o", part, "--mask-out", mask)
    assert code == 0, err
    src, p, m = tifffile.imread(lattice_tif).astype(np.float32), tifffile.imread(part), tifffile.imread(mask)
    assert p.dtype == np.float32 and m.dtype == np.float32 and p.shape == m.shape == src.shape
    assert m.min() >= 0 and m.max() <= 1
    assert abs((m > 0).mean() - 0.1) < 0.1 * 0.1 + 1e-3  # within the 2% target with room for rounding
    sampled = p[m > 0]
    # the partial scan is in the input's intensity scale (16-bit counts here), not in [0, 1]
    assert sampled.max() > 10 and sampled.max() <= src.max() * 2.5 and np.isfinite(p).all()


def test_simulate_is_seeded(lattice_tif, tmp_path, capsys):
    outs = []
    for i in range(2):
        part, mask = tmp_path / f"p{i}.tif", tmp_path / f"m{i}.tif"
        assert run(capsys, "simulate", lattice_tif, "--scan", "grid", "--coverage", "0.05", "--seed", 7, "-o", part, "--mask-out", mask)[0] == 0
        outs.append(tifffile.imread(part))
    np.testing.assert_array_equal(*outs)


def test_simulate_bad_input(tmp_path, lattice_tif, capsys):
    out = ["-o", tmp_path / "p.tif", "--mask-out", tmp_path / "m.tif"]
    assert_clean_error(run(capsys, "simulate", tmp_path / "missing.tif", *out), "missing.tif")
    (tmp_path / "notes.xyz").write_text("hello")
    assert_clean_error(run(capsys, "simulate", tmp_path / "notes.xyz", *out), ".xyz")
    broken = tmp_path / "broken.tif"
    broken.write_bytes(lattice_tif.read_bytes()[:300])
    assert_clean_error(run(capsys, "simulate", broken, *out), "broken.tif")
    nan = tmp_path / "nan.npy"
    np.save(nan, np.full((64, 64), np.nan, np.float32))
    assert_clean_error(run(capsys, "simulate", nan, *out), "nan")
    assert_clean_error(run(capsys, "simulate", lattice_tif, "--coverage", "0", *out), "--coverage", status=2)


def test_simulate_never_overwrites(lattice_tif, tmp_path, capsys):
    part, mask = tmp_path / "p.tif", tmp_path / "m.tif"
    part.write_bytes(b"precious")
    res = run(capsys, "simulate", lattice_tif, "-o", part, "--mask-out", mask)
    assert_clean_error(res, "exists", "--overwrite")
    assert "overwrite=True" not in res[2]
    assert part.read_bytes() == b"precious" and not mask.exists()
    assert run(capsys, "simulate", lattice_tif, "-o", part, "--mask-out", mask, "--overwrite")[0] == 0
    assert tifffile.imread(part).shape == (128, 128)


def test_page_hint_names_the_flag(tmp_path, capsys):
    "A stack needs a page: the hint names --page (not page=)."
    from em_ssl.synthetic import lattice_image
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, np.stack([lattice_image(size=64, seed=s) for s in range(3)]).astype(np.float32),
                     photometric="minisblack")
    out = ["-o", tmp_path / "p.tif", "--mask-out", tmp_path / "m.tif"]
    res = run(capsys, "simulate", stack, *out)
    assert_clean_error(res, "--page")
    assert "page=" not in res[2]
    assert run(capsys, "simulate", stack, "--page", 2, *out)[0] == 0


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(FileNotFoundError):
        main(["--debug", "simulate", str(tmp_path / "missing.tif"), "-o", str(tmp_path / "p.tif"), "--mask-out", str(tmp_path / "m.tif")])


# -------------------------------------------------------------------------------------- complete and demo

def test_complete_round_trip(lattice_tif, tmp_path, capsys):
    part, mask, out = tmp_path / "p.tif", tmp_path / "m.tif", tmp_path / "c.tif"
    assert run(capsys, "simulate", lattice_tif, "--coverage", "1/20", "--seed", 0, "-o", part, "--mask-out", mask)[0] == 0
    code, _, err = run(capsys, "complete", part, "--mask", mask, "-o", out)
    assert code == 0, err
    c = tifffile.imread(out)
    assert c.dtype == np.float32 and c.shape == (128, 128) and np.isfinite(c).all()
    src = tifffile.imread(lattice_tif).astype(np.float32)
    assert c.std() > 0 and 0.1 * src.mean() < c.mean() < 10 * src.mean()  # the input's intensity scale
    res = run(capsys, "complete", part, "--mask", mask, "-o", out)  # the library's hint, as a flag
    assert_clean_error(res, "exists", "--overwrite")
    assert "overwrite=True" not in res[2]


def test_complete_gate(lattice_tif, tmp_path, capsys):
    "--gate completes through complete(..., gate=True); it is refused with --points (no held-out check there)."
    from em_ssl.inference import complete as complete_scan
    part, mask, out = tmp_path / "p.tif", tmp_path / "m.tif", tmp_path / "c.tif"
    assert run(capsys, "simulate", lattice_tif, "--coverage", "1/10", "--seed", 0, "-o", part, "--mask-out", mask)[0] == 0
    code, _, err = run(capsys, "complete", part, "--mask", mask, "-o", out, "--gate")
    assert code == 0, err
    want = complete_scan(tifffile.imread(part), tifffile.imread(mask), gate=True)
    np.testing.assert_allclose(tifffile.imread(out), want, rtol=1e-5, atol=1e-4)
    pts = tmp_path / "s.csv"; pts.write_text("y,x,value\n0,0,1\n5,5,2\n9,1,3\n")
    assert_clean_error(run(capsys, "complete", "--points", pts, "--shape", "64x64", "-o", tmp_path / "q.tif", "--gate"),
                       "--gate needs a partial scan")


def test_complete_bad_input(lattice_tif, tmp_path, capsys):
    part, mask = tmp_path / "p.tif", tmp_path / "m.tif"
    assert run(capsys, "simulate", lattice_tif, "-o", part, "--mask-out", mask)[0] == 0
    small = tmp_path / "small_mask.tif"
    tifffile.imwrite(small, np.ones((64, 96), np.float32))
    assert_clean_error(run(capsys, "complete", part, "--mask", small, "-o", tmp_path / "c.tif"), "shape")
    empty = tmp_path / "empty_mask.tif"
    tifffile.imwrite(empty, np.zeros((128, 128), np.float32))
    assert_clean_error(run(capsys, "complete", part, "--mask", empty, "-o", tmp_path / "c.tif"), "mask")
    assert_clean_error(run(capsys, "complete", part, "--mask", mask, "--model", tmp_path / "nope.pth", "-o", tmp_path / "c.tif"), "nope.pth")


def test_demo(tmp_path, capsys):
    code, out, err = run(capsys, "demo", "--out", tmp_path / "demo")
    assert code == 0, err
    assert list((tmp_path / "demo").glob("*.png")), "the demo writes a figure"
    # the result in words, not a dump of raw floats
    assert re.search(r"model RMS \d+\.\d % vs linear \d+\.\d % vs linear \+ blur \d+\.\d % against the blurred micrograph "
                     r"\(lower is better\)", out), out
    assert "rms_percent" not in out and "seconds_" not in out
    assert_clean_error(run(capsys, "demo", "--out", tmp_path / "demo"), "exists")  # refuses to overwrite


# -------------------------------------------------------------------------------------------------- info

def test_info_prints_the_description(monkeypatch, tmp_path, capsys):
    "`info` prints describe_checkpoint's text; a hint naming a flag `info` lacks is dropped."
    import types
    calls = []
    def describe(path):
        calls.append(path)
        if "bad" in str(path): raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
        return "format em_ssl.checkpoint v1, kind completion"
    monkeypatch.setitem(sys.modules, "em_ssl.checkpoint", types.SimpleNamespace(describe_checkpoint=describe))
    code, out, _ = run(capsys, "info", tmp_path / "model.pth")
    assert code == 0 and "kind completion" in out and calls == [str(tmp_path / "model.pth")]
    res = run(capsys, "info", tmp_path / "bad.pth")
    assert_clean_error(res, "bad.pth exists")
    assert "overwrite" not in res[2]


def test_info_without_argument_describes_every_bundled_checkpoint(capsys):
    from em_ssl.checkpoint import BUNDLED
    code, out, _ = run(capsys, "info")
    assert code == 0 and out.count("format: em_ssl.checkpoint") == len(BUNDLED) >= 2
    assert "kind: completion" in out and "kind: pretrained" in out


def test_info_real_checkpoint(tmp_path, capsys):
    "The real em_ssl.checkpoint: the bundled weights, and a missing file."
    code, out, err = run(capsys, "info", "partial_scan_small")
    assert code == 0, err
    assert "kind: completion" in out and "format: em_ssl.checkpoint" in out
    assert_clean_error(run(capsys, "info", tmp_path / "missing.pth"), "missing.pth")


# ------------------------------------------------------------------------------- finetune and predict (tiny)

def test_finetune_predict_tiny(tmp_path, capsys):
    "One epoch of segmentation on two 96x96 images, then predict: status 0, outputs, refusal to overwrite."
    from em_ssl.synthetic import lattice_image
    imgs, masks = tmp_path / "images", tmp_path / "masks"
    imgs.mkdir(); masks.mkdir()
    for i in range(2):
        img = lattice_image(size=96, seed=i)
        tifffile.imwrite(imgs / f"im{i}.tif", img.astype(np.float32))
        tifffile.imwrite(masks / f"im{i}.tif", (img > 0.5).astype(np.uint8))
    code, out, err = run(capsys, "finetune", "segment", "--images", imgs, "--targets", masks, "--pretrained", "none",
                         "--arch", "unet_2_44", "--epochs", 1, "--crop", 64, "--bs", 2, "--epoch-size", 4,
                         "--out", tmp_path / "ft")
    assert code == 0, err
    ckpt = tmp_path / "ft" / "model.pth"
    assert ckpt.exists()
    code, out, err = run(capsys, "predict", ckpt, imgs, "-o", tmp_path / "pred")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "pred").glob("*.tif")) == ["im0.tif", "im1.tif"]
    res = run(capsys, "predict", ckpt, imgs, "-o", tmp_path / "pred")
    assert_clean_error(res, "exist", "--overwrite")
    assert_clean_error(run(capsys, "predict", tmp_path / "nope.pth", imgs, "-o", tmp_path / "p2"), "nope.pth")


# ------------------------------------------------------------------- the installed console script (smoke)

EM_SSL = [shutil.which("em-ssl")] if shutil.which("em-ssl") else [sys.executable, "-m", "em_ssl.cli"]


def em_ssl(*args) -> subprocess.CompletedProcess:
    return subprocess.run([*EM_SSL, *map(str, args)], capture_output=True, text=True, timeout=600)


def test_console_script_version():
    res = em_ssl("--version")
    assert res.returncode == 0 and res.stdout.startswith("em-ssl "), res.stderr


def test_console_script_simulate(lattice_tif, tmp_path):
    part, mask = tmp_path / "p.tif", tmp_path / "m.tif"
    res = em_ssl("simulate", lattice_tif, "--coverage", "1/10", "--seed", 1, "-o", part, "--mask-out", mask)
    assert res.returncode == 0, res.stderr
    assert tifffile.imread(part).shape == tifffile.imread(mask).shape == (128, 128)
    res = em_ssl("simulate", lattice_tif, "-o", part, "--mask-out", mask)
    assert res.returncode == 1 and "Traceback" not in res.stderr and "--overwrite" in res.stderr


# ------------------------------------------------------------------------------------ complete: pages, pixel size

def test_complete_page_and_pixel_size(tmp_path, capsys):
    "--page picks a frame of a stack; the output TIFF keeps the input's pixel size; a stack without --page names the flag."
    from em_ssl.io import save_tiff, load_micrograph
    from em_ssl.scans import simulate_partial_scan
    from em_ssl.synthetic import lattice_image
    p, m = simulate_partial_scan(lattice_image(96, seed=0), kind="spiral", coverage=0.1, seed=0)
    stack, mask = tmp_path / "stack.tif", tmp_path / "m.tif"
    save_tiff(stack, np.stack([p, 3 * p]), pixel_size=0.5, unit="nm"); save_tiff(mask, m)
    code, out, err = run(capsys, "complete", stack, "--mask", mask, "--page", 1, "-o", tmp_path / "c.tif")
    assert code == 0, err
    mg = load_micrograph(tmp_path / "c.tif")
    assert mg.data.shape == (96, 96) and mg.pixel_size == pytest.approx(0.5) and mg.unit == "nm"
    res = run(capsys, "complete", stack, "--mask", mask, "-o", tmp_path / "d.tif")
    assert_clean_error(res, "--page")
    assert "page=" not in res[2]


# ------------------------------------------------------------------------------------------- train-completion

def _stand_in_train_completion(images: list[str], # micrographs or folders (full scans)
                               out: str, # output folder
                               init: str = "default", # 'default' (the bundled model), 'none' (from scratch) or a completion checkpoint
                               minutes: float = 10.0, # wall-clock training budget
                               epochs: int | None = None, # epochs (unset: as many as the budget allows)
                               scan: str = "all", # scan kind, or 'all'
                               coverage: float | None = None, # fixed coverage (unset: log-uniform 1/100..1/10)
                               noise: str = "mixed", # noise model
                               size: str = "small", # generator size
                               crop: int = 128, # crop side
                               bs: int = 8, # batch size
                               lr: float = 1e-3, # learning rate
                               holdout: float = 0.35, # share of the files held back for the before/after table
                               n_crops: int | None = None, # crops per epoch
                               resume: bool = False, # continue from out/last_state.pth
                               overwrite: bool = False, # replace an existing run in out
                               seed: int = 0, # random seed
                               threads: int | None = None, # torch threads
                              ):
    "Stand-in with the signature agreed for em_ssl.partial_scan.train_completion (used until the real one exists)."
    from pathlib import Path
    getattr(_stand_in_train_completion, "calls", []).append(dict(locals()))
    if getattr(_stand_in_train_completion, "refuse", False): raise FileExistsError(f"{out} holds a run; pass overwrite=True or resume=True")
    return Path(out) / "model.pth"


@pytest.fixture
def train_completion_fn(monkeypatch):
    "The real em_ssl.partial_scan.train_completion when it exists, else the stand-in (monkeypatched in)."
    import em_ssl.partial_scan as ps
    if not hasattr(ps, "train_completion"): monkeypatch.setattr(ps, "train_completion", _stand_in_train_completion, raising=False)
    return ps.train_completion


def test_train_completion_options(train_completion_fn):
    import inspect
    sp = subparsers(build_parser(["train-completion"]))["train-completion"]
    dests = {a.dest for a in sp._actions}
    params = [k for k, p in inspect.signature(train_completion_fn).parameters.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    assert set(params) <= dests, set(params) - dests
    assert not missing_docments(train_completion_fn)
    actions = [a for a in sp._actions if not isinstance(a, argparse._HelpAction)]
    for a in actions:
        assert a.help and a.help.strip(), a.dest
        if a.option_strings: assert ("(required)" if a.required else "(default: ") in a.help, (a.option_strings, a.help)
    out = next(a for a in actions if a.dest == "out")
    assert out.required and out.option_strings == ["--out"]
    assert next(a for a in actions if a.dest == "images").nargs == "+"
    sp.format_help()


def test_train_completion_parses_and_forwards(monkeypatch, tmp_path, capsys):
    "The parsed options reach train_completion as keywords (a recording stand-in: training itself is tested with the library)."
    import em_ssl.partial_scan as ps
    monkeypatch.setattr(ps, "train_completion", _stand_in_train_completion, raising=False)
    monkeypatch.setattr(_stand_in_train_completion, "calls", [], raising=False)
    code, out, err = run(capsys, "train-completion", tmp_path / "a.tif", tmp_path / "more", "--out", tmp_path / "o",
                         "--init", "none", "--minutes", "0.5", "--scan", "spiral", "--coverage", "1/20", "--holdout", "0.3",
                         "--seed", 3, "--resume")
    assert code == 0, err
    (seen,) = _stand_in_train_completion.calls
    assert seen["images"] == [str(tmp_path / "a.tif"), str(tmp_path / "more")] and seen["out"] == str(tmp_path / "o")
    assert (seen["init"], seen["minutes"], seen["scan"], seen["coverage"], seen["holdout"], seen["seed"], seen["resume"]) == \
        ("none", 0.5, "spiral", 0.05, 0.3, 3, True)
    assert (seen["overwrite"], seen["epochs"], seen["crop"]) == (False, None, 128)
    assert out.strip() == f"wrote {tmp_path / 'o' / 'model.pth'}"


@pytest.mark.parametrize("argv,msg", [
    (["train-completion", "d", "--out", "o", "--minutes", "0"], "--minutes: must be a positive number, got 0"),
    (["train-completion", "d", "--out", "o", "--holdout", "1.5"], "--holdout: must be a fraction"),
    (["train-completion", "d", "--out", "o", "--coverage", "2"], "--coverage: coverage must be in (0, 1]"),
    (["train-completion", "d", "--out", "o", "--seed", "-2"], "--seed: must be a non-negative integer"),
    (["train-completion", "d"], "the following arguments are required: --out"),
    (["train-completion", "--out", "o"], "the following arguments are required: images"),
])
def test_train_completion_bad_values(train_completion_fn, capsys, argv, msg):
    code, _, err = run(capsys, *argv)
    assert code == 2 and "em-ssl train-completion: error: " in err and msg in err, err


def test_train_completion_library_errors_name_flags(monkeypatch, tmp_path, capsys):
    "A library hint such as 'pass overwrite=True or resume=True' reaches the user as flags."
    import em_ssl.partial_scan as ps
    monkeypatch.setattr(ps, "train_completion", _stand_in_train_completion, raising=False)
    monkeypatch.setattr(_stand_in_train_completion, "refuse", True, raising=False)
    res = run(capsys, "train-completion", "d", "--out", tmp_path / "o")
    assert_clean_error(res, "holds a run", "--overwrite", "--resume")


def test_finetune_lr_accepts_find_and_names_the_option(capsys):
    "`--lr find` parses (fastai's lr_find suggestion); a bad value names --lr."
    sp = subparsers(build_parser(["finetune"]))["finetune"]
    args = sp.parse_args(["segment", "--images", "i", "--targets", "t", "--lr", "find"])
    assert args.lr == "find"
    assert sp.parse_args(["segment", "--images", "i", "--targets", "t", "--lr", "1e-3"]).lr == 1e-3
    code, _, err = run(capsys, "finetune", "segment", "--images", "i", "--targets", "t", "--lr", "-1")
    assert code == 2 and "--lr" in err


# ------------------------------------------------------------------- path, plan, complete --points / --uncertainty-out

SCAN_COMMANDS = ("path", "plan")


@pytest.mark.parametrize("name", SCAN_COMMANDS)
def test_scan_commands_listed_with_help_and_defaults(name, capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0 and name in out
    test_every_option_has_help_and_default(name)


@pytest.mark.parametrize("ext", [".csv", ".npz", ".json", ".h5", ".nxs", ".s", ".py"])
def test_path_writes_every_format(tmp_path, ext, capsys):
    from em_ssl.scan_paths import load_path
    from em_ssl.scans import scan_mask
    out = tmp_path / f"spiral{ext}"
    code, stdout, err = run(capsys, "path", "--scan", "spiral", "--coverage", "1/20", "--shape", "96x128", "--seed", 3,
                            "--dwell-us", 2, "--flyback-us", 15, "-o", out)
    assert code == 0, err
    back = load_path(out)
    np.testing.assert_array_equal(back.to_mask(), scan_mask("spiral", (96, 128), 0.05, seed=3))
    assert set(back.dwell_us) == {2.0} and set(back.flyback_us_before) <= {0.0, 15.0}
    m = re.fullmatch(r"wrote \S+: spiral path on 96x128 px: (\d+) points in (\d+) segments, scan time ([\d.]+) ms, "
                     r"dose fraction ([\d.]+)\n", stdout)
    assert m, stdout
    assert int(m.group(1)) == len(back) and int(m.group(2)) == back.n_segments
    assert float(m.group(3)) == pytest.approx(back.total_us / 1000, abs=1e-3) and float(m.group(4)) == pytest.approx(0.05, abs=1e-4)


def test_path_square_shape_and_seed(tmp_path, capsys):
    for name in ("a.csv", "b.csv"):
        assert run(capsys, "path", "--scan", "random", "--coverage", "0.1", "--shape", "64", "--seed", 1, "-o", tmp_path / name)[0] == 0
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()


def test_path_bad_input(tmp_path, capsys):
    base = ["path", "--scan", "spiral", "--coverage", "0.1", "--shape", "64x64"]
    assert_clean_error(run(capsys, *base[:-1], "64x", "-o", tmp_path / "p.csv"), "--shape", "HxW", status=2)
    assert_clean_error(run(capsys, *base[:-1], "1x64", "-o", tmp_path / "p.csv"), "--shape", status=2)
    assert_clean_error(run(capsys, "path", "--scan", "spiral", "--coverage", "2", "--shape", "64", "-o", tmp_path / "p.csv"),
                       "--coverage", status=2)
    assert_clean_error(run(capsys, *base, "--flyback-us", "-1", "-o", tmp_path / "p.csv"), "--flyback-us", status=2)
    assert_clean_error(run(capsys, *base, "--dwell-us", "0", "-o", tmp_path / "p.csv"), "--dwell-us", status=2)
    assert_clean_error(run(capsys, "path", "--scan", "grid", "--coverage", "0.9", "--shape", "64", "-o", tmp_path / "p.csv"),
                       "--coverage 0.9", "grid")
    assert_clean_error(run(capsys, *base, "-o", tmp_path / "p.txt"), "-o/--output", "unknown scan path format '.txt'", ".csv")
    assert not list(tmp_path.iterdir())
    precious = tmp_path / "p.json"
    precious.write_text("precious")
    res = run(capsys, *base, "-o", precious)
    assert_clean_error(res, "exists", "--overwrite")
    assert precious.read_text() == "precious"
    assert run(capsys, *base, "-o", precious, "--overwrite")[0] == 0 and precious.read_text() != "precious"
    assert [p.name for p in tmp_path.iterdir()] == ["p.json"]   # no temporary files left behind


def _samples_csv(path, shift=0.0, seed=0):
    from em_ssl.scans import simulate_partial_scan
    from em_ssl.synthetic import lattice_image
    part, mask = simulate_partial_scan(lattice_image(96, seed=seed) * 1000, "spiral", 0.1, noise="dwell", seed=seed)
    ys, xs = np.nonzero(mask)
    path.write_text("y,x,value\n" + "".join(f"{float(y + shift)!r},{float(x + shift)!r},{float(part[y, x])!r}\n" for y, x in zip(ys, xs)))
    return part, mask


def test_complete_points(tmp_path, capsys):
    from em_ssl.inference import complete as complete_scan
    from em_ssl.points import complete_points, read_points
    part, mask = _samples_csv(tmp_path / "s.csv")
    code, out, err = run(capsys, "complete", "--points", tmp_path / "s.csv", "--shape", "96x96", "-o", tmp_path / "c.tif")
    assert code == 0, err
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "c.tif"), complete_scan(part, mask))   # pixel centres: = complete
    _samples_csv(tmp_path / "sub.csv", shift=0.3)
    assert run(capsys, "complete", "--points", tmp_path / "sub.csv", "--shape", "96", "-o", tmp_path / "sub.tif")[0] == 0
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "sub.tif"), complete_points(*read_points(tmp_path / "sub.csv", (96, 96)), (96, 96)))
    # the path CSV of `em-ssl path` with a value column added
    assert run(capsys, "path", "--scan", "lissajous", "--coverage", "0.1", "--shape", "64x80", "--seed", 0, "-o", tmp_path / "p.csv")[0] == 0
    rows = (tmp_path / "p.csv").read_text().splitlines()
    (tmp_path / "pv.csv").write_text("\n".join([rows[0] + ",value"] + [r + f",{i % 7}" for i, r in enumerate(rows[1:])]) + "\n")
    assert run(capsys, "complete", "--points", tmp_path / "pv.csv", "--shape", "64x80", "-o", tmp_path / "pv.tif")[0] == 0
    assert tifffile.imread(tmp_path / "pv.tif").shape == (64, 80)


def test_complete_points_bad_input(tmp_path, capsys):
    _samples_csv(tmp_path / "s.csv")
    o = ["-o", tmp_path / "c.tif"]
    assert_clean_error(run(capsys, "complete", "--points", tmp_path / "s.csv", *o), "--points needs --shape")
    assert_clean_error(run(capsys, "complete", "--points", tmp_path / "s.csv", "--shape", "9x", *o), "--shape", status=2)
    assert_clean_error(run(capsys, "complete", "x.tif", "--mask", "m.tif", "--points", tmp_path / "s.csv", "--shape", "96", *o),
                       "--points replaces the partial scan and --mask")
    assert_clean_error(run(capsys, "complete", "--points", tmp_path / "s.csv", "--shape", "96", "--uncertainty-out",
                           tmp_path / "u.tif", *o), "--uncertainty-out needs a partial scan")
    assert_clean_error(run(capsys, "complete", *o), "--mask", "--points")
    assert_clean_error(run(capsys, "complete", "x.tif", "--mask", "m.tif", "--shape", "96", *o), "--shape goes with --points")
    assert_clean_error(run(capsys, "complete", "--points", tmp_path / "s.csv", "--shape", "64x64", *o), "--points", "--shape 64x64", "outside")
    (tmp_path / "novalue.csv").write_text("y,x\n1,2\n")
    assert_clean_error(run(capsys, "complete", "--points", tmp_path / "novalue.csv", "--shape", "96", *o), "--points", "'value' column")
    assert_clean_error(run(capsys, "complete", "--points", tmp_path / "missing.csv", "--shape", "96", *o), "missing.csv")
    assert not (tmp_path / "c.tif").exists()
    (tmp_path / "c.tif").write_bytes(b"precious")
    assert_clean_error(run(capsys, "complete", "--points", tmp_path / "s.csv", "--shape", "96", *o), "exists", "--overwrite")
    assert (tmp_path / "c.tif").read_bytes() == b"precious"


def test_complete_uncertainty_out(lattice_tif, tmp_path, capsys):
    from em_ssl.inference import complete as complete_scan
    part, mask = tmp_path / "p.tif", tmp_path / "m.tif"
    assert run(capsys, "simulate", lattice_tif, "--coverage", "1/10", "--seed", 0, "-o", part, "--mask-out", mask)[0] == 0
    out, unc = tmp_path / "c.tif", tmp_path / "u.tif"
    code, stdout, err = run(capsys, "complete", part, "--mask", mask, "-o", out, "--uncertainty-out", unc)
    assert code == 0, err
    ref_c, ref_u = complete_scan(tifffile.imread(part), tifffile.imread(mask), return_uncertainty=True)
    np.testing.assert_array_equal(tifffile.imread(out), ref_c)
    np.testing.assert_array_equal(tifffile.imread(unc), ref_u)
    assert (ref_u >= 0).all() and ref_u.max() > 0
    assert_clean_error(run(capsys, "complete", part, "--mask", mask, "-o", out, "--uncertainty-out", unc), "exists", "--overwrite")
    assert_clean_error(run(capsys, "complete", part, "--mask", mask, "-o", tmp_path / "c2.tif", "--uncertainty-out", tmp_path / "c2.tif"),
                       "same file")
    assert_clean_error(run(capsys, "complete", part, "--mask", mask, "-o", tmp_path / "c3.tif", "--uncertainty-out", mask),
                       "--uncertainty-out", "mask")
    assert not (tmp_path / "c3.tif").exists() and not (tmp_path / "c2.tif").exists()


@pytest.fixture
def fake_adaptive(monkeypatch):
    "A stand-in for em_ssl.adaptive.plan_next (the documented signature), recording its arguments."
    import types
    from em_ssl.scans import ScanPath
    calls = []
    def plan_next(partial, mask, budget, model=None, **kw):
        calls.append(dict(shape=partial.shape, mask_sum=float(mask.sum()), budget=budget, model=model))
        n = int(budget) if budget >= 1 else int(budget * mask.size)
        free = np.flatnonzero(mask.reshape(-1) == 0)[:n]
        return ScanPath(np.stack(np.divmod(free, mask.shape[1]), 1).astype(float), np.ones(len(free)), mask.shape, "adaptive")
    monkeypatch.setitem(sys.modules, "em_ssl.adaptive", types.SimpleNamespace(plan_next=plan_next))
    return calls


def test_plan_wiring(lattice_tif, tmp_path, capsys, fake_adaptive):
    from em_ssl.scan_paths import load_path
    part, mask = tmp_path / "p.tif", tmp_path / "m.tif"
    assert run(capsys, "simulate", lattice_tif, "--coverage", "1/10", "--seed", 0, "-o", part, "--mask-out", mask)[0] == 0
    code, out, err = run(capsys, "plan", part, "--mask", mask, "--budget", 300, "--flyback-us", 20, "-o", tmp_path / "next.csv")
    assert code == 0, err
    assert fake_adaptive[-1]["budget"] == 300 and fake_adaptive[-1]["shape"] == (128, 128) and fake_adaptive[-1]["model"] is None
    nxt = load_path(tmp_path / "next.csv")
    assert len(nxt) == 300 and nxt.shape == (128, 128) and not (tifffile.imread(mask)[tuple(nxt.positions.astype(int).T)] > 0).any()
    assert "300 points" in out and "segments" in out
    assert run(capsys, "plan", part, "--mask", mask, "--budget", "0.01", "-o", tmp_path / "next.s")[0] == 0
    assert fake_adaptive[-1]["budget"] == 0.01
    assert_clean_error(run(capsys, "plan", part, "--mask", mask, "--budget", "0", "-o", tmp_path / "n.csv"), "--budget", status=2)
    assert_clean_error(run(capsys, "plan", part, "--mask", mask, "--budget", 10, "-o", tmp_path / "n.tif"), "-o/--output", "format")
    assert_clean_error(run(capsys, "plan", part, "--mask", mask, "--budget", 10, "-o", tmp_path / "next.csv"), "exists", "--overwrite")
    full = tmp_path / "full.tif"
    tifffile.imwrite(full, np.ones((128, 128), np.float32))
    assert_clean_error(run(capsys, "plan", part, "--mask", full, "--budget", 10, "-o", tmp_path / "n.csv"), "nothing left to sample")
    assert not (tmp_path / "n.csv").exists()


def test_plan_with_the_library(lattice_tif, tmp_path, capsys):
    adaptive = pytest.importorskip("em_ssl.adaptive")
    from em_ssl.scan_paths import load_path
    part, mask = tmp_path / "p.tif", tmp_path / "m.tif"
    assert run(capsys, "simulate", lattice_tif, "--coverage", "1/20", "--seed", 0, "-o", part, "--mask-out", mask)[0] == 0
    code, out, err = run(capsys, "plan", part, "--mask", mask, "--budget", 200, "-o", tmp_path / "next.json")
    assert code == 0, err
    nxt = load_path(tmp_path / "next.json")
    assert nxt.kind == "adaptive" and 0 < len(nxt) <= 200
    assert adaptive.path_cost(nxt.to_scan_path()) <= 200
    assert not (tifffile.imread(mask)[tuple(nxt.positions.astype(int).T)] > 0).any()
