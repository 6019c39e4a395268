"""Benchmark partial-scan completion: the bundled model vs linear and nearest-neighbour infill.

On every non-overlapping 512x512 tile of the hold-out HAADF-STEM files (never seen in training; the list is in
em_ssl/weights/partial_scan_small.json), each tile is min-max normalised to [0,1], partially scanned
(`em_ssl.scans.simulate_partial_scan`, binary path, the paper's dwell noise model, seed = tile index) with spiral
and grid-like paths at 1/10, 1/20, 1/40 and 1/100 coverage, and completed by
  - the model (`em_ssl.inference.complete`, bundled weights),
  - linear interpolation (`em_ssl.inference.linear_infill`: the same values as `scipy.interpolate.griddata`
    linear inside the convex hull, vectorised; nearest outside),
  - nearest-neighbour infill (`em_ssl.scans.nn_infill`),
  - the blurred push-pull fill alone (`em_ssl.models.partial_scan.push_pull_fill` + the 5x5 sigma 2.5 blur): the non-learned
    base that the bundled model's generator corrects, so that the generator's own contribution is visible,
all on the same tiles and masks. Error: RMS in % of the [0,1] range against the paper's target, the 5x5 sigma=2.5
Gaussian-blurred tile. Timing: 512x512 completion, median of >= 10 warm runs.

    nice -n 10 python benchmarks/bench_completion.py            # writes benchmarks/results/completion.{json,md,png}

`--data` is the root of the data collection; the hold-out files are read from its sub-folder recorded in the model's
JSON record (`data.folder`, e.g. haadf_catalysts/tif_data).
"""
from __future__ import annotations
import argparse, json, os, platform, statistics, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parents[2] / 'shared' / 'data'   # the project's development data collection
COVERAGES = (1 / 10, 1 / 20, 1 / 40, 1 / 100)
KINDS = ('spiral', 'grid')


def cpu_name() -> str:
    try:
        for line in open('/proc/cpuinfo'):
            if line.startswith('model name'): return line.split(':', 1)[1].strip()
    except OSError: pass
    return platform.processor() or platform.machine()


def timeit(fn, n: int = 12, warm: int = 2) -> dict:
    for _ in range(warm): fn()
    ts = []
    for _ in range(n):
        t0 = time.perf_counter(); fn(); ts.append(time.perf_counter() - t0)
    return dict(median_ms=1e3 * statistics.median(ts), min_ms=1e3 * min(ts), n=n)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--data', type=Path, default=DATA, help='data root (default: %(default)s)')
    p.add_argument('--model', default='default', help="completion checkpoint, or 'default' (the bundled model)")
    p.add_argument('--out', type=Path, default=ROOT / 'benchmarks' / 'results' / 'completion',
                   help='output path without suffix (.json, .md, .png are written)')
    p.add_argument('--max-tiles', type=int, default=0, help='0: all hold-out tiles')
    args = p.parse_args(argv)

    import numpy as np, torch
    from em_ssl.io import load_image, normalize, tile_crops
    from em_ssl.scans import simulate_partial_scan, nn_infill
    from em_ssl.metrics import gaussian_blur
    from em_ssl.checkpoint import resolve_checkpoint
    from em_ssl.models.partial_scan import push_pull_fill
    from em_ssl.inference import complete, linear_infill, load_completion_model

    weights = resolve_checkpoint(args.model, 'completion')
    meta = json.loads(weights.with_suffix('.json').read_text()) if weights.with_suffix('.json').exists() else {}
    holdout = meta.get('data', {}).get('holdout_files')
    if not holdout: sys.exit(f"no hold-out file list in {weights.with_suffix('.json')}")
    folder = args.data / meta['data'].get('folder', '')
    if not folder.is_dir(): sys.exit(f"data folder not found: {folder} (set --data to the data root)")
    tiles, names = [], []
    for f in holdout:
        for i, t in enumerate(tile_crops(load_image(folder / f), 512)):
            tiles.append(normalize(t)); names.append(f"{f}#{i}")
    if args.max_tiles: tiles, names = tiles[:args.max_tiles], names[:args.max_tiles]
    model = None if args.model == 'default' else load_completion_model(args.model, fuse=True)
    print(f"{len(tiles)} hold-out tiles of 512x512 from {len(holdout)} files", flush=True)

    rms = lambda a, t: float(100 * np.sqrt(np.mean((np.asarray(a, np.float64) - t) ** 2)))
    rows, per_tile = [], {}
    for kind in KINDS:
        for cov in COVERAGES:
            errs = {'model': [], 'linear': [], 'nearest': [], 'fill_blur': []}
            meas = []
            for i, img in enumerate(tiles):
                target = gaussian_blur(torch.from_numpy(img)).numpy()
                partial, mask = simulate_partial_scan(img, kind=kind, coverage=cov, noise='dwell', seed=i, blur=False)
                meas.append(float((mask > 0).mean()))
                errs['model'].append(rms(complete(partial, mask, model=model), target))
                errs['linear'].append(rms(linear_infill(partial, mask), target))
                errs['nearest'].append(rms(nn_infill(partial, mask), target))
                pt, mt = torch.from_numpy(partial)[None, None], torch.from_numpy(mask)[None, None]
                errs['fill_blur'].append(rms(gaussian_blur(push_pull_fill(pt, mt))[0, 0].numpy(), target))
            row = dict(kind=kind, coverage=f"1/{round(1 / cov)}", measured_coverage=float(np.mean(meas)),
                       **{f"{k}_rms_mean": float(np.mean(v)) for k, v in errs.items()},
                       **{f"{k}_rms_std": float(np.std(v)) for k, v in errs.items()})
            row['model_over_linear'] = row['model_rms_mean'] / row['linear_rms_mean']
            rows.append(row); per_tile[f"{kind} {row['coverage']}"] = errs
            print(f"{kind:6s} {row['coverage']:>6s}  model {row['model_rms_mean']:5.2f}  linear "
                  f"{row['linear_rms_mean']:5.2f}  nearest {row['nearest_rms_mean']:5.2f}  fill+blur "
                  f"{row['fill_blur_rms_mean']:5.2f}  ratio "
                  f"{row['model_over_linear']:.2f}", flush=True)

    # timing on one 512x512 1/20 spiral scan
    img = tiles[0]
    partial, mask = simulate_partial_scan(img, kind='spiral', coverage=1 / 20, seed=0)
    timing = {}
    for threads in sorted({1, min(2, os.cpu_count() or 1)}):
        torch.set_num_threads(threads)
        timing[f'cpu_{threads}_thread_complete'] = timeit(lambda: complete(partial, mask, model=model, device='cpu'))
    timing['cpu_linear_infill'] = timeit(lambda: linear_infill(partial, mask), n=10, warm=1)
    from scipy.interpolate import griddata
    ys, xs = np.nonzero(mask > 0); gy, gx = np.mgrid[:512, :512]
    timing['cpu_scipy_griddata_linear'] = timeit(lambda: griddata((ys, xs), partial[ys, xs], (gy, gx), method='linear'),
                                                 n=10, warm=1)
    timing['cpu_nearest'] = timeit(lambda: nn_infill(partial, mask))
    if torch.cuda.is_available():
        def gpu():
            complete(partial, mask, model=None if model is None else model.cuda(), device='cuda'); torch.cuda.synchronize()
        timing['cuda_complete'] = timeit(gpu, n=20, warm=3)
        timing['cuda_device'] = torch.cuda.get_device_name()
    load = os.getloadavg()

    machine = dict(cpu=cpu_name(), cores=os.cpu_count(), python=platform.python_version(), torch=torch.__version__,
                   platform=platform.platform(), cuda=torch.cuda.is_available(),
                   load_average_1_5_15=[round(v, 2) for v in load],
                   note='shared machine: other people\'s jobs ran at the same time; timings are noisy')
    spiral20 = next(r for r in rows if r['kind'] == 'spiral' and r['coverage'] == '1/20')
    targets = dict(
        spiral_1_20_model_le_half_linear=spiral20['model_over_linear'] <= 0.5,
        model_better_than_linear_everywhere=all(r['model_over_linear'] < 1 for r in rows),
        cpu_512_under_150ms=min(v['median_ms'] for k, v in timing.items() if k.endswith('_complete') and k.startswith('cpu')) < 150)
    res = dict(model=str(weights.resolve().relative_to(ROOT)) if weights.resolve().is_relative_to(ROOT) else str(weights), model_record=meta.get('command'), tiles=len(tiles), tile_size=512,
               holdout_files=holdout, scans='simulate_partial_scan(noise="dwell", blur=False, seed=tile index)',
               target='5x5 sigma=2.5 Gaussian blur of the [0,1]-normalised tile', metric='RMS % of [0,1] range',
               rows=rows, timing=timing, machine=machine, targets_met=targets, per_tile_rms=per_tile,
               date=time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix('.json').write_text(json.dumps(res, indent=2))

    md = [f"# Partial-scan completion benchmark ({res['date']})", '',
          f"{len(tiles)} hold-out 512x512 HAADF-STEM tiles ({len(holdout)} files never used in training). RMS error "
          "(% of the [0,1] range, mean ± std over tiles) against the 5x5 σ=2.5 blurred tile; same tiles and masks "
          "for every method.", '',
          '| scan | coverage (measured) | model | linear (griddata) | nearest | blurred push-pull fill (no learning) | model / linear |',
          '|---|---|---|---|---|---|---|']
    for r in rows:
        md.append(f"| {r['kind']} | {r['coverage']} ({r['measured_coverage']:.4f}) | {r['model_rms_mean']:.2f} ± "
                  f"{r['model_rms_std']:.2f} | {r['linear_rms_mean']:.2f} ± {r['linear_rms_std']:.2f} | "
                  f"{r['nearest_rms_mean']:.2f} ± {r['nearest_rms_std']:.2f} | {r['fill_blur_rms_mean']:.2f} ± "
                  f"{r['fill_blur_rms_std']:.2f} | {r['model_over_linear']:.2f} |")
    md += ['', '| timing, 512x512 (median of warm runs) | ms |', '|---|---|']
    md += [f"| {k} | {v['median_ms']:.1f} |" for k, v in timing.items() if isinstance(v, dict)]
    md += ['', f"Machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']}, CUDA "
           f"{'yes' if machine['cuda'] else 'no'}; load average {machine['load_average_1_5_15']} (shared machine).",
           '', 'Targets: ' + ', '.join(f"{k}: {'met' if v else 'MISSED'}" for k, v in targets.items())]
    args.out.with_suffix('.md').write_text('\n'.join(md) + '\n')
    print('\n'.join(md))

    # example figure: first tile, 1/20 spiral
    import matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot as plt
    img = tiles[len(tiles) // 2]; target = gaussian_blur(torch.from_numpy(img)).numpy()
    partial, mask = simulate_partial_scan(img, kind='spiral', coverage=1 / 20, seed=len(tiles) // 2)
    comp, lin = complete(partial, mask, model=model), linear_infill(partial, mask)
    fig, axs = plt.subplots(1, 5, figsize=(10, 2.4))
    for ax, im, t in zip(axs, [img, partial, comp, lin, target], ['tile', '1/20 spiral', f'model {rms(comp, target):.1f}%',
                                                                 f'linear {rms(lin, target):.1f}%', 'blurred target']):
        ax.imshow(im, cmap='gray', vmin=0, vmax=1); ax.set_title(t, fontsize=8); ax.axis('off')
    plt.tight_layout(); fig.savefig(args.out.with_suffix('.png'), dpi=100)

    if args.model == 'default' and weights.with_suffix('.json').exists():  # validation figures for the weights record
        meta['benchmark'] = dict(results='benchmarks/results/completion.md', date=res['date'], tiles=len(tiles),
                                 rms_percent_vs_blurred={f"{r['kind']} {r['coverage']}": dict(
                                     model=round(r['model_rms_mean'], 3), linear=round(r['linear_rms_mean'], 3),
                                     nearest=round(r['nearest_rms_mean'], 3),
                                     blurred_push_pull_fill=round(r['fill_blur_rms_mean'], 3)) for r in rows},
                                 cpu_ms_512=round(min(v['median_ms'] for k, v in timing.items()
                                                      if k.endswith('_complete') and k.startswith('cpu')), 1))
        weights.with_suffix('.json').write_text(json.dumps(meta, indent=2))


if __name__ == '__main__':
    main()
