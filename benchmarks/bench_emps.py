"""Few-label fine-tuning on data no generator was pretrained on: EMPS nanoparticle segmentation (issue 9).

EMPS (github.com/by256/emps, MIT; the images are crops of published figures) is evaluation-only data: it is never used
for pretraining or for shipped weights, and nothing of it is copied into the repository. For each label budget (5, 10,
30 labelled images drawn from the EMPS train split with a seeded choice, the same images for every initialisation at a
seed) and seed, each initialisation is fine-tuned with `em_ssl.finetune.finetune_folders` (the code behind
`em-ssl finetune segment`) and scored on ALL 99 EMPS test images: foreground Dice per image (threshold 0.5), mean and
worst. The validation Dice of each epoch (on the run's own held-out labelled images) comes from its metrics.csv.

Initialisations are given as NAME=PRETRAINED[:ARCH][@OPTION=VALUE,...] (options of finetune_folders that differ from the
shared schedule, e.g. @lr_mult=10,freeze_epochs=0 for discriminative learning rates without a frozen epoch), e.g.
    pretrained=default                       the bundled pretrained generator
    random=none:unet_2_44                    random weights, same architecture
    random_big=none:unet_3_176               a bigger random U-Net (Kazimi et al.: small pretrained ~ big random)
    hrnet_random=none:hrnet                  HRNet from random weights
    new=$SCRATCH/pretrain/pretrained.pth     any pretrained checkpoint

Resumable: finished runs are kept in OUT/emps_runs.json (per tag) and skipped when the script is run again.

    nice -n 10 python benchmarks/bench_emps.py --inits pretrained=default random=none:unet_2_44 --budgets 5 10 30 \\
        --seeds 0 1 2 --tag small
Outputs: benchmarks/results/emps_{TAG}_runs.json, emps_{TAG}.md, emps_{TAG}.png.
"""
from __future__ import annotations
import argparse, json, os, random, sys, time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_record import machine_info, portable   # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
EMPS = ROOT / 'shared' / 'data' / 'stem_extra' / 'validation_only' / 'emps'   # default of --emps
RESULTS = Path(__file__).resolve().parent / 'results'


def link_images(src: Path, names, dest: Path, kinds=('images', 'masks')) -> Path:
    "`dest`/K for each K of `kinds`: links to the files `names` of `src`/K (nothing is copied)."
    for k in kinds:
        (dest / k).mkdir(parents=True, exist_ok=True)
        for nm in names:
            if not (dest / k / nm).exists(): os.symlink(src / k / nm, dest / k / nm)
    return dest


def labelled_subset(emps: Path, n: int, seed: int, work: Path) -> Path:
    "A folder of links to `n` seeded-random EMPS train images and their masks (images/, masks/)."
    names = sorted(p.name for p in (emps / 'train' / 'images').iterdir())
    if n > len(names): raise SystemExit(f"--budgets: {n} labels asked, the EMPS train split has {len(names)}")
    return link_images(emps / 'train', sorted(random.Random(seed).sample(names, n)), work / f'labels{n}_seed{seed}')


def dice_and_share(model_path: Path, folder: Path, limit: int | None = None) -> tuple[list[float], list[float]]:
    "Per image of `folder`/images: foreground Dice (p > 0.5) against `folder`/masks (empty vs empty: 1), and the predicted foreground share."
    from em_ssl.finetune import load_finetuned, predict_array
    from em_ssl.io import load_image, normalize
    from em_ssl.labels import load_mask
    model, meta = load_finetuned(model_path, 'cpu')
    dice, share = [], []
    for f in sorted((folder / 'images').iterdir())[:limit]:
        prob = predict_array(model, normalize(load_image(f)), 'segment', meta['n_out'])
        pred = (prob[0] > 0.5) if meta['n_out'] == 1 else (prob.argmax(0) > 0)
        gt = load_mask(folder / 'masks' / f.name, 2) > 0
        inter, tot = (pred & gt).sum(), pred.sum() + gt.sum()
        dice.append(1.0 if tot == 0 else float(2 * inter / tot)); share.append(float(pred.mean()))
    return dice, share


def test_dice(model_path: Path, folder: Path, limit: int | None = None) -> list[float]:
    "Foreground Dice (p > 0.5) of the fine-tuned model on each image of `folder`/images against `folder`/masks (empty vs empty: 1)."
    return dice_and_share(model_path, folder, limit)[0]


def all_foreground_dice(folder: Path, limit: int | None = None) -> list[float]:
    "The trivial baseline: Dice of predicting foreground everywhere, 2f/(1+f) for an image whose foreground share is f."
    from em_ssl.labels import load_mask
    f = [float((load_mask(m, 2) > 0).mean()) for m in sorted((folder / 'masks').iterdir())[:limit]]
    return [2 * x / (1 + x) for x in f]


def random_reference(name: str, inits) -> str | None:
    "The random init a pretrained init `name` is compared with: `name` with 'pretrained' -> 'random' if given, else 'random'."
    ref = name.replace('pretrained', 'random')
    return ref if ref != name and ref in inits else ('random' if 'random' in inits else None)


def results_header(title: str, runs_name: str, rec: dict, inits: dict, args) -> tuple[str, str]:
    "(title, commands and machine, `inits` and the shared schedule of `args`): the opening of a results table."
    m = rec['machine']
    cmds = '\n'.join(f'    {c}' for c in rec.get('commands', [rec.get('command', '')]))
    head = (f"# {title}\n\nCommands (runs accumulate in {runs_name}):\n\n{cmds}\n\nMachine: {m['cpu_model']}, {m['cpu_count']} "
            f"cores, torch {m.get('torch')}, commit {m['commit']}, load at start {m['load_average_at_start']}\n\n")
    sched = (f"Inits: {', '.join(f'{k} = {v}' for k, v in inits.items())}. Schedule: {args.epochs} epochs, crop {args.crop}, "
             f"bs {args.bs}, lr {args.lr}, epoch size {args.epoch_size or 'CLI default'}, freeze epochs "
             f"{args.freeze_epochs if args.freeze_epochs is not None else '1 if pretrained'}.")
    return head, sched


def parse_spec(spec: str) -> tuple[str, str, dict]:
    "'PRETRAINED[:ARCH][@k=v,...]' -> (pretrained, arch, options)."
    spec, _, opts = spec.partition('@')
    pre, _, arch = spec.partition(':')
    kw = {k: (float(v) if '.' in v or 'e' in v else int(v)) for k, v in (o.split('=') for o in opts.split(',') if o)}
    return pre, arch, kw


def one_run(name: str, spec: str, n: int, seed: int, args) -> dict:
    from em_ssl.finetune import finetune_folders
    pre, arch, extra = parse_spec(spec)
    work = Path(args.work)
    d = labelled_subset(Path(args.emps), n, seed, work)
    out = work / 'runs' / args.tag / f'{name}_{n}_{seed}'
    t0 = time.time()
    kw = dict(epochs=args.epochs, seed=seed, out=out, overwrite=True, crop=args.crop, bs=args.bs, lr=args.lr,
              freeze_epochs=args.freeze_epochs, epoch_size=args.epoch_size)
    finetune_folders('segment', d / 'images', d / 'masks', pretrained=None if pre == 'none' else pre, arch=arch or None,
                     **{**kw, **extra})
    train_s = time.time() - t0
    import pandas as pd
    hist = pd.read_csv(out / 'metrics.csv')
    dice = test_dice(out / 'model.pth', Path(args.emps) / 'test', args.test_limit)
    return dict(init=name, spec=spec, labels=n, seed=seed, train_s=round(train_s, 1), test_images=len(dice),
                test_dice_mean=float(np.mean(dice)), test_dice_worst=float(np.min(dice)), test_dice=dice,
                valid_dice_per_epoch=[None if pd.isna(v) else float(v) for v in hist['dice']],
                phase_per_epoch=list(hist['phase']) if 'phase' in hist else None)


def summarise(runs: list[dict], inits: list[str], budgets: list[int], trivial: list[float] | None = None) -> tuple[str, list[dict]]:
    rows, cells = [], {}
    for n in budgets:
        for name in inits:
            r = [x for x in runs if x['init'] == name and x['labels'] == n]
            if not r: continue
            m = np.array([x['test_dice_mean'] for x in r])
            cells[name, n] = m
            rows.append(f"| {n} | {name} | {len(r)} | {m.mean():.3f} ± {m.std(ddof=1) if len(m) > 1 else 0:.3f} | "
                        f"{min(m):.3f} | {min(x['test_dice_worst'] for x in r):.3f} | {np.mean([x['train_s'] for x in r]) / 60:.1f} |")
    if trivial: rows.append(f"| - | baseline: foreground everywhere | - | {np.mean(trivial):.3f} | - | {min(trivial):.3f} | - |")
    table = ("| labels | init | seeds | test Dice, mean ± sd over seeds | worst seed | worst image | minutes/run |\n"
             "|---|---|---|---|---|---|---|\n" + "\n".join(rows))
    verdicts = []
    for p in [i for i in inits if 'random' not in i]:
        for r in [x for x in [random_reference(p, inits)] if x]:
            for n in budgets:
                if (p, n) not in cells or (r, n) not in cells: continue
                a, b = cells[p, n], cells[r, n]
                spread = max(a.std(ddof=1) if len(a) > 1 else 0, b.std(ddof=1) if len(b) > 1 else 0)
                verdicts.append(dict(name=f"{p} >= {r} within the seed spread at {n} labels", value=float(a.mean() - b.mean()),
                                     threshold=-float(spread), met=bool(a.mean() - b.mean() >= -spread)))
                if n in (5, 10):
                    verdicts.append(dict(name=f"{p} >= {r} + 0.03 at {n} labels", value=float(a.mean() - b.mean()),
                                         threshold=0.03, met=bool(a.mean() - b.mean() >= 0.03)))
    if trivial:
        for (name, n), m in cells.items():
            verdicts.append(dict(name=f"{name} beats 'foreground everywhere' at {n} labels", value=float(m.mean() - np.mean(trivial)),
                                 threshold=0.0, met=bool(m.mean() > np.mean(trivial))))
    vt = "\n".join(f"- {v['name']}: difference {v['value']:+.3f} (needs {'>=' } {v['threshold']:+.3f}) -> "
                   f"{'MET' if v['met'] else 'MISSED'}" for v in verdicts)
    return table + "\n\nTargets (mean over seeds of the mean test Dice; differences pretrained - random):\n\n" + vt, verdicts


def budget_plot(runs: list[dict], inits: list[str], budgets: list[int], path: Path, budget_key: str, metric: str, curve: str,
                curve_budget: int, baselines: dict, xlabel: str, ylabel: str, title: str, curve_ylabel: str):
    "Left: `metric` (mean ± sd over seeds) per budget for each init, with `baselines` {name: value} as dashed lines; right: `curve` per epoch at `curve_budget`."
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    for name in inits:
        xs, ms, sds = [], [], []
        for n in budgets:
            m = [x[metric] for x in runs if x['init'] == name and x[budget_key] == n]
            if m: xs.append(n); ms.append(np.mean(m)); sds.append(np.std(m, ddof=1) if len(m) > 1 else 0)
        if not xs: continue
        line = a1.errorbar(xs, ms, yerr=sds, marker='o', capsize=4, label=name)[0]
        mine = [x for x in runs if x['init'] == name and x[budget_key] == curve_budget]
        for x in mine:
            v = [np.nan if d is None else d for d in x[curve]]
            a2.plot(range(1, len(v) + 1), v, color=line.get_color(), alpha=0.6, label=name if x is mine[0] else None)
    for i, (k, v) in enumerate(baselines.items()): a1.axhline(v, ls='--', color=('gray', 'k', 'silver')[i % 3], label=k)
    a1.set(xscale='log', xticks=budgets, xticklabels=budgets, xlabel=xlabel, ylabel=ylabel, title=title)
    a2.set(xlabel='epoch', ylabel=curve_ylabel, title=f'per-epoch {curve_ylabel}, {curve_budget} {xlabel.split()[-1]}')
    a1.minorticks_off(); a1.legend(fontsize=7, ncol=2, loc='upper right'); a2.legend(fontsize=7, ncol=2)
    fig.tight_layout(); fig.savefig(path, dpi=110); plt.close(fig)


def plot(runs: list[dict], inits: list[str], budgets: list[int], path: Path, trivial: list[float] | None = None):
    budget_plot(runs, inits, budgets, path, 'labels', 'test_dice_mean', 'valid_dice_per_epoch', budgets[len(budgets) // 2],
                {'foreground everywhere': float(np.mean(trivial))} if trivial else {}, 'labelled training images',
                'Dice on 99 EMPS test images', 'EMPS segmentation: test Dice (mean ± sd over seeds)', 'validation Dice (own held-out labels)')


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--emps', default=str(EMPS), help='EMPS folder with train/ and test/ (images/, masks/)')
    p.add_argument('--inits', nargs='+', default=['pretrained=default', 'random=none:unet_2_44'], help='NAME=PRETRAINED[:ARCH]')
    p.add_argument('--budgets', nargs='+', type=int, default=[5, 10, 30], help='labelled training images')
    p.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    p.add_argument('--epochs', type=int, default=10, help='epochs training all weights (after the frozen ones)')
    p.add_argument('--freeze-epochs', type=int, default=None, help='frozen-body epochs (None: 1 if pretrained, else 0)')
    p.add_argument('--epoch-size', type=int, default=None, help='random crops per epoch (None: the CLI default)')
    p.add_argument('--crop', type=int, default=256)
    p.add_argument('--bs', type=int, default=4)
    p.add_argument('--lr', type=float, default=2e-4)
    p.add_argument('--test-limit', type=int, default=None, help='score only the first N test images (None: all 99)')
    p.add_argument('--threads', type=int, default=None)
    p.add_argument('--work', default=str(Path(os.environ.get('SCRATCH', Path.home() / 'em_ssl_scratch')) / 'bench_emps'),
                   help='scratch folder (links to the labelled subsets, run folders)')
    p.add_argument('--tag', default='default', help='results name: emps_{TAG}_runs.json / .md / .png')
    p.add_argument('--out', default=str(RESULTS))
    p.add_argument('--summarise-only', action='store_true', help='no new runs: rewrite the table and plot from the runs file')
    args = p.parse_args(argv)
    if not (Path(args.emps) / 'test' / 'images').is_dir(): raise SystemExit(f"--emps: no test/images in {args.emps}")
    import torch
    if args.threads: torch.set_num_threads(args.threads)
    inits = dict(s.split('=', 1) for s in args.inits)
    out = Path(args.out); out.mkdir(parents=True, exist_ok=True)
    runs_file = out / f'emps_{args.tag}_runs.json'
    rec = json.loads(runs_file.read_text()) if runs_file.exists() else {'runs': []}
    if not args.summarise_only:
        if 'commands' not in rec and 'command' in rec: rec['commands'] = [rec['command']]
        rec.setdefault('commands', []).append(' '.join(['python benchmarks/bench_emps.py'] + sys.argv[1:]))
        rec.update(machine=machine_info(), command=rec['commands'][-1],
                   settings={k: v for k, v in vars(args).items() if k not in ('work', 'out', 'emps', 'summarise_only')})
    done = {(r['init'], r['labels'], r['seed']) for r in rec['runs']}
    for seed in ([] if args.summarise_only else args.seeds):
        for n in args.budgets:
            for name, spec in inits.items():
                if (name, n, seed) in done: continue
                r = one_run(name, spec, n, seed, args)
                rec['runs'].append(r)
                runs_file.write_text(json.dumps(rec, indent=1))
                print(f"{name:>14} labels {n:>3} seed {seed}: test Dice {r['test_dice_mean']:.3f} (worst image "
                      f"{r['test_dice_worst']:.3f}), {r['train_s'] / 60:.1f} min", flush=True)
    runs = [r for r in rec['runs'] if r['init'] in inits and r['labels'] in args.budgets]
    trivial = all_foreground_dice(Path(args.emps) / 'test', args.test_limit)
    rec['baseline_foreground_everywhere'] = trivial
    table, verdicts = summarise(runs, list(inits), args.budgets, trivial)
    rec['summary'] = verdicts; runs_file.write_text(json.dumps(rec, indent=1))
    plot(runs, list(inits), args.budgets, out / f'emps_{args.tag}.png', trivial)
    head, sched = results_header(f"EMPS few-label segmentation ({args.tag})", f"emps_{args.tag}_runs.json", rec, inits, args)
    md = (f"{head}{sched} Test set: all {len(runs[0]['test_dice']) if runs else 0} EMPS test images (never used for training, "
          f"pretraining or choices).\n\n{table}\n")
    (out / f'emps_{args.tag}.md').write_text(portable(md))
    print(md)


if __name__ == '__main__':
    main()
