"""``gradfree perf``: how close each hot path runs to the machine's limit, in one process.

Every figure is a ratio against a reference measured in the same run, on the same
device, with the same shapes, timed alternately (median of repeats) so that the
neighbours' load shifts both alike:

* ``projection``  -- dense ``gaussian`` |XR|^2 (R drawn on the device while it projects)
  against the bare GEMM of the same shapes with a ready-made R block (the device's limit
  for the dense method); generation alone as its share of the projection time;
* ``structured``  -- the Hadamard-based projection against ``gaussian`` at m = 81,536,
  k = 120,000 (rows reduced to fit the time; ``gaussian`` timed on a few blocks and
  extrapolated to all of them, which the row says);
* ``ridge``       -- the 13-alpha validation grid + refit against one scikit-learn
  ``RidgeClassifier`` fit at the chosen alpha and against scikit-learn looping over the
  grid (+ its refit), with the validation predictions compared alpha by alpha;
* ``streaming``   -- the ridge fitted from a streamed Gram against project-then-fit,
  time and peak memory; with ``--full`` the seeds' STL-10 shape (n = 13,000, m = 81,536)
  on fewer blocks than k = 120,000 (the memory does not depend on k; the row says so);
* ``extraction``  -- ``extract_features`` images/s against the bare forward pass of the
  same extractor and batch on ready, normalised input;
* ``task``        -- the CIFAR-10 reference task (MobileNetV2 features.18 at 96 px, 500
  train / 200 test images per class, sign encoding): ``gaussian`` and ``structured``
  at equal k, each the mean test accuracy over 3 seeds of R (one seed's random-feature
  noise is ~0.3 points at k = 10,000, as large as the gap measured), the exact kernel
  (k = infinity, deterministic), alpha always chosen on the validation split, and the
  kernel's time against dense k = 120,000 (its projection alone, extrapolated from a few
  blocks: a lower bound of its total). The ridge rows are also measured on these
  features at every k.

Peak memory is read, not estimated, by :class:`benchmarks.timing.PeakMemory` (the runner's
probe): the CUDA allocator's peak, or on CPU the kernel's peak RSS of the process (its
high-water mark, reset when the case starts), less the level when the case started.

Writes ``OUT/perf.csv`` (one row per figure), ``OUT/perf.png`` and
``OUT/runs/<run id>/metadata.json``; prints the table. ``--quick`` is a < 1 minute
smoke run (tiny shapes), the default a few minutes, ``--full`` the seeds' shapes
where memory allows.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
import uuid
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from benchmarks.timing import PeakMemory

DEFAULT_OUT = "results/perf"
_TIE = 1e-5  # relative score gap below which sklearn's float32 argmax is a tie
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


QUICK = Sizes(repeats=2, proj_n=256, proj_m=1024, proj_k=2048, struct_n=16, struct_m=4096, struct_k=8192,
              struct_gauss_blocks=2, ridge_n=300, ridge_n_val=100, ridge_d=800, stream_n=200, stream_m=512,
              stream_k=1500, extract_n=32, extract_px=64, extract_repeats=2, task_per_class=12,
              task_test_per_class=6, task_px=64, task_ks=(300, 1000), task_seeds=1, task_dense_k=8000,
              task_dense_blocks=1)
FULL = Sizes(proj_n=4096, proj_m=81_536, proj_k=4096, struct_n=1024, stl_stream=True, extract_n=512)


# --- measuring ---

def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, repeats: int = 1) -> tuple[float, object]:
    """(median seconds over repeats, last result); the device is synchronised around each call."""
    times, out = [], None
    for _ in range(max(1, repeats)):
        _sync(device)
        t0 = time.perf_counter()
        out = fn()
        _sync(device)
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
        print(f"[perf {time.perf_counter() - self.t0:7.1f}s] {msg}", file=sys.stderr, flush=True)

    def add(self, section: str, case: str, shape: str, value=None, metric: str = "", time_s=None,
            ref: str = "", ref_time_s=None, peak_bytes=None, test_acc=None, note: str = "") -> dict:
        cmp, thr = TARGETS.get(metric, (None, None, ""))[:2]
        met = None
        if cmp is not None and value is not None and not (isinstance(value, float) and math.isnan(value)):
            met = bool(value >= thr) if cmp == ">=" else bool(value <= thr)
        row = {"section": section, "case": case, "shape": shape, "metric": metric, "value": value,
               "target": f"{cmp} {thr:g}" if cmp else "", "met": met, "time_s": time_s, "ref": ref,
               "ref_time_s": ref_time_s, "peak_memory_bytes": peak_bytes, "test_acc": test_acc,
               "device": self.device, "mode": self.mode, "note": note}
        self.rows.append(row)
        if self.path is not None:
            import pandas as pd

            from benchmarks.results import atomic_write_text

            atomic_write_text(self.path, pd.DataFrame(self.rows).to_csv(index=False))
        shown = f"{value:.4g}" if isinstance(value, float) else value
        self.log(f"{section}/{case}: {metric or 'value'} = {shown} {row['target']} "
                 f"{'' if met is None else ('met' if met else 'NOT met')} {note}")
        return row


def _binary(n, m, seed=0, device="cpu") -> torch.Tensor:
    """Random 0/1 uint8 (n, m), drawn in row chunks: no (n, m) float temporary."""
    g = torch.Generator().manual_seed(seed)
    X = torch.empty(n, m, dtype=torch.uint8)
    step = max(1, (64 << 20) // (4 * m))
    for r0 in range(0, n, step):
        X[r0:r0 + step] = torch.rand(min(step, n - r0), m, generator=g) > 0.5
    return X.to(device)


# --- sections ---

def section_projection(rep: Report, sz: Sizes, device) -> None:
    """Dense gaussian against the bare GEMM of the same shapes, and its generation share."""
    from projector.projections import _MODES, TILE_COLS, GaussianProjection, _mm_f32, gaussian_tiles, \
        resolve_compute_mode

    n, m, k = sz.proj_n, sz.proj_m, sz.proj_k
    rep.log(f"projection: dense gaussian n={n} m={m} k={k} vs bare matmul")
    X = _binary(n, m, device=device)
    proj = GaussianProjection(k, seed=0).fit(X)
    mode = resolve_compute_mode(None, X)
    cdt, copies = _MODES[mode]
    Xc = X.to(cdt)
    it = proj.iter_blocks(X)
    first_cols, _ = next(it)
    it.close()
    width = first_cols.stop - first_cols.start  # the block width transform uses
    n_blocks = math.ceil(k / width)
    c = math.ceil(width / TILE_COLS) * TILE_COLS
    B = torch.randn(copies * 2 * c, m, device=device).to(cdt)

    def bare():  # the GEMMs alone, R ready-made: the device's limit for the dense method
        for _ in range(n_blocks):
            _mm_f32(Xc, B.T)

    hot_s, ref_s = alternate(lambda: proj.transform(X), bare, device, sz.repeats)
    shape = f"n={n} m={m} k={k} block={width} mode={mode}"
    gflops = 2 * n * m * 2 * k * copies / ref_s / 1e9
    rep.add("projection", "dense gaussian (R drawn while projecting)", shape, ref_s / hot_s,
            "dense_vs_bare_matmul", hot_s, "bare GEMM, same shapes", ref_s,
            note=f"bare GEMM {gflops:.1f} GFLOP/s")
    n_tiles = math.ceil(k / TILE_COLS)
    gen_s, _ = timed(lambda: [gaussian_tiles(0, m, t0, min(c // TILE_COLS, n_tiles - t0), device, scale=False)
                              for t0 in range(0, n_tiles, c // TILE_COLS)], device, sz.repeats)
    rep.add("projection", "generation of R alone", shape, gen_s / hot_s, "generation_share", gen_s,
            "dense projection", hot_s, note="share of the projection time spent drawing R")


def section_structured(rep: Report, sz: Sizes, device) -> None:
    """Structured against gaussian at the seeds' shape, rows reduced; gaussian extrapolated."""
    from projector.projections import GaussianProjection
    from projector.structured import StructuredProjection

    n, m, k = sz.struct_n, sz.struct_m, sz.struct_k
    rep.log(f"structured: n={n} m={m} k={k} (gaussian on {sz.struct_gauss_blocks} blocks, extrapolated)")
    X = _binary(n, m, seed=1, device=device)
    st = StructuredProjection(k, seed=0).fit(X)
    with PeakMemory(device) as mem_s:
        s_time, _ = timed(lambda: st.transform(X), device, sz.repeats)
    g = GaussianProjection(k, seed=0).fit(X)

    def some_blocks():
        it = g.iter_blocks(X)
        cols = [c for c, _ in (next(it) for _ in range(sz.struct_gauss_blocks))]
        it.close()
        return cols

    with PeakMemory(device) as mem_g:
        g_part, cols = timed(some_blocks, device, 1)
    width = cols[0].stop - cols[0].start
    n_blocks = math.ceil(k / width)
    g_time = g_part / len(cols) * n_blocks
    shape = f"n={n} m={m} (d={st.padded_dim_}) k={k}"
    rep.add("structured", "structured vs gaussian, time", shape, g_time / s_time, "structured_speedup", s_time,
            f"gaussian ({len(cols)} of {n_blocks} blocks timed, extrapolated)", g_time, mem_s.delta_bytes,
            note=f"gaussian block peak {mem_g.delta_bytes / 1e6:.0f} MB; structured {s_time / n * 1e3:.2f} ms/row")


def _ridge_case(rep: Report, Z, y, Zv, yv, shape: str, device, sklearn_loop: bool = True,
                repeats: int = 2) -> None:
    """Our 13-alpha grid + refit vs one sklearn fit at our alpha (medians of ``repeats``
    alternated runs after a first run of each) and sklearn over the grid (one run)."""
    tag = f" [n={Z.shape[0]} d={Z.shape[1]}]"
    from sklearn.linear_model import RidgeClassifier as SkRidge

    from projector.ridge import RidgeClassifier

    rep.log(f"ridge: 13-alpha validation grid + refit vs scikit-learn, {shape}")
    ours = RidgeClassifier()
    with PeakMemory(device) as mem:  # the first run: memory, and the warm-up
        ours.fit(Z, y, Zv, yv)
    Zn, yn = Z.cpu().numpy(), y.cpu().numpy()
    Zvn, yvn = Zv.cpu().numpy(), yv.cpu().numpy()
    t_ours, t_one = alternate(lambda: RidgeClassifier().fit(Z, y, Zv, yv),
                              lambda: SkRidge(alpha=ours.alpha_).fit(Zn, yn), device, repeats, warm=False)
    rep.add("ridge", f"grid ({ours.grid_solver_}) + refit vs one sklearn fit" + tag, shape, t_ours / t_one,
            "ridge_grid_vs_sklearn_fit", t_ours, "sklearn RidgeClassifier, one fit at our alpha", t_one,
            mem.delta_bytes, note=f"solver={ours.solver_}, alpha={ours.alpha_:.3g}, grid solves {ours.solve_counts_}; "
                                  f"medians of {repeats} alternated runs")
    if not sklearn_loop:
        return
    same, raw, t_loop = [], [], 0.0
    classes = np.unique(yn)
    for a in ours.alphas_:
        dt, sk = timed(lambda a=a: SkRidge(alpha=float(a)).fit(Zn, yn), "cpu", 1)
        t_loop += dt
        pred = sk.predict(Zvn)
        mine = classes[ours.val_predictions_[float(a)].cpu().numpy()]
        differ = pred != mine
        raw.append(1.0 - float(np.mean(differ)))
        if differ.any():  # sklearn solves in float32: rows whose two best scores tie at that precision
            S = sk.decision_function(Zvn[differ])
            S = np.stack([-S, S], 1) if S.ndim == 1 else S
            top2 = np.sort(S, 1)[:, -2:]
            ties = (top2[:, 1] - top2[:, 0]) <= _TIE * np.abs(S).max(1)
            differ[np.flatnonzero(differ)[ties]] = False
        same.append(1.0 - float(np.mean(differ)))
    best = max(range(len(ours.alphas_)), key=lambda i: (ours.val_scores_[float(ours.alphas_[i])], ours.alphas_[i]))
    dt, _ = timed(lambda: SkRidge(alpha=float(ours.alphas_[best])).fit(np.vstack([Zn, Zvn]),
                                                                        np.concatenate([yn, yvn])), "cpu", 1)
    t_loop += dt
    rep.add("ridge", "sklearn over the grid + refit vs our grid" + tag, shape, t_loop / t_ours,
            "sklearn_loop_vs_ridge_grid", t_ours, "sklearn: 13 fits + refit", t_loop)
    worst = int(np.argmin(raw))
    rep.add("ridge", "same validation predictions as sklearn, every alpha" + tag, shape, min(same),
            "ridge_same_predictions",
            note=f"float32 ties (top-2 scores within {_TIE:g} relative) excused; raw agreement per alpha: "
                 f"{', '.join(f'{s:.4f}' for s in raw)} (lowest at alpha={ours.alphas_[worst]:.3g})")


def section_ridge(rep: Report, sz: Sizes, device) -> None:
    """The ridge case on synthetic |XR|^2 features (when the task does not provide real ones)."""
    from projector.projections import GaussianProjection

    n, nv, d = sz.ridge_n, sz.ridge_n_val, sz.ridge_d
    g = torch.Generator().manual_seed(2)
    y = torch.randint(0, 10, (n + nv,), generator=g)
    X = _binary(n + nv, 1024, seed=3)
    X[:, :40] |= (y[:, None] == torch.arange(40)[None, :] % 10).to(torch.uint8)  # a class signal
    Z = GaussianProjection(d, seed=0).fit_transform(X.to(device))
    _ridge_case(rep, Z[:n], y[:n].to(device), Z[n:], y[n:].to(device),
                f"n={n} n_val={nv} d={d} (synthetic |XR|^2)", device, repeats=sz.repeats)


def section_streaming(rep: Report, sz: Sizes, device) -> None:
    """Streamed Gram vs project-then-fit (time, memory, agreement); the STL-10 shape's memory."""
    from projector.projections import GaussianProjection
    from projector.ridge import RidgeClassifier
    from projector.streaming import StreamingRidgeClassifier

    n, m, k = sz.stream_n, sz.stream_m, sz.stream_k
    nv = n // 4
    rep.log(f"streaming: n={n} (+{nv} val) m={m} k={k}, streamed vs materialised")
    g = torch.Generator().manual_seed(4)
    y = torch.randint(0, 10, (n + nv,), generator=g).to(device)
    X = _binary(n + nv, m, seed=5, device=device)
    X[:, :40] |= (y[:, None] == torch.arange(40, device=device)[None, :] % 10).to(torch.uint8)
    with PeakMemory(device) as mem_s:
        t_s, st = timed(lambda: StreamingRidgeClassifier(GaussianProjection(k, seed=0)).fit(X[:n], y[:n], X[n:], y[n:]),
                        device, 1)
    Xt = _binary(200, m, seed=6, device=device)

    def materialised():
        proj = GaussianProjection(k, seed=0).fit(X[:n])
        return proj, RidgeClassifier().fit(proj.transform(X[:n]), y[:n], proj.transform(X[n:]), y[n:])

    with PeakMemory(device) as mem_m:
        t_m, (proj, ridge) = timed(materialised, device, 1)
    a, b = st.decision_function(Xt), ridge.decision_function(proj.transform(Xt))
    err = float((a - b).abs().max() / b.abs().max())
    shape = f"n={n} n_val={nv} m={m} k={k} solver={st.solver_}"
    rep.add("streaming", "streamed fit vs project + fit, time", shape, t_s / t_m, "streaming_time_ratio", t_s,
            "project + RidgeClassifier", t_m, mem_s.delta_bytes,
            note=f"materialised peak {mem_m.delta_bytes / 1e6:.0f} MB vs streamed {mem_s.delta_bytes / 1e6:.0f} MB; "
                 f"decision functions agree to {err:.1e} (relative)")
    if not sz.stl_stream:
        return
    n, m = sz.stl_n, sz.stl_m
    block = 512  # CPU's automatic block width for the dense projection
    k = sz.stl_blocks * block
    nv = n // 5
    rep.log(f"streaming: STL-10 shape n={n - nv} train + {nv} val, m={m}, {sz.stl_blocks} blocks of {block} "
            "(memory does not grow with k)")
    with PeakMemory(device) as mem:
        X = _binary(n, m, seed=7, device=device)
        y = torch.arange(n, device=device) % 10
        est = StreamingRidgeClassifier(GaussianProjection(k, seed=0), solver="dual",
                                       block_size=block, progress=True)
        t, _ = timed(lambda: est.fit(X[:n - nv], y[:n - nv], X[n - nv:], y[n - nv:]), device, 1)
        del X
    rep.add("streaming", "STL-10 shape streamed dual fit, peak memory", f"N={n} m={m} k={k} (of 120,000)",
            mem.delta_bytes / 1e9, "streaming_peak_gb", t, peak_bytes=mem.delta_bytes,
            note=f"{sz.stl_blocks} blocks of {block} instead of {math.ceil(120_000 / block)}; Gram {est.gram_bytes_ / 1e9:.2f} GB float32; "
                 "13-alpha grid; inputs included; absolute process peak "
                 f"{mem.peak_bytes / 1e9:.2f} GB")


def section_extraction(rep: Report, sz: Sizes, device, weights: str) -> None:
    """extract_features against the bare forward of the same extractor and batch."""
    from benchmarks.backbones import build_backbone, extract_features
    from benchmarks.data import IMAGENET_MEAN, IMAGENET_STD, to_float

    n, px, bs = sz.extract_n, sz.extract_px, min(128, sz.extract_n)
    rep.log(f"extraction: MobileNetV2 features.18, {n} images at {px} px, batch {bs}")
    ext = build_backbone("mobilenet_v2", "features.18", weights=weights, device=device)
    images = torch.randint(0, 256, (n, 3, px, px), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    extract_features(ext, images[:bs], IMAGENET_MEAN, IMAGENET_STD, batch_size=bs, device=device)  # warm-up
    dtype = next(ext.parameters()).dtype
    ready = [to_float(images[s:s + bs], IMAGENET_MEAN, IMAGENET_STD, device, dtype)
             .contiguous(memory_format=torch.channels_last) for s in range(0, n, bs)]

    def bare():
        with torch.inference_mode():
            for x in ready:
                ext(x)

    hot_s, ref_s = alternate(lambda: extract_features(ext, images, IMAGENET_MEAN, IMAGENET_STD, batch_size=bs,
                                                      device=device), bare, device, sz.extract_repeats)
    rep.add("extraction", "extract_features vs bare forward", f"n={n} {px}px batch={bs} channels-last",
            ref_s / hot_s, "extraction_vs_bare_forward", hot_s, "bare forward, same extractor and batch", ref_s,
            note=f"{n / hot_s:.1f} img/s extracting, {n / ref_s:.1f} img/s bare; "
                 f"medians of {sz.extract_repeats} alternated runs")
    nchw = [x.contiguous() for x in ready]
    flat = build_backbone("mobilenet_v2", "features.18", weights=weights, device=device)

    def bare_nchw():
        with torch.inference_mode():
            for x in nchw:
                flat(x)

    cl_s, nchw_s = alternate(bare, bare_nchw, device, sz.repeats)
    rep.add("extraction", "channels-last vs NCHW bare forward", f"n={n} {px}px batch={bs}", nchw_s / cl_s,
            "channels_last_speedup", cl_s, "NCHW bare forward", nchw_s)


def section_task(rep: Report, sz: Sizes, device, data_dir, weights: str, sklearn_loop: bool) -> bool:
    """CIFAR-10: gaussian vs structured at equal k, the exact kernel, dense k=120,000 time."""
    from benchmarks.backbones import build_backbone, extract_features
    from benchmarks.data import DatasetError, load_dataset
    from projector.encoders import SignEncoder
    from projector.kernel import KernelRidgeClassifier
    from projector.projections import GaussianProjection, make_projection
    from projector.ridge import RidgeClassifier

    try:
        data = load_dataset("cifar10", data_dir, image_size=sz.task_px, train_per_class=sz.task_per_class,
                            test_per_class=sz.task_test_per_class, progress=False)
    except DatasetError as err:
        rep.log(f"task: skipped, no CIFAR-10 ({err})")
        return False
    n_tr, n_val, n_te = len(data.train), len(data.val), len(data.test)
    rep.log(f"task: CIFAR-10 {n_tr} train / {n_val} val / {n_te} test at {sz.task_px} px; extracting features")
    ext = build_backbone("mobilenet_v2", "features.18", weights=weights, device=device)
    t_ext, feats = timed(lambda: [extract_features(ext, s.images, data.mean, data.std, device=device, progress=True,
                                                   desc=f"extract {name}")
                                  for name, s in (("train", data.train), ("val", data.val), ("test", data.test))],
                         device, 1)
    enc = SignEncoder().fit(feats[0])
    E = [enc.transform(f) for f in feats]
    del feats
    y, yv, yt = (s.labels.to(device) for s in (data.train, data.val, data.test))
    shape = f"CIFAR-10 {n_tr}/{n_val}/{n_te}, m={E[0].shape[1]} sign, {ext.weights}"
    rep.log(f"task: features {tuple(E[0].shape)} extracted in {t_ext:.1f}s ({(n_tr + n_val + n_te) / t_ext:.1f} img/s)")

    results = {}
    seeds = list(range(sz.task_seeds))
    for k in sz.task_ks:
        for name in ("gaussian", "structured"):
            accs, notes = [], []
            for seed in seeds:
                proj = make_projection(name, n_components=k, seed=seed, progress=True).fit(E[0])
                t_p, Z = timed(lambda: [proj.transform(e) for e in E], device, 1)
                ridge = RidgeClassifier()
                t_f, _ = timed(lambda: ridge.fit(Z[0], y, Z[1], yv), device, 1)
                accs.append(ridge.score(Z[2], yt))
                notes.append(f"seed {seed}: {accs[-1]:.4f} (project {t_p:.1f}s, fit {t_f:.1f}s, "
                             f"alpha={ridge.alpha_:.3g})")
                if seed == 0:
                    t_seed0 = t_p + t_f
                    fit_note = f"{ridge.grid_solver_}, {ridge.solver_}"
                if name == "gaussian" and seed == 0:  # the ridge against scikit-learn on these features
                    _ridge_case(rep, Z[0], y, Z[1], yv, f"task features: n={n_tr} n_val={n_val} d={k}", device,
                                sklearn_loop, repeats=sz.repeats)
                del Z
            results[(name, k)] = float(np.mean(accs))
            rep.add("task", f"{name} k={k}", shape, results[(name, k)] * 100, "test_acc_points", t_seed0,
                    test_acc=results[(name, k)],
                    note=f"mean of {len(seeds)} seeds, std {np.std(accs) * 100:.2f} points; time of seed 0; "
                         f"ridge {fit_note}; " + "; ".join(notes))
        gap = abs(results[("structured", k)] - results[("gaussian", k)]) * 100
        rep.add("task", f"structured vs gaussian accuracy, k={k}", shape, gap, "structured_acc_gap_points",
                note=f"means over {len(seeds)} seeds: structured {results[('structured', k)]:.4f}, "
                     f"gaussian {results[('gaussian', k)]:.4f}")

    rep.log("task: exact kernel (k = infinity)")
    kr = KernelRidgeClassifier()
    with PeakMemory(device) as mem:
        t_k, _ = timed(lambda: kr.fit(E[0], y, E[1], yv), device, 1)
    acc_k = kr.score(E[2], yt)
    best_name, best_k = max(results, key=results.get)
    rep.add("task", "exact kernel (k = infinity)", shape, acc_k * 100, "test_acc_points", t_k, peak_bytes=mem.delta_bytes,
            test_acc=acc_k, note=f"grid {kr.grid_solver_}, alpha={kr.alpha_:.3g}, val={kr.val_scores_[kr.alpha_]:.4f}")
    rep.add("task", "kernel vs best finite k, accuracy", shape, (acc_k - results[(best_name, best_k)]) * 100,
            "kernel_minus_best_finite_points", note=f"best finite: {best_name} k={best_k} "
                                                    f"{results[(best_name, best_k)]:.4f} (seed mean); "
                                                    f"kernel {acc_k:.4f} (deterministic)")
    # dense k=120,000: its projection of the train + val + test rows alone, extrapolated from a few blocks
    kd = sz.task_dense_k
    g = GaussianProjection(kd, seed=0).fit(E[0])
    E_all = torch.cat(E)

    def some_blocks():
        it = g.iter_blocks(E_all)
        cols = [c for c, _ in (next(it) for _ in range(sz.task_dense_blocks))]
        it.close()
        return cols

    t_part, cols = timed(some_blocks, device, 1)
    width = cols[0].stop - cols[0].start
    t_dense = t_part / len(cols) * math.ceil(kd / width)
    rep.add("task", f"kernel fit vs dense k={kd} (projection alone)", shape, t_k / t_dense,
            "kernel_time_vs_dense_120k", t_k, f"dense k={kd}: projection of {E_all.shape[0]} rows, "
                                              f"{len(cols)} of {math.ceil(kd / width)} blocks timed, extrapolated",
            t_dense, note="the dense side omits its ridge fit: a lower bound of its time")
    return True


# --- the command ---

def run_perf(args: argparse.Namespace) -> int:
    import warnings

    from scipy.linalg import LinAlgWarning

    threads, limiter = torch.get_num_threads(), None
    if args.threads:
        torch.set_num_threads(args.threads)
        try:  # numpy/scipy/scikit-learn's BLAS on as many threads as torch
            from threadpoolctl import threadpool_limits

            limiter = threadpool_limits(args.threads)
        except ImportError:  # pragma: no cover
            pass
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", LinAlgWarning)  # sklearn's solve at the grid's tiniest alphas
            return _run_perf(args)
    finally:
        torch.set_num_threads(threads)
        if limiter is not None:
            limiter.restore_original_limits()


def _run_perf(args: argparse.Namespace) -> int:
    from benchmarks.backbones import resolve_weights
    from benchmarks.results import atomic_write_text, write_metadata
    from benchmarks.runner import resolve_device

    device = resolve_device(args.device)
    mode = "quick" if args.quick else "full" if args.full else "default"
    sz = QUICK if args.quick else FULL if args.full else Sizes()
    if args.no_task:
        sz = replace(sz, task=False)
    sections = _sections(args.sections)
    out = Path(args.out)
    run_id = uuid.uuid4().hex[:12]
    write_metadata(out, run_id, {"arguments": vars(args), "mode": mode, "sizes": asdict(sz), "device": str(device)})
    rows_so_far = out / "runs" / run_id / "perf.csv"
    weights = args.weights
    try:
        resolve_weights("mobilenet_v2", weights)
    except Exception:  # noqa: BLE001 - no pretrained weights here: random ones, said in the rows
        weights = "none"
    rep = Report(device, mode, path=rows_so_far)
    rep.log(f"gradfree perf ({mode}) on {device}, {torch.get_num_threads()} threads; writing {out}")
    try:
        task_done = False
        if "task" in sections and sz.task:
            task_done = section_task(rep, sz, device, args.data_dir, weights, sklearn_loop=True)
        if "projection" in sections:
            section_projection(rep, sz, device)
        if "structured" in sections:
            section_structured(rep, sz, device)
        if "ridge" in sections and not task_done:
            section_ridge(rep, sz, device)
        if "streaming" in sections:
            section_streaming(rep, sz, device)
        if "extraction" in sections:
            section_extraction(rep, sz, device, weights)
    except KeyboardInterrupt:
        print(f"\ninterrupted: the {len(rep.rows)} rows measured so far are in {rows_so_far}; "
              f"{out / 'perf.csv'} is left as it was.", file=sys.stderr)
        return 130
    if not rep.rows:
        print(f"gradfree perf: nothing was measured (sections {sorted(sections)}, task "
              f"{'on' if sz.task else 'off'}); {out / 'perf.csv'} is left as it was.", file=sys.stderr)
        return 2
    import pandas as pd

    df = pd.DataFrame(rep.rows)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "perf.csv", df.to_csv(index=False))
    plot_perf(df, out / "perf.png")
    print_table(df)
    print(f"wrote {out / 'perf.csv'}, {out / 'perf.png'}, {out / 'runs' / run_id / 'metadata.json'}")
    return 0


SECTIONS = ("task", "projection", "structured", "ridge", "streaming", "extraction")


def _sections(arg: str | None) -> set[str]:
    """--sections as a set, every name checked before anything runs or is written."""
    if not arg:
        return set(SECTIONS)
    asked = [name.strip() for name in arg.split(",") if name.strip()]
    unknown = [name for name in asked if name not in SECTIONS]
    if unknown or not asked:
        raise ValueError(f"--sections {arg!r}: unknown section(s) {', '.join(unknown) or '(none given)'}; "
                         f"give a comma-separated subset of {', '.join(SECTIONS)}.")
    return set(asked)


def print_table(df) -> None:
    import pandas as pd

    cols = ["section", "case", "metric", "value", "target", "met", "time_s", "ref_time_s", "peak_memory_bytes", "note"]
    show = df[[c for c in cols if c in df]].copy()
    show["peak_memory_bytes"] = pd.to_numeric(show["peak_memory_bytes"], errors="coerce") / 1e6
    show = show.rename(columns={"peak_memory_bytes": "peak_MB"})
    with pd.option_context("display.width", 250, "display.max_columns", 20, "display.max_colwidth", 70,
                           "display.float_format", "{:.4g}".format):
        print(show.to_string(index=False))


def plot_perf(df, path: Path) -> None:
    """One bar per targeted figure, as a fraction of its target (>= 1: met), coloured by met."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import textwrap

    rows = df[df["target"].fillna("").astype(str) != ""]
    fig, ax = plt.subplots(figsize=(12, 0.55 * max(len(rows), 1) + 1.2))
    labels, values, colors, texts = [], [], [], []
    for _, r in rows.iterrows():
        cmp, thr = TARGETS[r["metric"]][:2]
        v = float(r["value"])
        if cmp == ">=":
            score = v / thr if thr > 0 else (1.0 + v if v >= 0 else 1.0 / (1.0 - v))
        else:
            score = thr / v if v > 0 else 10.0
        labels.append("\n".join(textwrap.wrap(f"{r['section']}: {r['case']}", 60)))
        values.append(min(score, 10.0))
        colors.append("tab:green" if str(r["met"]) == "True" else "tab:red")  # a bool, or read from perf.csv
        texts.append(f"{v:.3g} ({r['target']})")
    ax.barh(range(len(values)), values, color=colors)
    for i, (v, t) in enumerate(zip(values, texts)):
        ax.text(v, i, " " + t, va="center", fontsize=7)
    ax.axvline(1.0, color="k", lw=1)
    ax.set_yticks(range(len(values)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("figure / target (>= 1 meets the target; capped at 10)")
    ax.set_title(f"gradfree perf ({df['mode'].iloc[0] if len(df) else ''}, {df['device'].iloc[0] if len(df) else ''})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def add_commands(sub) -> None:
    p = sub.add_parser(
        "perf", help="performance report: every hot path as a ratio to a same-shape reference, in one process",
        description="Measure the projection, structured projection, exact kernel, ridge, streaming fit and "
                    "feature extraction against same-shape references timed in the same run; print a table and "
                    "write OUT/perf.csv, OUT/perf.png and OUT/runs/<id>/metadata.json. Rows are also written to "
                    "OUT/runs/<id>/perf.csv as they are measured: an interrupted run keeps them, and OUT/perf.csv is "
                    "replaced only by a finished one.")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="tiny shapes, < 1 minute (a smoke test)")
    g.add_argument("--full", action="store_true",
                   help="the seeds' shapes where memory allows (m = 81,536 projection, the STL-10 streaming shape)")
    p.add_argument("--sections", default=None,
                   help=f"comma-separated subset of: {', '.join(SECTIONS)} [all]")
    p.add_argument("--no-task", action="store_true", help="skip the CIFAR-10 accuracy section")
    p.add_argument("--data-dir", default=None,
                   help="CIFAR-10 image folders (train/<class>, test/<class>) for the task section "
                        "[.cache/cifar10-jpg if present, else torchvision's copy]")
    p.add_argument("--weights", default="DEFAULT", help="MobileNetV2 weights (DEFAULT, or none) [DEFAULT]")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto [auto]")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch and for numpy/scipy/scikit-learn's BLAS (the references) "
                        "[the libraries' defaults]")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output folder [{DEFAULT_OUT}]")
    p.set_defaults(func=cmd_perf)


def cmd_perf(args: argparse.Namespace) -> int:
    if args.data_dir is None:
        local = Path(__file__).resolve().parent.parent / ".cache" / "cifar10-jpg"
        if (local / "train").is_dir():
            args.data_dir = str(local)
    return run_perf(args)
