"""What the block-streamed projections share (``projections``' dense ones and ``structured``)."""

from __future__ import annotations

import torch
from sklearn.base import ClassNamePrefixFeaturesOutMixin

from projector._validation import _Transformer


class BlockProjection(ClassNamePrefixFeaturesOutMixin, _Transformer):
    """fit records the input width; transform assembles ``iter_blocks``. Subclasses set
    ``n_components`` and provide ``iter_blocks(X)`` yielding ``(cols, Y[:, cols])`` for a
    checked tensor X (``_blocks_of``)."""

    def _fit(self, X: torch.Tensor, kind: str) -> None:
        """Only records n_features: the projection follows from the seed."""
        try:
            k = int(self.n_components)
        except (TypeError, ValueError):
            k = 0
        if k < 1:
            raise ValueError(f"n_components must be a positive integer, got {self.n_components!r}.")
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
        Y = torch.empty(X.shape[0], self.n_components, dtype=torch.float32, device=X.device)
        for cols, Y_block in self._blocks_of(X):
            Y[:, cols] = Y_block
        return Y
