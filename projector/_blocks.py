"""What the block-streamed projections share (``projections``' dense ones and ``structured``)."""

from __future__ import annotations

import torch
from sklearn.base import ClassNamePrefixFeaturesOutMixin

from projector._validation import _Transformer, all_finite, check_int_param, check_memory

# torch's generators take seeds below 2**64; tile t of R is seeded with seed * 1_000_003 + t
SEED_MAX = (2**64 - 1) // 1_000_003 - 2**20


def check_projection_params(est) -> None:
    """n_components a positive integer and seed an integer in [0, SEED_MAX], scikit-learn's way
    (TypeError for 2.5, '100' or None; ValueError out of range)."""
    check_int_param(est.n_components, "n_components", min_val=1,
                    expected="a positive integer (the number of random features), e.g. n_components=1000")
    check_int_param(est.seed, "seed", min_val=0, max_val=SEED_MAX,
                    expected=f"an integer from 0 to {SEED_MAX:,}, e.g. seed=0")


def feature_bytes(n_rows: int, n_components: int) -> int:
    """Bytes of the (n_rows, n_components) float32 features plus one row block's product."""
    return 4 * int(n_rows) * int(n_components) + 8 * 256 * min(int(n_components), 4096)


class BlockProjection(ClassNamePrefixFeaturesOutMixin, _Transformer):
    """fit records the input width; transform assembles ``iter_blocks``. Subclasses set
    ``n_components`` and provide ``iter_blocks(X)`` yielding ``(cols, Y[:, cols])`` for a
    checked tensor X (``_blocks_of``)."""

    #: (the registry record, :mod:`projector.projections`) streamed block by block into a Gram,
    #: and taking ``block_size``
    streamable = True
    takes_block_size = True
    takes_n_components = True

    def _fit(self, X: torch.Tensor, kind: str) -> None:
        """Only records n_features (the projection follows from the seed), after checking the
        hyperparameters scikit-learn's way."""
        check_projection_params(self)
        if X.shape[1] < 1:
            raise ValueError(f"X has no features (shape {tuple(X.shape)}); nothing to project.")

    @property
    def nbytes(self) -> int:
        """Bytes the fitted projection stores: none, its parameters are regenerated from the seed
        (``matrix_bytes`` is what they would take if kept)."""
        return 0

    @property
    def param_count(self) -> int:
        """Stored parameters: none (the seed is a hyperparameter)."""
        return 0

    @property
    def _n_features_out(self) -> int:
        return int(self.n_components)

    def _transform(self, X: torch.Tensor) -> torch.Tensor:
        """X: (n_samples, n_features) -> Y: (n_samples, n_components) float32."""
        n = X.shape[0]
        check_memory(f"{type(self).__name__}.transform of {n:,} rows", lambda k: feature_bytes(n, k),
                     int(self.n_components), X.device, f"their features, {n:,} x n_components float32",
                     "or transform fewer rows at a time, or stream the features (iter_blocks, "
                     "StreamingRidgeClassifier).")
        Y = torch.empty(X.shape[0], self.n_components, dtype=torch.float32, device=X.device)
        for cols, Y_block in self._blocks_of(X):
            Y[:, cols] = Y_block
        if not all_finite(Y):  # finite X, features past float32's range
            raise ValueError(
                f"{type(self).__name__}.transform: the features overflowed float32 (values past 3.4e38) "
                f"for X of largest magnitude {float(X.abs().max()):.3g}. Scale X to moderate values (e.g. "
                "divide it by its largest absolute value, or sklearn.preprocessing.StandardScaler) first.")
        return Y
