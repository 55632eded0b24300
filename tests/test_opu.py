import sys
import warnings

import numpy as np
import pytest
import torch

from projector.opu import INSTALL_HINT, OPUProjection
from projector.projections import GaussianProjection
from tiny_data import binary


def test_missing_lightonml_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "lightonml", None)  # import lightonml -> ImportError
    with pytest.raises(ImportError) as info:
        OPUProjection(10).fit(binary(3, 8))
    assert INSTALL_HINT in str(info.value)
    assert "pip install --no-deps lightonml==1.4.3" in str(info.value)


def test_float_input_is_refused():
    with pytest.raises(TypeError, match="binary input.*'sign' or 'threshold'"):
        OPUProjection(10).fit(torch.rand(3, 8))
    with pytest.raises(ValueError, match="0/1"):
        OPUProjection(10).fit(torch.full((3, 8), 2, dtype=torch.uint8))


@pytest.fixture(scope="module")
def lightonml_opu():
    pytest.importorskip("attr")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lightonml = pytest.importorskip("lightonml")
    return lightonml.OPU


def test_wrapper_equals_lightonml_transform(lightonml_opu):
    X = binary(12, 40)
    k = 300
    proj = OPUProjection(k, seed=0, simulated=True)
    Y = proj.fit_transform(X)
    assert Y.dtype == torch.float32 and Y.shape == (12, k)
    assert proj.simulated_
    # lightonml's own simulated OPU, as documented: same seed-0 matrix, same output
    opu = lightonml_opu(n_components=k, simulated=True, max_n_features=X.shape[1])
    opu.fit1d(X.numpy())
    ref = np.asarray(opu.transform(X.numpy()), dtype=np.float32)
    opu.close()
    assert np.array_equal(Y.numpy(), ref)
    # and it is exactly |X R|^2 with the simulator's dense R
    R = proj.opu_.device.random_matrix
    assert np.array_equal(Y.numpy(), (np.abs(X.numpy() @ R) ** 2).astype(np.float32))
    assert proj.nbytes == R.nbytes == proj.matrix_bytes
    proj.close()


def test_wrapper_seed_changes_matrix(lightonml_opu):
    X = binary(4, 20)
    Y0 = OPUProjection(50, seed=0, simulated=True).fit_transform(X)
    Y1 = OPUProjection(50, seed=1, simulated=True).fit_transform(X)
    assert not torch.allclose(Y0, Y1, rtol=0.1)


def test_parity_in_distribution_with_gaussian_projection(lightonml_opu):
    """Scale factor 1: the simulator's R has Re, Im ~ N(0, 1/m) like ours, so features
    agree in mean (2 |x|^2 / m), variance (mean^2, exponential law) and kernel."""
    m, k = 64, 20_000
    X = binary(8, m, seed=1)
    Y_opu = OPUProjection(k, seed=0, simulated=True).fit_transform(X).double()
    Y_ours = GaussianProjection(k, seed=0).fit_transform(X).double()

    mean_cf = 2 * X.double().sum(1) / m  # E|x.r|^2 = 2 s2 |x|^2 for binary x
    for Y in (Y_opu, Y_ours):
        torch.testing.assert_close(Y.mean(1), mean_cf, rtol=0.03, atol=0)
        torch.testing.assert_close(Y.var(1), mean_cf**2, rtol=0.08, atol=0)
    torch.testing.assert_close(Y_opu.mean(1), Y_ours.mean(1), rtol=0.04, atol=0)

    K_opu, K_ours = Y_opu @ Y_opu.T / k, Y_ours @ Y_ours.T / k
    assert ((K_opu - K_ours).norm() / K_ours.norm()).item() < 0.03
