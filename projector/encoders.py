"""Feature encoders: turn real-valued features into the input of a random projection.

Binary encoders return ``torch.uint8`` (0/1) so that a large binary design matrix
takes one byte per entry instead of four; projections convert it to their compute
dtype in bounded chunks. All encoders work on the device of their input tensor.

    X: (n_samples, n_features)  ->  encode(X): (n_samples, n_features)
"""

from __future__ import annotations

import torch
from sklearn.exceptions import NotFittedError

__all__ = [
    "SignEncoder",
    "ThresholdEncoder",
    "IdentityEncoder",
    "ENCODERS",
    "make_encoder",
]

# Bytes of the float64 block of columns sorted at once when fitting per-feature
# medians: bounds the temporary whatever the shape of X.
_MEDIAN_BLOCK_BYTES = 128 << 20


# --- shared input checks (also used by projector.projections and projector.opu) ---

def _check_2d(X, who: str) -> torch.Tensor:
    """Return X if it is a 2-d torch tensor, else raise a message saying what to pass."""
    if not isinstance(X, torch.Tensor):
        raise TypeError(
            f"{who} expects a torch.Tensor of shape (n_samples, n_features), got "
            f"{type(X).__name__}. Convert with torch.as_tensor(X) first."
        )
    if X.ndim != 2:
        raise ValueError(
            f"{who} expects a 2-d tensor (n_samples, n_features), got shape "
            f"{tuple(X.shape)}. Flatten with X.reshape(len(X), -1) first."
        )
    return X


def _check_fitted(est, attr: str = "n_features_in_") -> None:
    if not hasattr(est, attr):
        raise NotFittedError(
            f"This {type(est).__name__} is not fitted yet: call fit(X) "
            f"(or fit_transform(X)) on the training data before transform."
        )


def _check_n_features(est, X: torch.Tensor) -> None:
    if X.shape[1] != est.n_features_in_:
        raise ValueError(
            f"{type(est).__name__} was fitted on {est.n_features_in_} features but "
            f"X has {X.shape[1]} (shape {tuple(X.shape)}). Pass data encoded the "
            f"same way as the training data, or refit."
        )


class _Encoder:
    """fit/transform/fit_transform protocol shared by the encoders."""

    name = ""
    binary = False  # whether transform returns 0/1 uint8

    def fit(self, X: torch.Tensor, y=None) -> "_Encoder":
        """X: (n_samples, n_features). Returns self."""
        X = _check_2d(X, f"{type(self).__name__}.fit")
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X: torch.Tensor) -> torch.Tensor:
        """X: (n_samples, n_features) -> (n_samples, n_features)."""
        X = _check_2d(X, f"{type(self).__name__}.transform")
        _check_fitted(self)
        _check_n_features(self, X)
        return self._transform(X)

    def fit_transform(self, X: torch.Tensor, y=None) -> torch.Tensor:
        return self.fit(X).transform(X)

    def _transform(self, X: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.endswith("_"))
        return f"{type(self).__name__}({params})"


class SignEncoder(_Encoder):
    """x > 0 -> 1, else 0, as ``torch.uint8``.

    The natural binarisation of post-ReLU CNN activations (active / inactive).
    """

    name = "sign"
    binary = True

    def _transform(self, X):
        return (X > 0).to(torch.uint8)


class ThresholdEncoder(_Encoder):
    """x > t -> 1, else 0, as ``torch.uint8``.

    Parameters
    ----------
    threshold : float or "median"
        A fixed threshold for every feature, or ``"median"``: each feature's median on
        the training data (numpy's median: the mean of the two middle values for an
        even number of samples), so that every feature is on for about half of the
        training samples.

    Attributes
    ----------
    thresholds_ : tensor (n_features,) float32, on the device of the training data
    """

    name = "threshold"
    binary = True

    def __init__(self, threshold: float | str = 0.0):
        self.threshold = threshold

    def fit(self, X, y=None):
        X = _check_2d(X, "ThresholdEncoder.fit")
        if isinstance(self.threshold, str):
            if self.threshold != "median":
                raise ValueError(
                    f"ThresholdEncoder(threshold={self.threshold!r}) is not understood: "
                    f"expected a number or 'median'."
                )
            if X.shape[0] == 0:
                raise ValueError("ThresholdEncoder('median') needs at least one training sample.")
            self.thresholds_ = _column_median(X)
        else:
            self.thresholds_ = torch.full(
                (X.shape[1],), float(self.threshold), dtype=torch.float32, device=X.device
            )
        self.n_features_in_ = X.shape[1]
        return self

    def _transform(self, X):
        t = self.thresholds_.to(X.device)
        if not X.is_floating_point():
            X = X.to(torch.float32)
        return (X > t.to(X.dtype)).to(torch.uint8)


def _column_median(X: torch.Tensor) -> torch.Tensor:
    """X: (n_samples, n_features) -> (n_features,) float32, numpy's median convention.

    torch.median returns the lower middle value and torch.quantile refuses inputs over
    2**24 elements, hence sorting bounded blocks of columns.
    """
    n, d = X.shape
    out = torch.empty(d, dtype=torch.float32, device=X.device)
    lo, hi = (n - 1) // 2, n // 2
    step = max(1, _MEDIAN_BLOCK_BYTES // (8 * n))
    for start in range(0, d, step):
        s = X[:, start:start + step].to(torch.float64).sort(dim=0).values
        out[start:start + step] = ((s[lo] + s[hi]) / 2).to(torch.float32)
    return out


class IdentityEncoder(_Encoder):
    """No encoding: features returned unchanged as float32 (the control)."""

    name = "none"

    def _transform(self, X):
        return X.to(torch.float32)


ENCODERS = {
    "sign": SignEncoder,
    "threshold": ThresholdEncoder,
    "none": IdentityEncoder,
}


def make_encoder(name: str, **kwargs) -> _Encoder:
    """Build an encoder from its registry name, e.g. ``make_encoder("threshold", threshold="median")``."""
    try:
        cls = ENCODERS[name]
    except KeyError:
        raise ValueError(
            f"Unknown encoder {name!r}: choose one of {sorted(ENCODERS)}."
        ) from None
    return cls(**kwargs)
