"""What the ridge classifiers share (``RidgeClassifier``, ``KernelRidgeClassifier``,
``StreamingRidgeClassifier``): the fit preamble (parameters, inputs, labels, validation rows),
the alpha grid, predict / score from a decision function, and their scikit-learn tags.

A subclass implements ``fit`` on ``self._prepare_fit(...)`` and ``_decision(X) -> (n, c)``
float32 scores for a tensor X already checked against the fitted state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin

from projector._labels import _accuracy, _binarize, _encode_labels, _label_indices
from projector._solvers import _GRID_SOLVER_CHOICES
from projector._validation import TORCH, _check_fitted, as_targets, as_tensor, fitted, to_caller

__all__ = ["auto_alphas"]

_SOLVERS = ("auto", "primal", "dual")


def auto_alphas(mean_eigenvalue: float) -> np.ndarray:
    """The default grid: ``np.logspace(-6, 6, 13) * mean_eigenvalue``.

    ``mean_eigenvalue = trace(Xc^T Xc) / n_samples``, the mean squared norm of a
    centred sample, i.e. the mean eigenvalue of the (n, n) kernel ``Xc Xc^T``. |XR|^2
    features have an arbitrary scale (n_features, OPU exposure, ...) and a grid relative
    to it is scale-free.
    """
    scale = float(mean_eigenvalue) if mean_eigenvalue > 0 else 1.0
    return np.logspace(-6, 6, 13) * scale


@dataclass
class FitData:
    """The checked inputs of a fit. X: (n, d) tensor; Y: (n, c) {-1, +1} float64; y_idx: (n,)
    class indices; X_val, Yv, yv_idx likewise for the validation rows (None without);
    kind: the caller's type of X ("torch", "numpy", "pandas")."""

    X: torch.Tensor
    Y: torch.Tensor
    y_idx: torch.Tensor
    X_val: torch.Tensor | None
    Yv: torch.Tensor | None
    yv_idx: torch.Tensor | None
    kind: str


class _ClassifierBase(ClassifierMixin, BaseEstimator):
    """Shared by the ridge classifiers; subclasses provide ``fit`` and ``_decision``."""

    _fitted_attr = "coef_"

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = True
        tags.classifier_tags.poor_score = False
        return tags

    # -- fit --

    def _prepare_fit(self, X, y, X_val=None, y_val=None) -> FitData:
        """Parameters checked, X and y validated, labels binarised, the validation rows on X's
        device; sets ``classes_`` and ``n_features_in_``."""
        who = type(self).__name__
        if getattr(self, "solver", "auto") not in _SOLVERS:
            raise ValueError(f"solver={self.solver!r} is not one of {_SOLVERS}.")
        if self.grid_solver not in _GRID_SOLVER_CHOICES:
            raise ValueError(f"grid_solver={self.grid_solver!r} is not one of {_GRID_SOLVER_CHOICES}.")
        if self.alphas is not None:
            self._resolve_alphas(1.0)  # a bad grid fails before any work
        if (X_val is None) != (y_val is None):
            raise ValueError("Pass both X_val and y_val, or neither.")
        X, kind, _ = as_tensor(self, X, f"{who}.fit", reset=True)
        n = X.shape[0]
        y = as_targets(self, y, n)
        self.classes_, y_idx = _encode_labels(y, n, X.device)
        if len(self.classes_) < 2:
            raise ValueError(
                f"{who} needs at least 2 classes in y, got 1 class: {self.classes_!r}. "
                "Classifier can't train when only one class is present."
            )
        Y = _binarize(y_idx, len(self.classes_))
        Xv = Yv = yv_idx = None
        if X_val is not None:
            Xv, _, _ = as_tensor(self, X_val, f"{who}.fit (X_val)", reset=False, device=X.device)
            if Xv.device != X.device:
                raise ValueError(f"X_val is on {Xv.device} but X on {X.device}: pass both on one device.")
            yv = y_val if isinstance(y_val, torch.Tensor) else np.asarray(y_val)
            yv_idx = _label_indices(self.classes_, yv, Xv.shape[0], X.device)
            Yv = _binarize(yv_idx, len(self.classes_))
        if kind != TORCH and isinstance(self.classes_, torch.Tensor):
            self.classes_ = self.classes_.cpu().numpy()
        return FitData(X, Y, y_idx, Xv, Yv, yv_idx, kind)

    def _resolve_alphas(self, mean_eigenvalue: float) -> np.ndarray:
        if self.alphas is None:
            return auto_alphas(mean_eigenvalue)
        try:
            alphas = np.atleast_1d(np.asarray(self.alphas, dtype=np.float64))
        except (TypeError, ValueError):
            alphas = np.zeros(0)
        if alphas.ndim != 1 or len(alphas) == 0 or not np.all(alphas > 0):
            raise ValueError(
                f"alphas must be positive numbers (absolute penalties), got {self.alphas!r}; "
                "or None for the automatic grid."
            )
        return alphas

    def _set_linear(self, W: torch.Tensor, b, centre: torch.Tensor | None, kind: str) -> None:
        """coef_ (c, d) and intercept_ (c,) float32 from W: (d, c) float64 and b: (c,), and the
        centred form predict uses: ``(x - centre) . coef + offset`` with ``centre`` (d,) float32
        (near the training mean) and ``offset = b + centre . W`` in float64. Without it the
        float32 scores of rows at a large mean cancel ``x . coef ~ |mean| |coef|`` against the
        intercept: at a feature mean of 1e4 that rounding alone was 1.5e-3 of the scores."""
        device = W.device
        b = torch.as_tensor(b, dtype=torch.float64, device=device).reshape(-1)
        centre = torch.zeros(W.shape[0], device=device) if centre is None else centre.to(device, torch.float32)
        self._x_centre = centre
        self._centred_offset = (b + centre.double() @ W).float()
        self.coef_ = fitted(W.T.to(torch.float32).contiguous(), kind)
        self.intercept_ = fitted(b.to(torch.float32).clone(), kind)

    def _centred(self, X: torch.Tensor, cols=slice(None)) -> torch.Tensor:
        """Rows (r, width) of X (or of its features, columns ``cols``) minus the prediction centre,
        float32: float64 rows centred before the cast (the difference is what must survive)."""
        centre = getattr(self, "_x_centre", None)
        if centre is None:  # fitted by an older version: the plain form
            return X.to(torch.float32)
        centre = centre.to(X.device)[cols]
        if X.dtype == torch.float64:
            return (X - centre.double()).float()
        return X.to(torch.float32) - centre

    def _offset(self, device) -> torch.Tensor:
        """The intercept of the centred form (``_centred``), (c,) float32."""
        off = getattr(self, "_centred_offset", None)
        return torch.as_tensor(self.intercept_ if off is None else off, device=device)

    def _record(self, fit: dict, kind: str) -> None:
        """The selection's fitted attributes from a fit's dict."""
        self.alpha_ = float(fit["alpha"])
        self.alphas_ = np.asarray(fit["alphas"], dtype=np.float64)
        scores = fit.get("scores")
        self.val_scores_ = None if scores is None else {float(a): float(s) for a, s in zip(self.alphas_, scores)}
        self.grid_solver_ = fit.get("grid_solver")

    # -- predict --

    def _checked(self, X, who: str):
        _check_fitted(self, self._fitted_attr)
        return as_tensor(self, X, f"{type(self).__name__}.{who}", reset=False)

    def decision_function(self, X):
        """X: (n_samples, n_features) -> scores (n_samples, n_classes) float32, (n_samples,)
        for two classes; a tensor for a tensor X (on its device), else a numpy array."""
        X, kind, _ = self._checked(X, "decision_function")
        S = self._decision(X)
        return to_caller(S[:, 0] if S.shape[1] == 1 else S, kind)

    def predict(self, X):
        """X: (n_samples, n_features) -> labels (n_samples,): for a tensor X of the type of
        classes_ (a tensor if y was one), else a numpy array."""
        X, kind, _ = self._checked(X, "predict")
        S = self._decision(X)
        idx = (S[:, 0] > 0).long() if S.shape[1] == 1 else S.argmax(dim=1)
        if isinstance(self.classes_, torch.Tensor):
            return to_caller(self.classes_.to(idx.device)[idx], kind)
        return self.classes_[idx.cpu().numpy()]

    def score(self, X, y, sample_weight=None) -> float:
        """Mean accuracy of predict(X) against y (weighted by sample_weight when given)."""
        if sample_weight is not None:
            return super().score(X, y, sample_weight=sample_weight)
        X, _, _ = self._checked(X, "score")
        S = self._decision(X)
        y = y if isinstance(y, torch.Tensor) else np.asarray(y)
        y_idx = _label_indices(self.classes_, y, X.shape[0], X.device, unknown_ok=True)
        return _accuracy(S.double(), y_idx)


def _tensor(value, device) -> torch.Tensor:
    """A fitted attribute (tensor or numpy array) as a tensor on device (no copy when there)."""
    return torch.as_tensor(value, device=device)

