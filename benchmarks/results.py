"""Tidy results: one fixed schema, rows appended atomically, a metadata file per run.

``results.csv`` holds one row per (cell, row type): ``final`` rows carry a
cell's scores, times and sizes; ``epoch`` rows carry the time-to-accuracy curve
of the backprop trainers; ``failed`` rows record a cell that raised, with its
error. Every write rewrites the file into a temporary sibling and renames it
over the original, so a crash leaves either the old or the new file, never a
torn row. Columns outside the schema go into the ``extra`` JSON column rather
than being dropped.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path

import torch

RESULTS_FILE = "results.csv"

SCHEMA = (
    # identity
    "run_id", "cell_key", "row_type", "status", "error", "finished_at", "suite",
    # axes
    "method", "dataset", "backbone", "cut", "weights", "precision", "encoder", "projection",
    "n_components", "seed", "image_size", "n_classes", "n_train", "n_val", "n_test",
    "data_fingerprint", "device", "device_name", "threads",
    # scores (hyperparameters chosen on the validation split; test is scored once)
    "epoch", "train_loss", "train_acc", "val_acc", "test_acc", "best_epoch", "epochs",
    "alpha", "selection",
    # times, seconds (train_total_s: the counted phases only)
    "warmup_s", "extract_s", "encode_s", "project_s", "fit_s", "train_s", "predict_s", "eval_s",
    "train_total_s", "train_time_s",
    # sizes
    "feature_dim", "backbone_param_count", "backbone_bytes", "projection_bytes",
    "projection_matrix_bytes", "ridge_weight_bytes", "model_param_count", "trainable_param_count",
    "model_bytes", "peak_memory_bytes",
    # the rest
    "method_config", "extra",
)


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(path.suffix + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a fsynced temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp creates 0600; results are for everyone to read
        with os.fdopen(fd, "w", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(round(value, 8))
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def normalise_row(row: dict) -> dict[str, str]:
    """Map a row onto the schema; unknown keys go to ``extra``."""
    extra = {k: v for k, v in row.items() if k not in SCHEMA}
    if row.get("extra"):
        extra.update(row["extra"] if isinstance(row["extra"], dict) else json.loads(row["extra"]))
    out = {k: _cell(row.get(k)) for k in SCHEMA if k != "extra"}
    out["extra"] = json.dumps(extra, sort_keys=True, default=str) if extra else ""
    return out


def append_rows(path: str | Path, rows: list[dict]) -> None:
    """Append ``rows`` to the CSV at ``path`` atomically (the file is never torn)."""
    path = Path(path)
    with _locked(path):
        old = path.read_text() if path.exists() else ""
        if old and old.splitlines()[0].split(",") != list(SCHEMA):
            raise RuntimeError(
                f"{path} has another column layout than this gradfree version writes; "
                "write to a new --out folder (or move the old file away)."
            )
        buf = _StringIO()
        writer = csv.DictWriter(buf, fieldnames=SCHEMA, lineterminator="\n")
        if not old:
            writer.writeheader()
        for row in rows:
            writer.writerow(normalise_row(row))
        atomic_write_text(path, old + buf.getvalue())


class _StringIO(list):
    def write(self, s):
        self.append(s)

    def getvalue(self):
        return "".join(self)


def read_rows(path: str | Path) -> list[dict[str, str]]:
    path = Path(path)
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def finished_keys(path: str | Path) -> set[str]:
    """Cell keys that already have a successful ``final`` row."""
    return {r["cell_key"] for r in read_rows(path) if r["row_type"] == "final" and r["status"] == "ok"}


# ----------------------------------------------------------------------------
# Metadata
# ----------------------------------------------------------------------------

_PACKAGES = ("gradfree", "torch", "torchvision", "numpy", "scikit-learn", "pandas", "seaborn",
             "fastai", "lightonml", "ray")


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


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
