"""Pretraining throughput: em_ssl's fastai pix2pix Learner vs a plain PyTorch pix2pix loop of the same models.

Both paths train the same generator (U-Net_B_RF) and conditional PatchGAN critic, with the same batch size, the same
number of timed steps, the same corruption (`em_ssl.pretrain.corrupt`, applied per batch on the training device), the
same optimizers (Adam, lr 2e-4, betas (0.5, 0.999)) and the same G-then-D update order. Data are in-memory synthetic
lattice crops, so the numbers compare training-loop overhead, not disk I/O. On CUDA both use AMP (fp16 autocast +
GradScaler) and channels_last, and the peak GPU memory is reported.

    python benchmarks/bench_pretrain.py --steps 4 --warmup 1 --bs 4 --crop 256 --threads 2 --repeats 2
Writes benchmarks/results/pretrain_throughput.{json,md}.
"""
import argparse, json, time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fastai.callback.core import Callback
from fastai.torch_core import set_seed

from em_ssl.data import CropDataset, crop_dataloaders
from em_ssl.gan import lsgan_d_loss, lsgan_g_loss
from em_ssl.models import build_model
from em_ssl.pretrain import (Corruption, corrupt, CorruptionTransform, ssl_pretrain_learner, PAPER_LR, PIX2PIX_BETAS,
                             PIX2PIX_D_SCALE, PAPER_L1_WEIGHT)
from em_ssl.synthetic import lattice_image
from bench_record import machine_info  # noqa: E402  (machine, software, commit, load)

RESULTS = Path(__file__).parent/'results'


def make_crops(n: int, size: int) -> torch.Tensor:
    return torch.stack([torch.from_numpy(lattice_image(size=size, seed=i)) for i in range(n)])[:, None].float()


class _Timer(Callback):
    "Timestamps of training batches (synchronised on CUDA)."
    order = 99
    def __init__(self): self.times = []
    def after_batch(self):
        if not self.training: return
        if torch.cuda.is_available(): torch.cuda.synchronize()
        self.times.append(time.perf_counter())


def _rate(times, warmup, bs):
    t = times[warmup - 1:] if warmup > 0 else times
    return bs * (len(t) - 1) / (t[-1] - t[0])


def bench_fastai(crops, device, bs, warmup, steps, arch, amp, channels_last):
    set_seed(0)
    n = bs * (warmup + steps)
    arrays = [c[0].numpy() for c in crops[:n]]   # whole crops: one 'random' crop of each is the crop itself
    train = CropDataset.from_arrays(arrays, crop=crops.shape[-1], n_crops=n, train=True, dihedral=False, norm=None)
    valid = CropDataset.from_arrays(arrays[:bs], crop=crops.shape[-1], train=False, norm=None)
    dls = crop_dataloaders(train, valid, bs, device=device, after_batch=[CorruptionTransform(Corruption())])
    timer = _Timer()
    learn = ssl_pretrain_learner(dls, arch=arch, fp16=amp, channels_last=channels_last, cbs=[timer])
    if device.type == 'cuda': torch.cuda.reset_peak_memory_stats()
    with learn.no_bar(), learn.no_logging(): learn.fit(1, PAPER_LR)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == 'cuda' else None
    return _rate(timer.times[:warmup + steps], warmup, bs), peak


def bench_plain(crops, device, bs, warmup, steps, arch, amp, channels_last):
    set_seed(0)
    G, D = build_model(arch, n_in=1, n_out=1).to(device), build_model('patchgan', n_in=2).to(device)
    if channels_last: G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    optG = torch.optim.Adam(G.parameters(), lr=PAPER_LR, betas=PIX2PIX_BETAS)
    optD = torch.optim.Adam(D.parameters(), lr=PAPER_LR, betas=PIX2PIX_BETAS)
    scG, scD = (torch.amp.GradScaler('cuda', enabled=amp), torch.amp.GradScaler('cuda', enabled=amp))
    ac = (lambda: torch.autocast('cuda', dtype=torch.float16)) if amp else (lambda: torch.autocast('cpu', enabled=False))
    cfg, times = Corruption(), []
    if device.type == 'cuda': torch.cuda.reset_peak_memory_stats()
    perm = torch.randperm(bs * (warmup + steps))
    for i in range(warmup + steps):
        y0 = crops[perm[i * bs:(i + 1) * bs]].to(device)
        x, y = corrupt(y0, cfg)
        if channels_last: x, y = x.contiguous(memory_format=torch.channels_last), y.contiguous(memory_format=torch.channels_last)
        # generator step (critic frozen)
        D.requires_grad_(False)
        with ac():
            fake = G(x)
            g_loss = lsgan_g_loss(D(torch.cat([x, fake], 1))) + PAPER_L1_WEIGHT * F.l1_loss(fake.float(), y)
        optG.zero_grad(set_to_none=True); scG.scale(g_loss).backward(); scG.step(optG); scG.update()
        # critic step on the same (detached) fake
        D.requires_grad_(True)
        with ac():
            d_loss = PIX2PIX_D_SCALE * lsgan_d_loss(D(torch.cat([x, y], 1)), D(torch.cat([x, fake.detach()], 1)))
        optD.zero_grad(set_to_none=True); scD.scale(d_loss).backward(); scD.step(optD); scD.update()
        if device.type == 'cuda': torch.cuda.synchronize()
        times.append(time.perf_counter())
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == 'cuda' else None
    return _rate(times, warmup, bs), peak


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--steps', type=int, default=5); p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--bs', type=int, default=4); p.add_argument('--crop', type=int, default=256)
    p.add_argument('--arch', default='unet_2_44'); p.add_argument('--threads', type=int, default=None)
    p.add_argument('--repeats', type=int, default=2, help='alternating repeats per implementation (median reported)')
    p.add_argument('--out', default=str(RESULTS))
    a = p.parse_args(argv)
    if a.threads: torch.set_num_threads(a.threads)
    crops = make_crops(a.bs * (a.warmup + a.steps), a.crop)
    configs = [('cpu', torch.device('cpu'), False, False)]
    if torch.cuda.is_available(): configs.append(('cuda AMP+channels_last', torch.device('cuda'), True, True))
    rows = []
    for name, dev, amp, cl in configs:
        impls = (('plain PyTorch loop', bench_plain), ('em_ssl fastai Learner', bench_fastai))
        rates = {impl: [] for impl, _ in impls}; peaks = {impl: None for impl, _ in impls}
        for rep in range(a.repeats):          # alternate the order so that load drifts hit both alike
            for impl, fn in (impls if rep % 2 == 0 else impls[::-1]):
                ips, peak = fn(crops, dev, a.bs, a.warmup, a.steps, a.arch, amp, cl)
                rates[impl].append(round(ips, 3)); peaks[impl] = peak
                print(name, impl, round(ips, 3), flush=True)
        for impl, _ in impls:
            rows.append({'device': name, 'implementation': impl, 'images_per_s': float(np.median(rates[impl])),
                         'repeats': rates[impl], 'peak_gpu_mem_mib': None if peaks[impl] is None else round(peaks[impl], 1)})
    for dev in {r['device'] for r in rows}:
        base = [r for r in rows if r['device'] == dev and r['implementation'].startswith('plain')][0]['images_per_s']
        for r in rows:
            if r['device'] == dev: r['relative_to_plain'] = round(r['images_per_s'] / base, 3)
    res = {'benchmark': 'ssl pix2pix pretraining throughput', 'date_utc': datetime.now(timezone.utc).isoformat(timespec='seconds'),
           'settings': {'arch': a.arch, 'critic': "build_model('patchgan', n_in=2) defaults", 'crop': a.crop, 'bs': a.bs,
                        'timed_steps': a.steps, 'warmup_steps': a.warmup, 'repeats': a.repeats, 'data': 'in-memory synthetic lattices'},
           'machine': machine_info(), 'results': rows}
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    (out/'pretrain_throughput.json').write_text(json.dumps(res, indent=2))
    lines = [f"# Pretraining throughput ({a.arch}, {a.crop}x{a.crop}, bs {a.bs}, {a.steps} timed steps after {a.warmup} warm-up, median of {a.repeats} alternating repeats)", '',
             f"Machine: {res['machine']['platform']}, {res['machine']['cpu_count']} CPUs, torch {res['machine']['torch']} "
             f"({res['machine']['torch_threads']} threads){', GPU ' + res['machine']['gpu'] if 'gpu' in res['machine'] else ', no GPU'}; {res['date_utc']}", '',
             f"Load average at start (1/5/15 min): {res['machine']['load_average_at_start']} "
             "(shared machine: absolute rates are noisy; both implementations ran back to back in one process).", '',
             '| device | implementation | images/s (median) | repeats | vs plain | peak GPU MiB |', '|---|---|---|---|---|---|']
    for r in rows:
        lines.append(f"| {r['device']} | {r['implementation']} | {r['images_per_s']:.3f} | {r['repeats']} | {r['relative_to_plain']:.2f} | {r['peak_gpu_mem_mib'] or '-'} |")
    (out/'pretrain_throughput.md').write_text('\n'.join(lines) + '\n')
    print('\n'.join(lines))


if __name__ == '__main__': main()
