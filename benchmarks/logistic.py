"""A control for the ridge: multinomial logistic regression (scikit-learn, L-BFGS) on the same features.

:class:`LogisticControl` answers the question "is the closed-form ridge what makes the random
features look good?" with the textbook linear classifier. Like the ridge it chooses its penalty on
the validation split (the inverse strength ``C`` from a log grid, features standardised on the
training rows), then refits on train + validation at that ``C``; the test split is scored once.
It exposes what :mod:`benchmarks.random_features` reads of a classifier (``fit``, ``score``,
``coef_``, ``intercept_``, ``alpha_``, ``val_scores_``, ``weight_bytes``).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

#: Inverse regularisation strengths tried on validation.
DEFAULT_CS = tuple(10.0 ** np.arange(-3, 4))


def _numpy(X) -> np.ndarray:
    return X.detach().cpu().numpy() if isinstance(X, torch.Tensor) else np.asarray(X)


class LogisticControl:
    """``C`` chosen on validation from ``Cs`` (default :data:`DEFAULT_CS`), refitted on train + validation."""

    def __init__(self, Cs: tuple[float, ...] | None = None, max_iter: int = 1000):
        self.Cs = tuple(Cs) if Cs else DEFAULT_CS
        self.max_iter = max_iter

    def _model(self, C: float) -> LogisticRegression:
        return LogisticRegression(C=C, solver="lbfgs", max_iter=self.max_iter)

    def fit(self, X, y, X_val=None, y_val=None) -> "LogisticControl":
        X, y = _numpy(X).astype(np.float64), _numpy(y)
        self.val_scores_ = {}
        if X_val is not None and len(self.Cs) > 1:
            Xv, yv = _numpy(X_val).astype(np.float64), _numpy(y_val)
            scaler = StandardScaler().fit(X)
            Xs, Xvs = scaler.transform(X), scaler.transform(Xv)
            for C in self.Cs:
                self.val_scores_[C] = float(self._model(C).fit(Xs, y).score(Xvs, yv))
            self.alpha_ = max(self.Cs, key=lambda C: (self.val_scores_[C], -C))  # the strongest penalty on ties
            X, y = np.concatenate([X, Xv]), np.concatenate([y, yv])
        else:
            self.alpha_ = self.Cs[0]
        self.scaler_ = StandardScaler().fit(X)
        self.model_ = self._model(self.alpha_).fit(self.scaler_.transform(X), y)
        self.coef_ = torch.from_numpy(self.model_.coef_)
        self.intercept_ = torch.from_numpy(self.model_.intercept_)
        return self

    def score(self, X, y) -> float:
        return float(self.model_.score(self.scaler_.transform(_numpy(X).astype(np.float64)), _numpy(y)))

    @property
    def weight_bytes(self) -> int:
        """Coefficients, intercepts and the standardisation kept to predict, as float32."""
        return 4 * (self.model_.coef_.size + self.model_.intercept_.size + 2 * self.scaler_.mean_.size)
