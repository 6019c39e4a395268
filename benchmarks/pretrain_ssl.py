"""Train (or continue) the bundled pretrained generator on every licensed unlabeled image, and write its record (issue 9).

Data: `probe_corruption.PRETRAIN_SOURCES` (haadf_catalysts, nanoparticle_boxes, atomagined_sim raw/clean, stem_extra/train
and stem_extra/formats with every page of each stack); never stem_extra/validation_only (EMPS and ws2_haadf, the
evaluation sets) and not stem_extra/pairs_tkrem (a downstream denoising evaluation). The corruption setting is the one
chosen by the transfer probe (`probe_corruption.py`), whose pretraining run this script can continue (`--resume`).

    nice -n 10 python benchmarks/pretrain_ssl.py --out $SCRATCH/probe_corruption/pretrain_weak --setting weak --resume --minutes 35
    python benchmarks/pretrain_ssl.py --out ... --setting weak --record-only --ship em_ssl/weights/ssl_unet_small.pth
"""
from __future__ import annotations
import argparse, hashlib, json, sys, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_record import machine_info                              # noqa: E402
from probe_corruption import DATA, PRETRAIN_SOURCES, SETTINGS, pretrain_files   # noqa: E402

LICENSES = {'haadf_catalysts': 'github.com/Sjeon1/HAADF_Atom_Detection, Apache-2.0 (repo) / MIT (demo folder, Copyright (c) 2022 HPAI-BSC)',
            'nanoparticle_boxes': 'github.com/ArdaGen/STEM-Automated-Nanoparticle-Analysis-YOLOv8-SAM, MIT, Copyright (c) 2023 ArdaGen',
            'atomagined_sim': 'github.com/MaterialEyes/atomagined, MIT, Copyright (c) 2020 MaterialEyes (simulated HAADF-STEM)',
            'stem_extra/train': 'tk-r-em 1.0.4 test data (GPL-3.0), atomap 0.4.2 test data (GPL-3.0), etspy 1.3.0 test data (NIST license)',
            'stem_extra/formats': 'etspy 1.3.0 test data (NIST license), hyperspy/rosettasciio test data (GPL-3.0)'}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--data', type=Path, default=DATA)
    p.add_argument('--out', type=Path, required=True, help='run folder (pretrained.pth, last_state.pth, metrics.csv)')
    p.add_argument('--arch', default='unet_2_44', help='generator architecture (a registered model name, e.g. hrnet)')
    p.add_argument('--setting', default='weak', choices=list(SETTINGS), help='corruption setting (probe_corruption.SETTINGS)')
    p.add_argument('--minutes', type=float, default=30.0)
    p.add_argument('--crop', type=int, default=128)
    p.add_argument('--bs', type=int, default=8)
    p.add_argument('--n-crops', type=int, default=128, help='crops per epoch (the probe used 128)')
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--resume', action='store_true')
    p.add_argument('--record-only', action='store_true', help='only write the record (and --ship)')
    p.add_argument('--ship', type=Path, default=None, help='copy the weights here and write the .json record beside them')
    args = p.parse_args(argv)
    import torch
    from em_ssl.pretrain import pretrain_folder, Corruption
    torch.set_num_threads(args.threads)
    files = pretrain_files(args.data)
    cmd = 'python benchmarks/pretrain_ssl.py ' + ' '.join(sys.argv[1:])
    t0 = time.time()
    if not args.record_only:
        pretrain_folder(files, args.out, arch=args.arch, epochs=100000, crop=args.crop, bs=args.bs, n_crops=args.n_crops, seed=0,
                        resume=args.resume, overwrite=not args.resume, corruption=Corruption(**SETTINGS[args.setting]),
                        max_minutes=args.minutes, critic_kwargs={'ndf': 32}, extra={'command': cmd, 'threads': args.threads})
        log = args.out / 'sessions.json'
        s = json.loads(log.read_text()) if log.exists() else []
        s.append(dict(command=cmd, minutes=round((time.time() - t0) / 60, 2), machine=machine_info(threads=args.threads)))
        log.write_text(json.dumps(s, indent=1))
    if args.ship:
        import pandas as pd
        from em_ssl.checkpoint import load_checkpoint, weights_digest
        ck = args.out / 'pretrained.pth'
        meta = load_checkpoint(ck, 'pretrained')
        h = pd.read_csv(args.out / 'metrics.csv')
        if 'partial_epoch' in h: h = h[h['partial_epoch'] != True].drop(columns='partial_epoch')   # noqa: E712 (a budget-cut epoch)
        args.ship.parent.mkdir(parents=True, exist_ok=True)
        scratch = str(args.out.parent)
        def portable(v):   # no machine paths in shipped bytes: data relative to the collection, scratch as $SCRATCH
            if isinstance(v, str): return v.replace(str(args.data) + '/', '').replace(scratch, '$SCRATCH')
            if isinstance(v, list): return [portable(x) for x in v]
            if isinstance(v, dict): return {k: portable(x) for k, x in v.items()}
            return v
        raw = torch.load(ck, weights_only=True)
        raw['provenance'] = portable(raw['provenance'])
        raw['provenance']['data_root'] = "the project's development data collection (shared/data), see DATA_LICENSES.md"
        torch.save(raw, args.ship)
        b = args.ship.read_bytes()
        assert str(args.data).encode() not in b and str(Path.home()).encode() not in b, 'a machine path in the shipped weights'
        probe = json.loads((Path(__file__).parent / 'results' / 'corruption_probe.json').read_text())
        sessions = json.loads((args.out / 'sessions.json').read_text()) if (args.out / 'sessions.json').exists() else []
        counts = {}
        for f in files:
            rel = str(Path(f).relative_to(args.data)); key = next(k for k in LICENSES if rel.startswith(k))
            counts[key] = counts.get(key, 0) + 1
        rec = {'file': args.ship.name, 'format': 'em_ssl.checkpoint', 'sha256': hashlib.sha256(b).hexdigest(), 'size_bytes': len(b),
               'weights_sha256': weights_digest(meta['weights']), 'arch': meta['model']['name'], 'config': meta['model']['config'],
               'critic_kwargs': {'ndf': 32},
               'body_head': "parameters named 'head.*' = output 1x1 conv; all others = body (transferred by fine-tuning)",
               'pretext': Corruption(**SETTINGS[args.setting]).to_dict(), 'pretext_setting': args.setting,
               'pretext_choice': 'chosen by benchmarks/probe_corruption.py (benchmarks/results/corruption_probe.md): '
                                 + ', '.join(f"{k} {v['dice_mean']:.3f}" for k, v in probe['results'].items())
                                 + ('' if meta['model']['name'] == 'unet_2_44' else ' (the probe pretrained unet_2_44; the setting is reused for this architecture)'),
               'objective': 'LSGAN + 100 * L1 (Kazimi et al. 2024 sec. 4.1), Adam betas (0.5, 0.999), lr 2e-4',
               'commands': [portable(s['command']) for s in sessions], 'sessions': portable(sessions),
               'minutes_total': round(sum(s['minutes'] for s in sessions), 1),
               'epochs_completed': int(len(h)), 'crops_per_epoch': args.n_crops, 'crop': args.crop, 'bs': args.bs,
               'data': {'files': len(files), 'by_source': counts, 'sources': [f'{a} ({b})' for a, b in PRETRAIN_SOURCES],
                        'every_page_of_stacks': True, 'labels_used': False,
                        'never_used': 'stem_extra/validation_only (EMPS, ws2_haadf: evaluation only) and stem_extra/pairs_tkrem (denoising evaluation)',
                        'licenses': LICENSES},
               'pretext_metrics_last_epoch': h.iloc[-1].to_dict(), 'history_csv_columns': list(h.columns)}
        args.ship.with_suffix('.json').write_text(json.dumps(rec, indent=1, default=str) + '\n')
        print(f"shipped {args.ship} and {args.ship.with_suffix('.json')}")


if __name__ == '__main__':
    main()
