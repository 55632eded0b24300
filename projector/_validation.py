"""Input checks and the numpy / pandas / torch boundary of every projector estimator.

The estimators compute in torch, on the device of their input. A torch tensor (CPU or CUDA)
goes through as it is, with only the shape checks below: no copy to numpy on the way. A
numpy array, a pandas frame or anything array-like is validated by scikit-learn
(``validate_data``: finite numbers, 2-d, at least one sample and feature, consistent
feature names), then viewed as a CPU tensor without a copy where numpy allows. Outputs go
back in the caller's type: a tensor for a tensor, a numpy array for an array, a frame (same
index) for a frame from ``transform``.
"""

from __future__ import annotations

import math
import warnings

import torch
from sklearn.exceptions import NotFittedError

__all__ = []

TORCH, NUMPY, PANDAS = "torch", "numpy", "pandas"


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


def all_finite(T: torch.Tensor) -> bool:
    """Whether every value of T is finite, by its min and max over row chunks of ~64 MB: ``torch.isfinite`` of a
    whole (46,342, 46,342) Gram took an 8.6 GB temporary beside its boolean result, and chunk by chunk 15x the
    time of one reduction."""
    if not (T.is_floating_point() or T.is_complex()) or T.numel() == 0:
        return True
    if T.is_complex():
        T = torch.view_as_real(T)
    rows = T.reshape(T.shape[0], -1) if T.ndim > 1 else T.reshape(-1, 1)
    step = max(1, (64 << 20) // max(rows.shape[1] * rows.element_size(), 1))
    for r0 in range(0, rows.shape[0], step):
        # one reduction, no temporary: NaN propagates through min and max, an infinity is one of them
        lo, hi = torch.aminmax(rows[r0:r0 + step])
        if not (math.isfinite(lo) and math.isfinite(hi)):
            return False
    return True


def _check_nonempty_finite(X: torch.Tensor, who: str, name: str = "X", min_samples: int = 1) -> None:
    """What scikit-learn's ``check_array`` refuses in an array, refused in a tensor: no sample (with
    ``min_samples=1``: a fit; predicting on no rows answers no rows), no feature, NaN or infinity
    (over row chunks: no full-size temporary)."""
    est = who.split(".")[0]
    if X.shape[0] < min_samples:
        raise ValueError(f"Found array with 0 sample(s) (shape={tuple(X.shape)}) while a minimum of 1 is "
                         f"required by {est}. Pass at least one row.")
    if X.shape[1] < 1:
        raise ValueError(f"Found array with 0 feature(s) (shape={tuple(X.shape)}) while a minimum of 1 is "
                         f"required by {est}. Pass at least one column.")
    if all_finite(X):
        return
    has_nan = any(bool(torch.isnan(X[r0:r0 + 4096]).any()) for r0 in range(0, X.shape[0], 4096))
    what = "NaN" if has_nan else f"infinity or a value too large for {X.dtype}"
    raise ValueError(f"Input {name} contains {what} ({who}, a torch tensor of shape {tuple(X.shape)}). "
                     f"{est} does not accept missing or infinite values: impute or drop them first "
                     "(e.g. sklearn.impute.SimpleImputer).")


def check_int_param(value, name: str, min_val: int = 1, max_val: int | None = None, expected: str = "") -> int:
    """An integer hyperparameter, scikit-learn's way (``check_scalar``): a TypeError for a float,
    a string, None or a bool ("n_components must be an instance of int, not float"), a ValueError
    out of range ("n_components == 0, must be >= 1"), each followed by ``expected`` (what to pass).
    Returns it as an int."""
    import numbers

    from sklearn.utils.validation import check_scalar

    try:
        if isinstance(value, bool):  # an Integral to Python, never meant as a count or a seed
            raise TypeError(f"{name} must be an instance of int, not bool.")
        check_scalar(value, name, target_type=numbers.Integral, min_val=min_val, max_val=max_val)
    except (TypeError, ValueError) as e:
        raise type(e)(f"{e} Expected {expected}." if expected else str(e)) from None
    return int(value)


def format_bytes(n: float) -> str:
    """``n`` bytes in binary units: ``512 B``, ``1.5 KiB``, ... up to TiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def largest_fitting(need, free: int, limit: int = 10**15) -> int:
    """The largest k >= 0 (up to ``limit``) with need(k) <= free, to 3 significant digits, rounded down.

    ``need`` may drop where a caller switches path (random features stream past a share of free memory), so
    it is taken as increasing only between the points of a geometric grid 1 % apart, each of which is tried.
    """
    grid = sorted({int(1.01**i) for i in range(int(math.log(limit) / math.log(1.01)) + 1)})
    fitting = [k for k in grid if need(k) <= free]
    if not fitting:
        return 0
    lo = fitting[-1]
    hi = next((k for k in grid if k > lo), lo)
    while hi - lo > max(1, lo // 1000):
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if need(mid) <= free else (lo, mid)
    if lo < 1000:
        return lo
    scale = 10 ** (len(str(lo)) - 3)
    rounded = lo // scale * scale
    return rounded if need(rounded) <= free else lo  # rounding down may cross back over a switch


def check_memory(who: str, need, k: int, device, what: str, fix: str) -> None:
    """Refuse before allocating: ``need(k)`` bytes (k = n_components) against the device's free
    memory, the error naming the estimate and the largest k that fits (as the CLI does).
    ``what``: what the bytes are for; ``fix``: the other ways out."""
    from projector._random_matrix import available_memory_bytes

    needed = need(k)
    free = available_memory_bytes(device)
    if needed <= free:
        return
    k_max = largest_fitting(need, free)
    fit = (f"The largest n_components that fits is about {k_max:,}: use that or fewer" if k_max >= 1
           else "Even n_components=1 does not fit")
    raise ValueError(f"{who} with n_components={k:,} would need about {format_bytes(needed)} of memory "
                     f"({what}), but {torch.device(device).type} has {format_bytes(free)} free. {fit}; {fix}")


def check_finite_fit(who: str, X: torch.Tensor, *results) -> None:
    """A fit whose coefficients came out non-finite refuses to leave garbage behind: finite X whose
    float32 Gram overflows (|x| ~ 1e20: x^2 > 3.4e38) gives NaN coefficients and every prediction
    class 0."""
    if all(all_finite(torch.as_tensor(r)) for r in results):
        return
    big = float(X.abs().max()) if X.is_floating_point() and X.numel() else float("nan")
    raise ValueError(
        f"{who}: the fit produced non-finite coefficients: the float32 Gram of X overflowed or lost all "
        f"precision (X's largest magnitude is {big:.3g}; float32 holds squares up to 3.4e38). Scale X to "
        "moderate values (e.g. divide it by its largest absolute value, or sklearn.preprocessing."
        "StandardScaler) and fit again.")


def _check_fitted(est, attr: str = "n_features_in_") -> None:
    if not hasattr(est, attr):
        raise NotFittedError(
            f"This {type(est).__name__} is not fitted yet: call fit(X) "
            f"(or fit_transform(X)) on the training data before transform."
        )


def _check_n_features(est, X) -> None:
    if X.shape[1] != est.n_features_in_:
        raise ValueError(
            f"X has {X.shape[1]} features, but {type(est).__name__} is expecting "
            f"{est.n_features_in_} features as input: it was fitted on {est.n_features_in_} features "
            f"but X has {X.shape[1]} (shape {tuple(X.shape)}). Pass data encoded the same way as "
            f"the training data, or refit."
        )


def as_tensor(est, X, who: str, reset: bool, device=None):
    """X in torch: ``(tensor (n_samples, n_features), kind, index)``.

    ``reset=True`` (fit) records ``n_features_in_`` (and, for a frame, ``feature_names_in_``);
    else X is checked against them. ``kind`` is ``"torch"``, ``"numpy"`` or ``"pandas"``;
    ``index`` the frame's index (else None). ``device``: where a non-tensor X is moved (the
    device of the training tensors when a second input, e.g. validation rows, comes as numpy).
    """
    if isinstance(X, torch.Tensor):
        _check_2d(X, who)
        _check_nonempty_finite(X, who, min_samples=1 if reset else 0)
        if reset:
            est.n_features_in_ = int(X.shape[1])
            if hasattr(est, "feature_names_in_"):
                del est.feature_names_in_
        else:
            _check_n_features(est, X)
        return X, TORCH, None
    from sklearn.utils.validation import validate_data

    kind = PANDAS if hasattr(X, "iloc") and hasattr(X, "columns") else NUMPY
    index = X.index if kind == PANDAS else None
    A = validate_data(est, X, reset=reset, dtype="numeric", accept_sparse=False)
    with warnings.catch_warnings():  # a read-only array (a memmap) is only ever read here
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        T = torch.from_numpy(A if min(A.strides, default=0) >= 0 else A.copy())  # torch: no negative strides
    if device is not None and T.device != torch.device(device):
        T = T.to(device)
    return T, kind, index


def as_targets(est, y, n_samples: int):
    """y as 1-d class labels: a tensor as it is, anything else validated by scikit-learn
    (finite, one column: an (n, 1) y warns; classification targets, not continuous values)."""
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_array, column_or_1d

    if y is None:
        raise ValueError(f"{type(est).__name__} requires y to be passed, but the target y is None.")
    if isinstance(y, torch.Tensor):
        y_np = y.detach().reshape(-1).cpu().numpy()
    else:
        y = y_np = column_or_1d(check_array(y, ensure_2d=False, dtype=None, input_name="y"), warn=True)
    check_classification_targets(y_np)
    if len(y_np) != n_samples:
        raise ValueError(f"y has {len(y_np)} labels but X has {n_samples} samples.")
    return y


def to_caller(T: torch.Tensor, kind: str, index=None, columns=None):
    """T in the caller's type: the tensor itself, a numpy array, or a frame with ``index``."""
    if kind == TORCH:
        return T
    A = T.detach().cpu().numpy()
    if kind == PANDAS and columns is not None:
        import pandas as pd

        return pd.DataFrame(A, index=index, columns=columns)
    return A


def fitted(value, kind: str):
    """A fitted attribute in the type of the training data: numpy for numpy or pandas input."""
    if kind != TORCH and isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return value


from sklearn.base import BaseEstimator, TransformerMixin  # noqa: E402


class _Transformer(TransformerMixin, BaseEstimator):
    """fit / transform / fit_transform of the encoders and projections: the caller's X checked
    and viewed in torch, ``_fit(X)`` and ``_transform(X)`` on tensors, the output in the
    caller's type (a frame keeps X's index; column names from ``get_feature_names_out``)."""

    _fitted_attr = "n_features_in_"
    _preserves_dtype = ["float32"]  # what transform returns for that input dtype

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = list(self._preserves_dtype)
        return tags

    def fit(self, X, y=None):
        """X: (n_samples, n_features). Returns self."""
        X, kind, _ = as_tensor(self, X, f"{type(self).__name__}.fit", reset=True)
        self._fit(X, kind)
        return self

    def _fit(self, X: torch.Tensor, kind: str) -> None:
        """Subclasses that learn more than the shape: from the checked tensor X."""

    def transform(self, X):
        """X: (n_samples, n_features) -> the transformed rows, in X's type."""
        _check_fitted(self, self._fitted_attr)
        X, kind, index = as_tensor(self, X, f"{type(self).__name__}.transform", reset=False)
        Y = self._transform(X)
        return to_caller(Y, kind, index, self.get_feature_names_out() if kind == PANDAS else None)

    def fit_transform(self, X, y=None):
        return self.fit(X).transform(X)

    def _transform(self, X: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
