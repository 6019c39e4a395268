"""Adapting the completion model to a user's own micrographs: `em-ssl train-completion` on a source it never saw (issue 8).

The user's workflow, measured: a completion model that never saw a source of micrographs is fine-tuned, self-supervised,
on a few full scans of that source (`em_ssl.partial_scan.train_completion`, the code behind `em-ssl train-completion`,
`--minutes` of CPU), and compared before and after on OTHER images of the same source that the adaptation held out, against
the best classical fill (linear or linear + 5x5 blur, per image). Errors are RMS % of the [0,1] range against the
blurred clean image, over spiral/grid/random scans at 1/10..1/100 coverage with and without Poisson noise.

The base model must not have seen the source: by default a leave-one-source-out model trained with
`benchmarks/train_completion.py --exclude SOURCE`. (The evaluation-only sets in stem_extra/validation_only are never
trained on, not even here: adapting on them would train on them.)

    nice -n 10 python benchmarks/bench_adapt.py --base $SCRATCH/loso_np/model.pth --source nanoparticle_boxes/images \\
        --n-images 16 --holdout-images 6 --minutes 10 --threads 2
Outputs: benchmarks/results/completion_adapt.{md,json,png} (with --tag T: completion_adapt_T.*).
"""
from __future__ import annotations
import argparse, json, os, random, sys, time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_record import machine_info, portable   # noqa: E402

DATA = Path(__file__).resolve().parents[2] / 'shared' / 'data'
RESULTS = Path(__file__).resolve().parent / 'results'
FORBIDDEN = 'validation_only'   # evaluation-only data: never trained on, not even to demonstrate adaptation


def pick_files(folder: Path, n: int, seed: int) -> list[Path]:
    from em_ssl.data import find_micrographs
    files = find_micrographs(folder)
    if len(files) < n: raise SystemExit(f"--n-images: {folder} has {len(files)} micrographs, fewer than {n}")
    return sorted(random.Random(seed).sample(files, n))


def plot(before: list[dict], after: list[dict], path: Path, title: str):
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    lab = [f"{s['kind']} 1/{round(1 / s['coverage'])}\n{s['noise']}" for s in before]
    x = np.arange(len(lab))
    fig, ax = plt.subplots(figsize=(max(8, 0.45 * len(lab)), 4.2))
    for off, rows, name in ((-0.2, before, 'before adapting'), (0.2, after, 'after adapting')):
        ax.bar(x + off, [s['ratio'] for s in rows], 0.4, label=f'{name} (mean of images)')
        ax.scatter(x + off, [s['worst_ratio'] for s in rows], marker='v', color='k', s=14, zorder=3,
                   label='worst image' if off > 0 else None)
    ax.axhline(1, color='r', lw=1, ls='--', label='best classical (linear or linear + blur)')
    ax.set_xticks(x, lab, fontsize=6, rotation=90)
    ax.set(ylabel='model RMS / best classical RMS', title=title)
    ax.legend(fontsize=7); fig.tight_layout(); fig.savefig(path, dpi=110); plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--data', type=Path, default=DATA, help='data root; --source is relative to it')
    p.add_argument('--source', default='nanoparticle_boxes/images', help='folder of the "user\'s" micrographs')
    p.add_argument('--base', required=True, help="completion checkpoint that never saw --source (or 'default')")
    p.add_argument('--n-images', type=int, default=16, help='images drawn from --source (seeded)')
    p.add_argument('--holdout-images', type=int, default=6, help='of those, held out for the before/after table')
    p.add_argument('--minutes', type=float, default=10.0, help='adaptation budget (wall clock)')
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--work', type=Path, default=Path(os.environ.get('SCRATCH', Path.home() / 'em_ssl_scratch')) / 'adapt')
    p.add_argument('--tag', default='', help='results name suffix')
    p.add_argument('--out', type=Path, default=RESULTS)
    args = p.parse_args(argv)
    src = args.source if Path(args.source).is_absolute() else args.data / args.source
    if FORBIDDEN in Path(src).parts: raise SystemExit(f"--source: {src} is evaluation-only data; adapting would train on it")
    files = pick_files(Path(src), args.n_images, args.seed)
    from em_ssl.partial_scan import train_completion
    t0 = time.time()
    model = train_completion(files, args.work / (args.tag or 'run'), init=args.base, minutes=args.minutes,
                             holdout=args.holdout_images / args.n_images, seed=args.seed, threads=args.threads, overwrite=True)
    wall = time.time() - t0
    rep = json.loads((model.parent / 'report.json').read_text())
    before, after = rep['summary']['before'], rep['summary']['after']
    held = sorted({r['image'] for r in rep['after']})
    name = 'completion_adapt' + (f'_{args.tag}' if args.tag else '')
    rows = [f"| {b['kind']} | 1/{round(1 / b['coverage'])} | {b['noise']} | {b['best_classical']:.2f} | {b['model']:.2f} | "
            f"{a['model']:.2f} | {b['ratio']:.3f} | {a['ratio']:.3f} | {b['worst_ratio']:.3f} | {a['worst_ratio']:.3f} |"
            for b, a in zip(before, after)]
    mb, ma = np.mean([b['ratio'] for b in before]), np.mean([a['ratio'] for a in after])
    wb, wa = max(b['worst_ratio'] for b in before), max(a['worst_ratio'] for a in after)
    m = machine_info(threads=args.threads)
    md = (f"# Adapting completion to a new source: {args.source}\n\n"
          f"Command: `python benchmarks/bench_adapt.py {' '.join(sys.argv[1:])}`\n\n"
          f"Base model: `{args.base}` (never saw {args.source}). {args.n_images} images drawn (seed {args.seed}); "
          f"adapted on {args.n_images - len(held)}, scored on the {len(held)} held out (centre crops <= 256 px). "
          f"Adaptation: `train_completion(..., init=base)` with a {args.minutes:g} min budget, {wall / 60:.1f} min wall "
          f"including the two evaluations.\n\nMachine: {m['cpu_model']}, {m['cpu_count']} cores, torch threads "
          f"{args.threads}, commit {m['commit']}, load at end {m['load_average_at_start']}.\n\n"
          f"RMS % vs the blurred clean image; ratio = model / best classical (per cell: mean of images; worst: the worst "
          f"image's ratio). Lower is better; below 1 beats the best classical fill.\n\n"
          f"| scan | coverage | noise | best classical | base model | adapted | ratio before | ratio after | worst before | worst after |\n"
          f"|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) +
          f"\n\nMean ratio over cells: {mb:.3f} before, {ma:.3f} after. Worst image: {wb:.3f} before, {wa:.3f} after.\n")
    (args.out / f'{name}.md').write_text(portable(md))
    (args.out / f'{name}.json').write_text(portable(json.dumps(dict(machine=m, args={k: str(v) for k, v in vars(args).items()},
                                                            files=[str(Path(f).relative_to(args.data)) if str(f).startswith(str(args.data)) else str(f) for f in files],
                                                            wall_s=wall, report=rep), indent=1)))
    plot(before, after, args.out / f'{name}.png', f'Adapting completion to {args.source} ({args.n_images - len(held)} images, '
         f'{args.minutes:g} min CPU); scored on {len(held)} held-out images')
    print(md)


if __name__ == '__main__':
    main()
