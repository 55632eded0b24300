"""Binary Grams in integer arithmetic (``projector._binary_gram``): every path forced in turn
(the measured choice may be float32 on this machine) and checked for exact counts against a
float64 reference computed in row blocks; the dispatcher; the exact kernel with each path;
the ``gradfree perf`` section that times them."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from benchmarks.cli import main
from benchmarks.perf import TARGETS
from benchmarks.perf import command as perf_command
from benchmarks.perf.binary_gram import cpu_flags, int8_metric
from projector import _binary_gram as B
from projector.kernel import KernelRidgeClassifier, _cross, opu_kernel

pytestmark = pytest.mark.usefixtures("one_thread")

INTEGER_PATHS = ("int8", "popcount")


def _binary(n, m, seed=0, dtype=torch.uint8, p=0.5):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, m, generator=g) < p).to(dtype)


def _ref_rows(X, r0, r1, Y=None):
    """float64 reference for rows r0:r1 of X Y^T (Y = X): one row block, never the whole Gram."""
    Y = X if Y is None else Y
    return X[r0:r1].double() @ Y.double().T


def _assert_exact(G, X, Y=None, block=512):
    assert G.shape == (X.shape[0], (X if Y is None else Y).shape[0])
    for r0 in range(0, X.shape[0], block):
        assert torch.equal(G[r0:r0 + block].double(), _ref_rows(X, r0, r0 + block, Y)), f"rows {r0}:{r0 + block}"


# --- each path, forced, exact ---

@pytest.mark.parametrize("path", B.GRAM_PATHS)
@pytest.mark.parametrize("dtype", [torch.uint8, torch.bool, torch.int64])
def test_each_path_gives_exact_counts_over_parts_and_tiles(path, dtype, monkeypatch):
    # small row tiles (across the parts' boundary) and packing chunks, so that the tile loop and
    # the mirror above the diagonal run; N, m not multiples of anything
    monkeypatch.setattr(B, "_TILE_ROWS", 37)
    monkeypatch.setattr(B, "_rows_per_chunk", lambda d, itemsize: 29)
    X = _binary(101, 203, dtype=dtype)
    X[3] = 1  # a full row: the largest count, m
    X[4] = 0
    K = B.rows_gram([X[:40], X[40:]], path=path)
    assert K.dtype == torch.float32
    _assert_exact(K, X)
    assert K[3, 3] == 203 and K[4].abs().sum() == 0


@pytest.mark.parametrize("path", B.GRAM_PATHS)
def test_cross_products_and_row_norms_are_exact(path, monkeypatch):
    monkeypatch.setattr(B, "_rows_per_chunk", lambda d, itemsize: 50)
    A, Bm = _binary(23, 130, seed=1), _binary(45, 130, seed=2)
    if path == "float32":
        assert B.binary_cross(A, Bm, path=path) is None  # the caller's own sgemm path
    else:
        G, ra = B.binary_cross(A, Bm, a_norms=True, path=path)
        assert G.dtype == ra.dtype == torch.float64
        _assert_exact(G, A, Bm)
        assert torch.equal(ra, A.double().sum(1))
    with B.forced_gram_path(path):  # the kernel's own cross products take the forced path
        G, ra = _cross(A, Bm, a_norms=True)
        _assert_exact(G, A, Bm)
        assert torch.equal(ra, A.double().sum(1))
        torch.testing.assert_close(opu_kernel(A, Bm), opu_kernel(A.double(), Bm.double()), rtol=0, atol=0)


@pytest.mark.parametrize("path", INTEGER_PATHS)
def test_more_than_65536_features_accumulate_in_int32_without_overflow(path, monkeypatch):
    m = 70_001  # past 2**16: an int16 accumulator would wrap
    inner = []
    int_mm = torch._int_mm

    def recording(a, b):  # the real GEMM; the inner dimension of each call noted
        inner.append(a.shape[1])
        return int_mm(a, b)

    monkeypatch.setattr(torch, "_int_mm", recording)
    X = _binary(40, m, seed=3, p=0.9)
    X[0] = 1
    X[1] = 1
    K = B.binary_gram([X], path=path)
    _assert_exact(K, X)
    assert K[0, 1] == m
    assert B.binary_cross(X[:5], X, path=path)[0, 1] == m
    assert set(inner) == ({m} if path == "int8" else set())  # one int8 GEMM sums all m features


def test_int_mm_padding_to_cublaslt_shapes_does_not_change_counts():
    a, b = _binary(5, 13, dtype=torch.int8), _binary(11, 13, seed=1, dtype=torch.int8)
    out = B._int_mm(a, b, pad=True)  # p <= 16, w and q not multiples of 8: all padded
    assert out.dtype == torch.int32
    assert torch.equal(out.double(), a.double() @ b.double().T)


def test_integer_result_dtype_is_checked_against_m():
    X = _binary(10, 40_000)
    with pytest.raises(ValueError, match="do not fit torch.int16"):
        B.binary_gram([X], path="int8", dtype=torch.int16)
    K16 = B.binary_gram([X[:, :300]], path="int8", dtype=torch.int16)
    assert K16.dtype == torch.int16 and torch.equal(K16.double(), _ref_rows(X[:, :300], 0, 10))


@pytest.mark.slow
def test_gram_past_46341_rows_is_exact_in_sampled_row_blocks():
    """(47,000, 64): a Gram past 2**31 elements (where 32-bit BLAS indexing breaks). In int16
    (counts <= 64): 4.4 GB, where float32 would take 8.8 GB; checked on sampled row blocks."""
    n, m = 47_000, 64
    X = _binary(n, m, seed=4)
    X[-1] = 1
    K = B.binary_gram([X[:20_000], X[20_000:]], path="int8", dtype=torch.int16)
    assert K.shape == (n, n) and K.numel() > 2**31
    for r0 in (0, 23_457, 46_341 - 100, n - 300):
        r1 = min(n, r0 + 300)
        assert torch.equal(K[r0:r1].double(), _ref_rows(X, r0, r1)), f"rows {r0}:{r1}"
    assert torch.equal(K[:, -1].double(), X.double().sum(1))  # the mirrored last column


# --- the dispatcher ---

def test_forced_path_environment_and_errors(monkeypatch):
    X = _binary(20, 30)
    for path in B.GRAM_PATHS:
        with B.forced_gram_path(path):
            assert B.gram_path([X]) == path
    monkeypatch.setenv(B.ENV_VAR, "popcount")
    assert B.gram_path([X]) == "popcount"
    with B.forced_gram_path("int8"):  # the context wins over the environment
        assert B.gram_path([X]) == "int8"
    monkeypatch.setenv(B.ENV_VAR, "int4")
    with pytest.raises(ValueError, match="GRADFREE_GRAM_PATH.*expected one of float32, int8, popcount"):
        B.gram_path([X])
    monkeypatch.delenv(B.ENV_VAR)
    with pytest.raises(ValueError, match="unknown Gram path"):
        with B.forced_gram_path("bf16"):
            pass
    with B.forced_gram_path("int8"):
        with pytest.raises(ValueError, match="not binary"):
            B.rows_gram([X * 2])
        with pytest.raises(ValueError, match="not binary"):
            B.gram_path([X.float()])


def test_rows_that_are_not_binary_take_float32_and_stay_exact():
    X = _binary(30, 50)
    assert B.is_binary(X, X.bool(), X.to(torch.int8), X.long())
    Xc = X.clone()
    assert B.is_binary(Xc) and B.is_binary(Xc)  # the second answer remembered ...
    Xc[:, 7:9][3, 1] = 2  # ... until the tensor changes, through a view too
    assert not B.is_binary(Xc) and B.gram_path([Xc]) == "float32"
    for other in (X.float(), X * 3, X.to(torch.int8) - 1):
        assert not B.is_binary(other) and B.gram_path([other]) == "float32"
    Xs = X.to(torch.int16) * 3  # counts of a non-binary integer matrix: the float32 path, exact
    torch.testing.assert_close(B.rows_gram([Xs]).double(), _ref_rows(Xs, 0, 30), rtol=0, atol=0)


def test_choice_is_measured_once_and_an_integer_path_must_beat_float32(monkeypatch):
    times = B.measured_gram_times("cpu")
    assert set(times) == set(B.GRAM_PATHS) and all(0 < t < float("inf") for t in times.values())  # all exact here
    assert B.measured_gram_times("cpu") == times  # cached: the same figures, not a new measurement
    X = _binary(10, 20)
    assert B.gram_path([X]) in B.GRAM_PATHS
    monkeypatch.setitem(B._MEASURED, "cpu", {"float32": 1.0, "int8": float("inf"), "popcount": float("inf")})
    assert B.gram_path([X]) == "float32"  # integer paths unavailable or miscounting there
    monkeypatch.setitem(B._MEASURED, "cpu", {"float32": 1.0, "int8": 0.95, "popcount": 2.0})
    assert B.gram_path([X]) == "float32"  # not faster by the margin
    monkeypatch.setitem(B._MEASURED, "cpu", {"float32": 1.0, "int8": 0.3, "popcount": 0.5})
    assert B.gram_path([X]) == "int8"
    monkeypatch.setitem(B._MEASURED, "cpu", {"float32": 1.0, "int8": 0.6, "popcount": 0.4})
    assert B.gram_path([X]) == "popcount"


def test_a_path_that_fails_or_miscounts_in_the_measurement_is_never_chosen(monkeypatch):
    monkeypatch.setattr(B, "_MEASURED", {})  # measure afresh, then forget it
    gram_int8 = B._gram_int8

    def no_int8(parts, dtype=torch.float32):  # as on a device or build without an int8 GEMM
        raise RuntimeError("_int_mm: not implemented here")

    def miscounts(parts, dtype=torch.float32):
        K = gram_int8(parts, dtype)
        K[0, 1] += 1
        return K

    monkeypatch.setattr(B, "_gram_int8", no_int8)
    monkeypatch.setattr(B, "_gram_popcount", miscounts)
    times = B.measured_gram_times("cpu")
    assert times["int8"] == times["popcount"] == float("inf") and 0 < times["float32"] < float("inf")
    assert B.gram_path([_binary(5, 8)]) == "float32"


# --- the exact kernel with each path ---

def test_kernel_ridge_gives_identical_predictions_with_each_path():
    X, Xv, Xt = _binary(60, 90, seed=5), _binary(30, 90, seed=6), _binary(40, 90, seed=7)
    y, yv = torch.arange(60) % 3, torch.arange(30) % 3
    X[:, :3] = (y[:, None] == torch.arange(3)).to(torch.uint8)
    scores = {}
    for path in B.GRAM_PATHS:
        with B.forced_gram_path(path):
            kr = KernelRidgeClassifier().fit(X, y, Xv, yv)
            assert kr.gram_path_ == path
            scores[path] = (kr.decision_function(Xt), kr.predict(Xt), kr.alpha_)
    for path in INTEGER_PATHS:
        assert torch.equal(scores[path][0], scores["float32"][0]) and torch.equal(scores[path][1], scores["float32"][1])
        assert scores[path][2] == scores["float32"][2]
    kr = KernelRidgeClassifier().fit(X, y)  # measured choice, leave-one-out
    assert kr.gram_path_ == B.gram_path([X])
    assert KernelRidgeClassifier().fit(X.float(), y).gram_path_ == "float32"
    assert kr.X_fit_.dtype == torch.uint8  # kept as given: one byte per feature, read as int8
    assert np.isfinite(kr.decision_function(Xt).numpy()).all()


# --- gradfree perf --sections binary-gram: the plumbing, at a tiny size (no timing asserted) ---

def test_perf_binary_gram_section_reports_each_path_and_the_cpu(tmp_path, monkeypatch):
    monkeypatch.setattr(perf_command, "QUICK", replace(perf_command.QUICK, bgram_n=40, bgram_m=300, bgram_repeats=1))
    # Each path really runs on the section's matrix: its "int8" and "popcount" timings were once float32's
    # ssyrk three times (a forced path that the float32 Gram it called never consulted).
    ran = []
    for path in ("int8", "popcount"):
        real = getattr(B, f"_gram_{path}")
        monkeypatch.setattr(B, f"_gram_{path}", lambda parts, *a, _real=real, _path=path, **k:
                            ran.append((_path, sum(X.shape[0] for X in parts))) or _real(parts, *a, **k))
    threads = torch.get_num_threads()
    try:
        rc = main(["perf", "--quick", "--no-task", "--threads", "1", "--out", str(tmp_path),
                   "--sections", "binary-gram"])
    finally:
        torch.set_num_threads(threads)
    assert rc == 0 and {("int8", 40), ("popcount", 40)} <= set(ran)
    df = pd.read_csv(tmp_path / "perf.csv")
    assert set(df["section"]) == {"binary_gram"} and (df["shape"] == "n=40 m=300 0/1").all()
    assert list(df["case"]) == ["int8 Gram vs float32 (ssyrk), speed-up", "popcount Gram vs float32 (ssyrk), speed-up",
                                "int8 Gram vs bare float32 GEMM (torch.mm), speed-up"]
    assert (df["value"] > 0).all() and df["value"].tolist() == pytest.approx((df["ref_time_s"] / df["time_s"]).tolist())
    assert df["note"].str.contains("counts identical across paths").all()
    assert df["note"].str.contains("torch CPU capability " + torch.backends.cpu.get_cpu_capability()).all()
    assert df["target"].isna().all()  # a reduced shape: reported without a target
    metric, has = int8_metric("cpu", cpu_flags())
    assert df["metric"].iloc[0] == metric and df["note"].str.startswith(has).all()


def test_cpu_flags_choose_the_target():
    amx = "processor : 0\nflags : fpu avx2 avx512f avx512_vnni amx_tile amx_int8\n"
    assert cpu_flags(amx) == {"avx2", "avx512f", "avx512_vnni", "amx_tile", "amx_int8"}
    assert int8_metric("cpu", cpu_flags(amx))[0] == "binary_gram_int8_speedup_amx"
    assert TARGETS["binary_gram_int8_speedup_amx"][:2] == (">=", 5.0)
    assert int8_metric("cpu", cpu_flags("flags : fpu avx2 avx512_vnni\n"))[0] == "binary_gram_int8_speedup_vnni"
    assert TARGETS["binary_gram_int8_speedup_vnni"][:2] == (">=", 2.0)
    metric, has = int8_metric("cpu", cpu_flags("flags : fpu avx2\n"))
    assert metric not in TARGETS and has.startswith("neither VNNI nor AMX")


def test_the_kernel_row_records_the_gram_path():
    """A kernel cell's row says how its Gram was formed (in ``extra``); other cells have no such key."""
    from benchmarks.core.data import synthetic_bundle
    from benchmarks.core.protocol import RunContext
    from benchmarks.methods.random_features import RandomFeatures, RandomFeaturesConfig
    from benchmarks.core.timing import Clock

    data = synthetic_bundle(n_per_class=12, image_size=32, n_classes=2)
    for path in ("int8", "float32"):
        ctx = RunContext(data=data, clock=Clock("cpu"), device=torch.device("cpu"), weights="none", progress=False,
                         batch_size=64)
        with B.forced_gram_path(path):
            row = RandomFeatures(RandomFeaturesConfig(projection="kernel")).run(ctx)
        assert row["gram_path"] == path and row["projection"] == "kernel"
    ctx = RunContext(data=data, clock=Clock("cpu"), device=torch.device("cpu"), weights="none", progress=False,
                     batch_size=64)
    assert "gram_path" not in RandomFeatures(RandomFeaturesConfig(projection="gaussian", n_components=100)).run(ctx)
