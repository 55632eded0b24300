"""A control for the ridge: multinomial logistic regression (scikit-learn, L-BFGS) on the same features.

:class:`LogisticControl` answers the question "is the closed-form ridge what makes the random
features look good?" with the textbook linear classifier. Like the ridge it chooses its penalty on
the validation split (the inverse strength ``C`` from a log grid, features standardised on the
training rows), then refits on train + validation at that ``C``; the test split is scored once.
It exposes what :mod:`benchmarks.methods.random_features` reads of a classifier (``fit``, ``score``,
``decision_function``, ``classes_``, ``coef_``, ``intercept_``, ``alpha_``, ``val_scores_``,
``weight_bytes``). A ``C`` whose fit is not finite (coefficients or validation decision values
NaN or infinite) is left out of the choice and recorded in ``diverged_``; if every one is,
or the final fit is, :class:`NonFiniteFit` (which :mod:`benchmarks.methods.random_features` raises too).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler


class NonFiniteFit(RuntimeError):
    """Features, coefficients or decision values of a gradient-free fit that are NaN or infinite."""


#: Inverse regularisation strengths tried on validation.
DEFAULT_CS = tuple(10.0 ** np.arange(-3, 4))
#: L-BFGS iterations at most per fit.
MAX_ITER = 1000


def _numpy(X) -> np.ndarray:
    return X.detach().cpu().numpy() if isinstance(X, torch.Tensor) else np.asarray(X)


def _non_finite(model: LogisticRegression, X: np.ndarray | None = None) -> str | None:
    """What of a fitted model is not finite: its coefficients, else its decision values on ``X``."""
    if not (np.isfinite(model.coef_).all() and np.isfinite(model.intercept_).all()):
        return "coefficients not finite"
    if X is not None and len(X) and not np.isfinite(model.decision_function(X)).all():
        return "decision values not finite"
    return None


class LogisticControl:
    """``C`` chosen on validation from ``Cs`` (default :data:`DEFAULT_CS`), refitted on train + validation
    (``refit=False``: the grid's fit at that C, on the training rows alone). ``n_iter_``: L-BFGS iterations
    per C of the grid (and ``"final"`` for the refit); ``max_iter`` means it stopped before converging."""

    def __init__(self, Cs: tuple[float, ...] | None = None, max_iter: int = MAX_ITER, refit: bool = True):
        self.Cs = tuple(Cs) if Cs else DEFAULT_CS
        self.max_iter = max_iter
        self.refit = refit  # False: the model kept is the one fitted on the training rows at the chosen C

    def _model(self, C: float) -> LogisticRegression:
        return LogisticRegression(C=C, solver="lbfgs", max_iter=self.max_iter)

    def fit(self, X, y, X_val=None, y_val=None) -> "LogisticControl":
        """Fit on ``(X, y)``. With ``X_val``, ``y_val`` and more than one ``C``: each ``C`` scored on validation
        (features standardised on the training rows; on a tie, the strongest penalty wins), then a fit at the
        chosen ``C`` on train + validation (``refit=False``: the grid's fit at that C); else at the first ``C``.
        :class:`NonFiniteFit` when every ``C``, or the final fit, blows up. Returns ``self``."""
        X, y = _numpy(X).astype(np.float64), _numpy(y)
        self.val_scores_, self.diverged_, self.n_iter_, grid = {}, {}, {}, {}
        if X_val is not None and len(self.Cs) > 1:
            Xv, yv = _numpy(X_val).astype(np.float64), _numpy(y_val)
            scaler = StandardScaler().fit(X)
            Xs, Xvs = scaler.transform(X), scaler.transform(Xv)
            for C in self.Cs:
                model = self._model(C).fit(Xs, y)
                self.n_iter_[C] = int(model.n_iter_.max())
                why = _non_finite(model, Xvs)
                if why is not None:  # left out of the choice, noted
                    self.diverged_[C] = why
                    continue
                self.val_scores_[C] = float(model.score(Xvs, yv))
                grid[C] = (scaler, model)
            if not self.val_scores_:
                raise NonFiniteFit("logistic regression blew up at every C of the grid ("
                                   + "; ".join(f"C {C:g}: {why}" for C, why in self.diverged_.items())
                                   + "); use other values of C (--alphas) or features of a smaller scale.")
            # the strongest penalty on ties
            self.alpha_ = max(self.val_scores_, key=lambda C: (self.val_scores_[C], -C))
            if self.refit:
                X, y = np.concatenate([X, Xv]), np.concatenate([y, yv])
        else:
            self.alpha_ = self.Cs[0]
        if self.alpha_ in grid and not self.refit:  # the grid's fit at that C is the model: not fitted twice
            self.scaler_, self.model_ = grid[self.alpha_]
        else:
            self.scaler_ = StandardScaler().fit(X)
            self.model_ = self._model(self.alpha_).fit(self.scaler_.transform(X), y)
            self.n_iter_["final"] = int(self.model_.n_iter_.max())
        why = _non_finite(self.model_)  # (its decision values are checked where they are scored)
        if why is not None:
            raise NonFiniteFit(f"logistic regression blew up at C {self.alpha_:g}: {why}; use another C "
                               "(--alphas) or features of a smaller scale.")
        self.classes_ = self.model_.classes_
        self.coef_ = torch.from_numpy(self.model_.coef_)
        self.intercept_ = torch.from_numpy(self.model_.intercept_)
        return self

    def decision_function(self, X) -> np.ndarray:
        """``X: (n, n_features)`` -> scores ``(n, n_classes)``, ``(n,)`` for two classes."""
        return self.model_.decision_function(self.scaler_.transform(_numpy(X).astype(np.float64)))

    def score(self, X, y) -> float:
        """Accuracy on ``(X, y)``."""
        return float(self.model_.score(self.scaler_.transform(_numpy(X).astype(np.float64)), _numpy(y)))

    @property
    def weight_bytes(self) -> int:
        """Coefficients, intercepts and the standardisation kept to predict, as float32."""
        return 4 * (self.model_.coef_.size + self.model_.intercept_.size + 2 * self.scaler_.mean_.size)
