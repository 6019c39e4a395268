"""Benchmark: 512x512 partial scans per second (em_ssl.scans).

Compares, in the same run:
  * numpy per image, path regenerated: `simulate_partial_scan` with a new seed per image (calibrate path + rasterise
    + blur + noise) -- the straightforward baseline;
  * numpy per image, cached path: precomputed mask, noise only (`dwell_noise` / `poisson_noise`);
  * torch `mask_batch` + `simulate_batch`, single image and batched, on CPU and (if available) GPU.

Default scan: blurred spiral at 1/20 coverage with the paper's dwell noise. Writes
benchmarks/results/bench_scans.json and .md (runs from other machines already in the JSON are kept).

    python benchmarks/bench_scans.py [--size 512] [--batch 64] [--noise dwell] [--quick]
"""
import argparse, json, sys, time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from em_ssl import scans  # noqa: E402
from bench_record import machine_info  # noqa: E402  (machine, software, commit, load)

TARGETS = {"cpu_batched": 500, "gpu_batched": 20_000}


def timed(fn, n_items: int, min_time: float, max_reps: int, sync=lambda: None) -> dict:
    "Run fn() (one warm-up) repeatedly for >= min_time s or max_reps reps; return the best and median rate."
    fn(); sync()
    times = []
    t_end = time.perf_counter() + min_time
    while len(times) < max_reps and (not times or time.perf_counter() < t_end):
        t0 = time.perf_counter(); fn(); sync(); times.append(time.perf_counter() - t0)
    times = np.array(times)
    return dict(reps=len(times), median_s=float(np.median(times)), scans_per_s_median=n_items / float(np.median(times)),
                scans_per_s_best=n_items / float(times.min()))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--gpu-batch", type=int, default=256)
    ap.add_argument("--kind", default="spiral", choices=scans.SCAN_TYPES)
    ap.add_argument("--coverage", type=float, default=1 / 20)
    ap.add_argument("--noise", default="dwell", choices=scans.NOISE_TYPES)
    ap.add_argument("--no-blur", action="store_true", help="binary paths (Sci. Rep.) instead of the paper's blurred ones")
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    a = ap.parse_args(argv)
    blur, shape, noise = not a.no_blur, (a.size, a.size), a.noise
    min_time, max_reps = (1.0, 3) if a.quick else (3.0, 10)
    info = machine_info()
    rng = np.random.default_rng(0)
    img = rng.random(shape).astype(np.float32)
    rows = []

    def add(impl, device, batch, res, note=""):
        rows.append(dict(impl=impl, device=device, batch=batch, **res, note=note))
        print(f"{impl:<38} {device:<5} {batch:>5} {res['scans_per_s_median']:>12.1f} {res['scans_per_s_best']:>12.1f}  {note}", flush=True)

    print(f"{a.size}x{a.size} {a.kind} 1/{1 / a.coverage:.0f} blur={blur} noise={noise}; {info['cpu_model']} "
          f"({info['cpu_count']} cores, load {info['load_average_at_start']}), torch {info['torch']}")
    print(f"{'implementation':<38} {'dev':<5} {'batch':>5} {'scans/s med':>12} {'scans/s best':>12}")
    # --- numpy baselines (per image)
    seeds = iter(range(10_000, 10**6))
    n_np = 3 if a.quick else 5
    add("numpy per image, path regenerated", "cpu", 1,
        timed(lambda: [scans.simulate_partial_scan(img, a.kind, a.coverage, noise=noise, seed=next(seeds), blur=blur) for _ in range(n_np)],
              n_np, min_time, max_reps), f"{n_np} images per rep; includes path calibration")
    mask = scans.scan_mask(a.kind, shape, a.coverage, seed=0, blur=blur)
    noise_fn = {"dwell": lambda r: scans.dwell_noise(img, mask, r), "poisson": lambda r: scans.poisson_noise(img, mask, scans.DEFAULT_DOSE, r),
                "none": lambda r: np.where(mask > 0, img, 0)}[noise]
    add("numpy per image, cached path", "cpu", 1,
        timed(lambda: [noise_fn(np.random.default_rng(i)) for i in range(n_np)], n_np, min_time, max_reps), "noise only")

    # --- torch
    n_threads = torch.get_num_threads()
    # CPU torch with 1 thread and with all threads: on a shared, oversubscribed machine OpenMP barriers can make
    # more threads slower, so both are reported
    devices = [("cpu", a.batch, t) for t in sorted({1, n_threads})] + ([("cuda", a.gpu_batch, n_threads)] if torch.cuda.is_available() else [])
    for dev, big, threads in devices:
        torch.set_num_threads(threads)
        sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
        g = torch.Generator(device=dev).manual_seed(0)
        gm = torch.Generator().manual_seed(0)
        scans.mask_batch(a.kind, shape, a.coverage, 1, device=dev, blur=blur, generator=gm)  # build the bank (not timed)
        for bs in sorted({1, a.batch, big}):
            imgs = torch.rand(bs, 1, *shape, device=dev)
            def step():
                m = scans.mask_batch(a.kind, shape, a.coverage, bs, device=dev, blur=blur, generator=gm)
                return scans.simulate_batch(imgs, m, noise=noise, generator=g)
            add("torch mask_batch + simulate_batch", dev, bs, timed(step, bs, min_time, max_reps, sync), f"{threads} CPU threads")
        for other in [n for n in scans.NOISE_TYPES if n != noise]:
            imgs = torch.rand(a.batch, 1, *shape, device=dev)
            def step_o():
                m = scans.mask_batch(a.kind, shape, a.coverage, a.batch, device=dev, blur=blur, generator=gm)
                return scans.simulate_batch(imgs, m, noise=other, generator=g)
            add(f"torch batched, noise={other}", dev, a.batch, timed(step_o, a.batch, min_time, max_reps, sync), f"{threads} CPU threads")
        del imgs
    torch.set_num_threads(n_threads)

    cpu_b = max(r["scans_per_s_median"] for r in rows if r["device"] == "cpu" and r["impl"].startswith("torch mask") and r["batch"] > 1)
    verdict = {"cpu_batched": dict(target=TARGETS["cpu_batched"], measured=cpu_b, met=cpu_b >= TARGETS["cpu_batched"])}
    gpu = [r["scans_per_s_median"] for r in rows if r["device"] == "cuda" and r["impl"].startswith("torch mask") and r["batch"] > 1]
    verdict["gpu_batched"] = dict(target=TARGETS["gpu_batched"], measured=max(gpu) if gpu else None, met=(max(gpu) >= TARGETS["gpu_batched"]) if gpu else None)
    print("targets:", json.dumps(verdict))

    run = dict(machine=info, config=dict(size=a.size, kind=a.kind, coverage=a.coverage, noise=noise, blur=blur, batch=a.batch,
                                         gpu_batch=a.gpu_batch, quick=a.quick), rows=rows, targets=verdict)
    a.out.mkdir(parents=True, exist_ok=True)
    jpath = a.out / "bench_scans.json"
    runs = json.loads(jpath.read_text()).get("runs", []) if jpath.exists() else []
    key = lambda r: (r["machine"]["cpu_model"], r["machine"]["device_name"])
    runs = [r for r in runs if key(r) != key(run)] + [run]
    jpath.write_text(json.dumps(dict(runs=runs), indent=1))
    md = ["# bench_scans: partial scans per second", "", "Generated by `python benchmarks/bench_scans.py`.", ""]
    for r in runs:
        m, c = r["machine"], r["config"]
        md += [f"## {m['cpu_model']} ({m['cpu_count']} cores, torch threads {m['torch_threads']}, load avg at start "
               f"{m['load_average_at_start']}), GPU: {m['device_name']}", "",
               f"{m['platform']}, Python {m['python']}, torch {m['torch']}, commit {m.get('commit')}, {m['date']}. Scan: {c['size']}x{c['size']} {c['kind']} "
               f"coverage {c['coverage']:.3f}, blur={c['blur']}, noise={c['noise']}.", "",
               "| implementation | device | batch | scans/s (median) | scans/s (best) | note |", "|---|---|---:|---:|---:|---|"]
        md += [f"| {x['impl']} | {x['device']} | {x['batch']} | {x['scans_per_s_median']:.1f} | {x['scans_per_s_best']:.1f} | {x['note']} |" for x in r["rows"]]
        md += ["", "Targets: " + "; ".join(f"{k} >= {v['target']}: measured {v['measured'] if v['measured'] is None else round(v['measured'], 1)} "
                                           f"({'met' if v['met'] else 'not met' if v['met'] is not None else 'not measured'})"
                                           for k, v in r["targets"].items()), ""]
    (a.out / "bench_scans.md").write_text("\n".join(md))
    print(f"wrote {jpath} and {a.out / 'bench_scans.md'}")


if __name__ == "__main__":
    main()
