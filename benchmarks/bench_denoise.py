"""Few-pair denoising on a modality no generator was pretrained on: tk-r-em simulated pairs (issue 9).

`stem_extra/pairs_tkrem/MODALITY/{noisy,clean}` holds 8 simulated 256x256 noisy/clean pairs per modality (tk-r-em 1.0.4
test data, GPL-3.0). The bundled generators never saw them (their records list `pairs_tkrem` as never used). The last
`--n-test` pairs (sorted by name) are the test set; each run fine-tunes on `n` pairs drawn with a seeded choice from the
others, through `em_ssl.finetune.finetune_folders` (the code behind `em-ssl finetune denoise`), and is scored on every test
pair: PSNR (dB) and SSIM of the output against the clean image, both normalised to [0,1] by their min/max exactly as the
CLI trains. The validation PSNR of each epoch comes from the run's metrics.csv.

Two classical baselines are scored on the same test pairs in the same run: the noisy input itself, and a Gaussian filter
plus a least-squares gain/offset whose sigma and gain/offset are fitted on all the training-pool pairs (as much data as
the largest budget sees).

Initialisations as in bench_emps.py: NAME=PRETRAINED[:ARCH][@OPTION=VALUE,...]. Resumable: finished runs are kept in
OUT/denoise_{TAG}_runs.json and skipped when the script is run again.

    nice -n 10 python benchmarks/bench_denoise.py --modality hrstem --budgets 1 2 4 --seeds 0 1 2 \\
        --inits pretrained=em_ssl/weights/ssl_unet_all.pth random=none:unet_2_44 random_big=none:unet_3_176 hrnet_random=none:hrnet
Outputs: benchmarks/results/denoise_{TAG}_runs.json, denoise_{TAG}.md, denoise_{TAG}.png.
"""
from __future__ import annotations
import argparse, json, os, random, sys, time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_record import machine_info, portable   # noqa: E402
from bench_emps import budget_plot, link_images, parse_spec, random_reference, results_header   # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PAIRS = ROOT / 'shared' / 'data' / 'stem_extra' / 'pairs_tkrem'   # default of --pairs
RESULTS = Path(__file__).resolve().parent / 'results'
KINDS = ('noisy', 'clean')
SIGMAS = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0)   # Gaussian-filter baseline: sigmas tried (px)


def load_pair(folder: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    from em_ssl.io import load_image, normalize
    return normalize(load_image(folder / 'noisy' / name)), normalize(load_image(folder / 'clean' / name))


def scores(out: np.ndarray, clean: np.ndarray) -> tuple[float, float]:
    "(PSNR dB, SSIM) of `out` clipped to [0,1] against `clean`, with em_ssl.metrics."
    import torch
    from em_ssl.metrics import psnr, ssim
    a, b = (torch.from_numpy(np.clip(v, 0, 1).astype(np.float32))[None, None] for v in (out, clean))
    return float(psnr(a, b)), float(ssim(a, b))


def fitted_psnr(out: np.ndarray, clean: np.ndarray) -> float:
    "PSNR (dB) of `out` after the least-squares gain and offset onto `clean`: the structure restored, whatever the contrast."
    A = np.stack([out.ravel().astype(np.float64), np.ones(out.size)], 1)
    coef, *_ = np.linalg.lstsq(A, clean.ravel().astype(np.float64), rcond=None)
    return float(10 * np.log10(1 / max(np.mean((A @ coef - clean.ravel()) ** 2), 1e-12)))


def gaussian_baseline(folder: Path, pool: list[str], test: list[str]) -> dict:
    "Gaussian filter + gain/offset, sigma and gain/offset fitted (least squares) on the `pool` pairs; scored on `test`."
    from scipy.ndimage import gaussian_filter
    pool_pairs = [load_pair(folder, n) for n in pool]
    best = None
    for s in SIGMAS:
        f = np.concatenate([gaussian_filter(x, s).ravel() for x, _ in pool_pairs]); y = np.concatenate([c.ravel() for _, c in pool_pairs])
        A = np.stack([f, np.ones_like(f)], 1); (g, o), *_ = np.linalg.lstsq(A, y, rcond=None)
        mse = float(np.mean((A @ [g, o] - y) ** 2))
        if best is None or mse < best[0]: best = (mse, s, g, o)
    _, s, g, o = best
    pairs = [load_pair(folder, n) for n in test]
    sc = [scores(g * gaussian_filter(x, s) + o, c) for x, c in pairs]
    return dict(sigma=s, gain=float(g), offset=float(o), psnr=[p for p, _ in sc], ssim=[q for _, q in sc],
                psnr_fit=[fitted_psnr(gaussian_filter(x, s), c) for x, c in pairs])


def test_scores(model_path: Path, folder: Path, test: list[str]) -> dict:
    "Per-test-pair PSNR, SSIM and gain/offset-fitted PSNR of a fine-tuned model's outputs."
    from em_ssl.finetune import load_finetuned, predict_array
    model, _ = load_finetuned(model_path, 'cpu')
    outs = [(predict_array(model, x, 'denoise'), c) for x, c in (load_pair(folder, t) for t in test)]
    sc = [scores(o, c) for o, c in outs]
    return dict(psnr=[p for p, _ in sc], ssim=[q for _, q in sc], psnr_fit=[fitted_psnr(o, c) for o, c in outs])


def one_run(name: str, spec: str, n: int, seed: int, pool: list[str], test: list[str], args) -> dict:
    from em_ssl.finetune import finetune_folders
    pre, arch, extra = parse_spec(spec)
    folder, work = Path(args.pairs) / args.modality, Path(args.work)
    d = link_images(folder, sorted(random.Random(seed).sample(pool, n)), work / f'{args.modality}_pairs{n}_seed{seed}', KINDS)
    out = work / 'runs' / args.tag / f'{name}_{n}_{seed}'
    t0 = time.time()
    kw = dict(epochs=args.epochs, seed=seed, out=out, overwrite=True, crop=args.crop, bs=args.bs, lr=args.lr,
              freeze_epochs=args.freeze_epochs, epoch_size=args.epoch_size)
    finetune_folders('denoise', d / 'noisy', d / 'clean', pretrained=None if pre == 'none' else pre, arch=arch or None, **{**kw, **extra})
    train_s = time.time() - t0
    import pandas as pd
    hist = pd.read_csv(out / 'metrics.csv')
    sc = test_scores(out / 'model.pth', folder, test)
    return dict(init=name, spec=spec, pairs=n, seed=seed, train_s=round(train_s, 1), test=test, **sc,
                psnr_mean=float(np.mean(sc['psnr'])), psnr_worst=float(np.min(sc['psnr'])), ssim_mean=float(np.mean(sc['ssim'])),
                psnr_fit_mean=float(np.mean(sc['psnr_fit'])), valid_psnr_per_epoch=[None if pd.isna(v) else float(v) for v in hist['psnr']], phase_per_epoch=list(hist['phase']))


def summarise(runs: list[dict], inits: list[str], budgets: list[int], base: dict) -> tuple[str, list[dict]]:
    rows, cells = [], {}
    for n in budgets:
        for name in inits:
            r = [x for x in runs if x['init'] == name and x['pairs'] == n]
            if not r: continue
            m = np.array([x['psnr_mean'] for x in r]); cells[name, n] = m
            f = np.array([x['psnr_fit_mean'] for x in r if 'psnr_fit_mean' in x])
            rows.append(f"| {n} | {name} | {len(r)} | {m.mean():.2f} ± {m.std(ddof=1) if len(m) > 1 else 0:.2f} | "
                        f"{min(x['psnr_worst'] for x in r):.2f} | {np.mean([x['ssim_mean'] for x in r]):.3f} | "
                        f"{f.mean() if len(f) else float('nan'):.2f} ± {f.std(ddof=1) if len(f) > 1 else 0:.2f} | "
                        f"{np.mean([x['train_s'] for x in r]) / 60:.1f} |")
    for k, b in base.items():
        rows.append(f"| - | baseline: {k} | - | {np.mean(b['psnr']):.2f} | {np.min(b['psnr']):.2f} | {np.mean(b['ssim']):.3f} | "
                    f"{np.mean(b['psnr_fit']):.2f} | - |")
    table = ("| training pairs | init | seeds | test PSNR dB, mean ± sd over seeds | worst test image (any seed) | SSIM | "
             "PSNR after a per-image gain/offset fit | minutes/run |\n|---|---|---|---|---|---|---|---|\n" + "\n".join(rows))
    verdicts = []
    for p in [i for i in inits if 'random' not in i]:
        r = random_reference(p, inits)
        for n in budgets:
            if r and (p, n) in cells and (r, n) in cells:
                a, b = cells[p, n], cells[r, n]
                spread = max(a.std(ddof=1) if len(a) > 1 else 0, b.std(ddof=1) if len(b) > 1 else 0)
                verdicts.append(dict(name=f"{p} >= {r} within the seed spread at {n} pairs", value=float(a.mean() - b.mean()),
                                     threshold=-float(spread), met=bool(a.mean() - b.mean() >= -spread)))
    g = np.mean(base['Gaussian filter + gain/offset fitted on the pool']['psnr_fit'])
    for n in budgets:
        for name in inits:
            f = [x['psnr_fit_mean'] for x in runs if x['init'] == name and x['pairs'] == n and 'psnr_fit_mean' in x]
            if f: verdicts.append(dict(name=f"{name} beats the Gaussian filter at {n} pairs (gain/offset-fitted PSNR)",
                                       value=float(np.mean(f) - g), threshold=0.0, met=bool(np.mean(f) > g)))
    vt = "\n".join(f"- {v['name']}: difference {v['value']:+.2f} dB (needs >= {v['threshold']:+.2f}) -> "
                   f"{'MET' if v['met'] else 'MISSED'}" for v in verdicts)
    return table + "\n\nPretrained vs random (mean over seeds of the mean test PSNR), and each against the Gaussian filter:\n\n" + vt, verdicts


def plot(runs: list[dict], inits: list[str], budgets: list[int], base: dict, path: Path):
    budget_plot(runs, inits, budgets, path, 'pairs', 'psnr_mean', 'valid_psnr_per_epoch', budgets[-1],
                {f'baseline: {k}': float(np.mean(b['psnr'])) for k, b in base.items()}, 'training pairs', 'test PSNR (dB)',
                'denoising: test PSNR (mean ± sd over seeds)', 'validation PSNR (dB)')


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--pairs', default=str(PAIRS), help='pairs_tkrem folder (MODALITY/noisy, MODALITY/clean)')
    p.add_argument('--modality', default='hrstem', help='subfolder of --pairs')
    p.add_argument('--n-test', type=int, default=4, help='the last N pairs (by name) are the test set')
    p.add_argument('--inits', nargs='+', default=['pretrained=em_ssl/weights/ssl_unet_all.pth', 'random=none:unet_2_44'],
                   help='NAME=PRETRAINED[:ARCH][@OPTION=VALUE,...]')
    p.add_argument('--budgets', nargs='+', type=int, default=[1, 2, 4], help='training pairs per run')
    p.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    p.add_argument('--epochs', type=int, default=10, help='epochs training all weights (after the frozen ones)')
    p.add_argument('--freeze-epochs', type=int, default=None, help='frozen-body epochs (None: 1 if pretrained, else 0)')
    p.add_argument('--epoch-size', type=int, default=64, help='random crops per epoch')
    p.add_argument('--crop', type=int, default=128)
    p.add_argument('--bs', type=int, default=8)
    p.add_argument('--lr', type=float, default=2e-4)
    p.add_argument('--threads', type=int, default=None)
    p.add_argument('--work', default=str(Path(os.environ.get('SCRATCH', Path.home() / 'em_ssl_scratch')) / 'bench_denoise'),
                   help='scratch folder (links to the training pairs, run folders)')
    p.add_argument('--tag', default='hrstem', help='results name: denoise_{TAG}_runs.json / .md / .png')
    p.add_argument('--out', default=str(RESULTS))
    p.add_argument('--summarise-only', action='store_true', help='no new runs: rewrite the table and plot from the runs file')
    p.add_argument('--rescore', action='store_true', help='add the fitted PSNR to runs recorded without it (their models in --work)')
    args = p.parse_args(argv)
    folder = Path(args.pairs) / args.modality
    if not all((folder / k).is_dir() for k in KINDS): raise SystemExit(f"--pairs/--modality: no noisy/ and clean/ folders in {folder}")
    names = sorted(f.name for f in (folder / 'noisy').iterdir())
    if not 0 < args.n_test < len(names): raise SystemExit(f"--n-test: must be between 1 and {len(names) - 1} ({len(names)} pairs)")
    pool, test = names[:-args.n_test], names[-args.n_test:]
    if max(args.budgets) > len(pool): raise SystemExit(f"--budgets: at most {len(pool)} training pairs (the pool left by --n-test {args.n_test})")
    import torch
    if args.threads: torch.set_num_threads(args.threads)
    inits = dict(s.split('=', 1) for s in args.inits)
    out = Path(args.out); out.mkdir(parents=True, exist_ok=True)
    runs_file = out / f'denoise_{args.tag}_runs.json'
    rec = json.loads(runs_file.read_text()) if runs_file.exists() else {'runs': []}
    base = {'noisy input': dict(psnr=[], ssim=[], psnr_fit=[])}
    for x, c in (load_pair(folder, t) for t in test):
        ps, ss = scores(x, c); base['noisy input']['psnr'].append(ps); base['noisy input']['ssim'].append(ss)
        base['noisy input']['psnr_fit'].append(fitted_psnr(x, c))
    base['Gaussian filter + gain/offset fitted on the pool'] = gaussian_baseline(folder, pool, test)
    rec['baselines'] = base
    if not args.summarise_only:
        rec.setdefault('commands', []).append(' '.join(['python benchmarks/bench_denoise.py'] + sys.argv[1:]))
        rec.update(machine=machine_info(), settings={k: v for k, v in vars(args).items() if k not in ('work', 'out', 'pairs', 'summarise_only')},
                   pool=pool, test=test)
    done = {(r['init'], r['pairs'], r['seed']) for r in rec['runs']}
    for seed in ([] if args.summarise_only else args.seeds):
        for n in args.budgets:
            for name, spec in inits.items():
                if (name, n, seed) in done: continue
                r = one_run(name, spec, n, seed, pool, test, args)
                rec['runs'].append(r)
                runs_file.write_text(json.dumps(rec, indent=1))
                print(f"{name:>14} pairs {n} seed {seed}: test PSNR {r['psnr_mean']:.2f} dB (worst {r['psnr_worst']:.2f}), "
                      f"{r['train_s'] / 60:.1f} min", flush=True)
    if args.rescore:   # runs recorded before the fitted PSNR existed: score their saved models again
        for r in rec['runs']:
            if 'psnr_fit' not in r:
                sc = test_scores(Path(args.work) / 'runs' / args.tag / f"{r['init']}_{r['pairs']}_{r['seed']}" / 'model.pth', folder, test)
                if not np.allclose(sc['psnr'], r['psnr'], atol=1e-3): raise SystemExit(f"--rescore: {r['init']} {r['pairs']} {r['seed']} scores differently now")
                r.update(psnr_fit=sc['psnr_fit'], psnr_fit_mean=float(np.mean(sc['psnr_fit'])))
    runs = [r for r in rec['runs'] if r['init'] in inits and r['pairs'] in args.budgets]
    table, verdicts = summarise(runs, list(inits), args.budgets, base)
    rec['summary'] = verdicts; runs_file.write_text(json.dumps(rec, indent=1))
    plot(runs, list(inits), args.budgets, base, out / f'denoise_{args.tag}.png')
    head, sched = results_header(f"Few-pair denoising, tk-r-em {args.modality} ({args.tag})", f"denoise_{args.tag}_runs.json", rec, inits, args)
    md = (f"{head}Data: `stem_extra/pairs_tkrem/{args.modality}` (tk-r-em 1.0.4 test data, GPL-3.0; simulated), never seen by "
          f"any bundled generator. Training pool: {', '.join(pool)}; test pairs: {', '.join(test)}. {sched} With 1 training "
          f"pair the CLI holds out a strip of it for validation, with 2 or 4 pairs one pair.\n\n"
          f"Gaussian baseline: sigma {base['Gaussian filter + gain/offset fitted on the pool']['sigma']} px.\n\n{table}\n")
    (out / f'denoise_{args.tag}.md').write_text(portable(md))
    print(md)


if __name__ == '__main__':
    main()
