"""Benchmark: seconds per synthetic micrograph (em_ssl.synthetic).

Times the generators that tests, tutorials and `make_synthetic_dataset` call: `lattice_image` (the target: a
256x256 lattice in under 0.1 s, so that tests can make fresh images freely), `simulate_lattice` with every scan
artefact, `nanoparticle_image`, and `degraded_pair` for each degradation task. Each is run once as a warm-up, then
repeatedly with new seeds; the best and median times are reported (the best is the least disturbed by other load
on a shared machine, so the target is checked against it).

Writes benchmarks/results/bench_synthetic.json and .md; runs from other machines already in the JSON are kept.

    python benchmarks/bench_synthetic.py [--size 256] [--reps 5] [--quick] [--out DIR]
"""
import argparse, datetime, json, os, platform, subprocess, sys, time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from em_ssl import synthetic  # noqa: E402

TARGET_S = 0.1  # lattice_image(256) budget in seconds (best of the repetitions)
TARGET_SIZE = 256


def commit() -> str | None:
    "The repository's HEAD commit, with '+dirty' when the working tree has changes (None without git)."
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def machine_info() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"): cpu = line.split(":", 1)[1].strip(); break
    except OSError: pass
    return dict(platform=platform.platform(), python=platform.python_version(), cpu_model=cpu, cpu_count=os.cpu_count(),
                numpy=np.__version__, commit=commit(),
                load_average_at_start=os.getloadavg() if hasattr(os, "getloadavg") else None,
                date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))


def timed(fn, reps: int) -> dict:
    "fn(seed) once as a warm-up, then `reps` times with new seeds; best and median seconds per call."
    fn(0)
    times = []
    for seed in range(1, reps + 1):
        t0 = time.perf_counter(); fn(seed); times.append(time.perf_counter() - t0)
    return dict(reps=reps, best_s=float(min(times)), median_s=float(np.median(times)))


def cases(size: int) -> list[tuple[str, callable]]:
    clean = synthetic.lattice_image(size, seed=0)
    out = [("lattice_image", lambda s: synthetic.lattice_image(size, seed=s)),
           ("simulate_lattice, all artefacts", lambda s: synthetic.simulate_lattice(
               size, "hexagonal", grain_boundary=True, drift=0.05, line_jitter=0.5, flyback=3.0,
               background=0.3, contamination=0.3, seed=s)),
           ("nanoparticle_image", lambda s: synthetic.nanoparticle_image(size, seed=s))]
    out += [(f"degraded_pair, {t}", lambda s, t=t: synthetic.degraded_pair(clean, t, seed=s)) for t in synthetic.DEGRADATION_TASKS]
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=TARGET_SIZE, help="image side in pixels")
    ap.add_argument("--reps", type=int, default=5, help="timed repetitions per generator (after one warm-up)")
    ap.add_argument("--quick", action="store_true", help="2 repetitions, for checking that the script runs")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    a = ap.parse_args(argv)
    if a.reps < 1: ap.error("--reps must be >= 1")
    reps = 2 if a.quick else a.reps
    info = machine_info()
    print(f"{a.size}x{a.size} synthetic images; {info['cpu_model']} ({info['cpu_count']} cores, load "
          f"{info['load_average_at_start']}), numpy {info['numpy']}, commit {info['commit']}")
    print(f"{'generator':<34} {'best s':>9} {'median s':>9}")
    rows = []
    for name, fn in cases(a.size):
        res = timed(fn, reps)
        rows.append(dict(generator=name, **res))
        print(f"{name:<34} {res['best_s']:>9.4f} {res['median_s']:>9.4f}", flush=True)

    lat = next(r for r in rows if r["generator"] == "lattice_image")
    applies = a.size == TARGET_SIZE
    target = dict(generator="lattice_image", size=TARGET_SIZE, target_s=TARGET_S, measured_best_s=lat["best_s"] if applies else None,
                  met=(lat["best_s"] < TARGET_S) if applies else None)
    print("target:", json.dumps(target))

    run = dict(machine=info, config=dict(size=a.size, reps=reps, quick=a.quick), rows=rows, target=target)
    a.out.mkdir(parents=True, exist_ok=True)
    jpath = a.out / "bench_synthetic.json"
    runs = json.loads(jpath.read_text()).get("runs", []) if jpath.exists() else []
    key = lambda r: (r["machine"]["cpu_model"], r["config"]["size"])
    runs = [r for r in runs if key(r) != key(run)] + [run]
    jpath.write_text(json.dumps(dict(runs=runs), indent=1))
    md = ["# bench_synthetic: seconds per synthetic micrograph", "", "Generated by `python benchmarks/bench_synthetic.py`.", ""]
    for r in runs:
        m, c, t = r["machine"], r["config"], r["target"]
        md += [f"## {m['cpu_model']} ({m['cpu_count']} cores, load avg at start {m['load_average_at_start']})", "",
               f"{m['platform']}, Python {m['python']}, numpy {m['numpy']}, commit {m['commit']}, {m['date']}. "
               f"Images {c['size']}x{c['size']}, {c['reps']} timed repetitions after one warm-up.", "",
               "| generator | best (s) | median (s) |", "|---|---:|---:|"]
        md += [f"| {x['generator']} | {x['best_s']:.4f} | {x['median_s']:.4f} |" for x in r["rows"]]
        verdict = "not measured (other size)" if t["met"] is None else ("met" if t["met"] else "not met")
        md += ["", f"Target: `lattice_image({t['size']})` best < {t['target_s']} s: "
                   f"{'-' if t['measured_best_s'] is None else round(t['measured_best_s'], 4)} s ({verdict}).", ""]
    (a.out / "bench_synthetic.md").write_text("\n".join(md))
    print(f"wrote {jpath} and {a.out / 'bench_synthetic.md'}")


if __name__ == "__main__":
    main()
