"""Transfer probe for the pretext corruption: which noise/blur strengths make pretraining help fine-tuning (issue 9).

Each corruption setting pretrains the same generator (`em_ssl.pretrain.pretrain_folder`, pix2pix: LSGAN + 100 L1) for
the same wall-clock budget on every licensed unlabeled image (`PRETRAIN_SOURCES`, every page of each stack), then is
fine-tuned on a small labelled probe task and scored. The probe is EMPS segmentation with `--probe-labels` images of
the EMPS *train* split and scored on `--probe-valid` OTHER train images (never the EMPS test images, which are kept for
the final comparison in bench_emps.py). A random-initialisation run on the same probe is the reference.

The run folders are kept in --work: the winning setting's pretraining can be continued there with
`em-ssl pretrain ... --resume` (or `pretrain_folder(..., resume=True)`).

    nice -n 10 python benchmarks/probe_corruption.py --minutes 5 --threads 1
Outputs: benchmarks/results/corruption_probe.{md,json}.
"""
from __future__ import annotations
import argparse, json, os, random, sys, time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_record import machine_info   # noqa: E402
from bench_emps import EMPS, link_images, test_dice  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / 'shared' / 'data'
RESULTS = Path(__file__).resolve().parent / 'results'
# (folder relative to the data root, file pattern): licensed unlabeled images for pretraining. Not stem_extra/pairs_tkrem
# (its clean/noisy pairs are a downstream denoising evaluation) and never stem_extra/validation_only.
PRETRAIN_SOURCES = [('haadf_catalysts/tif_data', '*'),                 # real HAADF-STEM, Apache-2.0 / MIT
                    ('nanoparticle_boxes/images', '*'),                # real HAADF-STEM and BF-TEM, MIT
                    ('atomagined_sim/general/png', '*-raw.png'),       # simulated HAADF-STEM, MIT
                    ('atomagined_sim/general/png', '*-clean.png'),
                    ('atomagined_sim/retrieval/targets/png', '*-raw.png'),
                    ('atomagined_sim/retrieval/targets/png', '*-clean.png'),
                    ('stem_extra/train', '*'),                         # real STEM/TEM scenes, GPL-3.0 / NIST
                    ('stem_extra/formats', '*')]                       # real vendor files: stacks (every page), GPL-3.0 / NIST
# the settings compared (em_ssl.pretrain.Corruption fields); 'default' is Corruption()'s defaults
SETTINGS = {'weak': dict(noise_std=(0.01, 0.05), p_blur=0.3, blur_sigma=(0.5, 1.0)),
            'default': dict(),
            'strong': dict(noise_std=(0.05, 0.30), p_blur=0.8, blur_sigma=(1.0, 3.0))}


def pretrain_files(data: Path) -> list[Path]:
    from em_ssl.io import MICROGRAPH_EXTENSIONS
    files = [f for folder, pat in PRETRAIN_SOURCES for d in sorted(data.glob(folder)) for f in sorted(d.glob(pat))
             if f.is_file() and f.suffix.lower() in MICROGRAPH_EXTENSIONS]
    assert files and not any('validation_only' in f.parts or 'pairs_tkrem' in f.parts for f in files)
    return sorted(dict.fromkeys(files))


def probe_split(emps: Path, n_labels: int, n_valid: int, seed: int, work: Path) -> tuple[Path, Path]:
    "Links to `n_labels` EMPS train images (fine-tuning) and `n_valid` other train images (scoring), seeded."
    names = sorted(p.name for p in (emps / 'train' / 'images').iterdir())
    pick = random.Random(seed).sample(names, n_labels + n_valid)
    return (link_images(emps / 'train', pick[:n_labels], work / 'probe_data' / 'labels'),
            link_images(emps / 'train', pick[n_labels:], work / 'probe_data' / 'valid'))


def probe(pretrained, lab: Path, val: Path, out: Path, args) -> dict:
    from em_ssl.finetune import finetune_folders
    t0 = time.time()
    m = finetune_folders('segment', lab / 'images', lab / 'masks', pretrained=pretrained, arch=None if pretrained else 'unet_2_44',
                         epochs=args.probe_epochs, out=out, overwrite=True, crop=128, bs=8, epoch_size=64, seed=0)
    d = test_dice(m, val)
    return dict(dice_mean=float(np.mean(d)), dice_worst=float(np.min(d)), finetune_s=round(time.time() - t0, 1))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--data', type=Path, default=DATA)
    p.add_argument('--emps', type=Path, default=EMPS)
    p.add_argument('--settings', nargs='+', default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument('--minutes', type=float, default=5.0, help='pretraining budget per setting (unless --epochs)')
    p.add_argument('--epochs', type=int, default=None,
                   help='equal compute: pretrain every setting to this many epochs (continuing runs already in --work)')
    p.add_argument('--crop', type=int, default=128)
    p.add_argument('--bs', type=int, default=8)
    p.add_argument('--probe-labels', type=int, default=10)
    p.add_argument('--probe-valid', type=int, default=30)
    p.add_argument('--probe-epochs', type=int, default=6)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--work', type=Path, default=Path(os.environ.get('SCRATCH', Path.home() / 'em_ssl_scratch')) / 'probe_corruption')
    p.add_argument('--out', type=Path, default=RESULTS)
    args = p.parse_args(argv)
    import torch
    from em_ssl.pretrain import pretrain_folder, Corruption
    torch.set_num_threads(args.threads)
    files = pretrain_files(args.data)
    lab, val = probe_split(args.emps, args.probe_labels, args.probe_valid, 100, args.work)
    res_file = args.out / 'corruption_probe.json'
    rec = json.loads(res_file.read_text()) if res_file.exists() else {'results': {}}
    rec.update(machine=machine_info(), command='python benchmarks/probe_corruption.py ' + ' '.join(sys.argv[1:]),
               pretrain_files=len(files), sources=[f'{a}/{b}' for a, b in PRETRAIN_SOURCES])
    if 'random' not in rec['results']:
        rec['results']['random'] = dict(setting=None, **probe(None, lab, val, args.work / 'ft_random', args))
        res_file.write_text(json.dumps(rec, indent=1)); print('random', rec['results']['random'], flush=True)
    for name in args.settings:
        run = args.work / f'pretrain_{name}'
        done = rec['results'].get(name, {}).get('pretrain_epochs')
        if done is not None and (args.epochs is None or done == args.epochs): continue
        t0 = time.time()
        resume = args.epochs is not None and (run / 'last_state.pth').exists()
        ck = pretrain_folder(files, run, epochs=args.epochs or 1000, crop=args.crop, bs=args.bs, n_crops=128, seed=0,
                             overwrite=not resume, resume=resume, corruption=Corruption(**SETTINGS[name]),
                             max_minutes=None if args.epochs else args.minutes, critic_kwargs={'ndf': 32},
                             extra={'command': rec['command'], 'threads': args.threads})
        import pandas as pd
        h = pd.read_csv(run / 'metrics.csv')
        r = dict(setting=Corruption(**SETTINGS[name]).to_dict(), pretrain_s=round(time.time() - t0, 1) + (rec['results'].get(name, {}).get('pretrain_s', 0) if resume else 0),
                 pretrain_epochs=len(h),
                 pretext_valid_l1=float(h['l1'].iloc[-1]) if 'l1' in h else None,
                 **probe(ck, lab, val, args.work / f'ft_{name}', args))
        rec['results'][name] = r
        res_file.write_text(json.dumps(rec, indent=1)); print(name, r, flush=True)
    rows = [f"| {k} | {json.dumps(v['setting']) if v['setting'] else 'random initialisation'} | {v.get('pretrain_epochs', '-')} | "
            f"{v['dice_mean']:.3f} | {v['dice_worst']:.3f} |" for k, v in rec['results'].items()]
    best = max((k for k in rec['results'] if k != 'random'), key=lambda k: rec['results'][k]['dice_mean'], default=None)
    m = rec['machine']
    md = (f"# Pretext corruption probe\n\nCommand: `{rec['command']}`\n\nMachine: {m['cpu_model']}, {m['cpu_count']} cores, "
          f"threads {args.threads}, commit {m['commit']}, load at start {m['load_average_at_start']}.\n\n"
          f"Each setting: {f'{args.epochs} epochs' if args.epochs else f'{args.minutes:g} min'} of pretraining (unet_2_44, crop {args.crop}, bs {args.bs}) on {len(files)} licensed "
          f"unlabeled files; then fine-tuned on {args.probe_labels} EMPS train images ({args.probe_epochs} epochs, crop 128, "
          f"64 crops/epoch) and scored (Dice) on {args.probe_valid} other EMPS train images (not the test split).\n\n"
          "| setting | corruption | pretraining epochs (128 crops) | probe Dice (mean) | worst image |\n|---|---|---|---|---|\n"
          + "\n".join(rows) + f"\n\nBest setting: **{best}**.\n")
    (args.out / 'corruption_probe.md').write_text(md); print(md)


if __name__ == '__main__':
    main()
