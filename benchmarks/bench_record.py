"""The record every benchmark writes next to its numbers: the machine, the software, the commit and the load.

Imported by the `bench_*.py` scripts (run as `python benchmarks/bench_x.py`, so this folder is on sys.path)."""
from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def commit() -> str | None:
    "The repository's HEAD commit, with '+dirty' when tracked files have changes (None without git)."
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                               text=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def load_average() -> list[float] | None:
    "1, 5 and 15 minute load averages (None where the OS has none)."
    return [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None


def machine_info(**extra) -> dict:
    "CPU, cores, Python/numpy/scipy/torch versions (those already imported), torch threads, GPU, commit, nice, load."
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"): cpu = line.split(":", 1)[1].strip(); break
    except OSError: pass
    info = dict(platform=platform.platform(), python=platform.python_version(), cpu_model=cpu, cpu_count=os.cpu_count(),
                cpu_affinity=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None)
    for name in ("numpy", "scipy", "torch", "fastai"):
        if name in sys.modules: info[name] = getattr(sys.modules[name], "__version__", None)
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        info.update(torch_threads=torch.get_num_threads(), cuda=torch.cuda.is_available(),
                    device_name=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
    info.update(commit=commit(), nice=os.nice(0), load_average_at_start=load_average(),
                date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), **extra)
    return info


def portable(text: str) -> str:
    "Text for a results file without this machine's paths: the scratch folder as $SCRATCH, the data collection as shared/."
    scratch = os.environ.get("SCRATCH", str(Path.home() / "em_ssl_scratch"))
    return (text.replace(scratch, "$SCRATCH").replace(str(ROOT.parent / "shared") + "/", "shared/")
                .replace(str(ROOT.parent / "shared"), "shared").replace(str(ROOT) + "/", ""))
