"""What every ``gradfree perf`` section shares: the sizes per mode, the targets, the
timer (medians of synchronised repeats, hot and reference alternated) and the report
that collects the rows.

Memory is measured with :class:`benchmarks.core.timing.PeakMemory`, the runner's own probe.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from benchmarks.core.atomic import atomic_write_text
from benchmarks.core.timing import synchronize

TARGETS = {  # metric -> (comparison, threshold, what the issue asks)
    "dense_vs_bare_matmul": (">=", 0.8, "dense projection throughput / bare matmul"),
    "structured_speedup": (">=", 20.0, "gaussian time / structured time at m=81,536, k=120,000"),
    "structured_acc_gap_points": ("<=", 0.5, "|acc(structured) - acc(gaussian)| at equal k, points"),
    "kernel_minus_best_finite_points": (">=", 0.0, "acc(kernel) - best finite-k acc, points"),
    "kernel_time_vs_dense_120k": ("<=", 0.1, "kernel fit time / dense k=120,000 time"),
    "ridge_grid_vs_sklearn_fit": ("<=", 3.0, "13-alpha grid + refit / one sklearn fit"),
    "sklearn_loop_vs_ridge_grid": (">=", 4.0, "sklearn over the grid / our grid"),
    "ridge_same_predictions": (">=", 1.0, "min over alphas of identical validation predictions"),
    "streaming_peak_gb": ("<=", 4.0, "streaming fit peak memory at the STL-10 shape, GB"),
    "extraction_vs_bare_forward": (">=", 0.9, "extraction images/s / bare forward images/s"),
    # the seeds' STL-10 shape end to end (5,000 + 8,000 images, m = 81,536), on 2 CPU cores
    "seed_kernel_time_s": ("<=", 240.0, "exact kernel fit + test scoring, seconds"),
    "seed_kernel_peak_gb": ("<=", 8.0, "exact kernel fit + test scoring peak memory, GB"),
    "seed_kernel_vs_floor": ("<=", 1.5, "exact kernel time / bare float32 ssyrk of the (13,000, 81,536) matrix"),
    "seed_kernel_vs_floor_vnni": ("<=", 0.5, "the same, CPU with VNNI (the Gram in int8)"),
    "seed_kernel_vs_floor_amx": ("<=", 0.25, "the same, CPU with AMX-INT8 (the Gram in int8)"),
    "seed_structured_time_s": ("<=", 480.0, "structured k=120,000 streamed fit + test scoring, seconds"),
    "seed_structured_peak_gb": ("<=", 4.0, "structured k=120,000 streamed fit + test scoring peak memory, GB"),
    # the Gram X X^T of a 0/1 matrix: float32 time / int8 (torch._int_mm) time, by what the CPU has
    "binary_gram_int8_speedup_vnni": (">=", 2.0, "float32 Gram time / int8 Gram time, CPU with VNNI"),
    "binary_gram_int8_speedup_amx": (">=", 5.0, "float32 Gram time / int8 Gram time, CPU with AMX-INT8"),
    # the exact kernel on all of CIFAR-10 (45,000 + 5,000 validation, no refit, 10,000 test), 2 CPU cores
    "kernel_full_minutes": ("<=", 15.0, "exact kernel fit + alpha grid + test scoring, minutes"),
    "kernel_full_peak_gb": ("<=", 16.0, "the process's peak memory over extraction, fit and scoring, GB"),
}


@dataclass(frozen=True)
class Sizes:
    """Shapes per mode (rows n, input features m, components k)."""

    repeats: int = 2
    proj_n: int = 2048  # dense projection vs bare GEMM
    proj_m: int = 11_520  # MobileNetV2 features.18 at 96 px
    proj_k: int = 4096
    struct_n: int = 256  # structured vs gaussian at the seeds' shape
    struct_m: int = 81_536
    struct_k: int = 120_000
    struct_gauss_blocks: int = 3  # gaussian blocks timed, then extrapolated
    ridge_n: int = 4000  # synthetic ridge case (when the task does not provide features)
    ridge_n_val: int = 1000
    ridge_d: int = 10_000
    stream_n: int = 2000  # streaming vs materialised
    stream_m: int = 11_520
    stream_k: int = 20_000
    stl_stream: bool = False  # the STL-10 shape memory run
    stl_n: int = 13_000
    stl_m: int = 81_536
    stl_blocks: int = 2
    extract_n: int = 256
    extract_px: int = 96
    extract_repeats: int = 7  # ~1 s per pass: a median of 2 swung 0.86-0.95 between runs, of 7 +-0.01
    task: bool = True
    task_per_class: int = 500
    task_test_per_class: int = 200
    task_px: int = 96
    task_ks: tuple[int, ...] = (1000, 10_000, 30_000)
    task_seeds: int = 3  # seeds of R per (projection, k): random-feature noise is ~0.3 points at k=10,000
    task_dense_k: int = 120_000
    task_dense_blocks: int = 3
    # the seeds' STL-10 problem end to end (the full run: 4,000 + 1,000 / 8,000, m = 81,536)
    seed_n_fit: int = 1600  # fit rows; + seed_n_val validation rows = the training images
    seed_n_val: int = 400
    seed_n_test: int = 3200
    seed_m: int = 81_536
    seed_k: int = 120_000
    seed_latent: int = 32  # planted signal: latent dimension and class-mean scale (seed_problem)
    seed_signal: float = 0.5
    seed_density_images: int = 8  # DenseNet169 norm5 images for the density (0: the stated one)
    seed_gauss_block: int = 512
    seed_gauss_blocks: int = 3  # dense blocks timed per stream, then extrapolated
    bgram_n: int = 4096  # binary Gram: a 0/1 (n, m) matrix, each path best of the repeats
    bgram_m: int = 16_384
    bgram_repeats: int = 3
    kfull_per_class: int = 50  # the full-size kernel: training images per class (0: all, the targeted shape)
    kfull_test_per_class: int = 20  # and test images per class (0: all)


QUICK = Sizes(repeats=2, proj_n=256, proj_m=1024, proj_k=2048, struct_n=16, struct_m=4096, struct_k=8192,
              struct_gauss_blocks=2, ridge_n=300, ridge_n_val=100, ridge_d=800, stream_n=200, stream_m=512,
              stream_k=1500, extract_n=32, extract_px=64, extract_repeats=2, task_per_class=12,
              task_test_per_class=6, task_px=64, task_ks=(300, 1000), task_seeds=1, task_dense_k=8000,
              task_dense_blocks=1, seed_n_fit=400, seed_n_val=100, seed_n_test=400, seed_m=2048, seed_k=4096,
              seed_latent=16, seed_density_images=0, seed_gauss_block=256, seed_gauss_blocks=2,
              bgram_n=256, bgram_m=1024, bgram_repeats=2, kfull_per_class=10, kfull_test_per_class=5)
FULL = Sizes(proj_n=4096, proj_m=81_536, proj_k=4096, struct_n=1024, stl_stream=True, extract_n=512,
             seed_n_fit=4000, seed_n_val=1000, seed_n_test=8000, seed_density_images=32, kfull_per_class=0,
             kfull_test_per_class=0)


def timed(fn, device, repeats: int = 1) -> tuple[float, object]:
    """(median seconds over repeats, last result); the device is synchronised around each call."""
    times, out = [], None
    for _ in range(max(1, repeats)):
        synchronize(device)
        t0 = time.perf_counter()
        out = fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def alternate(hot, ref, device, repeats: int, warm: bool = True) -> tuple[float, float]:
    """Median seconds of hot and of ref, timed alternately after one warm-up of each
    (``warm=False``: the caller has run them)."""
    if warm:
        hot(), ref()
    h, r = [], []
    for _ in range(max(1, repeats)):
        h.append(timed(hot, device)[0])
        r.append(timed(ref, device)[0])
    return statistics.median(h), statistics.median(r)


class Report:
    """Rows of the report, printed as they come (the progress) and kept for the table; with
    ``path``, also rewritten there atomically after every row, so that an interrupted run
    keeps what it measured."""

    def __init__(self, device, mode: str, path: Path | None = None):
        self.device, self.mode, self.rows, self.path = str(device), mode, [], path
        self.t0 = time.perf_counter()

    def log(self, msg: str) -> None:
        """Print ``msg`` to stderr, after the seconds since the report began."""
        print(f"[perf {time.perf_counter() - self.t0:7.1f}s] {msg}", file=sys.stderr, flush=True)

    def add(self, section: str, case: str, shape: str, value=None, metric: str = "", time_s=None,
            ref: str = "", ref_time_s=None, peak_bytes=None, test_acc=None, note: str = "",
            targeted: bool = True) -> dict:
        """One row; ``targeted=False``: the metric's target is not applied (a reduced shape)."""
        cmp, thr = TARGETS.get(metric, (None, None, ""))[:2] if targeted else (None, None)
        met = None
        if cmp is not None and value is not None and not (isinstance(value, float) and math.isnan(value)):
            met = bool(value >= thr) if cmp == ">=" else bool(value <= thr)
        row = {"section": section, "case": case, "shape": shape, "metric": metric, "value": value,
               "target": f"{cmp} {thr:g}" if cmp else "", "met": met, "time_s": time_s, "ref": ref,
               "ref_time_s": ref_time_s, "peak_memory_bytes": peak_bytes, "test_acc": test_acc,
               "device": self.device, "mode": self.mode, "note": note}
        self.rows.append(row)
        if self.path is not None:
            atomic_write_text(self.path, pd.DataFrame(self.rows).to_csv(index=False))
        shown = f"{value:.4g}" if isinstance(value, float) else value
        self.log(f"{section}/{case}: {metric or 'value'} = {shown} {row['target']} "
                 f"{'' if met is None else ('met' if met else 'NOT met')} {note}")
        return row


def binary_matrix(n, m, seed=0, device="cpu") -> torch.Tensor:
    """Random 0/1 uint8 (n, m), drawn in row chunks: no (n, m) float temporary."""
    g = torch.Generator().manual_seed(seed)
    X = torch.empty(n, m, dtype=torch.uint8)
    step = max(1, (64 << 20) // (4 * m))
    for r0 in range(0, n, step):
        X[r0:r0 + step] = torch.rand(min(step, n - r0), m, generator=g) > 0.5
    return X.to(device)
