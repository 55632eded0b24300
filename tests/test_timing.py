import time

import pytest

from benchmarks.timing import Clock


def test_phases_accumulate_and_count():
    clock = Clock("cpu")
    with clock.phase("fit_s"):
        time.sleep(0.02)
    with clock.phase("fit_s"):
        time.sleep(0.02)
    with clock.phase("eval_s", counted=False):
        time.sleep(0.05)
    cols = clock.columns()
    assert cols["fit_s"] >= 0.04
    assert cols["eval_s"] >= 0.05
    assert cols["train_total_s"] == pytest.approx(cols["fit_s"], abs=1e-5)


def test_nested_uncounted_phase_is_excluded_and_charged_exclusively():
    clock = Clock("cpu")
    with clock.phase("train_s") as outer:
        time.sleep(0.02)
        with clock.phase("eval_s", counted=False):
            time.sleep(0.1)
    assert outer.seconds >= 0.12
    assert clock.totals["eval_s"] >= 0.1
    assert clock.totals["train_s"] < 0.08  # exclusive of the nested evaluation
    assert clock.counted_s == pytest.approx(clock.totals["train_s"], abs=1e-6)


def test_counted_phase_inside_uncounted_is_not_counted():
    clock = Clock("cpu")
    with clock.phase("eval_s", counted=False):
        with clock.phase("predict_s"):
            time.sleep(0.02)
    assert clock.counted_s == 0.0
    assert clock.totals["predict_s"] >= 0.02


def test_charge_books_cached_seconds():
    clock = Clock("cpu")
    with clock.phase("extract_s"):
        clock.charge("extract_s", 3.0)
    assert clock.totals["extract_s"] >= 3.0
    assert clock.counted_s >= 3.0
    assert "extract_s" in clock.charged


def test_phase_names_need_units():
    with pytest.raises(ValueError, match="_s"):
        with Clock().phase("fit"):
            pass
