"""``gradfree perf --sections seed-shape``: the seeds' STL-10 problem end to end, in its quick form."""

import math
import re

import pandas as pd
import pytest
import torch

from benchmarks import perf
from benchmarks.cli import main
from benchmarks.perf.common import FULL, QUICK, TARGETS
from benchmarks.perf.seed_shape import NORM5_FEATURES, seed_problem


@pytest.fixture(scope="module")
def quick_rows(tmp_path_factory):
    threads = torch.get_num_threads()
    out = tmp_path_factory.mktemp("perf-seed-shape")
    try:
        rc = main(["perf", "--quick", "--threads", "1", "--out", str(out), "--sections", "seed-shape"])
    finally:
        torch.set_num_threads(threads)
    assert rc == 0
    assert (out / "perf.png").is_file() and list((out / "runs").glob("*/metadata.json"))
    return pd.read_csv(out / "perf.csv")


def _row(df, case_start):
    rows = df[df["case"].str.startswith(case_start)]
    assert len(rows) == 1, (case_start, list(df["case"]))
    return rows.iloc[0]


def test_quick_form_reports_every_row(quick_rows):
    df = quick_rows
    assert set(df["section"]) == {"seed_shape"}
    for case in ("DenseNet169 norm5 sign density", "exact kernel (k = infinity): fit + test scoring, time",
                 "exact kernel vs the floor", "exact kernel, peak memory", "structured k=", "dense gaussian k=",
                 "dense gaussian (extrapolated) vs structured"):
        assert df["case"].str.startswith(case).any(), case
    refs = df[df["metric"] == "seed_reference_s"]
    assert sorted(refs["value"]) == [8.5, 30.3, 430.0]  # the seeds' quoted figures, labelled as quotes
    assert refs["note"].str.contains("QUOTED").all() and refs["case"].str.contains("P100|OPU").all()
    assert _row(df, "dense gaussian k=")["note"].startswith("EXTRAPOLATED")


def test_planted_signal_gives_accuracy_above_chance(quick_rows):
    chance = 0.1  # 10 balanced classes
    for case in ("exact kernel (k = infinity): fit + test scoring", "structured k=4096 streamed: fit"):
        assert _row(quick_rows, case)["test_acc"] > chance + 0.2, case


def test_floor_ratio_is_the_two_timings_of_the_run(quick_rows):
    ratio = _row(quick_rows, "exact kernel vs the floor")
    kernel = _row(quick_rows, "exact kernel (k = infinity): fit + test scoring, time")
    assert ratio["time_s"] > 0 and ratio["ref_time_s"] > 0
    assert ratio["value"] == pytest.approx(ratio["time_s"] / ratio["ref_time_s"])
    assert ratio["time_s"] == kernel["time_s"] and ratio["ref_time_s"] == kernel["ref_time_s"]
    # held to the ratio the CPU's integer GEMM allows (issue 22: <= 0.5x with VNNI, <= 0.25x with AMX-INT8)
    from benchmarks.perf.binary_gram import cpu_flags, int8_tier

    tier = int8_tier("cpu", cpu_flags())
    assert ratio["metric"] == "seed_kernel_vs_floor" + (f"_{tier}" if tier else "")
    speed = _row(quick_rows, "dense gaussian (extrapolated) vs structured")
    assert speed["value"] == pytest.approx(speed["ref_time_s"] / speed["time_s"])


def test_peak_memory_is_measured_and_reduced_shapes_carry_no_target(quick_rows):
    for case in ("exact kernel, peak memory", "structured k=4096 streamed, peak memory"):
        row = _row(quick_rows, case)
        # At the quick shape (a few MB) the window's allocations may be served from pages the
        # process already holds, so the added peak can honestly read 0 (PeakMemory's docstring);
        # the probe's exactness is tested on fresh mappings in test_timing. Here: the row is the
        # probe's reading, consistent with the absolute peak it reports beside it.
        assert row["peak_memory_bytes"] >= 0 and row["value"] == pytest.approx(row["peak_memory_bytes"] / 1e9)
        assert "inputs included" in row["note"]
        absolute = re.search(r"absolute process peak ([0-9.]+) GB \((rss-high-water-mark|rss-sampled)\)", row["note"])
        assert absolute, row["note"]
        assert 0 < float(absolute.group(1)) >= round(row["peak_memory_bytes"] / 1e9, 2)
    # the targets are the seeds' shape's: the quick shape is reported, not judged
    assert quick_rows["target"].isna().all()


def test_full_sizes_are_the_seeds_shape_and_carry_the_targets():
    assert (FULL.seed_n_fit + FULL.seed_n_val, FULL.seed_n_test, FULL.seed_m, FULL.seed_k) == \
        (5000, 8000, NORM5_FEATURES, 120_000)
    assert NORM5_FEATURES == 81_536 < 2**24  # binary Gram entries: integer counts, exact in float32
    for metric, (cmp, thr) in {"seed_kernel_time_s": ("<=", 240), "seed_kernel_peak_gb": ("<=", 8),
                               "seed_kernel_vs_floor": ("<=", 1.5), "seed_kernel_vs_floor_vnni": ("<=", 0.5),
                               "seed_kernel_vs_floor_amx": ("<=", 0.25), "seed_structured_time_s": ("<=", 480),
                               "seed_structured_peak_gb": ("<=", 4)}.items():
        assert TARGETS[metric][:2] == (cmp, thr)
    assert "seed_shape" in perf.SECTIONS and QUICK.seed_m < FULL.seed_m


def test_seed_problem_has_the_density_and_balanced_classes():
    P = seed_problem(300, 100, 200, 1024, 0.3, latent=8, signal=0.5, seed=1)
    X, y = P["X"], P["y"]
    assert X.dtype == torch.uint8 and X.shape == (600, 1024) and int(X.max()) == 1
    assert math.isclose(float(X.float().mean()), 0.3, abs_tol=0.03)
    assert torch.bincount(y, minlength=10).tolist() == [60] * 10
    assert (P["fit"], P["val"], P["test"]) == (slice(0, 300), slice(300, 400), slice(400, 600))
    again = seed_problem(300, 100, 200, 1024, 0.3, latent=8, signal=0.5, seed=1)
    assert torch.equal(again["X"], X) and torch.equal(again["y"], y)
