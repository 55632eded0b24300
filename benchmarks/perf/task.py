"""``perf --sections task``: the CIFAR-10 reference task (MobileNetV2 features.18 at 96 px,
500 train / 200 test images per class, sign encoding).

``gaussian`` and ``structured`` at equal k, each the mean test accuracy over 3 seeds of
R (one seed's random-feature noise is ~0.3 points at k = 10,000, as large as the gap
measured); the exact kernel (k = infinity, deterministic), alpha always chosen on the
validation split; and the kernel's time against dense k = 120,000 (its projection alone,
extrapolated from a few blocks: a lower bound of its total). The ridge rows of
:mod:`benchmarks.perf.ridge` are also measured on these features.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from benchmarks.core.data import DatasetError, load_dataset
from benchmarks.perf.common import Report, Sizes, timed
from benchmarks.perf.ridge import ridge_case
from benchmarks.core.timing import PeakMemory

def section_task(rep: Report, sz: Sizes, device, data_dir, weights: str, sklearn_loop: bool) -> bool:
    """CIFAR-10: gaussian vs structured at equal k, the exact kernel, dense k=120,000 time."""
    from benchmarks.core.backbones import build_backbone, extract_features
    from projector.encoders import SignEncoder
    from projector.kernel import KernelRidgeClassifier
    from projector.projections import GaussianProjection

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

    results = _finite_k(rep, sz, E, (y, yv, yt), shape, device, sklearn_loop, n_tr, n_val)

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


def _finite_k(rep: Report, sz: Sizes, E, labels, shape: str, device, sklearn_loop: bool, n_tr: int,
              n_val: int) -> dict:
    """Gaussian and structured features at each k of ``sz.task_ks``, seeds averaged: (name, k) -> accuracy."""
    from projector.projections import make_projection
    from projector.ridge import RidgeClassifier

    y, yv, yt = labels
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
                    ridge_case(rep, Z[0], y, Z[1], yv, f"task features: n={n_tr} n_val={n_val} d={k}", device,
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
    return results
