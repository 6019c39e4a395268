"""Which fine-tuning recipe learns EMPS particles from 10 labels? A probe on the EMPS *train* split (issue 9).

Each recipe fine-tunes the bundled generator (or random weights) with the default CLI schedule (crop 256, 1 + 10 epochs
of 128 crops, batch 4, lr 2e-4) on 10 labelled EMPS train images and is scored on 30 *other* EMPS train images drawn
with the same seeded choice (`--split`): foreground Dice per image and the predicted foreground share. The EMPS test
split is never used here, so choices made from this probe do not touch the numbers reported on it. The trivial answer
"foreground everywhere" (Dice 2f/(1+f) for foreground share f) is scored on the same images.

Recipes (NAME: options): the loss of `em_ssl.finetune.SegmentationLoss` (alpha, gamma, dice weight), RandomInvert
polarity augmentation, IntensityTransform, zoom-out of the training crops, the architecture for random weights.

    nice -n 5 python benchmarks/probe_emps_recipes.py base --split 100
    nice -n 5 python benchmarks/probe_emps_recipes.py bceinv --alpha none --gamma 0 --dice 0 --invert 0.5 --split 100
    python benchmarks/probe_emps_recipes.py --summarise
Outputs: $SCRATCH/probe_emps/runs/NAME_sSPLIT/model.pth, benchmarks/results/emps_recipe_probe_runs.jsonl and .md.
"""
from __future__ import annotations
import argparse, json, os, sys, time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_record import machine_info, portable   # noqa: E402
import probe_corruption                                                      # noqa: E402
from bench_emps import EMPS, RESULTS, all_foreground_dice, dice_and_share   # noqa: E402

RUNS = RESULTS / 'emps_recipe_probe_runs.jsonl'


def probe_split(split: int, work: Path) -> tuple[Path, Path]:
    "10 labelled and 30 probe images from the EMPS train split, a seeded choice (links, nothing copied)."
    return probe_corruption.probe_split(EMPS, 10, 30, split, work / f'split{split}')


def run(a, work: Path) -> dict:
    import torch
    from fastai.torch_core import set_seed
    from em_ssl.data import IntensityTransform, RandomInvert
    from em_ssl.finetune import SegmentationLoss, finetune_learner, save_finetuned
    from em_ssl.labels import segmentation_dls
    torch.set_num_threads(a.threads)
    lab, val = probe_split(a.split, work)
    set_seed(0)
    dls = segmentation_dls(lab / 'images', lab / 'masks')
    if a.zoom > 1: dls.train_ds.zoom = (1.0, a.zoom)
    if a.intensity: dls.train.after_batch.add(IntensityTransform(seed=0))
    if a.invert: dls.train.after_batch.add(RandomInvert(a.invert, seed=0))
    out = work / 'runs' / f'{a.name}_s{a.split}'
    out.mkdir(parents=True, exist_ok=True)
    learn = finetune_learner(dls, 'segment', pretrained=None if a.pretrained == 'none' else a.pretrained,
                             arch=a.arch if a.pretrained == 'none' else None, path=out, model_dir='.')
    learn.loss_func = SegmentationLoss(alpha=None if a.alpha == 'none' else float(a.alpha), gamma=a.gamma, dice_weight=a.dice)
    t0 = time.time()
    learn.fine_tune(10)
    save_finetuned(learn, out / 'model.pth', overwrite=True)
    dice, share = dice_and_share(out / 'model.pth', val)
    return dict(name=a.name, split=a.split, options={k: v for k, v in vars(a).items() if k not in ('summarise', 'threads')},
                train_s=round(time.time() - t0, 1), probe_dice=float(np.mean(dice)), worst=float(np.min(dice)),
                predicted_foreground=float(np.mean(share)), valid_dice_per_epoch=[h.get('dice') for h in learn.history],
                machine=machine_info(threads=a.threads))


def summarise(work: Path):
    runs = [json.loads(line) for line in RUNS.read_text().splitlines() if line.strip()]
    rows = []
    for split in sorted({r['split'] for r in runs}):
        _, val = probe_split(split, work)
        triv = all_foreground_dice(val)
        share = np.mean([d / (2 - d) for d in triv])   # the true foreground share f, from 2f/(1+f)
        rows.append(f"| {split} | foreground everywhere | (true foreground share {share:.3f}) | {np.mean(triv):.3f} | {min(triv):.3f} | 1.000 | - |")
        for r in [r for r in runs if r['split'] == split]:
            o = r['options']
            what = (f"{'random ' + o['arch'] if o['pretrained'] == 'none' else o['pretrained']}; alpha {o['alpha']}, gamma "
                    f"{o['gamma']}, dice {o['dice']}" + (f", invert {o['invert']}" if o['invert'] else '')
                    + (f", zoom 1-{o['zoom']}" if o['zoom'] > 1 else '') + (', intensity' if o['intensity'] else ''))
            rows.append(f"| {split} | {r['name']} | {what} | {r['probe_dice']:.3f} | {r['worst']:.3f} | "
                        f"{r.get('predicted_foreground', float('nan')):.3f} | {r['train_s'] / 60:.1f} |")
    md = ("# EMPS recipe probe: 10 labelled train images, scored on 30 other train images\n\nCommands: see the docstring of "
          "`benchmarks/probe_emps_recipes.py`; every run is a line of `emps_recipe_probe_runs.jsonl` with its options and "
          "machine. The EMPS test split is not used. One seed per row: differences below ~0.05 are within the spread "
          "that seeds and splits show elsewhere (`emps_finetune.md`).\n\n| split | recipe | options | Dice mean | "
          "worst image | predicted foreground share | minutes |\n|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")
    (RESULTS / 'emps_recipe_probe.md').write_text(portable(md))
    print(md)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('name', nargs='?', help='recipe name (a row of the table)')
    p.add_argument('--split', type=int, default=100, help='seed of the 10 + 30 image choice')
    p.add_argument('--pretrained', default='default', help="bundled name, file, or 'none' (random weights)")
    p.add_argument('--arch', default='unet_2_44', help='architecture of random weights')
    p.add_argument('--alpha', default='0.75', help="focal foreground weight, or 'none'")
    p.add_argument('--gamma', type=float, default=2.0, help='focal exponent (0: cross-entropy)')
    p.add_argument('--dice', type=float, default=1.0, help='weight of the soft Dice term')
    p.add_argument('--invert', type=float, default=0.0, help='RandomInvert probability')
    p.add_argument('--zoom', type=float, default=1.0, help='zoom-out range 1..ZOOM of the training crops')
    p.add_argument('--intensity', action='store_true', help='IntensityTransform (gamma, contrast, blur)')
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--work', default=str(Path(os.environ.get('SCRATCH', Path.home() / 'em_ssl_scratch')) / 'probe_emps'))
    p.add_argument('--summarise', action='store_true', help='rewrite the table from the runs file')
    a = p.parse_args(argv)
    work = Path(a.work)
    if not a.summarise:
        if not a.name: raise SystemExit('give a recipe NAME (or --summarise)')
        r = run(a, work)
        with RUNS.open('a') as f: f.write(json.dumps(r) + '\n')
        print(json.dumps({k: r[k] for k in ('name', 'split', 'probe_dice', 'worst', 'predicted_foreground')}))
    summarise(work)


if __name__ == '__main__':
    main()
