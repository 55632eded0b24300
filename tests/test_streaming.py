"""The streamed ridge reproduces the ridge on materialised features; the method's wiring."""

import numpy as np
import pytest
import torch

import projector.projections as P
from benchmarks.methods.random_features import RandomFeatures, RandomFeaturesConfig, use_streaming
from projector.projections import GaussianProjection, LinearProjection
from projector.ridge import RidgeClassifier
from projector.streaming import StreamingRidgeClassifier
from projector.structured import StructuredProjection


pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.numerics]


def _data(n, m=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    X = (torch.rand(n, m, generator=g) > 0.5).to(torch.uint8)
    X[:, :5] = (y[:, None] == torch.arange(5)[None, :] % 3).to(torch.uint8)
    return X, y


class _NoTransform(GaussianProjection):
    """A GaussianProjection whose transform is forbidden: the dual path may only stream blocks."""

    def transform(self, X):
        raise AssertionError("the (n, k) feature matrix was materialised")


@pytest.mark.parametrize("refit", [True, False])
@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("k,solver", [(40, "primal"), (300, "dual")])
@pytest.mark.parametrize("cls", [GaussianProjection, StructuredProjection])
def test_streamed_fit_is_the_ridge_on_materialised_features(cls, k, solver, fit_intercept, refit):
    X, y = _data(60)
    Xv, yv = _data(30, seed=1)
    Xt, _ = _data(40, seed=2)
    proj = cls(k, seed=1).fit(X)
    ref = RidgeClassifier(fit_intercept=fit_intercept, refit=refit).fit(
        proj.transform(X), y, proj.transform(Xv), yv)
    st = StreamingRidgeClassifier(cls(k, seed=1), fit_intercept=fit_intercept, refit=refit, block_size=128)
    st.fit(X, y, Xv, yv)
    assert st.solver_ == solver
    np.testing.assert_allclose(st.alphas_, ref.alphas_, rtol=1e-5)
    assert list(st.val_scores_.values()) == list(ref.val_scores_.values())
    a, b = st.decision_function(Xt), ref.decision_function(proj.transform(Xt))
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item())
    assert st.coef_.shape == (3, k) and st.weight_bytes == 3 * k * 4 + 3 * 4


def test_dual_never_materialises_the_features():
    X, y = _data(40)
    Xv, yv = _data(20, seed=1)
    st = StreamingRidgeClassifier(_NoTransform(1000, seed=0), block_size=256).fit(X, y, Xv, yv)
    assert st.solver_ == "dual" and st.gram_bytes_ == 60 * 60 * 4
    st.predict(Xv)  # prediction streams too
    with pytest.raises(AssertionError, match="materialised"):
        StreamingRidgeClassifier(_NoTransform(10, seed=0), solver="primal").fit(X, y, Xv, yv)


def test_block_size_does_not_change_the_model():
    X, y = _data(50)
    Xv, yv = _data(20, seed=1)
    a = StreamingRidgeClassifier(LinearProjection(700, seed=0), block_size=256).fit(X, y, Xv, yv)
    b = StreamingRidgeClassifier(LinearProjection(700, seed=0), block_size=700).fit(X, y, Xv, yv)
    assert a.alpha_ == pytest.approx(b.alpha_)
    torch.testing.assert_close(a.coef_, b.coef_, rtol=1e-4, atol=1e-5 * a.coef_.abs().max().item())


@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("k,solver", [(40, "primal"), (300, "dual")])
def test_streamed_leave_one_out_is_the_ridges_on_materialised_features(k, solver, fit_intercept):
    """No validation rows: the streamed fit scores the grid by leave-one-out (primal: G's
    eigenbasis and one more pass over the rows; dual: the centred kernel) as RidgeClassifier
    does on the materialised features, and fits the same model."""
    X, y = _data(60)
    Xt, _ = _data(40, seed=2)
    proj = GaussianProjection(k, seed=1).fit(X)
    st = StreamingRidgeClassifier(proj, fit_intercept=fit_intercept, block_size=256).fit(X, y)
    rc = RidgeClassifier(fit_intercept=fit_intercept, solver=solver).fit(proj.transform(X), y)
    assert st.solver_ == rc.solver_ == solver and st.cv_ == rc.cv_ == "loo"
    assert st.alpha_ == pytest.approx(rc.alpha_, rel=1e-6)
    for (a, s1), (b, s2) in zip(st.val_scores_.items(), rc.val_scores_.items()):
        assert a == pytest.approx(b, rel=1e-6) and s1 == pytest.approx(s2, abs=1.01 / 60)
    S1, S2 = st.decision_function(Xt), rc.decision_function(proj.transform(Xt))
    torch.testing.assert_close(S1, S2, rtol=1e-3, atol=1e-3 * S2.abs().max().item())


def test_errors_speak():
    X, y = _data(20)
    with pytest.raises(ValueError, match="solver"):
        StreamingRidgeClassifier(GaussianProjection(50), solver="qr").fit(X, y, X, y)


# --- the method's wiring ---

def test_use_streaming_auto_by_memory(monkeypatch):
    cfg = RandomFeaturesConfig(n_components=10_000)
    assert not use_streaming(cfg, 7000, "cpu")  # 280 MB of features: materialise
    monkeypatch.setattr(P, "available_memory_bytes", lambda device: 100 << 20)
    assert use_streaming(cfg, 7000, "cpu")
    assert not use_streaming(RandomFeaturesConfig(streaming=False), 7000, "cpu")
    assert not use_streaming(RandomFeaturesConfig(projection="kernel"), 7000, "cpu")
    with pytest.raises(ValueError, match="streaming=True needs"):
        use_streaming(RandomFeaturesConfig(projection="opu", streaming=True), 10, "cpu")


def test_the_memory_plan_shows_the_path_a_run_takes():
    # The full-size Gaussian cell of curve-cifar10 (45,000 + 5,000 + 10,000 images, k = 16,000): with 22 GiB free
    # a run holds its (N, k) features (3.8 GB, under a quarter of that), with 12 GiB it streams. The plan once
    # showed the streamed path (6.6 GiB) for both, while the run held its features and peaked at 10.3 GB.
    from dataclasses import replace

    from benchmarks.core.protocol import CellShape

    shape = CellShape(backbone="mobilenet_v2", cut="features.18", image_size=96, n_train=45_000, n_val=5_000,
                      n_test=10_000)
    cfg = RandomFeaturesConfig(n_components=16_000, refit=False)
    assert not use_streaming(cfg, 60_000, "cpu", 22 << 30) and use_streaming(cfg, 60_000, "cpu", 12 << 30)
    held, streamed = (RandomFeatures.memory_bytes(cfg, replace(shape, free_bytes=gib << 30)) for gib in (22, 12))
    assert held == RandomFeatures.memory_bytes(replace(cfg, streaming=False), shape) > 9 * 10**9
    assert streamed == RandomFeatures.memory_bytes(replace(cfg, streaming=True), shape) < 7 << 30
    assert RandomFeatures.memory_bytes(cfg, shape) == streamed  # free memory unknown: the smaller path


@pytest.fixture(scope="module")
def _ctx_factory():
    from benchmarks.core.data import synthetic_bundle
    from benchmarks.core.protocol import RunContext
    from benchmarks.core.timing import Clock

    data = synthetic_bundle(n_per_class=12, image_size=32, n_classes=2)
    return lambda: RunContext(data=data, clock=Clock("cpu"), device=torch.device("cpu"), weights="none",
                              progress=False, batch_size=64)


@pytest.mark.parametrize("projection", ["gaussian", "structured"])
def test_random_features_streamed_and_materialised_agree(projection, _ctx_factory):
    rows = {}
    for streaming in (False, True):
        torch.manual_seed(0)  # weights="none": the same random backbone for both
        ctx = _ctx_factory()
        cfg = RandomFeaturesConfig(projection=projection, n_components=600, streaming=streaming)
        rows[streaming] = RandomFeatures(cfg).run(ctx)
        assert rows[streaming]["streaming"] is streaming
    assert rows[True]["test_acc"] == rows[False]["test_acc"]
    assert rows[True]["alpha"] == pytest.approx(rows[False]["alpha"], rel=1e-5)
    assert rows[True]["n_components"] == 600


def test_random_features_kernel(_ctx_factory):
    ctx = _ctx_factory()
    row = RandomFeatures(RandomFeaturesConfig(projection="kernel")).run(ctx)
    assert row["n_components"] == -1 and row["projection"] == "kernel"
    assert 0.0 <= row["test_acc"] <= 1.0 and row["selection"] == "validation split"
    assert row["ridge_weight_bytes"] >= len(ctx.data.train) * row["feature_dim"]  # the kept rows
    assert "project_s" not in ctx.clock.totals
