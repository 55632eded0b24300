"""LightOn OPU random features through lightonml (real device or its simulator).

lightonml is imported inside ``fit`` only, so this module imports without it. Install:

    pip install --no-deps lightonml==1.4.3 attrs 'numexpr>=2.8' 'setuptools<81'

(lightonml 1.4.3 declares stale pins, hence ``--no-deps``; at run time it needs
``attrs``, ``numexpr`` and ``pkg_resources``, which setuptools dropped in 81.)

Scale relative to GaussianProjection
------------------------------------
lightonml's simulated OPU (``SimulatedOpuDevice.build_random_matrix``) draws a dense
complex64 ``R: (max_n_features, n_components)`` with ``numpy.random.RandomState(seed)``,
``Re R`` then ``Im R`` each i.i.d. ``N(0, 1/max_n_features)``, and its ``transform``
returns exactly ``|X R|^2`` (no output rescaling; ``rescale`` only applies to
``linear_transform``). With ``max_n_features = n_features``, as set here, that is the
distribution of GaussianProjection's R: **the scale factor is 1** (for another
``max_n_features`` M it would be ``n_features / M`` on the features). The matrices
themselves differ (numpy vs torch generators). A real OPU's scale depends on the
camera's exposure and gain and is arbitrary; the ridge's alpha grid is relative to the
features' scale for that reason.

Memory: the simulator holds R whole, ``n_features * n_components * 8`` bytes.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from sklearn.base import ClassNamePrefixFeaturesOutMixin

from projector._validation import _check_fitted, _Transformer

__all__ = ["OPUProjection", "INSTALL_HINT"]

INSTALL_HINT = (
    "pip install --no-deps lightonml==1.4.3 attrs 'numexpr>=2.8' 'setuptools<81'"
)


def _import_lightonml():
    """Import lightonml (noisy about pkg_resources on import) or say how to install it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import lightonml
            from lightonml import OPU  # noqa: F401
            from lightonml.internal.simulated_device import SimulatedOpuDevice  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            "OPUProjection needs lightonml, which is not installed (or one of its "
            f"run-time dependencies is missing: {exc}). Install it with:\n    {INSTALL_HINT}\n"
            "or `pip install gradfree[opu]` followed by "
            "`pip install --no-deps lightonml==1.4.3`."
        ) from exc
    return lightonml


def _open_real_opu(n_components: int):
    """A real OPU if its drivers import and the device opens, else None."""
    try:
        import lightonopu  # noqa: F401  (the device drivers)
    except ImportError:
        return None
    from lightonml import OPU

    try:
        return OPU(n_components=n_components, disable_pbar=True)  # the caller shows progress
    except Exception as exc:  # no config file, device busy or absent
        warnings.warn(f"lightonopu is installed but no OPU could be opened ({exc}); using the simulator.")
        return None


class OPUProjection(ClassNamePrefixFeaturesOutMixin, _Transformer):
    """Random features ``Y = |X R|^2`` from a LightOn OPU, or lightonml's simulator.

    X: (n_samples, n_features) binary (uint8 or bool, values 0/1)
    -> Y: (n_samples, n_components) float32 on X's device.

    Parameters
    ----------
    n_components : number of random features k.
    seed : seed of the simulator's R (numpy RandomState); seed=0 is what
        ``lightonml.OPU(simulated=True)`` uses. Ignored by a real device, whose R is physical.
    simulated : True: the simulator; False: a real OPU (error if none opens);
        None: a real OPU when its drivers import and the device opens, else the simulator.

    Attributes
    ----------
    n_features_in_ : number of input features m.
    opu_ : the lightonml ``OPU``, fitted with ``fit1d``.
    simulated_ : whether ``opu_`` is the simulator.
    """

    name = "opu"
    # the registry record (projector.projections): counted as the dense |X R|^2 the device computes
    streamable, takes_block_size, flops_per_mac, takes_n_components = False, False, 4, True
    _fitted_attr = "opu_"
    _preserves_dtype = []  # binary input, float32 features

    def __init__(self, n_components: int, seed: int = 0, simulated: bool | None = None):
        self.n_components = n_components
        self.seed = seed
        self.simulated = simulated

    def _fit(self, X: torch.Tensor, kind: str) -> None:
        """X: (n_samples, n_features) binary. Opens the OPU (builds the simulator's R)."""
        from projector._blocks import check_projection_params

        check_projection_params(self)
        if self.simulated is not False:  # the simulator holds R whole
            from projector._validation import check_memory

            check_memory("OPUProjection (simulated)", lambda k: X.shape[1] * k * 8, int(self.n_components), "cpu",
                         f"its complex64 R, {X.shape[1]:,} x n_components", "or fewer input features.")
        X_np = self._binary_numpy(X)
        _import_lightonml()
        from lightonml import OPU
        from lightonml.internal.simulated_device import SimulatedOpuDevice

        m, k = X.shape[1], int(self.n_components)
        opu = None if self.simulated else _open_real_opu(k)
        if opu is None and self.simulated is False:
            raise RuntimeError(
                "OPUProjection(simulated=False) needs a real OPU, but lightonopu is not "
                "installed or no device opened. Use simulated=None or True for the simulator."
            )
        if opu is None:
            # OPU(n_components, simulated=True, max_n_features=m) with R built from our seed:
            # the device is handed over with R already of the right shape, so not rebuilt.
            device = SimulatedOpuDevice()
            device.build_random_matrix(m, k, seed=self.seed)
            opu = OPU(n_components=k, opu_device=device, max_n_features=m, disable_pbar=True)
        opu.fit1d(X_np)
        self.opu_ = opu
        self.simulated_ = isinstance(opu.device, SimulatedOpuDevice)

    @property
    def _n_features_out(self) -> int:
        return int(self.n_components)

    def _transform(self, X: torch.Tensor) -> torch.Tensor:
        """X: (n_samples, n_features) binary -> Y: (n_samples, n_components) float32."""
        Y = self.opu_.transform(self._binary_numpy(X))
        return torch.from_numpy(np.asarray(Y, dtype=np.float32)).to(X.device)

    def iter_blocks(self, X: torch.Tensor):
        """``(cols, Y)`` once: the whole :meth:`transform`, every column in one block (the OPU is not streamed)."""
        yield slice(0, self.n_components), self.transform(X)

    def close(self) -> None:
        """Release the device (and the simulator's R)."""
        if hasattr(self, "opu_"):
            self.opu_.close()
            del self.opu_

    @staticmethod
    def _binary_numpy(X: torch.Tensor) -> np.ndarray:
        if X.dtype not in (torch.uint8, torch.bool):
            raise TypeError(
                f"The OPU takes binary input (uint8 or bool 0/1), got dtype {X.dtype}. "
                "Encode the features first with the 'sign' or 'threshold' encoder "
                "(projector.encoders.make_encoder)."
            )
        X_np = X.detach().to("cpu", torch.uint8).numpy()
        if X_np.size and X_np.max() > 1:
            raise ValueError(
                f"The OPU takes 0/1 input, got values up to {int(X_np.max())}. "
                "Encode the features with the 'sign' or 'threshold' encoder."
            )
        return X_np

    @property
    def matrix_bytes(self) -> int:
        """Bytes of R as complex64, m * k * 8 (what the simulator holds)."""
        _check_fitted(self)
        return self.n_features_in_ * self.n_components * 8

    @property
    def nbytes(self) -> int:
        """Bytes actually held: the simulator's R; 0 for a real device (R is optical)."""
        _check_fitted(self, "opu_")
        R = getattr(self.opu_.device, "random_matrix", None) if self.simulated_ else None
        return 0 if R is None else int(R.nbytes)

    param_count = 0
