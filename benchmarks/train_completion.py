"""Train the shipped partial-scan completion model: a `FillRefiner` (linear + blur base, learned residual) from scratch.

The recipe is `em_ssl.partial_scan.train_completion` (issue 8): random crops with 1-4x zoom-out, dihedral transforms,
intensity augmentation (gamma, blur, contrast), simulated partial scans of all five kinds, coverage log-uniform in
1/100..1/10, noise none / paper dwell / Poisson 10-1000 e/px, binary or blurred paths; the ratio loss to the classical
base. Training data: every licensed training image of the development data collection (`TRAIN_SOURCES`, relative to
`--data`); `stem_extra/validation_only` is never used (asserted): it is the held-out evaluation set. A small `--holdout`
of files gives a sanity table; the real evaluation (ws2_haadf) is separate.

Resumable: `--resume` continues the run in `--out` (out/last_state.pth, written after every epoch).

Example (the shipped model):
    nice -n 10 python benchmarks/train_completion.py --out $SCRATCH/completion --minutes 600 --threads 2
Leave-one-source-out (evaluate it with bench_completion.py --images nanoparticle_boxes/images):
    nice -n 10 python benchmarks/train_completion.py --out $SCRATCH/loso_np --exclude nanoparticle_boxes --minutes 30
"""
from __future__ import annotations
import argparse
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / 'shared' / 'data'   # the project's development data collection
# (folder relative to --data, file name pattern): clean, licensed training images only (see the collection's README)
TRAIN_SOURCES = [('haadf_catalysts/tif_data', '*'),            # real HAADF-STEM, Apache-2.0 / MIT
                 ('nanoparticle_boxes/images', '*'),           # real HAADF-STEM and BF-TEM, MIT
                 ('atomagined_sim/general/png', '*-raw.png'),  # simulated HAADF-STEM, noise-free, MIT
                 ('atomagined_sim/general/png', '*-clean.png'),  # ... with scan distortions, noise-free
                 ('atomagined_sim/retrieval/targets/png', '*-raw.png'),
                 ('atomagined_sim/retrieval/targets/png', '*-clean.png'),
                 ('stem_extra/train', '*'),                    # more real STEM/TEM scenes (see stem_extra/README.md)
                 ('stem_extra/pairs_tkrem/*/clean', '*')]      # simulated clean images of 5 modalities (GPL-3.0)
FORBIDDEN = 'validation_only'   # evaluation-only data: never train on it


def training_files(data: Path, exclude: list[str] = ()) -> list[Path]:
    "The training files of `TRAIN_SOURCES` under `data` (sorted), less the sources whose folder starts with one of `exclude`."
    from em_ssl.io import MICROGRAPH_EXTENSIONS
    files = []
    for folder, pattern in TRAIN_SOURCES:
        if any(folder.startswith(e.rstrip('/')) for e in exclude): continue
        found = [f for d in sorted(data.glob(folder)) for f in sorted(d.glob(pattern))
                 if f.is_file() and f.suffix.lower() in MICROGRAPH_EXTENSIONS]
        if not found: raise FileNotFoundError(f"no training images in {data / folder} ({pattern})")
        files += found
    assert not any(FORBIDDEN in f.parts for f in files), "evaluation-only images in the training set"
    return sorted(dict.fromkeys(files))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--data', type=Path, default=DATA, help='root of the data collection')
    p.add_argument('--out', type=Path, required=True, help='output folder (model.pth, report.md, last_state.pth, ...)')
    p.add_argument('--minutes', type=float, default=60., help='wall-clock budget of this call')
    p.add_argument('--size', default='small', help='network size: paper, medium, small or tiny')
    p.add_argument('--crop', type=int, default=128, help='training crop side (px)')
    p.add_argument('--bs', type=int, default=8, help='batch size')
    p.add_argument('--lr', type=float, default=1e-3, help='peak learning rate')
    p.add_argument('--n-crops', type=int, default=None, help='crops per epoch (default: 50 batches)')
    p.add_argument('--holdout', type=float, default=0.1, help='fraction of files held out (sanity table)')
    p.add_argument('--threads', type=int, default=2, help='torch CPU threads')
    p.add_argument('--seed', type=int, default=0, help='random seed')
    p.add_argument('--exclude', nargs='+', default=[], metavar='SOURCE',
                   help='leave these sources out (folder prefixes of TRAIN_SOURCES, e.g. nanoparticle_boxes) '
                        'for a leave-one-source-out model')
    p.add_argument('--resume', action='store_true', help='continue the run in --out')
    p.add_argument('--overwrite', action='store_true', help='replace the results in a non-empty --out')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from em_ssl.partial_scan import train_completion
    files = training_files(args.data, args.exclude)
    if args.exclude and not all(any(f.startswith(e.rstrip('/')) for f, _ in TRAIN_SOURCES) for e in args.exclude):
        raise SystemExit(f"--exclude {' '.join(args.exclude)}: not a source folder of TRAIN_SOURCES")
    print(f"{len(files)} training files under {args.data}" + (f" (left out: {', '.join(args.exclude)})" if args.exclude else ''), flush=True)
    path = train_completion(files, args.out, init='none', minutes=args.minutes, size=args.size, crop=args.crop, bs=args.bs,
                            lr=args.lr, holdout=args.holdout, n_crops=args.n_crops, resume=args.resume,
                            overwrite=args.overwrite, seed=args.seed, threads=args.threads)
    print('wrote', path, flush=True)


if __name__ == '__main__':
    main()
