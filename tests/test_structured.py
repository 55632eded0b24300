import math

import pytest
import torch
from sklearn.exceptions import NotFittedError

import projector._random_matrix as P
from projector.projections import PROJECTIONS, GaussianProjection, make_projection, resolve_compute_mode
from projector.structured import StructuredProjection, fwht, hadamard, padded_dim
from tiny_data import binary

K = 1000


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def X():
    return binary(7, 50)


def _closed_form_kernel(x, m):
    """E[Y_x . Y_y] / k of |XR|^2 features, Re R, Im R i.i.d. N(0, 1/m) (see test_projections)."""
    s2 = 1.0 / m
    n2 = (x * x).sum(1)
    return 4 * s2**2 * (n2[:, None] * n2[None, :] + (x @ x.T) ** 2)


# --- the transform ---

def _butterfly(x):
    """The textbook in-order FWHT (log2 d passes), the reference for the Kronecker-GEMM one."""
    d, h = x.shape[-1], 1
    x = x.clone()
    while h < d:
        y = x.reshape(*x.shape[:-1], d // (2 * h), 2, h)
        a, b = y[..., 0, :].clone(), y[..., 1, :].clone()
        y[..., 0, :], y[..., 1, :] = a + b, a - b
        x, h = y.reshape(x.shape), 2 * h
    return x


@pytest.mark.parametrize("d", [1, 2, 4, 64, 512, 2**13])
def test_fwht_is_the_sylvester_hadamard_matrix(d):
    g = torch.Generator().manual_seed(d)
    x = torch.randn(3, 2, d, generator=g, dtype=torch.float64)
    torch.testing.assert_close(fwht(x), _butterfly(x))
    if d <= 512:
        H = hadamard(d, dtype=torch.float64)
        torch.testing.assert_close(fwht(x), x @ H)
        assert torch.equal(H @ H.T, d * torch.eye(d, dtype=torch.float64))
        if d >= 2:  # Sylvester order: H_2d = [[H, H], [H, -H]]
            h = hadamard(d // 2, dtype=torch.float64)
            assert torch.equal(H, torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)]))


def test_fwht_refuses_other_lengths():
    with pytest.raises(ValueError, match="power-of-two"):
        fwht(torch.zeros(2, 12))


def test_padded_dim():
    assert [padded_dim(m) for m in (1, 2, 3, 50, 64, 65, 11_520, 81_536)] == [2, 2, 4, 64, 64, 128, 16_384, 131_072]


# --- the projection ---

def test_registered_and_made_by_name(X):
    assert PROJECTIONS["structured"] is StructuredProjection
    proj = make_projection("structured", n_components=300, seed=1)
    with pytest.raises(NotFittedError):
        proj.transform(X)
    Y = proj.fit_transform(X)
    assert Y.shape == (7, 300) and Y.dtype == torch.float32 and bool((Y >= 0).all())
    assert proj.padded_dim_ == 64 and proj.n_transforms_ == math.ceil(600 / 64)
    assert proj.nbytes == 0 and proj.param_count == 0
    # O(k) numbers if kept, not O(m k)
    assert proj.matrix_bytes == proj.n_transforms_ * (4 * 64 * 4 + 50 * 8) < 50 * 300 * 8


def test_seed_prefix_and_input_dtype(X):
    Y = StructuredProjection(K, seed=3).fit_transform(X)
    assert torch.equal(Y, StructuredProjection(K, seed=3).fit_transform(X))
    assert not torch.allclose(Y, StructuredProjection(K, seed=4).fit_transform(X), rtol=0.1)
    assert torch.allclose(StructuredProjection(300, seed=3).fit_transform(X), Y[:, :300], rtol=1e-5, atol=1e-6)
    assert torch.allclose(StructuredProjection(K, seed=3).fit_transform(X.double()), Y, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("block_size,row_chunk_size", [(1, None), (100, 2), (None, 1)])
def test_block_and_row_chunk_invariant(block_size, row_chunk_size, X):
    ref = StructuredProjection(K, seed=3).fit_transform(X)
    proj = StructuredProjection(K, seed=3, block_size=block_size, row_chunk_size=row_chunk_size).fit(X)
    assert torch.allclose(proj.transform(X), ref, rtol=1e-5, atol=1e-6)
    assert torch.allclose(torch.cat([b for _, b in proj.iter_blocks(X)], 1), ref, rtol=1e-5, atol=1e-6)


def test_features_are_modulus_squared_of_the_equivalent_dense_R(X):
    proj = StructuredProjection(K, seed=5).fit(X)
    R_re, R_im = proj.random_block(slice(0, K))
    assert R_re.shape == R_im.shape == (50, K)
    Xf = X.double()
    expected = (Xf @ R_re.double()) ** 2 + (Xf @ R_im.double()) ** 2
    assert torch.allclose(proj.transform(X).double(), expected, rtol=1e-4, atol=1e-6)
    re, im = proj.random_block(slice(300, 700))
    assert torch.allclose(re, R_re[:, 300:700], atol=1e-6) and torch.allclose(im, R_im[:, 300:700], atol=1e-6)


def test_equivalent_R_has_the_dense_distribution():
    m, k = 100, 20_000
    proj = StructuredProjection(k, seed=3).fit(torch.zeros(1, m))
    R_re, R_im = proj.random_block(slice(0, k))
    for part in (R_re, R_im):
        assert abs(part.mean().item()) < 0.01
        assert abs(part.var().item() * m - 1) < 0.02
        kurtosis = ((part**4).mean() / (part**2).mean() ** 2).item()
        assert abs(kurtosis - 3) < 0.1  # Gaussian entries (the chi row lengths make it so)
    assert abs(torch.corrcoef(torch.stack([R_re.flatten(), R_im.flatten()]))[0, 1]) < 0.01


@pytest.mark.parametrize("binary", [False, True])
def test_empirical_kernel_converges_to_the_dense_closed_form(binary):
    g = torch.Generator().manual_seed(0)
    m = 40
    x = torch.randn(6, m, generator=g, dtype=torch.float64)
    if binary:
        x = (x > 0).double()
    K_cf = _closed_form_kernel(x, m)
    errors = []
    for k in (1000, 64_000):
        Y = StructuredProjection(k, seed=1).fit_transform(x.float()).double()
        errors.append(((Y @ Y.T / k - K_cf).norm() / K_cf.norm()).item())
    assert errors[1] < errors[0] / 3
    assert errors[1] < 0.01
    # as close as the dense projection at equal k
    Yg = GaussianProjection(64_000, seed=1).fit_transform(x.float()).double()
    dense_err = ((Yg @ Yg.T / 64_000 - K_cf).norm() / K_cf.norm()).item()
    assert errors[1] < 2 * dense_err + 0.002


def test_errors_speak(X):
    with pytest.raises(ValueError, match="positive integer"):
        StructuredProjection(0).fit(X)
    with pytest.raises(ValueError, match="n_hd"):
        StructuredProjection(10, n_hd=0).fit(X)
    proj = StructuredProjection(10).fit(X)
    with pytest.raises(ValueError, match="fitted on 50 features but X has 49"):
        proj.transform(X[:, :49])


# --- the dense projection's compute modes and generation (projector.projections) ---

@pytest.mark.parametrize("mode,tol", [("bf16x2", 1e-4), (torch.float16, 2e-3), (torch.bfloat16, 2e-2)])
def test_low_precision_modes_approximate_float64(mode, tol, X):
    ref = GaussianProjection(K, seed=3, compute_dtype=torch.float64).fit_transform(X)
    Y = GaussianProjection(K, seed=3, compute_dtype=mode).fit_transform(X)
    assert Y.dtype == torch.float32
    assert ((Y - ref).abs().max() / ref.abs().max()).item() < tol
    # still block-size invariant
    Yb = GaussianProjection(K, seed=3, compute_dtype=mode, block_size=300).fit_transform(X)
    assert torch.allclose(Yb, Y, rtol=1e-5, atol=1e-6)


def test_compute_mode_resolution(X):
    assert resolve_compute_mode(None, X) == "float32"  # CPU: no bf16 matrix units assumed
    assert resolve_compute_mode(torch.bfloat16, X) == "bfloat16"
    assert resolve_compute_mode("bf16x2", X.float()) == "bf16x2"
    with pytest.raises(ValueError, match="not understood"):
        resolve_compute_mode("int4", X)


def test_tiles_drawn_by_the_thread_pool_are_the_serial_ones(monkeypatch):
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert P._generation_pool() is not None
        pooled = P.gaussian_tiles(7, 33, 2, 4)
    finally:
        torch.set_num_threads(threads)
    monkeypatch.setattr(P, "_generation_pool", lambda: None)
    assert torch.equal(pooled, P.gaussian_tiles(7, 33, 2, 4))
    assert torch.equal(P.gaussian_tiles(7, 33, 2, 4, scale=False).mul_(1.0 / math.sqrt(33)), pooled)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_prefetch_and_bf16x2_match_float32():
    X = binary(64, 300).cuda()
    ref = GaussianProjection(K, seed=3, compute_dtype=torch.float32, prefetch=False).fit_transform(X)
    for bs in (256, 512, None):
        Y = GaussianProjection(K, seed=3, block_size=bs).fit_transform(X)  # auto: bf16x2, prefetched
        assert ((Y - ref).abs().max() / ref.abs().max()).item() < 1e-4
        Y32 = GaussianProjection(K, seed=3, block_size=bs, compute_dtype=torch.float32).fit_transform(X)
        assert torch.allclose(Y32, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    X = binary(7, 50)
    ref = StructuredProjection(K, seed=3).fit_transform(X)
    Y = StructuredProjection(K, seed=3).fit_transform(X.cuda())
    assert Y.device.type == "cuda"
    assert torch.allclose(Y.cpu(), ref, rtol=1e-4, atol=1e-5)  # same parameters on every device
