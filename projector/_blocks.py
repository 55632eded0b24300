"""What the block-streamed projections share (``projections``' dense ones and ``structured``)."""

from __future__ import annotations

import torch

from projector.encoders import _check_2d


class BlockProjection:
    """fit records the input width; transform assembles ``iter_blocks``. Subclasses set
    ``n_components`` and provide ``iter_blocks(X)`` yielding ``(cols, Y[:, cols])``."""

    def fit(self, X: torch.Tensor, y=None):
        """X: (n_samples, n_features). Only records n_features: the projection follows from the seed."""
        X = _check_2d(X, f"{type(self).__name__}.fit")
        if int(self.n_components) < 1:
            raise ValueError(f"n_components must be a positive integer, got {self.n_components!r}.")
        if X.shape[1] < 1:
            raise ValueError(f"X has no features (shape {tuple(X.shape)}); nothing to project.")
        self.n_features_in_ = X.shape[1]
        return self

    def fit_transform(self, X: torch.Tensor, y=None) -> torch.Tensor:
        return self.fit(X).transform(X)

    def transform(self, X: torch.Tensor) -> torch.Tensor:
        """X: (n_samples, n_features) -> Y: (n_samples, n_components) float32."""
        Y = torch.empty(X.shape[0], self.n_components, dtype=torch.float32, device=X.device)
        for cols, Y_block in self.iter_blocks(X):
            Y[:, cols] = Y_block
        return Y
