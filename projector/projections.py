"""The registry of projections (:data:`PROJECTIONS`, :func:`make_projection`) and the identity
projection (``none``, the control). The projections themselves: :mod:`projector.gaussian`
(``gaussian``, ``linear``), :mod:`projector.structured`, :mod:`projector.opu`.

Each projection class declares, as class attributes, what a caller planning work needs (its
record; :data:`RECORD` names them): ``name``; ``takes_n_components`` (it makes ``n_components`` features: all
but ``none``); ``streamable`` (``iter_blocks`` feeds a Gram block by
block, :mod:`projector.streaming`); ``takes_block_size``; ``flops_per_mac`` (floating-point
operations per multiply-add of the ``(n, d) x (d, k)`` product it stands for: 4 for ``|X R|^2``
with complex R, 2 for a real product, 0 for none). A new projection is one file and one line in
:data:`PROJECTIONS`."""

from __future__ import annotations

import torch
from sklearn.base import OneToOneFeatureMixin

from projector._random_matrix import TILE_COLS, available_memory_bytes, gaussian_tiles, resolve_compute_mode
from projector._validation import _check_2d, _check_fitted, _check_n_features, _Transformer
from projector.gaussian import GaussianProjection, LinearProjection
from projector.opu import OPUProjection
from projector.structured import StructuredProjection

__all__ = [
    "TILE_COLS",
    "gaussian_tiles",
    "GaussianProjection",
    "LinearProjection",
    "NoProjection",
    "OPUProjection",
    "StructuredProjection",
    "PROJECTIONS",
    "available_memory_bytes",
    "resolve_compute_mode",
    "make_projection",
    "RECORD",
]


class NoProjection(OneToOneFeatureMixin, _Transformer):
    """No projection: features passed through as float32 (the control: ridge directly
    on encoded or raw features).

    X: (n_samples, n_features) -> (n_samples, n_features) float32. ``n_components`` and
    ``seed`` are accepted for a uniform registry interface and ignored.
    """

    name = "none"
    streamable, takes_block_size, flops_per_mac, takes_n_components = False, False, 0, False

    def __init__(self, n_components: int | None = None, seed: int = 0):
        self.n_components = n_components
        self.seed = seed

    def _transform(self, X):
        return X.to(torch.float32)

    def iter_blocks(self, X):
        """``(cols, X)`` once: every column in one block, as float32."""
        X = _check_2d(X, "NoProjection.transform")
        _check_fitted(self)
        _check_n_features(self, X)
        yield slice(0, X.shape[1]), X.to(torch.float32)

    nbytes = 0
    param_count = 0
    matrix_bytes = 0


# OPUProjection lives in projector.opu, which imports lightonml only inside fit:
# listing it here costs nothing when lightonml is not installed.
PROJECTIONS = {
    "gaussian": GaussianProjection,
    "linear": LinearProjection,
    "none": NoProjection,
    "opu": OPUProjection,
    "structured": StructuredProjection,
}


#: The class attributes every projection declares (see the module's docstring).
RECORD = ("name", "streamable", "takes_block_size", "flops_per_mac", "takes_n_components")


def make_projection(name, n_components: int | None = None, seed: int = 0, **kwargs):
    """Build a projection from its registry name (or its class), e.g.
    ``make_projection("gaussian", n_components=10_000, seed=0, block_size=1024)``."""
    try:
        cls = name if isinstance(name, type) else PROJECTIONS[name]
    except KeyError:
        raise ValueError(f"Unknown projection {name!r}: choose one of {sorted(PROJECTIONS)}.") from None
    if cls is not NoProjection and n_components is None:
        raise ValueError(f"Projection {name!r} needs n_components (the number of random features).")
    if cls is NoProjection:
        return cls(n_components=n_components, seed=seed)  # nothing else applies to it
    return cls(n_components=n_components, seed=seed, **kwargs)
