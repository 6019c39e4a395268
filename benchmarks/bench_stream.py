"""Benchmark: completing a live stream of 512x512 frames scanned along one fixed path (spiral, 1/20 coverage).

In one run on this machine:
  (a) `scipy.interpolate.griddata(method='linear')` for every frame: the baseline (triangulates every frame);
  (b) `em_ssl.fill`: build the fill operator once for the path, then one sparse product per frame
      (frame by frame and the whole stream batched);
  (c) `em_ssl.inference.complete` with the bundled completion model: frame by frame, the stream in one call
      (`complete(frames [B,H,W], mask)`, frame by frame on a CPU) and in batches of 8, with 1 and 2 torch threads.
Frames: a synthetic lattice drifting by one pixel per frame, Poisson noise at 100 e/px on the sampled pixels.

Targets: one frame from scratch (b: build + apply) no slower than (a); a stream at >= 10 frames/s.
Writes benchmarks/results/bench_stream.json and .md (replacing them).

    nice python benchmarks/bench_stream.py [--size 512] [--coverage 0.05] [--frames 16] [--model default]
"""
import argparse, json, os, sys, time
from pathlib import Path

import numpy as np
import torch
from scipy.interpolate import griddata

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_fill import machine_info, timed  # noqa: E402  (the same machine record as the fill benchmark)
from em_ssl.fill import FillOperator, FILL_CACHE  # noqa: E402
from em_ssl.inference import complete, load_completion_model  # noqa: E402
from em_ssl.io import atomic_write  # noqa: E402
from em_ssl.scans import scan_mask, poisson_noise  # noqa: E402
from em_ssl.synthetic import lattice_image  # noqa: E402

STREAM_TARGET_FPS = 10.0


def frames_on_path(size: int, coverage: float, n: int, dose: float = 100.0):
    "(frames [n,H,W] in [0,1], 0 off the path; the fixed spiral mask [H,W])."
    mask = scan_mask("spiral", (size, size), coverage, seed=0)
    base = lattice_image(size + n, seed=0)
    frames = np.stack([poisson_noise(base[i:i + size, i:i + size], mask, dose, rng=i) for i in range(n)])
    return frames, mask


def stream_rate(fn, n_frames: int, reps: int) -> dict:
    "Median seconds of fn() processing the whole stream -> ms/frame and frames/s."
    t = timed(fn, reps)
    return dict(seconds=t, ms_per_frame=1e3 * t / n_frames, frames_per_s=n_frames / t)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--coverage", type=float, default=1 / 20)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--reps", type=int, default=5, help="repetitions of the classical timings (medians)")
    ap.add_argument("--model", default="default", help="completion checkpoint (default: the bundled model)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bench_stream")
    args = ap.parse_args(argv)
    info = machine_info()
    frames, mask = frames_on_path(args.size, args.coverage, args.frames)
    s = mask > 0
    pts, grid = np.argwhere(s).astype(np.float64), tuple(np.mgrid[:args.size, :args.size])
    res = dict(n_samples=int(s.sum()), frames=args.frames)

    # (a) griddata, every frame from scratch
    res["griddata_ms_per_frame"] = 1e3 * timed(lambda: griddata(pts, frames[0][s], grid, method="linear"), args.reps)
    # (b) the fill operator: build once, apply per frame / batched
    res["fill_build_ms"] = 1e3 * timed(lambda: FillOperator(mask), args.reps)
    op = FillOperator(mask)
    res["fill_apply_ms_per_frame"] = 1e3 * timed(lambda: op.apply_image(frames[0]), max(args.reps, 20))
    res["fill_first_frame_ms"] = res["fill_build_ms"] + res["fill_apply_ms_per_frame"]
    res["fill_stream_frame_by_frame"] = stream_rate(lambda: [op.apply_image(f) for f in frames], args.frames, args.reps)
    res["fill_stream_batched"] = stream_rate(lambda: op.apply_image(frames), args.frames, args.reps)
    # (c) the completion model
    model = load_completion_model(args.model, "cpu", fuse=True)
    res["model"] = dict(checkpoint=args.model, cls=type(model).__name__, parameters=sum(p.numel() for p in model.parameters()))
    threads0 = torch.get_num_threads()
    for th in (1, 2):
        torch.set_num_threads(th)
        FILL_CACHE.clear()
        t0 = time.perf_counter(); complete(frames[0], mask, model=model); first = time.perf_counter() - t0
        res[f"model_threads{th}"] = dict(
            first_frame_ms=1e3 * first,   # includes the fill operator's build for models that refine the fill
            frame_by_frame=stream_rate(lambda: [complete(f, mask, model=model) for f in frames], args.frames, 2),
            stream_default=stream_rate(lambda: complete(frames, mask, model=model), args.frames, 2),
            batched=stream_rate(lambda: complete(frames, mask, model=model, batch_size=8), args.frames, 2),
            gated_frame_by_frame=stream_rate(lambda: [complete(f, mask, model=model, gate=True) for f in frames], args.frames, 2),
            gated_batched=stream_rate(lambda: complete(frames, mask, model=model, batch_size=8, gate=True), args.frames, 2))
        print(f"threads {th}: {res[f'model_threads{th}']}", flush=True)
    torch.set_num_threads(threads0)
    info["load_average_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None

    fps = lambda d: f"{d['frames_per_s']:.1f} frames/s ({d['ms_per_frame']:.0f} ms/frame)"
    rows = [("(a) scipy griddata linear, every frame", f"{res['griddata_ms_per_frame']:.0f} ms", "-",
             f"{1e3 / res['griddata_ms_per_frame']:.1f} frames/s"),
            ("(b) em_ssl.fill operator (build once, apply per frame)", f"{res['fill_first_frame_ms']:.0f} ms (build {res['fill_build_ms']:.0f} + apply {res['fill_apply_ms_per_frame']:.2f})",
             fps(res["fill_stream_frame_by_frame"]), fps(res["fill_stream_batched"]))]
    for th in (1, 2):
        r = res[f"model_threads{th}"]
        rows.append((f"(c) complete, {res['model']['cls']}, {th} torch thread{'s' if th > 1 else ''}", f"{r['first_frame_ms']:.0f} ms",
                     fps(r["frame_by_frame"]), fps(r["batched"])))
    for th in (1, 2):
        r = res[f"model_threads{th}"]
        rows.append((f"(d) complete(..., gate=True), {th} torch thread{'s' if th > 1 else ''}", "-",
                     fps(r["gated_frame_by_frame"]), fps(r["gated_batched"])))
    best_model = max(res[f"model_threads{th}"][k]["frames_per_s"] for th in (1, 2) for k in ("stream_default", "batched"))
    targets = [f"one frame from scratch no slower than griddata: {'met' if res['fill_first_frame_ms'] <= res['griddata_ms_per_frame'] else 'NOT met'} "
               f"({res['fill_first_frame_ms']:.0f} vs {res['griddata_ms_per_frame']:.0f} ms)",
               f"classical stream >= {STREAM_TARGET_FPS:.0f} frames/s: {'met' if res['fill_stream_batched']['frames_per_s'] >= STREAM_TARGET_FPS else 'NOT met'} "
               f"({res['fill_stream_batched']['frames_per_s']:.0f} frames/s batched)",
               f"model stream >= {STREAM_TARGET_FPS:.0f} frames/s on this CPU: {'met' if best_model >= STREAM_TARGET_FPS else 'NOT met'} "
               f"(best {best_model:.1f} frames/s; `complete(frames, mask)` runs frame by frame on a CPU: "
               + ", ".join(f"{th} thread(s) {res[f'model_threads{th}']['stream_default']['frames_per_s']:.1f} frames/s" for th in (1, 2)) + ")"]
    md = "\n".join([
        f"# Stream completion benchmark ({args.size}x{args.size}, fixed spiral path, coverage {args.coverage:g}, {args.frames} frames)", "",
        f"Machine: {info['cpu_model']}, {info['cpu_affinity']} usable cores, torch {info['torch']}, scipy {info['scipy']}, "
        f"numpy {info['numpy']}, python {info['python']}; nice {info['nice']}. Commit: {info['commit']}. "
        f"Load average at start: {info['load_average_at_start']}, at end: {info['load_average_at_end']} (a shared machine: absolute "
        f"times are noisy). Date: {info['date']}. Model: `{args.model}` ({res['model']['cls']}, {res['model']['parameters']:,} parameters, fused).", "",
        "| method | one frame (first, from scratch) | stream, frame by frame | stream, batched (fill: one product; model: batches of 8) |", "|---|---|---|---|",
        *[f"| {' | '.join(r)} |" for r in rows], "",
        "Targets:", "", *[f"- {t}" for t in targets], ""])
    print(md)
    out = args.out
    atomic_write(out.with_suffix(".json"), lambda p: Path(p).write_text(json.dumps(
        dict(machine=info, args={**vars(args), "out": os.path.relpath(args.out, ROOT)}, results=res, targets=targets), indent=1, default=str)), overwrite=True)
    atomic_write(out.with_suffix(".md"), lambda p: Path(p).write_text(md), overwrite=True)


if __name__ == "__main__":
    main()
