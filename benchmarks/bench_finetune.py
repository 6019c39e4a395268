"""Pretrained vs random initialisation on downstream tasks (Kazimi et al. 2024, sec. 4.2-4.3, small CPU version).

Tasks (data from `--data`, by default `shared/data` next to the repository checkout, see its README.md; nothing is
copied into the repository):
- segment: atom segmentation of single Re atoms in HAADF-STEM (haadf_catalysts, bpy_crop*): disks of radius 3 px
  around the labelled X,Y positions; 6 training images (512 px), 6 held-out test images (centre 256 px crops).
- denoise: atomagined retrieval PNGs, Poisson-count noise `stem00-cnts2` -> `stem00-clean`; 5 train / 3 test.
- denoise_bg: atomagined general PNGs, blur + background + noise `stem00-blbk1` -> `stem00-clean`; 8 train / 8 test.
- superres: atomagined general PNGs, `stem00-clean` 2x area-downsampled and cubic-upsampled back -> `stem00-clean`;
  8 train / 8 test.
Each task is trained from the pretrained generator (`--pretrained`, default: the bundled em_ssl/weights/ssl_unet_small.pth)
and from random weights of the same architecture, for several seeds, with the same schedule (all weights trained from
the first epoch, `fine_tune(epochs, freeze_epochs=0)`, one-cycle). For segmentation a bigger random U-Net (`--big-arch`)
is added when time allows (the paper's "small pretrained vs large random" comparison), and a control: the same
architecture from a checkpoint after only a few steps of L1 denoising (separates the effect of pretraining from that of
starting with an image-like output head and calibrated BatchNorm statistics). Validation metrics on the
held-out images are recorded after every epoch.

Run (CPU, background, ~20 min):
    nice -n 10 python benchmarks/bench_finetune.py --budget-min 22 > bench_finetune.log 2>&1 &
Outputs: benchmarks/results/finetune_{runs.json, epochs.csv, summary.md, curves.png}.
"""
from __future__ import annotations
import argparse, json, platform, shutil, sys, time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]   # the folder that holds the repository checkout
DATA = ROOT / 'shared' / 'data'               # default of --data
RESULTS = Path(__file__).resolve().parent / 'results'
PRIMARY = {'segment': ('dice', 'max'), 'denoise': ('l1', 'min'), 'denoise_bg': ('l1', 'min'), 'superres': ('l1', 'min')}


# ----------------------------------------------------------------------------------------------- data preparation
def _save(path: Path, img: np.ndarray):
    import tifffile
    tifffile.imwrite(path, np.asarray(img, np.float32))


def prepare_segment(work: Path, data: Path = DATA, n_train: int = 6, n_test: int = 6, test_crop: int = 256) -> dict:
    import pandas as pd
    from em_ssl.io import load_image, normalize
    src = data / 'haadf_catalysts'
    names = sorted((p.stem for p in (src / 'tif_data').glob('bpy_crop*')), key=lambda s: int(s.replace('bpy_crop', '')))
    train, test = names[:n_train], names[-n_test:]
    d = {k: work / 'segment' / k for k in ('train_images', 'train_coords', 'test_images', 'test_coords')}
    for p in d.values(): p.mkdir(parents=True, exist_ok=True)
    for n in train:
        f = next((src / 'tif_data').glob(f'{n}.*'))
        _save(d['train_images'] / f'{n}.tif', normalize(load_image(f)))
        shutil.copy(src / 'label_coordinates' / f'{n}.csv', d['train_coords'] / f'{n}.csv')
    for n in test:
        img = normalize(load_image(next((src / 'tif_data').glob(f'{n}.*'))))
        y0, x0 = (img.shape[0] - test_crop) // 2, (img.shape[1] - test_crop) // 2
        _save(d['test_images'] / f'{n}.tif', img[y0:y0 + test_crop, x0:x0 + test_crop])
        c = pd.read_csv(src / 'label_coordinates' / f'{n}.csv')
        c = c.assign(X=c.X - x0, Y=c.Y - y0)
        c = c[(c.X >= 0) & (c.X < test_crop) & (c.Y >= 0) & (c.Y < test_crop)]
        c.to_csv(d['test_coords'] / f'{n}.csv', index=False)
    return {k: str(v) for k, v in d.items()} | {'train': train, 'test': test}


def _down_up(img: np.ndarray, factor: int = 2) -> np.ndarray:
    from scipy import ndimage
    h, w = img.shape
    p = np.pad(img, ((0, -h % factor), (0, -w % factor)), mode='edge')
    low = p.reshape(p.shape[0] // factor, factor, p.shape[1] // factor, factor).mean((1, 3))
    yy, xx = (np.arange(h) + 0.5) / factor - 0.5, (np.arange(w) + 0.5) / factor - 0.5
    return ndimage.map_coordinates(low, np.meshgrid(yy, xx, indexing='ij'), order=3, mode='nearest')


def prepare_restoration(work: Path, task: str, data: Path = DATA) -> dict:
    from em_ssl.io import load_image, normalize
    src = data / 'atomagined_sim'
    if task == 'denoise':
        folder, inp, n_train, n_test = src / 'retrieval' / 'targets' / 'png', 'stem00-cnts2', 5, 3
    else:
        folder, inp, n_train, n_test = src / 'general' / 'png', 'stem00-blbk1', 8, 8
    ids = sorted({p.name.split('-')[0] for p in folder.glob('*-stem00-clean.png')})
    split = {'train': ids[:n_train], 'test': ids[-n_test:]}
    d = {}
    for part, names in split.items():
        di, dt = work / task / f'{part}_inputs', work / task / f'{part}_targets'
        di.mkdir(parents=True, exist_ok=True); dt.mkdir(parents=True, exist_ok=True)
        for n in names:
            clean = normalize(load_image(folder / f'{n}-stem00-clean.png'))
            x = _down_up(clean) if task == 'superres' else normalize(load_image(folder / f'{n}-{inp}.png'))
            _save(di / f'{n}.tif', x); _save(dt / f'{n}.tif', clean)
        d[f'{part}_inputs'], d[f'{part}_targets'] = str(di), str(dt)
    return d | split


# ----------------------------------------------------------------------------------------------- runs
def make_dls(task: str, paths: dict, crop: int, bs: int, epoch_size: int):
    from em_ssl.finetune import coords_dls, paired_dls
    if task == 'segment':
        return coords_dls(paths['train_images'], paths['train_coords'], radius=3, kind='disk', crop=crop, bs=bs,
                          valid=(paths['test_images'], paths['test_coords']), epoch_size=epoch_size)
    return paired_dls(paths['train_inputs'], paths['train_targets'], crop=crop, bs=bs, epoch_size=epoch_size,
                      valid=(paths['test_inputs'], paths['test_targets']))


def one_run(task, init, seed, paths, args, pre_meta) -> dict:
    from fastai.torch_core import set_seed
    from em_ssl.finetune import finetune_learner
    from em_ssl.models.unet import n_params
    set_seed(seed)
    dls = make_dls(task, paths, args.crop, args.bs, args.epoch_size)
    if init == 'pretrained': kw = dict(pretrained=args.pretrained)
    elif init == 'random': kw = dict(pretrained=None, arch=pre_meta['arch'], arch_kwargs=pre_meta['arch_kwargs'])
    elif init == 'control': kw = dict(pretrained=args.control_ckpt)
    else: kw = dict(pretrained=None, arch=args.big_arch, arch_kwargs={})
    learn = finetune_learner(dls, task, **kw)
    learn.recorder.silent = True
    t0 = time.time()
    with learn.no_bar(), learn.no_logging():
        learn.fine_tune(args.epochs, base_lr=args.lr, freeze_epochs=0)
    return {'task': task, 'init': init, 'seed': seed, 'arch': learn.arch, 'arch_kwargs': learn.arch_kwargs,
            'n_params': n_params(learn.model), 'transferred': learn.transfer['transferred'],
            'total_tensors': learn.transfer['total'], 'seconds': round(time.time() - t0, 1), 'history': learn.history}


def summarise(runs: list, out: Path, meta: dict):
    import pandas as pd
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    rows = [{'task': r['task'], 'init': r['init'], 'arch': r['arch'], 'seed': r['seed'], **h}
            for r in runs for h in r['history']]
    df = pd.DataFrame(rows)
    df['epoch'] = df['epoch'] + 1
    df.drop(columns=['time', 'phase'], errors='ignore').to_csv(out / 'finetune_epochs.csv', index=False)
    lines = [f"# Fine-tuning: pretrained vs random initialisation\n",
             f"Measured {meta['date']} on {meta['machine']} by `{meta['command']}`.",
             f"Pretrained checkpoint: `{meta['pretrained']}` (arch {meta['pretrained_arch']} {meta['pretrained_arch_kwargs']}).",
             f"Schedule: {meta['epochs']} epochs x {meta['epoch_size']} random {meta['crop']} px crops (bs {meta['bs']}), "
             f"one-cycle Adam, peak lr {meta['lr']}, all weights trained from epoch 1; validation on held-out test images.",
             "Values: mean ± sd over seeds of the validation metric after epoch 1, after the middle epoch and at the end, "
             "and the best epoch (↑ Dice / PSNR / SSIM higher is better, ↓ L1 lower is better).\n",
             "| task | init | arch (params) | seeds | metric | epoch 1 | epoch {m} | final | best |".format(m=(meta['epochs'] + 1) // 2),
             "|---|---|---|---|---|---|---|---|---|"]
    fmt = lambda v: f"{np.mean(v):.4f} ± {np.std(v):.4f}" if len(v) > 1 else f"{np.mean(v):.4f}"
    mid = (meta['epochs'] + 1) // 2
    for (task, init), g in df.groupby(['task', 'init'], sort=False):
        metrics = ['dice'] if task == 'segment' else ['l1', 'psnr', 'ssim']
        params = next(r['n_params'] for r in runs if r['task'] == task and r['init'] == init)
        for m in metrics:
            better = 'min' if m == 'l1' else 'max'
            per_seed = g.groupby('seed')[m]
            e1 = g[g.epoch == 1][m].to_numpy(); em = g[g.epoch == mid][m].to_numpy()
            fin = per_seed.last().to_numpy(); best = (per_seed.min() if better == 'min' else per_seed.max()).to_numpy()
            arrow = '↓' if better == 'min' else '↑'
            lines.append(f"| {task} | {init} | {g.arch.iloc[0]} ({params:,}) | {g.seed.nunique()} | {m} {arrow} | "
                         f"{fmt(e1)} | {fmt(em)} | {fmt(fin)} | {fmt(best)} |")
    lines += ['', 'Convergence: first epoch at which the seed-mean curve reaches the final seed-mean value of the random '
              'initialisation of the same architecture (primary metric).', '']
    for task in PRIMARY:
        g = df[df.task == task]
        if not {'pretrained', 'random'} <= set(g.init): continue
        m, better = PRIMARY[task]
        curves = {i: gi.groupby('epoch')[m].mean() for i, gi in g.groupby('init')}
        target = curves['random'].iloc[-1]
        for init, c in curves.items():
            ok = c[(c <= target) if better == 'min' else (c >= target)]
            when = f"at epoch {int(ok.index[0])}" if len(ok) else "never"
            lines.append(f"- {task} {init}: {m} reaches {target:.4f} {when}"
                         f" (final {c.iloc[-1]:.4f})")
    lines += ['', 'Caveats (properties of this set-up, not measurements):', '',
              '- The bundled generator was pretrained (unlabelled, pix2pix restoration pretext) on folders that include '
              'these test images: haadf_catalysts/tif_data and the atomagined PNGs (see em_ssl/weights/ssl_unet_small.json). '
              'For the restoration tasks the pretext even used the clean test images as restoration targets, so their '
              'pretrained-vs-random gap overstates what unseen data would show. No labels were used in pretraining.',
              '- Runs are very short (CPU budget): random initialisation has not converged, so "reaches at least the '
              'same final score" cannot be judged from these curves; segmentation Dice varies strongly between seeds.',
              '- `control` = the same architecture after only a few L1 denoising steps on synthetic lattices: it '
              'separates the gain of real pretraining from that of any image-like head and calibrated BatchNorm.']
    (out / 'finetune_summary.md').write_text('\n'.join(lines) + '\n')
    tasks = [t for t in PRIMARY if t in set(df.task)]
    fig, axs = plt.subplots(1, len(tasks), figsize=(min(10, 2.6 * len(tasks)), 3), squeeze=False)
    colors = {'pretrained': 'C0', 'random': 'C3', 'random_big': 'C2', 'control': 'C7'}
    for ax, task in zip(axs[0], tasks):
        m = PRIMARY[task][0]
        for init, g in df[df.task == task].groupby('init', sort=False):
            for _, gs in g.groupby('seed'): ax.plot(gs.epoch, gs[m], color=colors.get(init, 'k'), alpha=0.25, lw=0.8)
            mean = g.groupby('epoch')[m].mean()
            ax.plot(mean.index, mean.values, color=colors.get(init, 'k'), lw=2, label=f"{init} ({g.arch.iloc[0]})")
        ax.set_title(task, fontsize=9); ax.set_xlabel('epoch', fontsize=8); ax.set_ylabel(f"valid {m}", fontsize=8)
        ax.tick_params(labelsize=7)
    axs[0][0].legend(fontsize=6)
    fig.tight_layout(); fig.savefig(out / 'finetune_curves.png', dpi=100); plt.close(fig)
    return out / 'finetune_summary.md'


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--data', default=str(DATA), help='folder with haadf_catalysts/ and atomagined_sim/ (default: %(default)s)')
    p.add_argument('--pretrained', default='default', help="pretrained checkpoint: 'default' (bundled) or a file")
    p.add_argument('--tasks', nargs='+', default=['segment', 'denoise_bg', 'superres', 'denoise'])
    p.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    p.add_argument('--epochs', type=int, default=5)
    p.add_argument('--epoch-size', type=int, default=24, help='random crops per training epoch')
    p.add_argument('--crop', type=int, default=96)
    p.add_argument('--bs', type=int, default=4)
    p.add_argument('--lr', type=float, default=1e-3)
    p.add_argument('--big-arch', default='unet_3_176', help="bigger random model for segmentation ('' to skip)")
    p.add_argument('--control-steps', type=int, default=5, help="control checkpoint: steps of L1 training (0 to skip)")
    p.add_argument('--budget-min', type=float, default=22, help='stop starting new runs after this many minutes')
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--work', default=str(ROOT / 'scratch' / 'finetune' / 'bench_data'), help='scratch folder for the prepared data (replaced)')
    p.add_argument('--out', default=str(RESULTS))
    p.add_argument('--summarise-only', action='store_true', help='rewrite summary/CSV/PNG from OUT/finetune_runs.json')
    a = p.parse_args(argv)
    if a.summarise_only:
        d = json.loads((Path(a.out) / 'finetune_runs.json').read_text())
        print(summarise(d['runs'], Path(a.out), d['meta'])); return
    import torch
    torch.set_num_threads(a.threads)
    from em_ssl.checkpoint import load_checkpoint, resolve_checkpoint
    ck = load_checkpoint(a.pretrained, 'pretrained')
    # recorded as given ('default' = the bundled em_ssl/weights/ssl_unet_small.pth): results never hold absolute paths
    pre = {'path': resolve_checkpoint(a.pretrained, 'pretrained').name if a.pretrained == 'default' else a.pretrained, 'arch': ck['model']['name'],
           'arch_kwargs': {k: v for k, v in ck['model']['config'].items() if k != 'n_out'},
           'pretext': ck['extra'].get('pretext'), 'history': ck['provenance'].get('history')}
    data = Path(a.data)
    if not data.is_dir(): p.error(f"--data {data} is not a folder (it needs haadf_catalysts/ and atomagined_sim/)")
    work, out = Path(a.work), Path(a.out)
    if work.exists(): shutil.rmtree(work)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    paths = {t: prepare_segment(work, data) if t == 'segment' else prepare_restoration(work, t, data) for t in a.tasks}
    print(f"data prepared in {time.time() - t_start:.0f}s", flush=True)
    meta = {'date': datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
            'machine': f"{platform.machine()} CPU, {a.threads} torch threads (shared)",
            'command': 'python benchmarks/bench_finetune.py ' + ' '.join(sys.argv[1:] if argv is None else argv),
            'pretrained': pre['path'], 'pretrained_arch': pre['arch'], 'pretrained_arch_kwargs': pre['arch_kwargs'],
            'pretrained_pretext': pre.get('pretext'), 'pretrained_epochs': len(pre.get('history') or []),
            'epochs': a.epochs, 'epoch_size': a.epoch_size, 'crop': a.crop, 'bs': a.bs, 'lr': a.lr,
            'data': {t: {k: v for k, v in d.items() if k in ('train', 'test')} for t, d in paths.items()}}
    # order: task by task with two seeds each, then the big random U-Net (2 seeds), then further seeds while the budget lasts
    pairs = lambda seeds: [(t, i, s) for t in a.tasks for s in seeds for i in ('pretrained', 'random')]
    big = [('segment', 'random_big', s) for s in a.seeds[:2]] if a.big_arch and 'segment' in a.tasks else []
    # control: the same architecture after only `--control-steps` steps of L1 denoising (em_ssl.finetune
    # .tiny_pretrained_checkpoint), i.e. what "any checkpoint" (BatchNorm statistics, an image-like head) gives
    control = [(t, 'control', s) for s in a.seeds[:2] for t in a.tasks] if a.control_steps else []
    plan = pairs(a.seeds[:2]) + big + control + pairs(a.seeds[2:])
    if control:
        from em_ssl.finetune import tiny_pretrained_checkpoint
        a.control_ckpt = tiny_pretrained_checkpoint(work / 'control.pth', pre['arch'], pre['arch_kwargs'],
                                                    steps=a.control_steps, size=96, overwrite=True)
    runs, durations = [], []
    for task, init, seed in plan:
        elapsed = (time.time() - t_start) / 60
        est = (np.mean(durations) / 60 if durations else 0) * (1.6 if init == 'random_big' else 1)
        if elapsed + est > a.budget_min:
            print(f"budget: skipping {task}/{init}/seed {seed} ({elapsed:.1f} min used)", flush=True); continue
        r = one_run(task, init, seed, paths[task], a, pre)
        durations.append(r['seconds']); runs.append(r)
        m = PRIMARY[task][0]
        print(f"{task:10s} {init:10s} seed {seed} {r['arch']:10s} {r['seconds']:6.1f}s  {m}: " +
              ' '.join(f"{h[m]:.4f}" for h in r['history']), flush=True)
        meta['wall_min'] = round((time.time() - t_start) / 60, 1)
        (out / 'finetune_runs.json').write_text(json.dumps({'meta': meta, 'runs': runs}, indent=1, default=str))
        summarise(runs, out, meta)
    print(f"done in {(time.time() - t_start) / 60:.1f} min; wrote {out}/finetune_*", flush=True)


if __name__ == '__main__':
    main()
