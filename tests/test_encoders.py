import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError

from projector.encoders import ENCODERS, SignEncoder, ThresholdEncoder, make_encoder


@pytest.fixture
def X():
    g = torch.Generator().manual_seed(0)
    return torch.randn(9, 5, generator=g)


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_registry_shapes_and_dtypes(name, X):
    enc = make_encoder(name)
    Z = enc.fit_transform(X)
    assert Z.shape == X.shape
    assert Z.dtype == (torch.uint8 if enc.binary else torch.float32)
    assert enc.n_features_in_ == X.shape[1]
    assert enc.name == name
    if enc.binary:
        assert set(Z.unique().tolist()) <= {0, 1}


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_errors_speak_to_the_user(name, X):
    enc = make_encoder(name)
    with pytest.raises(NotFittedError, match="fit"):
        enc.transform(X)
    enc.fit(X)
    with pytest.raises(ValueError, match="fitted on 5 features but X has 4"):
        enc.transform(X[:, :4])
    with pytest.raises(ValueError, match="2-d"):
        enc.transform(X[0])
    # numpy in, numpy out: the same values as for the tensor
    np.testing.assert_array_equal(enc.transform(X.numpy()), enc.transform(X).numpy())


def test_sign_values():
    X = torch.tensor([[-1.0, 0.0, 0.5], [2.0, -0.0, -3.0]])
    Z = SignEncoder().fit_transform(X)
    assert Z.dtype == torch.uint8
    assert Z.tolist() == [[0, 0, 1], [1, 0, 0]]


def test_threshold_fixed():
    X = torch.tensor([[0.1, 0.5, 0.9]])
    assert ThresholdEncoder(0.5).fit_transform(X).tolist() == [[0, 0, 1]]


@pytest.mark.parametrize("n", [7, 8])  # odd and even: numpy averages the two middle values
def test_threshold_median_matches_numpy(n):
    g = torch.Generator().manual_seed(n)
    X = torch.randn(n, 6, generator=g)
    X[:, 0] = torch.arange(n, dtype=torch.float32)  # exact middle values
    enc = ThresholdEncoder("median").fit(X)
    np.testing.assert_allclose(enc.thresholds_.numpy(), np.median(X.numpy(), axis=0), rtol=1e-6)
    Z = enc.transform(X)
    assert torch.equal(Z, (X > enc.thresholds_).to(torch.uint8))
    # half of the training samples are on, per feature
    assert (Z.sum(0) == n // 2).all()


def test_threshold_median_fitted_on_train_only():
    train = torch.tensor([[0.0], [1.0], [2.0]])
    enc = ThresholdEncoder("median").fit(train)
    assert enc.transform(torch.tensor([[1.5], [0.5]])).tolist() == [[1], [0]]


def test_bad_threshold_and_unknown_name():
    with pytest.raises(ValueError, match="'median'"):
        ThresholdEncoder("mean").fit(torch.zeros(2, 2))
    with pytest.raises(ValueError, match=r"choose one of \['none', 'sign', 'threshold'\]"):
        make_encoder("binary")


def test_identity_is_float32_copy(X):
    Z = make_encoder("none").fit_transform(X.double())
    assert Z.dtype == torch.float32
    assert torch.equal(Z, X)
