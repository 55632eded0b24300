import math

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError

import projector.projections as P
from projector.projections import (
    PROJECTIONS,
    TILE_COLS,
    GaussianProjection,
    LinearProjection,
    make_projection,
)
from tiny_data import binary

pytestmark = pytest.mark.numerics

K = 1000  # not a multiple of TILE_COLS, on purpose


@pytest.fixture
def X():
    return binary(7, 50)


# --- registry ---

@pytest.mark.parametrize("name", sorted(PROJECTIONS))
def test_registry_shapes_and_errors(name, X):
    if name == "opu":
        pytest.importorskip("lightonml")
    proj = make_projection(name, n_components=300, seed=1)
    with pytest.raises(NotFittedError, match="fit"):
        proj.transform(X)
    Y = proj.fit_transform(X)
    k = X.shape[1] if name == "none" else 300
    assert Y.shape == (X.shape[0], k) and Y.dtype == torch.float32
    assert proj.name == name
    with pytest.raises(ValueError, match="fitted on 50 features but X has 49"):
        proj.transform(X[:, :49])
    # streaming gives the same features
    Y_stream = torch.cat([b for _, b in proj.iter_blocks(X)], dim=1)
    assert torch.allclose(Y_stream, Y, rtol=1e-6)


def test_make_projection_errors():
    with pytest.raises(ValueError, match="choose one of"):
        make_projection("fourier", n_components=10)
    with pytest.raises(ValueError, match="needs n_components"):
        make_projection("gaussian")


def test_none_passes_float32_through(X):
    Y = make_projection("none").fit_transform(X)
    assert torch.equal(Y, X.float())


# --- the canonical R ---

def test_same_seed_same_features_other_seed_differs(X):
    Y0 = GaussianProjection(K, seed=3).fit_transform(X)
    assert torch.equal(Y0, GaussianProjection(K, seed=3).fit_transform(X))
    Y1 = GaussianProjection(K, seed=4).fit_transform(X)
    assert not torch.allclose(Y0, Y1, rtol=0.1)


@pytest.mark.parametrize("block_size", [1, 100, TILE_COLS, 300, 700, 5000, None])
@pytest.mark.parametrize("cls", [GaussianProjection, LinearProjection])
def test_block_size_invariant(cls, block_size, X):
    ref = cls(K, seed=3, block_size=TILE_COLS).fit_transform(X)
    Y = cls(K, seed=3, block_size=block_size).fit_transform(X)
    assert torch.allclose(Y, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("row_chunk_size", [1, 3, 100])
def test_row_chunk_invariant(row_chunk_size, X):
    """Rows are multiplied in fixed-size blocks whatever row_chunk_size: the same bits."""
    ref = GaussianProjection(K, seed=3, block_size=512).fit_transform(X)
    Y = GaussianProjection(K, seed=3, row_chunk_size=row_chunk_size, block_size=512).fit_transform(X)
    assert torch.equal(Y, ref)


def test_tiny_memory_budget_still_correct(X, monkeypatch):
    ref = GaussianProjection(K, seed=3).fit_transform(X)
    import projector.gaussian as G

    monkeypatch.setattr(G, "available_memory_bytes", lambda device: 4 * X.shape[1] * 4 * 3)
    Y = GaussianProjection(K, seed=3).fit_transform(X)  # one tile per block, row chunks
    assert torch.allclose(Y, ref, rtol=1e-5, atol=1e-6)


def test_prefix_of_components_and_dtype_of_input(X):
    Y = GaussianProjection(K, seed=3).fit_transform(X)
    assert torch.equal(GaussianProjection(300, seed=3).fit_transform(X), Y[:, :300])
    assert torch.allclose(GaussianProjection(K, seed=3).fit_transform(X.double()), Y, rtol=1e-6)


def test_gaussian_is_modulus_squared_of_random_block(X):
    proj = GaussianProjection(K, seed=5).fit(X)
    R_re, R_im = proj.random_block(slice(0, K))
    assert R_re.shape == R_im.shape == (X.shape[1], K)
    Xf = X.double()
    expected = (Xf @ R_re.double()) ** 2 + (Xf @ R_im.double()) ** 2
    assert torch.allclose(proj.transform(X).double(), expected, rtol=1e-5)
    # a block in the middle, not tile aligned, is the same slice of R
    re, im = proj.random_block(slice(300, 700))
    assert torch.equal(re, R_re[:, 300:700]) and torch.equal(im, R_im[:, 300:700])
    # distribution: Re, Im i.i.d. N(0, 1/m)
    m = X.shape[1]
    for part in (R_re, R_im):
        assert abs(part.mean().item()) < 0.01
        assert abs(part.var().item() * m - 1) < 0.03
    assert abs(torch.corrcoef(torch.stack([R_re.flatten(), R_im.flatten()]))[0, 1]) < 0.01


def test_linear_is_real_part_of_the_same_R(X):
    lin = LinearProjection(K, seed=5).fit(X)
    R_re, _ = GaussianProjection(K, seed=5).fit(X).random_block(slice(0, K))
    assert torch.allclose(lin.transform(X).double(), X.double() @ R_re.double(), rtol=1e-5, atol=1e-5)


def test_sizes(X):
    proj = GaussianProjection(K).fit(X)
    assert proj.nbytes == 0 and proj.param_count == 0
    assert proj.matrix_bytes == X.shape[1] * K * 8
    assert LinearProjection(K).fit(X).matrix_bytes == X.shape[1] * K * 4


# --- the kernel ---

def _closed_form_kernel(x, m):
    """E[|x.r|^2 |y.r|^2] for Re r, Im r i.i.d. N(0, s2), s2 = 1/m:
    with a = x.Re r, b = x.Im r, c = y.Re r, d = y.Im r (Isserlis),
    E[a^2 c^2] = s2^2 (|x|^2|y|^2 + 2 (x.y)^2), E[a^2 d^2] = s2^2 |x|^2|y|^2, ...
    -> 4 s2^2 (|x|^2 |y|^2 + (x.y)^2)."""
    s2 = 1.0 / m
    n2 = (x * x).sum(1)
    G = x @ x.T
    return 4 * s2**2 * (n2[:, None] * n2[None, :] + G**2)


def test_closed_form_constant_by_independent_monte_carlo():
    # numpy, not our generator: pins the constant 4 before it is used as an oracle
    rng = np.random.default_rng(0)
    m, k = 6, 400_000
    x = rng.normal(size=(2, m))
    R = (rng.normal(size=(m, k)) + 1j * rng.normal(size=(m, k))) / np.sqrt(m)
    Y = np.abs(x @ R) ** 2
    K_mc = Y @ Y.T / k
    K_cf = _closed_form_kernel(torch.tensor(x), m).numpy()
    np.testing.assert_allclose(K_mc, K_cf, rtol=0.02)


def test_empirical_kernel_converges_to_closed_form():
    g = torch.Generator().manual_seed(0)
    m = 40
    x = torch.randn(6, m, generator=g, dtype=torch.float64)
    K_cf = _closed_form_kernel(x, m)
    errors = []
    for k in (1000, 64000):
        Y = GaussianProjection(k, seed=1).fit_transform(x.float()).double()
        errors.append(((Y @ Y.T / k - K_cf).norm() / K_cf.norm()).item())
    assert errors[1] < errors[0] / 3  # ~ 1/sqrt(k): 8x expected
    assert errors[1] < 0.01


def test_gaussian_tiles_layout():
    RT = P.gaussian_tiles(seed=2, n_features=10, tile_start=1, n_tiles=2)
    assert RT.shape == (4 * TILE_COLS, 10)
    # tile 2 alone is the second tile of the pair, Re and Im
    RT2 = P.gaussian_tiles(seed=2, n_features=10, tile_start=2, n_tiles=1)
    assert torch.equal(RT2[:TILE_COLS], RT[TILE_COLS:2 * TILE_COLS])
    assert torch.equal(RT2[TILE_COLS:], RT[3 * TILE_COLS:])
    assert torch.allclose(RT2.std() * math.sqrt(10), torch.tensor(1.0), atol=0.05)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_block_invariant_and_on_device():
    X = binary(7, 50).cuda()
    ref = GaussianProjection(K, seed=3, block_size=TILE_COLS).fit_transform(X)
    assert ref.device.type == "cuda"
    for bs in (100, 700, None):
        Y = GaussianProjection(K, seed=3, block_size=bs).fit_transform(X)
        assert torch.allclose(Y, ref, rtol=1e-5, atol=1e-6)
    proj = GaussianProjection(K, seed=3).fit(X)
    R_re, R_im = proj.random_block(slice(0, K), device="cuda")
    Xf = X.double()
    assert torch.allclose(ref.double(), (Xf @ R_re.double()) ** 2 + (Xf @ R_im.double()) ** 2, rtol=1e-4)
