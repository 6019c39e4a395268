"""Closed-loop adaptive scanning (`em_ssl.adaptive`) against static spiral, grid and random scans at equal dose.

Every image's centre crop (normalised to [0,1]) is scanned first by a spiral over 1/40 of its pixels (seed 0, the
same path as the static spiral at 1/40); then, `--steps` times, the bundled completion model completes the partial
scan with its uncertainty, `plan_next` proposes a pass of `--step-budget` path length (probe positions + blanked
travel, `TRAVEL_COST` px per px of jump), and the simulated microscope samples it (noise-free). After every pass the
completion is scored by RMS % against the clean crop blurred by the paper's 5x5 sigma 2.5 Gaussian (as
benchmarks/bench_completion.py). Dose = mean of the dwell map (fraction of pixels at full dwell). The control
`uniform` runs the same planner with a constant uncertainty (it only fills the largest gaps). Static scans are
scored by `em_ssl.inference.evaluate_completion` (noise-free, seed 0) at `--doses`.

Target (issue 11): adaptive scanning reaches the RMS of a static spiral at <= 0.75x its dose, on the WS2 set; the
spiral dose at equal RMS is interpolated (log dose) on the static spiral curve.

Part A chooses nothing on WS2: it compares segment lengths (1, 4, 16 px) on licensed images held out from the
bundled model's training (its record's `holdout_files`), which backs the default `SEGMENT_LENGTH`.

    nice -n 5 python benchmarks/bench_adaptive.py           # 4-6 min on 1 thread of a shared 2-core CPU

Writes `--out`/adaptive_scanning.{md,json,png}.
"""
from __future__ import annotations
import argparse, json, os, sys, time
from pathlib import Path
from bench_record import machine_info  # noqa: E402  (machine, software, commit, load)

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parents[2] / 'shared' / 'data'   # the project's development data collection
EVAL_IMAGES = Path('stem_extra') / 'validation_only' / 'ws2_haadf'  # evaluation only: nothing is fitted on it
TARGET_RATIO = 0.75                                               # issue 11: <= 0.75x the static spiral's dose
STATIC_KINDS = ('spiral', 'grid', 'random')
TUNE_LENGTHS = (1, 4, 16)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--data', type=Path, default=DATA)
    p.add_argument('--eval-images', default=str(EVAL_IMAGES), help='folder of evaluation images (relative to --data)')
    p.add_argument('--crop', type=int, default=512, help='centre crop of the evaluation images (px)')
    p.add_argument('--steps', type=int, default=6, help='adaptive passes after the first spiral')
    p.add_argument('--step-budget', type=float, default=1 / 30, help='path length of each pass, as a fraction of H*W')
    p.add_argument('--doses', type=float, nargs='+', default=[1 / 40, 1 / 30, 1 / 20, 1 / 15, 1 / 10], help='static scan doses')
    p.add_argument('--tune-images', type=int, default=6, help='Part A: held-out licensed images (0: skip Part A)')
    p.add_argument('--tune-crop', type=int, default=256)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--out', type=Path, default=ROOT / 'benchmarks' / 'results')
    a = p.parse_args(argv)
    if a.steps < 1: p.error('--steps must be >= 1')
    if not 0 < a.step_budget < 1: p.error('--step-budget must be in (0, 1)')
    return a


def centre_crop(a, c: int):
    h, w = a.shape
    ch, cw = min(c, h), min(c, w)
    return a[(h - ch) // 2:(h - ch) // 2 + ch, (w - cw) // 2:(w - cw) // 2 + cw]


def load(files, crop):
    from em_ssl.io import load_image, normalize
    return [normalize(centre_crop(load_image(f), crop)) for f in files]


def closed_loop(imgs, model, steps, step_budget, guide, segment_length=None):
    "Per image, per pass: dose, path length (fraction of H*W) and RMS % vs the blurred crop."
    import numpy as np, torch
    from em_ssl.adaptive import adaptive_scan, SEGMENT_LENGTH
    from em_ssl.inference import rms_percent_np
    from em_ssl.metrics import gaussian_blur
    out = []
    for img in imgs:
        target = gaussian_blur(torch.from_numpy(img)).numpy()
        runs = adaptive_scan(img, steps=steps, step_budget=step_budget, model=model, guide=guide,
                             segment_length=segment_length or SEGMENT_LENGTH)
        out.append([dict(dose=r['dose'], path=r['path_length'] / img.size, rms=rms_percent_np(r['completion'], target)) for r in runs])
    return out


def static_curves(imgs, model, doses):
    "Mean RMS % per static kind and dose (evaluate_completion, noise-free, seed 0), with each path's length / (H*W)."
    import numpy as np
    from em_ssl.inference import evaluate_completion
    from em_ssl.scans import scan_path
    from em_ssl.adaptive import path_cost
    rows = evaluate_completion(imgs, model=model, kinds=STATIC_KINDS, coverages=doses, noises=('none',), seed=0)
    out = {}
    for k in STATIC_KINDS:
        out[k] = [dict(dose=d, path=path_cost(scan_path(k, imgs[0].shape, d, seed=0)) / imgs[0].size,
                       rms=float(np.mean([r['model'] for r in rows if r['kind'] == k and abs(r['coverage'] - d) < 1e-12])),
                       per_image=[r['model'] for r in rows if r['kind'] == k and abs(r['coverage'] - d) < 1e-12]) for d in doses]
    return out


def mean_curve(per_image):
    import numpy as np
    n = len(per_image[0])
    return [dict(dose=float(np.mean([p[i]['dose'] for p in per_image])), path=float(np.mean([p[i]['path'] for p in per_image])),
                 rms=float(np.mean([p[i]['rms'] for p in per_image]))) for i in range(n)]


def equivalent(spiral, rms: float, key: str):
    "The static spiral's `key` (dose or path) at this RMS, interpolated in log scale; None outside its range."
    import numpy as np
    r = np.array([s['rms'] for s in spiral]); x = np.log([s[key] for s in spiral])
    order = np.argsort(r)
    if not r.min() <= rms <= r.max() or np.any(np.diff(r[np.argsort(x)]) > 0): return None   # outside, or not monotone
    return float(np.exp(np.interp(rms, r[order], x[order])))


def ratios(curve, spiral):
    out = []
    for c in curve:
        d, p = equivalent(spiral, c['rms'], 'dose'), equivalent(spiral, c['rms'], 'path')
        out.append(dict(c, spiral_dose=d, dose_ratio=None if d is None else c['dose'] / d,
                        spiral_path=p, path_ratio=None if p is None else c['path'] / p))
    return out


def rms_at(curve, dose: float):
    "A curve's RMS at `dose` (interpolated in log dose); None outside its doses."
    import numpy as np
    d, r = np.log([c['dose'] for c in curve]), [c['rms'] for c in curve]
    return float(np.interp(np.log(dose), d, r)) if d[0] <= np.log(dose) <= d[-1] else None


def fmt(v, f='{:.3f}'): return '-' if v is None else f.format(v)


def main(argv=None):
    a = parse_args(argv)
    import numpy as np, torch, matplotlib
    torch.set_num_threads(a.threads)
    matplotlib.use('Agg'); import matplotlib.pyplot as plt
    from em_ssl.io import atomic_write, get_micrograph_files
    from em_ssl.inference import default_completion_model, DEFAULT_WEIGHTS
    from em_ssl.adaptive import SEGMENT_LENGTH, TRAVEL_COST, SUPPRESS_RADIUS
    machine = machine_info()
    t0 = time.perf_counter()
    model = default_completion_model('cpu')
    evals = get_micrograph_files(a.data / a.eval_images)
    if not evals: sys.exit(f"error: no images in {a.data / a.eval_images}")

    # ---- Part A: segment length on licensed held-out images (never the evaluation set)
    tune = {}
    if a.tune_images:
        rec = json.loads(Path(DEFAULT_WEIGHTS).with_suffix('.json').read_text())
        files = [a.data / f for f in rec['data']['holdout_files'] if not f.startswith('atomagined_sim')][:a.tune_images]
        if any('validation_only' in str(f) for f in files): sys.exit('error: a tuning image lies in validation_only')
        timgs = load(files, a.tune_crop)
        tspiral = mean_curve([[dict(dose=s['dose'], path=s['path'], rms=s['per_image'][i]) for s in static_curves(timgs, model, a.doses)['spiral']]
                              for i in range(len(timgs))])
        for L in TUNE_LENGTHS:
            tune[L] = ratios(mean_curve(closed_loop(timgs, model, 4, 1 / 40, 'uncertainty', L)), tspiral)
            print(f"Part A, segment length {L}: " + ', '.join(f"dose {c['dose']:.4f} RMS {c['rms']:.2f} ratio {fmt(c['dose_ratio'], '{:.2f}')}" for c in tune[L]), flush=True)
        tune_files = [str(f.relative_to(a.data)) for f in files]
    t_tune = time.perf_counter() - t0

    # ---- Part B: the evaluation-only WS2 set
    imgs = load(evals, a.crop)
    static = static_curves(imgs, model, a.doses)
    print('static: ' + '; '.join(f"{k} " + ', '.join(f"{s['dose']:.4f}:{s['rms']:.2f}" for s in v) for k, v in static.items()), flush=True)
    per_img = {g: closed_loop(imgs, model, a.steps, a.step_budget, g) for g in ('uncertainty', 'uniform')}
    curves = {g: ratios(mean_curve(v), static['spiral']) for g, v in per_img.items()}
    for g, c in curves.items():
        print(f"adaptive ({g}): " + ', '.join(f"dose {x['dose']:.4f} RMS {x['rms']:.2f} ratio {fmt(x['dose_ratio'], '{:.2f}')}" for x in c), flush=True)
    adaptive = curves['uncertainty'][1:]
    judged = [c for c in adaptive if c['dose_ratio'] is not None]
    final = adaptive[-1]
    met = None if final['dose_ratio'] is None else bool(final['dose_ratio'] <= TARGET_RATIO)
    all_met = bool(judged) and all(c['dose_ratio'] <= TARGET_RATIO for c in judged)
    best = min(judged, key=lambda c: c['dose_ratio']) if judged else None
    control = rms_at(curves['uniform'], final['dose'])              # the constant-uncertainty control at the same dose
    random_low = static['random'][0]

    # ---- figure (no micrograph pixels: the evaluation set is not redistributed)
    fig, axs = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, lab in ((axs[0], 'dose', 'dose (fraction of pixels at full dwell)'), (axs[1], 'path', 'path length incl. blanked travel (x H W): time')):
        for k, mk in zip(STATIC_KINDS, 'osd'):
            ax.plot([s[key] for s in static[k]], [s['rms'] for s in static[k]], mk + '-', ms=4, label=f'static {k}')
        for g, mk, ls in (('uncertainty', '*', '-'), ('uniform', 'x', ':')):
            ax.plot([c[key] for c in curves[g]], [c['rms'] for c in curves[g]], mk + ls, ms=6,
                    label='adaptive (uncertainty)' if g == 'uncertainty' else 'adaptive planner, constant uncertainty')
        ax.set_xscale('log'); ax.set_xlabel(lab, fontsize=8); ax.set_ylabel('RMS % vs blurred crop', fontsize=8)
        ax.grid(alpha=0.3, which='both'); ax.tick_params(labelsize=7)
    axs[0].legend(fontsize=7)
    axs[0].set_title(f"{len(imgs)} WS2 HAADF crops ({a.crop} px), never trained on: RMS vs dose", fontsize=9)
    axs[1].set_title('the same runs against path length (time)', fontsize=9)
    fig.tight_layout()
    a.out.mkdir(parents=True, exist_ok=True)
    p_md, p_json, p_png = (a.out / f'adaptive_scanning.{e}' for e in ('md', 'json', 'png'))
    atomic_write(p_png, lambda p: fig.savefig(p, dpi=90, format='png'), overwrite=True); plt.close(fig)

    timing = dict(total_s=round(time.perf_counter() - t0, 1), part_a_s=round(t_tune, 1),
                  load_average_end=[round(v, 2) for v in os.getloadavg()])
    cmd = 'python benchmarks/bench_adaptive.py' + (' ' + ' '.join(argv if argv is not None else sys.argv[1:])).rstrip()
    res = dict(command=cmd, images=[str(f.relative_to(a.data)) for f in evals], crop=a.crop, steps=a.steps,
               step_budget=a.step_budget, doses=a.doses, segment_length=SEGMENT_LENGTH, travel_cost=TRAVEL_COST,
               suppress_radius=SUPPRESS_RADIUS, target_ratio=TARGET_RATIO,
               verdict=dict(final_step_dose_ratio=final['dose_ratio'], met=met, all_steps_met=all_met,
                            best_dose_ratio=None if best is None else best['dose_ratio']),
               control_rms_at_final_dose=control,
               static={k: [{kk: vv for kk, vv in s.items()} for s in v] for k, v in static.items()}, adaptive=curves,
               per_image={g: v for g, v in per_img.items()},
               part_a=dict(images=tune_files if tune else [], crop=a.tune_crop, steps=4, step_budget=1 / 40,
                           curves={str(L): c for L, c in tune.items()}),
               machine=machine, timing=timing)
    atomic_write(p_json, lambda p: p.write_text(json.dumps(res, indent=1)), overwrite=True)

    def row(name, c):
        return (f"| {name} | {c['dose']:.4f} | {c['path']:.4f} | {c['rms']:.2f} | {fmt(c['spiral_dose'], '{:.4f}')} | "
                f"{fmt(c['dose_ratio'])} | {fmt(c['path_ratio'])} |")
    head = ['| scan | dose | path length / HW | RMS % | static spiral dose at equal RMS | dose ratio | path-length ratio |',
            '|---|---|---|---|---|---|---|']
    verdict = 'not evaluated (outside the spiral curve)' if met is None else ('MET' if met else 'MISSED')
    md = [f"# Adaptive scanning vs static scans ({machine['date']})", '',
          f"{len(imgs)} WS2 HAADF micrographs (`{a.eval_images}`, evaluation only, never trained or fitted on; centre crops "
          f"{a.crop} px normalised to [0,1]; no pixels shown). Bundled completion model. First pass: spiral 1/40 (seed 0); "
          f"then {a.steps} adaptive passes of path length {a.step_budget:.4f} x H W each (`plan_next`: segment length "
          f"{SEGMENT_LENGTH} px, travel cost {TRAVEL_COST} px per px of blanked jump, suppression radius {SUPPRESS_RADIUS} px); "
          "noise-free sampling. RMS % of the [0,1] range against the 5x5 sigma 2.5 blurred clean crop, mean over images. "
          "Dose = mean dwell map; path length = positions + charged travel (a spiral's own jumps, where it leaves the "
          "square field, count too).", '',
          f"## Target: the RMS of a static spiral at <= {TARGET_RATIO}x its dose", '',
          f"Final adaptive pass: dose ratio {fmt(final['dose_ratio'])} -> **{verdict}**; every adaptive pass within the "
          f"spiral's range: {'MET' if all_met else 'MISSED'} (best {fmt(None if best is None else best['dose_ratio'])}). "
          f"Path-length (time) ratio of the final pass: {fmt(final['path_ratio'])}.", '',
          '## What the numbers say', '',
          f"- Time: at equal RMS the adaptive scan's path (positions + blanked jumps) is {fmt(final['path_ratio'], '{:.2f}')}x "
          "the static spiral's at the final pass: it saves dose, not time.",
          ('- Control: the same planner with a constant uncertainty (it only fills the largest gaps) ' +
           ('was not measured at this dose.' if control is None else
            f"reaches RMS {control:.2f} % at the final adaptive dose {final['dose']:.4f}, against {final['rms']:.2f} % "
            "guided by the uncertainty: " + ('on these images the uncertainty chose better places than gap filling.'
            if final['rms'] < control else 'on these images the uncertainty did NOT choose better places than gap filling; '
            'the gain over the spiral comes from spreading the new dose over separate positions instead of along a line.'))),
          f"- A static random scan at dose {random_low['dose']:.4f} has RMS {random_low['rms']:.2f} % "
          + ('(lower than every adaptive pass here)' if random_low['rms'] < min(c['rms'] for c in curves['uncertainty']) else '')
          + f", with a path length of {random_low['path']:.2f} x H W (a jump to every position): dose spread over single "
          "positions is what the completion model uses best; a spiral start followed by adaptive passes sits between the two.", '',
          '## Curves', '', *head,
          *[row(f"static {k} {s['dose']:.4f}", dict(s, spiral_dose=None, dose_ratio=None, path_ratio=None)) for k in STATIC_KINDS for s in static[k]],
          *[row(f"adaptive ({g}) pass {i}", c) for g in curves for i, c in enumerate(curves[g])], '',
          '![RMS against dose and against path length](adaptive_scanning.png)', '']
    if tune:
        md += ['## Part A: segment length (licensed images held out from the model\'s training, not WS2)', '',
               f"{len(tune_files)} images ({', '.join(Path(f).name for f in tune_files)}), centre crops {a.tune_crop} px; "
               "spiral 1/40 then 4 passes of path length 1/40 x H W; dose ratio vs their own static spiral curve.", '',
               '| segment length (px) | ' + ' | '.join(f'pass {i}' for i in range(1, 5)) + ' |', '|---|' + '---|' * 4,
               *[f"| {L} | " + ' | '.join(f"dose {c['dose']:.4f}, RMS {c['rms']:.2f}, ratio {fmt(c['dose_ratio'], '{:.2f}')}" for c in cs[1:]) + ' |'
                 for L, cs in tune.items()], '']
    md += [f"Machine: {machine['cpu_model']}, {machine['cpu_count']} cores, torch {machine.get('torch')} ({machine.get('torch_threads')} "
           f"threads); commit {machine['commit']}; nice {machine['nice']}; load average {machine['load_average_at_start']} at start, "
           f"{timing['load_average_end']} at the end (shared machine). Time: {timing['total_s']} s (Part A {timing['part_a_s']} s).", '',
           f"Command: `{cmd}`"]
    atomic_write(p_md, lambda p: p.write_text('\n'.join(md) + '\n'), overwrite=True)
    for p in (p_md, p_json, p_png): p.chmod(0o644)
    print('\n'.join(md[4:8]))
    print(f"wrote {p_md}, {p_json}, {p_png}")
    return res


if __name__ == '__main__':
    main()
