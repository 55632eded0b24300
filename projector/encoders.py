"""Feature encoders: turn real-valued features into the input of a random projection.

Binary encoders return ``uint8`` (0/1) so that a large binary design matrix
takes one byte per entry instead of four; projections convert it to their compute
dtype in bounded chunks. All encoders are scikit-learn transformers: they take a torch
tensor (and work on its device), a numpy array or a pandas frame, and answer in that type.

    X: (n_samples, n_features)  ->  encode(X): (n_samples, n_features)
"""

from __future__ import annotations

import torch
from sklearn.base import OneToOneFeatureMixin

from projector._validation import _Transformer, fitted

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


class _Encoder(OneToOneFeatureMixin, _Transformer):
    """fit / transform / fit_transform shared by the encoders (scikit-learn transformers)."""

    name = ""
    binary = False  # whether transform returns 0/1 uint8
    _preserves_dtype = []  # binary encoders return uint8 whatever the input


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

    def _fit(self, X, kind):
        if isinstance(self.threshold, str):
            if self.threshold != "median":
                raise ValueError(
                    f"ThresholdEncoder(threshold={self.threshold!r}) is not understood: "
                    f"expected a number or 'median'."
                )
            if X.shape[0] == 0:
                raise ValueError("ThresholdEncoder('median') needs at least one training sample.")
            thresholds = _column_median(X)
        else:
            thresholds = torch.full((X.shape[1],), float(self.threshold), dtype=torch.float32, device=X.device)
        self.thresholds_ = fitted(thresholds, kind)

    def _transform(self, X):
        t = torch.as_tensor(self.thresholds_, device=X.device)
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
    _preserves_dtype = ["float32"]

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
