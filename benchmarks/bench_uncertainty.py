"""Calibrating the per-pixel uncertainty of `em_ssl.inference.complete(..., return_uncertainty=True)`.

The uncertainty (dihedral spread + disagreement with linear + blur, grown with the distance to the path; see
nbs/18_inference.ipynb) is a scale: it needs one factor k to become an interval. This script

1. FITS k on calibration images: the licensed images the bundled completion model held out from its training
   (`holdout_files` of its checkpoint record, so the errors there are those of unseen images). For every crop x
   scan kind x coverage x noise it completes a simulated partial scan and pools |completion - target| / u_raw over
   all pixels (u_raw = the returned uncertainty / `UNCERTAINTY_SCALE`, i.e. before calibration); k68 and k95 are
   the 68 % and 95 % quantiles. The target is the clean crop blurred by the paper's 5x5 sigma 2.5 Gaussian, as in
   benchmarks/bench_completion.py.
2. EVALUATES on other images (default: the evaluation-only WS2 set, never trained or fitted on) how often the
   true error falls inside the interval: |error| <= u (nominal 68 %) and <= UNCERTAINTY_Z95 * u (nominal 95 %),
   using the constants the package ships, per cell and per image; plus how well u ranks the errors (mean |error|
   in the top and bottom tenth of u; Spearman correlation).

    nice -n 5 python benchmarks/bench_uncertainty.py            # 7-11 min on 1 thread of a shared 2-core CPU

Writes `--out`/uncertainty_calibration.{md,json,png}. The package constants `UNCERTAINTY_SCALE` (= k68) and
`UNCERTAINTY_Z95` (= k95 / k68) are copied by hand from the JSON's `fitted`; the script says when they differ.
"""
from __future__ import annotations
import argparse, json, os, sys, time
from pathlib import Path
from bench_record import machine_info  # noqa: E402  (machine, software, commit, load)

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parents[2] / 'shared' / 'data'   # the project's development data collection
EVAL_IMAGES = Path('stem_extra') / 'validation_only' / 'ws2_haadf'  # evaluation only: nothing is fitted on it
KINDS, COVERAGES, NOISES = ('spiral', 'grid'), (1 / 40, 1 / 20, 1 / 10), ('none', 'poisson:100')
NOMINAL = (0.68, 0.95)
RELIABILITY = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.68, 0.7, 0.8, 0.9, 0.95, 0.98)  # nominal fractions of the reliability curve
SUBSAMPLE = 7                                     # every 7th pixel of each case enters the pooled quantiles


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--data', type=Path, default=DATA, help='data root')
    p.add_argument('--eval-images', default=str(EVAL_IMAGES), help='folder of evaluation images (relative to --data)')
    p.add_argument('--calib-crop', type=int, default=256, help='centre crop of calibration images (px)')
    p.add_argument('--eval-crop', type=int, default=512, help='centre crop of evaluation images (px)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--threads', type=int, default=1, help='torch CPU threads')
    p.add_argument('--out', type=Path, default=ROOT / 'benchmarks' / 'results')
    return p.parse_args(argv)


def centre_crop(a, c: int):
    h, w = a.shape
    ch, cw = min(c, h), min(c, w)
    return a[(h - ch) // 2:(h - ch) // 2 + ch, (w - cw) // 2:(w - cw) // 2 + cw]


def calibration_files(data: Path) -> list[Path]:
    "The bundled completion model's held-out licensed images (its record's `data.holdout_files`)."
    from em_ssl.inference import DEFAULT_WEIGHTS
    rec = json.loads(Path(DEFAULT_WEIGHTS).with_suffix('.json').read_text())
    files = [data / f for f in rec['data']['holdout_files']]
    missing = [str(f) for f in files if not f.exists()]
    if missing: sys.exit(f"error: calibration images not found under --data {data}: {missing[:3]} ...")
    if any('validation_only' in str(f) for f in files): sys.exit("error: a calibration image lies in validation_only")
    return files


def cases(img, index: int, seed: int):
    "(kind, coverage, noise, partial, mask) for every cell; the noise seeded by [seed, index, cell]."
    import numpy as np
    from em_ssl.scans import scan_mask, poisson_noise
    from em_ssl.inference import parse_noise
    for ci, (kind, cov, noise) in enumerate((k, c, n) for k in KINDS for c in COVERAGES for n in NOISES):
        mask = scan_mask(kind, img.shape, cov, seed=seed)
        nz, dose = parse_noise(noise)
        part = poisson_noise(img, mask, dose, np.random.default_rng([seed, index, ci])) if nz == 'poisson' else np.where(mask > 0, img, 0)
        yield kind, cov, noise, np.asarray(part, np.float32), mask


def run_images(files, crop: int, seed: int, label: str):
    "Per case: |error| and the returned uncertainty u (both subsampled), plus per-case statistics."
    import numpy as np, torch
    from scipy import stats
    from em_ssl.io import load_image, normalize
    from em_ssl.metrics import gaussian_blur
    from em_ssl.inference import complete, default_completion_model
    model = default_completion_model('cpu')
    out, t0 = [], time.perf_counter()
    for i, f in enumerate(files):
        img = normalize(centre_crop(load_image(f), crop))
        target = gaussian_blur(torch.from_numpy(img)).numpy()
        for kind, cov, noise, part, mask in cases(img, i, seed):
            comp, unc = complete(part, mask, model=model, return_uncertainty=True)
            err = np.abs(comp.astype(np.float64) - target)
            top, bot = unc >= np.quantile(unc, 0.9), unc <= np.quantile(unc, 0.1)
            out.append(dict(image=f.name, kind=kind, coverage=cov, noise=noise, err=err.ravel()[::SUBSAMPLE],
                            unc=unc.astype(np.float64).ravel()[::SUBSAMPLE], rms=float(100 * np.sqrt((err ** 2).mean())),
                            err_top10=float(err[top].mean()), err_bottom10=float(err[bot].mean()),
                            spearman=float(stats.spearmanr(unc.ravel()[::SUBSAMPLE], err.ravel()[::SUBSAMPLE])[0]),
                            full=(err.astype(np.float32), unc)))
        print(f"{label} {i + 1}/{len(files)} {f.name}: {time.perf_counter() - t0:.0f} s", flush=True)
    return out


def coverage_of(rows, factor: float) -> float:
    "Fraction of pixels (all of them, not subsampled) with |error| <= factor * u."
    import numpy as np
    n = sum(r['full'][0].size for r in rows)
    return float(sum(int((r['full'][0] <= factor * r['full'][1]).sum()) for r in rows) / n)


def main(argv=None):
    a = parse_args(argv)
    import numpy as np, torch, matplotlib
    torch.set_num_threads(a.threads)
    matplotlib.use('Agg'); import matplotlib.pyplot as plt
    from em_ssl.inference import UNCERTAINTY_SCALE, UNCERTAINTY_Z95
    from em_ssl.io import atomic_write
    from em_ssl.io import get_micrograph_files
    machine = machine_info()
    t_start = time.perf_counter()
    calib = calibration_files(a.data)
    ev_dir = a.data / a.eval_images
    evals = get_micrograph_files(ev_dir)
    if not evals: sys.exit(f"error: no evaluation images in {ev_dir}")
    if set(map(str, calib)) & set(map(str, evals)): sys.exit("error: calibration and evaluation images overlap")

    cal = run_images(calib, a.calib_crop, a.seed, 'calibration')
    raw = np.concatenate([r['err'] / np.maximum(r['unc'] / UNCERTAINTY_SCALE, 1e-12) for r in cal])  # |error| / u_raw
    k = {q: float(np.quantile(raw, q)) for q in RELIABILITY}
    fitted = dict(k68=k[0.68], k95=k[0.95], z95=k[0.95] / k[0.68])
    ev = run_images(evals, a.eval_crop, a.seed, 'evaluation')

    def cover(rows):
        return dict(within_u=coverage_of(rows, 1.0), within_z95_u=coverage_of(rows, UNCERTAINTY_Z95))
    cells = []
    for kind in KINDS:
        for cov in COVERAGES:
            for noise in NOISES:
                rs = [r for r in ev if (r['kind'], r['coverage'], r['noise']) == (kind, cov, noise)]
                per_img = [cover([r])['within_u'] for r in rs]
                cells.append(dict(kind=kind, coverage=cov, noise=noise, **cover(rs), per_image_within_u_min=min(per_img),
                                  per_image_within_u_max=max(per_img), rms=float(np.mean([r['rms'] for r in rs])),
                                  err_top10=float(np.mean([r['err_top10'] for r in rs])),
                                  err_bottom10=float(np.mean([r['err_bottom10'] for r in rs])),
                                  spearman=float(np.mean([r['spearman'] for r in rs]))))
    overall_eval, overall_cal = cover(ev), cover(cal)
    # reliability: k fitted at each nominal fraction on calibration, observed fraction on evaluation
    rel_eval = [coverage_of(ev, k[q] / UNCERTAINTY_SCALE) for q in RELIABILITY]
    per_image = {}
    for r in ev: per_image.setdefault(r['image'], []).append(r)
    img_cov = {n: cover(rs)['within_u'] for n, rs in per_image.items()}

    stale = abs(fitted['k68'] / UNCERTAINTY_SCALE - 1) > 0.02 or abs(fitted['z95'] / UNCERTAINTY_Z95 - 1) > 0.05
    a.out.mkdir(parents=True, exist_ok=True)
    p_md, p_json, p_png = (a.out / f'uncertainty_calibration.{e}' for e in ('md', 'json', 'png'))

    fig, axs = plt.subplots(1, 2, figsize=(10, 3.8))
    axs[0].plot([0, 1], [0, 1], 'k:', lw=0.8, label='ideal')
    axs[0].plot(RELIABILITY, rel_eval, 'o-', label=f'WS2 (evaluation, {len(evals)} images)')
    axs[0].plot(RELIABILITY, [coverage_of(cal, k[q] / UNCERTAINTY_SCALE) for q in RELIABILITY], 's--', ms=4, label='calibration images (fitted)')
    axs[0].set_xlabel('nominal fraction (k fitted on calibration images)'); axs[0].set_ylabel('observed fraction |error| <= k u_raw')
    axs[0].legend(fontsize=7); axs[0].set_title('reliability of the interval', fontsize=9)
    x = np.arange(len(cells))
    axs[1].bar(x - 0.2, [c['within_u'] for c in cells], 0.4, label='|error| <= u (nominal 0.68)')
    axs[1].bar(x + 0.2, [c['within_z95_u'] for c in cells], 0.4, label=f'|error| <= {UNCERTAINTY_Z95:g} u (nominal 0.95)')
    for y in NOMINAL: axs[1].axhline(y, color='k', lw=0.7, ls='--')
    axs[1].set_xticks(x, [f"{c['kind']}\n1/{1 / c['coverage']:.0f}\n{c['noise'].replace('poisson:', 'p')}" for c in cells], fontsize=6)
    axs[1].set_ylim(0, 1.05); axs[1].legend(fontsize=7, loc='lower right'); axs[1].set_title('WS2: coverage per cell', fontsize=9)
    fig.tight_layout()
    atomic_write(p_png, lambda p: fig.savefig(p, dpi=90, format='png'), overwrite=True); plt.close(fig)

    timing = dict(total_s=round(time.perf_counter() - t_start, 1), load_average_end=[round(v, 2) for v in os.getloadavg()])
    res = dict(command='python benchmarks/bench_uncertainty.py' + (' ' + ' '.join(argv if argv is not None else sys.argv[1:])).rstrip(),
               calibration_images=[str(f.relative_to(a.data)) for f in calib], calib_crop=a.calib_crop,
               evaluation_images=[str(f.relative_to(a.data)) for f in evals], eval_crop=a.eval_crop,
               kinds=KINDS, coverages=COVERAGES, noises=NOISES, seed=a.seed,
               target='clean crop blurred by the paper 5x5 sigma 2.5 Gaussian (as benchmarks/bench_completion.py)',
               fitted=fitted, package=dict(UNCERTAINTY_SCALE=UNCERTAINTY_SCALE, UNCERTAINTY_Z95=UNCERTAINTY_Z95),
               package_constants_stale=stale, calibration_coverage=overall_cal, evaluation_coverage=overall_eval,
               reliability=dict(nominal=RELIABILITY, k=[k[q] for q in RELIABILITY], observed_eval=rel_eval),
               cells=cells, per_image_within_u=img_cov, machine=machine, timing=timing)
    atomic_write(p_json, lambda p: p.write_text(json.dumps(res, indent=1)), overwrite=True)

    rows = '\n'.join(f"| {c['kind']} | 1/{1 / c['coverage']:.0f} | {c['noise']} | {c['rms']:.2f} | {100 * c['within_u']:.1f} "
                     f"({100 * c['per_image_within_u_min']:.0f}-{100 * c['per_image_within_u_max']:.0f}) | {100 * c['within_z95_u']:.1f} | "
                     f"{100 * c['err_top10']:.2f} / {100 * c['err_bottom10']:.2f} | {c['spearman']:.2f} |" for c in cells)
    md = [f"# Uncertainty calibration ({machine['date']})", '',
          f"`complete(..., return_uncertainty=True)` with the bundled model. **Fitted** on {len(calib)} calibration images "
          f"(the licensed images held out from the bundled model's training; centre crops <= {a.calib_crop} px): "
          f"k68 = {fitted['k68']:.3f}, k95 = {fitted['k95']:.3f} (k95/k68 = {fitted['z95']:.2f}). Package constants: "
          f"`UNCERTAINTY_SCALE` = {UNCERTAINTY_SCALE}, `UNCERTAINTY_Z95` = {UNCERTAINTY_Z95}"
          + (" — STALE: copy the fitted values into nbs/18_inference.ipynb." if stale else " (match the fit)."), '',
          f"**Evaluated** on {len(evals)} images never trained or fitted on (`{a.eval_images}`, centre crops {a.eval_crop} px; "
          "evaluation only, no pixels shown). Scans: " + ', '.join(KINDS) + ' at ' + ', '.join(f'1/{1 / c:.0f}' for c in COVERAGES)
          + ', noise ' + ', '.join(NOISES) + f", seed {a.seed}. Error = |completion - blurred clean crop| (5x5 sigma 2.5).", '',
          f"Overall: |error| <= u on **{100 * overall_eval['within_u']:.1f} %** of the WS2 pixels (nominal 68 %; calibration "
          f"images {100 * overall_cal['within_u']:.1f} %), <= {UNCERTAINTY_Z95:g} u on **{100 * overall_eval['within_z95_u']:.1f} %** "
          f"(nominal 95 %; calibration {100 * overall_cal['within_z95_u']:.1f} %). Per WS2 image: "
          f"{100 * min(img_cov.values()):.0f}-{100 * max(img_cov.values()):.0f} % within u.", '',
          '| scan | coverage | noise | model RMS % | % within u (image range) | % within Z95 u | mean abs error, top / bottom tenth of u (%) | Spearman(u, abs error) |',
          '|---|---|---|---|---|---|---|---|', rows, '',
          '![reliability and per-cell coverage](uncertainty_calibration.png)', '',
          f"Machine: {machine['cpu_model']}, {machine['cpu_count']} cores, torch {machine.get('torch')} "
          f"({machine.get('torch_threads')} threads); commit {machine['commit']}; nice {machine['nice']}; load average "
          f"{machine['load_average_at_start']} at start, {timing['load_average_end']} at the end (shared machine). "
          f"Time: {timing['total_s']} s.", '', f"Command: `{res['command']}`"]
    atomic_write(p_md, lambda p: p.write_text('\n'.join(md) + '\n'), overwrite=True)
    for p in (p_md, p_json, p_png): p.chmod(0o644)
    print('\n'.join(md[:7]))
    print(f"wrote {p_md}, {p_json}, {p_png}")
    return res


if __name__ == '__main__':
    main()
