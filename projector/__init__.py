"""Gradient-free pipeline: encode features, project them at random, fit a ridge classifier.

    encoder = make_encoder("sign")                      # (n, d) float -> (n, d) uint8
    proj = make_projection("gaussian", n_components=10_000, seed=0)   # -> (n, k) float32
    clf = RidgeClassifier().fit(proj.fit_transform(encoder.fit_transform(X)), y, X_val, y_val)

Also: ``make_projection("structured", ...)`` (Hadamard-based, O(n k log m)), the exact kernel
``KernelRidgeClassifier`` (k = infinity, no projection) and ``StreamingRidgeClassifier(proj)``
(the ridge fitted block by block, never holding the (n, k) features).

All estimators take and return torch tensors and work on the input's device.
"""

from projector.encoders import ENCODERS, IdentityEncoder, SignEncoder, ThresholdEncoder, make_encoder
from projector.opu import OPUProjection
from projector.projections import (
    PROJECTIONS,
    TILE_COLS,
    GaussianProjection,
    LinearProjection,
    NoProjection,
    gaussian_tiles,
    make_projection,
)
from projector.kernel import KernelRidgeClassifier, opu_kernel
from projector.ridge import RidgeClassifier, auto_alphas
from projector.streaming import StreamingRidgeClassifier
from projector.structured import StructuredProjection

__all__ = [
    "ENCODERS",
    "PROJECTIONS",
    "TILE_COLS",
    "GaussianProjection",
    "IdentityEncoder",
    "KernelRidgeClassifier",
    "LinearProjection",
    "NoProjection",
    "OPUProjection",
    "RidgeClassifier",
    "SignEncoder",
    "StreamingRidgeClassifier",
    "StructuredProjection",
    "ThresholdEncoder",
    "auto_alphas",
    "gaussian_tiles",
    "make_encoder",
    "make_projection",
    "opu_kernel",
]
