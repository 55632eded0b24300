"""``perf --sections ridge``: the 13-alpha validation grid + refit against one
scikit-learn ``RidgeClassifier`` fit at the chosen alpha and against scikit-learn looping
over the grid (+ its refit), with the validation predictions compared alpha by alpha.

:func:`ridge_case` is the measurement; :func:`section_ridge` runs it on synthetic
|XR|^2 features, the task section on real ones.
"""

from __future__ import annotations

import numpy as np
import torch

from benchmarks.perf.common import Report, Sizes, alternate, binary_matrix, timed
from benchmarks.core.timing import PeakMemory

_TIE = 1e-5  # relative score gap below which sklearn's float32 argmax is a tie


def ridge_case(rep: Report, Z, y, Zv, yv, shape: str, device, sklearn_loop: bool = True,
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
    X = binary_matrix(n + nv, 1024, seed=3)
    X[:, :40] |= (y[:, None] == torch.arange(40)[None, :] % 10).to(torch.uint8)  # a class signal
    Z = GaussianProjection(d, seed=0).fit_transform(X.to(device))
    ridge_case(rep, Z[:n], y[:n].to(device), Z[n:], y[n:].to(device),
                f"n={n} n_val={nv} d={d} (synthetic |XR|^2)", device, repeats=sz.repeats)
