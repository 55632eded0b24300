"""The method under test: cut backbone -> encoder -> random projection -> ridge.

No gradients and one pass over the data: the pretrained backbone, truncated at the cut, extracts the
features of every image once; an encoder binarises them (``sign`` by default); a random projection
``Y = |X R|^2`` maps them to ``n_components`` features; a ridge classifier is fitted, its alpha chosen on
the validation split, then refitted on train + validation (``refit=False``: kept as fitted on the training
images alone, the images a backprop trainer fits). ``projection="none"`` is the control: the ridge sees
the encoded (or, with ``encoder="none"``, the raw float) features directly.

``classifier="logistic"`` replaces the ridge by the control of :mod:`benchmarks.methods.logistic`
(scikit-learn's L-BFGS logistic regression, its ``C`` chosen on validation and reported in the
``alpha`` column) on the same features.

``projection="structured"`` uses Hadamard-based features with the statistics of
``|X R|^2`` (``projector.structured``). ``projection="kernel"`` is the k = infinity
end of the method: kernel ridge with the exact kernel of ``|X R|^2`` features
(``projector.kernel``), no projection at all; its ``n_components`` is reported
as ``-1`` (infinity; ``0`` already means "no projection"). With
``streaming=True`` (or ``None`` when the ``(n, k)`` feature matrices would not fit
comfortably in memory) the ridge is fitted from a Gram accumulated block by block
(``projector.streaming``): neither R nor the features are ever held, and the
projection runs inside ``fit_s`` (``project_s`` stays 0).

Counted phases (``train_total_s``): ``extract_s`` (train + validation images),
``encode_s``, ``project_s``, ``fit_s``. Not counted: ``warmup_s`` (one
batch through the backbone), ``eval_s`` (train and validation accuracy) and
``predict_s`` (test images through the whole pipeline).

Features or decision values that are not finite (an extraction that overflowed, a fit that
blew up) raise :class:`NonFiniteFit`: the runner records the cell as failed with that reason,
never an accuracy scored on NaNs.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from benchmarks.core.backbones import build_backbone, extract_features, quantize_extractor
from benchmarks.core.flops import PRECISION_BYTES, backbone_shape
from benchmarks.methods.costs import kernel_solve_flops, logistic_flops, ridge_flops
from benchmarks.methods.logistic import DEFAULT_CS, NonFiniteFit
from benchmarks.methods.projections import KERNEL, projection_class, projection_names
from benchmarks.core.protocol import CellShape, RunContext
from projector._base import auto_alphas
from projector._pcg import CG_FROM_ROWS, direct_bytes, iterative_bytes


def _require_finite(x: torch.Tensor, what: str, fix) -> None:
    """Refuse ``x`` if it holds a NaN or an infinity: ``what`` names it, ``fix`` (a string, or a
    callable making it, only called then) says what to do."""
    bad = int((~torch.isfinite(x)).sum()) if x.is_floating_point() else 0
    if bad:
        fix = fix() if callable(fix) else fix
        raise NonFiniteFit(f"{what} are not finite: {bad} of {x.numel()} values are NaN or infinite. {fix}")


def _check_features(feats: torch.Tensor, split: str, ctx: RunContext, cut: str) -> None:
    """Refuse backbone features holding a NaN or an infinity (the extraction overflowed)."""
    fix = ("The extraction overflowed: extract in fp32 (--precision fp32)." if ctx.precision != "fp32" else
           "The backbone's activations overflowed: cut it elsewhere or use another backbone.")
    _require_finite(feats, f"the {split} features of {ctx.backbone} at {cut} ({ctx.precision})", fix)


def _finite_accuracy(classifier, X, y: torch.Tensor, split: str) -> float:
    """Accuracy of ``classifier`` on ``(X, y)`` (:func:`_finite_predictions`)."""
    pred = _finite_predictions(classifier, X, split)
    return float((pred == y.to(pred.device)).double().mean()) if len(y) else float("nan")


def _finite_predictions(classifier, X, split: str) -> torch.Tensor:
    """The labels ``classifier`` predicts for ``X`` from its decision values, which must be finite.

    ``X: (n, n_features)``; the prediction is the ridge's (and scikit-learn's): the sign of a
    single column for two classes, else the largest score.
    """
    S = torch.as_tensor(classifier.decision_function(X))
    _require_finite(S, f"the decision values on the {split} split (penalty {classifier.alpha_:g})",
                    lambda: f"The fit blew up on features up to {float(torch.as_tensor(X).abs().max()):.3g} "
                            "in magnitude: use larger penalties (--alphas), or features of a smaller scale "
                            "(e.g. --encoder sign).")
    S = S.reshape(len(S), -1)
    pred = (S[:, 0] > 0).long() if S.shape[1] == 1 else S.argmax(dim=1)
    classes = torch.as_tensor(classifier.classes_, device=S.device)
    return classes[pred]


@dataclass(frozen=True)
class RandomFeaturesConfig:
    """The settings of :class:`RandomFeatures`. An unknown encoder, classifier or projection, a logistic
    classifier on the exact kernel or a streamed fit, or a size or alpha out of range is a ``ValueError``."""

    encoder: str = "sign"  # sign | threshold | none
    projection: str = "gaussian"  # gaussian | structured | opu | linear | none | a plugin's | kernel (k = infinity)
    n_components: int = 10_000  # random features k (kernel: ignored, reported as -1 = infinity)
    alphas: tuple[float, ...] | None = None  # None: 13-value log grid scaled to the Gram's mean eigenvalue
    pool_size: int = 0  # >0: average-pool feature maps to pool_size x pool_size before encoding
    block_size: int | None = None  # columns of R per block; None: chosen from free memory
    streaming: bool | None = None  # ridge from a streamed Gram; None: when (n, k) float32 features would not fit
    classifier: str = "ridge"  # ridge | logistic (the control: scikit-learn L-BFGS, C chosen on validation)
    # after choosing alpha (or C) on validation, refit on train + validation (True), or keep the model fitted on
    # the training images alone (False: what a backprop trainer keeps, so both sides fit the same images)
    refit: bool = True

    def __post_init__(self):
        for name, allowed in (("encoder", ENCODERS), ("classifier", CLASSIFIERS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; choose one of: {', '.join(allowed)}")
        if self.projection != KERNEL:
            projection_class(self.projection)  # a ValueError naming the choices
        if self.classifier == "logistic" and (self.projection == KERNEL or self.streaming):
            raise ValueError("classifier logistic needs the features themselves: not the exact kernel, "
                             "nor a streamed fit (use --projector none/gaussian/... without streaming).")
        if self.pool_size < 0:
            raise ValueError(f"pool_size must be >= 0, got {self.pool_size}")
        if self.block_size is not None and self.block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {self.block_size}")
        if self.alphas is not None and (not self.alphas or not all(math.isfinite(a) and a > 0 for a in self.alphas)):
            raise ValueError(f"alphas must be positive, finite numbers, got {self.alphas}")


ENCODERS = ("sign", "threshold", "none")
CLASSIFIERS = ("ridge", "logistic")
KERNEL_N_COMPONENTS = -1  # n_components reported for projection="kernel": infinitely many features
_STREAM_MEMORY_FRACTION = 0.25  # stream when train + val + test features exceed this share of free memory


def _streamable(projection: str) -> bool:
    return projection != KERNEL and projection_class(projection).streamable


def use_streaming(cfg: RandomFeaturesConfig, n_rows: int, device, free: int | None = None) -> bool:
    """Whether the ridge is fitted by streaming for ``n_rows`` (train + validation + test) rows, with ``free``
    bytes of memory (default: what ``device`` has free now)."""
    if not _streamable(cfg.projection):
        if cfg.streaming:
            streamable = [n for n in projection_names() if n != KERNEL and _streamable(n)]
            raise ValueError(f"streaming=True needs a projection streamed block by block ({', '.join(streamable)}), "
                             f"not {cfg.projection!r}.")
        return False
    if cfg.streaming is not None:
        return bool(cfg.streaming)
    from projector.projections import available_memory_bytes
    from projector.streaming import feature_matrix_bytes

    free = available_memory_bytes(device) if free is None else free
    return feature_matrix_bytes(n_rows, cfg.n_components) > _STREAM_MEMORY_FRACTION * free


class RandomFeatures:
    """The method under test (see the module): backbone features, encoded, randomly projected, then a ridge
    (or logistic) classifier."""

    name = "random-features"
    Config = RandomFeaturesConfig
    uses_backbone = True
    is_backprop = False

    @classmethod
    def label(cls, config: RandomFeaturesConfig) -> str:
        enc, proj = config.encoder, config.projection
        if proj == "none":
            what = "logistic" if config.classifier == "logistic" else "ridge"
            return f"{what} on {'raw' if enc == 'none' else enc} features"
        if proj == KERNEL:
            return f"{enc}+kernel k=inf"
        suffix = " + logistic" if config.classifier == "logistic" else ""
        return f"{enc}+{proj} k={config.n_components}{suffix}"

    @classmethod
    def flops(cls, config: RandomFeaturesConfig, shape: CellShape) -> tuple[dict[str, float], dict]:
        dim, fwd, params = backbone_shape(shape.backbone, shape.cut, shape.image_size, int(config.pool_size or 0))
        proj = config.projection
        n_fit = shape.n_train + shape.n_val
        if proj == KERNEL:  # one Gram of the train + validation rows, then the solves
            k, fit = KERNEL_N_COMPONENTS, 2.0 * n_fit**2 * dim + kernel_solve_flops(n_fit, shape.n_train,
                                                                                     shape.n_classes)
        else:
            k = dim if proj == "none" else int(config.n_components)
            n, grid, dev = shape.n_train, len(config.alphas or ()), shape.device
            fit = (logistic_flops(n, n_fit if config.refit else 0, k, shape.n_classes, grid or len(DEFAULT_CS))
                   if config.classifier == "logistic" else ridge_flops(n, k, grid or len(auto_alphas(1.0)), dev))
        per_mac = 0 if proj == KERNEL else projection_class(proj).flops_per_mac
        flops = {"extract": float(fwd * n_fit), "fit": fit, "project": float(per_mac * n_fit * dim * max(k, 0))}
        return flops, {"feature_dim": dim, "k": k, "params": params}

    @classmethod
    def memory_bytes(cls, config: RandomFeaturesConfig, shape: CellShape) -> int:
        """The largest set of live arrays: images, features, then the projected features and the ridge's
        Grams or the logistic control's float64 features and their standardised copy (or the streamed Gram
        with its (k,) mean and (k, classes) weights, or the exact kernel's (N, N) Gram in float32 and float64
        -- past ``CG_FROM_ROWS`` rows one float32 (N, N) Gram and the conjugate gradients' preconditioner)."""
        _, info = cls.flops(config, shape)
        dim, params = info["feature_dim"], info["params"]
        n_fit, n, n_all = shape.n_train + shape.n_val, shape.n_train, shape.n_images
        base = n_all * 3 * shape.image_size**2 + params * 4
        features = n_all * dim * PRECISION_BYTES.get(shape.precision, 4) + n_fit * dim * 4
        proj = config.projection
        if proj == KERNEL:  # the path KernelRidgeClassifier takes by size (grid_solver "auto")
            solve = n_fit * dim + (iterative_bytes(n_fit, n, 13 * shape.n_classes) if n_fit >= CG_FROM_ROWS
                                   else direct_bytes(n_fit, n))
        else:
            k = dim if proj == "none" else int(config.n_components)
            m = min(n, k)
            solve = n_all * k * 4 + (2 * n_fit * k * 8 if config.classifier == "logistic" else 2 * m**2 * 8)
            if _streamable(proj) and config.streaming is not False:
                # The Gram, the grid's solve, a chunk of rows, and what grows with k alone: the
                # training mean (k,) and the primal weights (k, classes), both float64. The path is the
                # one a run takes with the shape's free memory (unknown: the smaller of the two).
                streamed = (min(n_fit, k) ** 2 * 4 + 2 * m**2 * 8 + (256 << 20)
                            + k * (shape.n_classes + 1) * 8)
                if shape.free_bytes is None and config.streaming is None:
                    solve = min(solve, streamed)
                elif use_streaming(config, n_all, shape.device, shape.free_bytes):
                    solve = streamed
        return int(base + max(features, solve))

    def __init__(self, config: RandomFeaturesConfig | None = None):
        self.config = config or RandomFeaturesConfig()

    # The pipeline after the backbone, on a feature matrix. Kept separate so the
    # runner's feature cache can feed it without touching the backbone.
    def _features(self, ctx: RunContext, ext, split: str) -> torch.Tensor:
        data = ctx.data
        phase = "extract_s" if split != "test" else "predict_s"
        key = None
        if ctx.feature_cache is not None:
            key = ctx.feature_cache.key(data, ext, split, self.config.pool_size)
            hit = ctx.feature_cache.get(key, ctx.device)
            if hit is not None:
                feats, seconds = hit
                _check_features(feats, split, ctx, ext.cut)
                # Charge what the extraction cost when it ran, so cells stay comparable.
                ctx.clock.charge(phase, seconds, counted=split != "test")
                return feats
        with ctx.clock.phase(phase, counted=split != "test") as span:
            feats = extract_features(ext, data.split(split).images, data.mean, data.std,
                                     batch_size=ctx.batch_size, pool_size=self.config.pool_size,
                                     device=ctx.device, progress=ctx.progress, desc=f"extract {split}")
        _check_features(feats, split, ctx, ext.cut)
        if key is not None:
            ctx.feature_cache.put(key, feats, span.seconds)
        return feats

    def _extractor(self, ctx: RunContext):
        """The backbone cut at the cell's cut (quantized for int8), warmed up by one batch off the clock."""
        ext = build_backbone(ctx.backbone, ctx.cut, ctx.weights, ctx.precision, ctx.device)
        if ctx.precision == "int8":
            # Post-training static quantization, calibrated on training images only (never validation
            # or test); counted with the extraction it serves.
            with ctx.clock.phase("extract_s"):
                ext = quantize_extractor(ext, ctx.data.train.images, ctx.data.mean, ctx.data.std)
        with ctx.clock.phase("warmup_s", counted=False):
            extract_features(ext, ctx.data.train.images[: min(8, len(ctx.data.train))],
                             ctx.data.mean, ctx.data.std, device=ctx.device)
        return ext

    def run(self, ctx: RunContext) -> dict:
        from projector.encoders import make_encoder

        cfg, clock = self.config, ctx.clock
        ext = self._extractor(ctx)
        # (each extraction is its own extract_s phase inside _features: reading or writing the feature
        # cache is the harness's work, never the method's, so it stays off the clock)
        f_train = self._features(ctx, ext, "train")
        f_val = self._features(ctx, ext, "val")
        feature_dim = int(f_train.shape[1])
        encoder = make_encoder(cfg.encoder)
        with clock.phase("encode_s"):
            e_train = encoder.fit(f_train).transform(f_train)
            e_val = encoder.transform(f_val)
        del f_train, f_val

        n_rows = len(ctx.data.train) + len(ctx.data.val) + len(ctx.data.test)
        streaming = use_streaming(cfg, n_rows, ctx.device)
        path = _kernel if cfg.projection == KERNEL else _streamed if streaming else _projected
        model, x_train, x_val, features_of, projection = path(cfg, ctx, e_train, e_val)
        del e_train, e_val

        y_train, y_val = ctx.data.train.labels.to(ctx.device), ctx.data.val.labels.to(ctx.device)
        with clock.phase("fit_s"):
            # No validation rows (val_fraction 0, one fixed alpha): nothing to select on.
            model.fit(x_train, y_train, **({"X_val": x_val, "y_val": y_val} if len(y_val) else {}))
        with clock.phase("eval_s", counted=False):
            train_acc = _finite_accuracy(model, x_train, y_train, "train")
        del x_train, x_val
        with clock.phase("predict_s", counted=False):
            x_test = features_of(encoder.transform(self._features(ctx, ext, "test")))
            test_pred = _finite_predictions(model, x_test, "test").cpu()
            test_acc = float((test_pred == ctx.data.test.labels).double().mean()) if len(test_pred) else float("nan")
        n_out = (KERNEL_N_COMPONENTS if cfg.projection == KERNEL else int(projection.n_components) if streaming
                 else int(x_test.shape[1]))
        return {"train_acc": train_acc, "test_acc": test_acc, "test_pred": test_pred,  # kept beside results.csv
                "streaming": streaming, "feature_dim": feature_dim,
                **_model_columns(cfg, model, projection, ext, n_out)}


# --- the three ways from encoded features to a fitted model: (model, x_train, x_val, features_of, projection)

def _kernel(cfg: RandomFeaturesConfig, ctx: RunContext, e_train, e_val):
    """k = infinity: kernel ridge on the encoded rows, no projection (the Gram and the solves in fit_s)."""
    from projector.kernel import KernelRidgeClassifier

    return KernelRidgeClassifier(alphas=cfg.alphas, refit=cfg.refit), e_train, e_val, (lambda e: e), None


def _make_projection(cfg: RandomFeaturesConfig, ctx: RunContext):
    from projector.projections import make_projection

    cls = projection_class(cfg.projection)
    kwargs = {"block_size": cfg.block_size} if cfg.block_size is not None and cls.takes_block_size else {}
    return make_projection(cls, n_components=cfg.n_components, seed=ctx.seed, **kwargs)


def _streamed(cfg: RandomFeaturesConfig, ctx: RunContext, e_train, e_val):
    """The ridge from a Gram accumulated block by block: the projection runs inside fit_s."""
    from projector.streaming import StreamingRidgeClassifier

    projection = _make_projection(cfg, ctx)
    model = StreamingRidgeClassifier(projection, alphas=cfg.alphas, refit=cfg.refit, progress=ctx.progress)
    return model, e_train, e_val, (lambda e: e), projection


def _projected(cfg: RandomFeaturesConfig, ctx: RunContext, e_train, e_val):
    """The random features computed (project_s), then a ridge (or the logistic control) on them."""
    from benchmarks.methods.logistic import LogisticControl
    from projector.ridge import RidgeClassifier

    projection = _make_projection(cfg, ctx)
    with ctx.clock.phase("project_s"):
        x_train = projection.fit(e_train).transform(e_train)
        x_val = projection.transform(e_val)
    for split, x in (("train", x_train), ("validation", x_val)):
        _require_finite(x, f"the {split} random features ({cfg.projection}, k={cfg.n_components})",
                        lambda: f"The projection overflowed float32: its inputs (up to "
                                f"{float(e_train.abs().max()):.3g}) are too large; use --encoder sign.")
    model = LogisticControl(Cs=cfg.alphas, refit=cfg.refit) if cfg.classifier == "logistic" else \
        RidgeClassifier(alphas=cfg.alphas, refit=cfg.refit)
    return model, x_train, x_val, projection.transform, projection


def _model_columns(cfg: RandomFeaturesConfig, model, projection, ext, n_out: int) -> dict:
    """The row's columns about the fitted model: selection, solver, sizes."""
    val_scores = getattr(model, "val_scores_", None) or {}
    # penalties left out of the choice because their fit was not finite or did not converge (value -> why)
    diverged = {"grid_diverged": {f"{a:.6g}": why for a, why in model.diverged_.items()}} \
        if getattr(model, "diverged_", None) else {}
    model_bytes = int(model.weight_bytes)  # kernel: the kept training rows + dual coefficients
    if cfg.projection == KERNEL:
        params = int(model.param_count)
    else:
        params = int(model.coef_.numel() + torch.as_tensor(model.intercept_).numel())
    return {
        # validation accuracy at the chosen alpha (before any refit on train + validation)
        "val_acc": val_scores.get(model.alpha_) if val_scores else None,
        "alpha": float(model.alpha_),
        "selection": "validation split" if len(val_scores) > 1 else "fixed alpha",
        "classifier": cfg.classifier, "encoder": cfg.encoder, "projection": cfg.projection,
        "n_components": n_out if cfg.projection != "none" else 0,  # -1: kernel (k = infinity)
        "grid_solver": getattr(model, "grid_solver_", None),
        # the exact kernel: how X X^T was formed (float32 BLAS, or int8 / popcount on 0/1 rows), and how it was
        # solved (direct, or conjugate gradients with their iterations and residuals)
        **({"gram_path": model.gram_path_, "kernel_solver": model.solver_info_} if cfg.projection == KERNEL
           else {}),
        # validation accuracy at every penalty of the grid (the report's tuning table)
        "grid_val_acc": {f"{a:.6g}": float(v) for a, v in val_scores.items()} if len(val_scores) > 1 else None,
        **diverged,
        **({"lbfgs_iterations": {a if isinstance(a, str) else f"{a:g}": n for a, n in model.n_iter_.items()},
            "lbfgs_max_iter": model.max_iter} if cfg.classifier == "logistic" else {}),  # max_iter: not converged
        "backbone_param_count": ext.param_count, "backbone_bytes": ext.param_bytes,
        # R is regenerated from the seed, never stored: 0 bytes kept; what it would weigh:
        "projection_bytes": 0,
        "projection_matrix_bytes": int(getattr(projection, "matrix_bytes", 0)) if projection is not None else 0,
        "ridge_weight_bytes": model_bytes,
        "model_param_count": ext.param_count + params, "trainable_param_count": params,
        "model_bytes": ext.param_bytes + model_bytes,
        "weights": ext.weights, "cut": ext.cut, "method_config": asdict(cfg),
    }
