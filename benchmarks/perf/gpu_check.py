"""``make gpu-check``: every CUDA path of gradfree, run once on a machine with a GPU, in a few minutes.

A CUDA machine is lent only now and then, for minutes, with its own Python and torch (older than the
pinned ones) and no package index: only the checkout and what it carries. This module is the one
prepared command for it. Each step runs on the torch it finds, in order, each with a time limit:

1. ``pytest -m gpu``: the tests marked as needing CUDA (projections, structured, scikit-learn API,
   the airbench reference comparison when the ``airbench`` package is importable);
2. one tiny cell of every registered method on ``cuda`` (CIFAR-10 at 32 px, 20 + 10 images per class),
   through the same runner, clock and results file as any run (a method whose optional dependency is
   missing there, e.g. fastai, is reported as skipped, not passed);
3. ``gradfree perf --quick --device cuda``: the CUDA perf sections.

Everything it measured goes to ``results/gpu-check/`` (``OUT`` below): ``summary.json`` (torch and
CUDA versions, the device, each step's status, return code and seconds), the cells' ``results.csv``,
the perf rows and each step's log. The data: ``make gpu-check-data`` (on a machine with the
development CIFAR-10) writes a 20 MB archive to ``.cache/gpu-check/`` for the lent machine to carry.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / ".cache" / "gpu-check"
OUT = REPO / "results" / "gpu-check"


def _cifar10(data: Path) -> Path:
    """The carried CIFAR-10 JPEGs, unpacked once beside the archive."""
    target = data / "cifar10-jpg"
    if not (target / "train").is_dir():
        archive = data / "cifar10-jpg.tar.gz"
        if not archive.exists():
            raise SystemExit(f"no CIFAR-10 archive at {archive}: run `make gpu-check-data` where the development "
                             "copy is, and carry .cache/gpu-check to the GPU machine.")
        with tarfile.open(archive) as tar:  # train/<class>/*.jpg, test/<class>/*.jpg
            tar.extractall(target, filter="data")
    return target


def _step(name: str, argv: list[str], out: Path, timeout_s: int, env: dict) -> dict:
    """Run ``argv``, its output to ``out/<name>.log``; its status, return code and seconds."""
    start = time.perf_counter()
    log = out / f"{name}.log"
    with log.open("w") as f:
        try:
            rc = subprocess.run(argv, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, env=env, timeout=timeout_s).returncode
            status = "passed" if rc == 0 else "failed"
        except subprocess.TimeoutExpired:
            rc, status = None, f"timed out after {timeout_s} s"
    seconds = round(time.perf_counter() - start, 1)
    print(f"{name}: {status} in {seconds} s (log: {log})", flush=True)
    return {"step": name, "status": status, "returncode": rc, "seconds": seconds, "log": log.name}


def _method_cells(data: Path, device: str, out: Path) -> list[str]:
    """A suite of one tiny cell per registered method; the ones whose optional dependency is missing,
    named on their own."""
    from benchmarks.harness.registry import REGISTRY

    suite = out / "gpu-check.toml"
    lines = ['description = "one tiny cell of every method on CUDA"', "[settings]", 'dataset = "cifar10"',
             f'data_dir = "{data}"', "image_size = 32", "train_per_class = 20", "test_per_class = 10",
             f'device = "{device}"', "epochs = 1", "n_components = 512"]
    for name in REGISTRY:
        lines += ["[[grid]]", f'method = "{name}"']
    suite.write_text("\n".join(lines) + "\n")
    return [sys.executable, "-m", "benchmarks.cli", "run", "--suite", str(suite), "--out", str(out / "cells"),
            "--no-progress"]


def run(device: str = "cuda", out: str | Path = OUT, data: str | Path = DATA) -> int:
    """Every step above on ``device`` (``cpu`` tries the plumbing without a GPU); 0 if all passed."""
    import torch

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu-check: no CUDA device here; nothing to check (--device cpu tries the plumbing).")
        return 2
    cifar10 = _cifar10(Path(data))
    env = {**os.environ, "PYTHONPATH": str(REPO), "GRADFREE_TEST_CIFAR10": str(cifar10), "PYTHONUNBUFFERED": "1"}
    summary = {"torch": torch.__version__, "cuda": torch.version.cuda, "python": sys.version.split()[0],
               "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
               "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "steps": []}
    steps = [
        ("pytest-gpu", [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
                        "--junitxml", str(out / "pytest-gpu.xml")], 120),
        ("cells", _method_cells(cifar10, device, out), 120),
        ("perf", [sys.executable, "-m", "benchmarks.cli", "perf", "--quick", "--device", device,
                  "--data-dir", str(cifar10), "--out", str(out / "perf")], 120),
    ]
    for name, command, limit in steps:
        summary["steps"].append(_step(name, command, out, limit, env))
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    failed = [s["step"] for s in summary["steps"] if s["status"] != "passed"]
    print(f"gpu-check: {len(summary['steps']) - len(failed)} of {len(summary['steps'])} steps passed"
          + (f"; not passed: {', '.join(failed)}" if failed else "") + f". Summary: {out / 'summary.json'}")
    return 1 if failed else 0
