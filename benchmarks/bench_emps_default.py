"""The default CLI fine-tune on 10 labelled EMPS images: Dice on all 99 EMPS test images and wall time (issue 9).

Runs exactly `em-ssl finetune segment --images I --targets M --out OUT` (every other option at its default: the
bundled pretrained generator, crop 256, batch 4, one frozen + 10 epochs of >= 128 crops) on 10 EMPS train images drawn
with a seed (links in the scratch folder; EMPS is evaluation-only and never copied into the repository), then scores the
written model on all EMPS test images. Targets: Dice >= 0.75 within 10 minutes on the 2-core CPU.

    python benchmarks/bench_emps_default.py --seed 0
Outputs: benchmarks/results/emps_default_cli.{md,json}.
"""
from __future__ import annotations
import argparse, json, os, subprocess, sys, time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_record import machine_info, portable   # noqa: E402
from bench_emps import EMPS, RESULTS, all_foreground_dice, labelled_subset, test_dice   # noqa: E402

TARGET_DICE, TARGET_MINUTES = 0.75, 10.0   # issue 9


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--emps', default=str(EMPS))
    p.add_argument('--labels', type=int, default=10)
    p.add_argument('--seed', type=int, default=0, help='which labelled images (the run itself uses the CLI default seed)')
    p.add_argument('--work', default=str(Path(os.environ.get('SCRATCH', Path.home() / 'em_ssl_scratch')) / 'bench_emps'))
    p.add_argument('--out', default=str(RESULTS))
    p.add_argument('--tag', default='', help='results name suffix (emps_default_cli_TAG)')
    p.add_argument('--cli-args', nargs=argparse.REMAINDER, default=[], help='extra em-ssl finetune options, e.g. --pretrained none')
    args = p.parse_args(argv)
    d = labelled_subset(Path(args.emps), args.labels, args.seed, Path(args.work))
    name = 'emps_default_cli' + (f'_{args.tag}' if args.tag else '')
    run = Path(args.work) / name
    cmd = ['em-ssl', 'finetune', 'segment', '--images', str(d / 'images'), '--targets', str(d / 'masks'), '--out', str(run),
           '--overwrite', *args.cli_args]
    __import__('torch')   # imported before the record, so that it names torch's version
    info = machine_info()
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    minutes = (time.time() - t0) / 60
    if proc.returncode: raise SystemExit(f"em-ssl failed:\n{proc.stderr[-2000:]}")
    dice = test_dice(run / 'model.pth', Path(args.emps) / 'test')
    trivial = all_foreground_dice(Path(args.emps) / 'test')
    lines = [l for l in proc.stdout.splitlines() if l.startswith(('segment:', 'epoch'))]
    res = dict(command=' '.join(cmd), minutes=round(minutes, 2), test_images=len(dice), test_dice_mean=float(np.mean(dice)),
               test_dice_median=float(np.median(dice)), test_dice_worst=float(np.min(dice)), baseline_foreground_everywhere=float(np.mean(trivial)), log=lines, machine=info,
               load_average_at_end=list(os.getloadavg()))
    ok_d, ok_t = res['test_dice_mean'] >= TARGET_DICE, minutes <= TARGET_MINUTES
    md = (f"# {'Default CLI' if not args.cli_args else 'CLI'} fine-tune on {args.labels} EMPS images\n\nCommand: `{res['command']}` (labelled images: seed {args.seed} "
          f"draw from the EMPS train split)\n\nMachine: {info['cpu_model']}, {info['cpu_count']} cores, torch {info.get('torch')}, "
          f"commit {info['commit']}, load {info['load_average_at_start']} at start, {[round(v, 2) for v in res['load_average_at_end']]} at the end.\n\n"
          f"| wall time (min) | test images | Dice mean | median | worst image |\n|---|---|---|---|---|\n"
          f"| {minutes:.1f} | {len(dice)} | {res['test_dice_mean']:.3f} | {res['test_dice_median']:.3f} | {res['test_dice_worst']:.3f} |\n\n"
          f"Baseline in the same run: predicting foreground everywhere scores Dice {np.mean(trivial):.3f} on these test images.\n\n"
          f"Targets: Dice >= {TARGET_DICE}: {'MET' if ok_d else 'MISSED'}; <= {TARGET_MINUTES:g} min: {'MET' if ok_t else 'MISSED'}.\n\n"
          "Training log:\n\n" + '\n'.join(f'    {l}' for l in lines) + '\n')
    Path(args.out, f'{name}.md').write_text(portable(md))
    Path(args.out, f'{name}.json').write_text(portable(json.dumps(res, indent=1)))
    print(portable(md))


if __name__ == '__main__':
    main()
