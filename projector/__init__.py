"""Gradient-free pipeline: encode features, project them at random, fit a ridge classifier.

    encoder = make_encoder("sign").fit(X)               # (n, d) float -> (n, d) uint8
    proj = make_projection("gaussian", n_components=10_000, seed=0)   # -> (n, k) float32
    Y = proj.fit_transform(encoder.transform(X))
    clf = RidgeClassifier().fit(Y, y, proj.transform(encoder.transform(X_val)), y_val)
    clf.predict(proj.transform(encoder.transform(X_test)))

Every estimator is a scikit-learn estimator (``get_params`` / ``set_params`` / ``clone``,
``Pipeline``, ``GridSearchCV``, ``cross_val_score``); without validation rows the ridge
chooses alpha by exact leave-one-out::

    from sklearn.pipeline import make_pipeline
    model = make_pipeline(SignEncoder(), StructuredProjection(n_components=10_000), RidgeClassifier())
    model.fit(X, y).score(X_test, y_test)

Also: ``make_projection("structured", ...)`` (Hadamard-based, O(n k log m)), the exact kernel
``KernelRidgeClassifier`` (k = infinity, no projection) and ``StreamingRidgeClassifier(proj)``
(the ridge fitted block by block, never holding the (n, k) features).

Inputs: torch tensors (CPU or CUDA: the work runs on the input's device, without a copy to
numpy), numpy arrays or pandas frames; outputs come back in the input's type.
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
