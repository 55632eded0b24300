"""``perf --sections kernel_full``: the exact kernel on all of CIFAR-10 (issue 22, item 1).

MobileNetV2 ``features.18`` sign features at 96 px (11,520), 45,000 training images, 5,000 validation
images choosing alpha from the 13-value grid (``--val-fraction 0.1``), no refit on train + validation,
all 10,000 test images scored once: the fit (one float32 Gram, conjugate gradients past
``projector._pcg.CG_FROM_ROWS`` rows) and the test scoring against 15 minutes, the process's peak
memory (its whole resident set, the decoded images included) against 16 GB. The extraction is timed
and reported apart, off the target. ``--full`` runs that shape; the other modes run the same code on a
few images per class, untargeted (``targeted=False``): a smoke test, not a figure.
"""

from __future__ import annotations

from benchmarks.core.data import DatasetError, load_dataset
from benchmarks.core.timing import PeakMemory
from benchmarks.perf.common import Report, Sizes, timed


def section_kernel_full(rep: Report, sz: Sizes, device, data_dir, weights: str) -> bool:
    """Measure the full-size kernel (or its reduced shape); False when CIFAR-10 is not to be had."""
    from benchmarks.core.backbones import build_backbone, extract_features
    from projector.encoders import SignEncoder
    from projector.kernel import KernelRidgeClassifier

    per_class = sz.kfull_per_class or None  # 0: every image
    try:
        data = load_dataset("cifar10", data_dir, image_size=96, train_per_class=per_class,
                            test_per_class=sz.kfull_test_per_class or None, val_fraction=0.1, progress=True)
    except DatasetError as err:
        rep.log(f"kernel_full: skipped, no CIFAR-10 ({err})")
        return False
    targeted = per_class is None and sz.kfull_test_per_class == 0
    n_tr, n_val, n_te = len(data.train), len(data.val), len(data.test)
    with PeakMemory(device) as mem:
        ext = build_backbone("mobilenet_v2", "features.18", weights=weights, device=device)
        t_ext, feats = timed(lambda: [extract_features(ext, s.images, data.mean, data.std, device=device,
                                                       progress=True, desc=f"extract {name}")
                                      for name, s in (("train", data.train), ("val", data.val),
                                                      ("test", data.test))], device, 1)
        encoder = SignEncoder().fit(feats[0])
        E = [encoder.transform(f) for f in feats]
        del feats
        y, yv, yt = (s.labels.to(device) for s in (data.train, data.val, data.test))
        model = KernelRidgeClassifier(refit=False)
        t_fit, _ = timed(lambda: model.fit(E[0], y, E[1], yv), device, 1)
        t_score, acc = timed(lambda: model.score(E[2], yt), device, 1)
    shape = f"CIFAR-10 {n_tr} + {n_val} val / {n_te} test, m={E[0].shape[1]} sign, {ext.weights}, no refit"
    info = model.solver_info_
    solver = (f"{info['solver']}, {info.get('iterations', '')} products with the Gram, gram {model.gram_path_}, "
              f"alpha {model.alpha_:.3g} (val {model.val_scores_[model.alpha_]:.4f}), left out of the choice: "
              f"{sorted(model.diverged_) or 'none'}")
    rep.add("kernel_full", "fit + alpha grid + test scoring", shape, (t_fit + t_score) / 60,
            "kernel_full_minutes", t_fit + t_score, test_acc=acc, targeted=targeted,
            note=f"fit {t_fit:.0f} s, test scoring {t_score:.0f} s; extraction {t_ext:.0f} s apart; {solver}")
    rep.add("kernel_full", "peak memory, the process's", shape, mem.peak_bytes / 1e9, "kernel_full_peak_gb",
            peak_bytes=mem.peak_bytes, targeted=targeted, note=f"{mem.method}; the decoded images included")
    return True
