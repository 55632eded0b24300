import mmap
import threading
import time

import numpy as np
import pytest

from benchmarks.core.timing import Clock, PeakMemory, peak_memory_bytes, reset_peak_memory


class ManualTime:
    """A timer the test advances itself: phases measure exactly what the test says they took,
    whatever the machine's speed or load."""

    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_phases_accumulate_and_count():
    t = ManualTime()
    clock = Clock("cpu", timer=t)
    with clock.phase("fit_s"):
        t.sleep(0.02)
    with clock.phase("fit_s"):
        t.sleep(0.02)
    with clock.phase("eval_s", counted=False):
        t.sleep(0.05)
    cols = clock.columns()
    assert cols["fit_s"] == pytest.approx(0.04)
    assert cols["eval_s"] == pytest.approx(0.05)
    assert cols["train_total_s"] == pytest.approx(0.04)


def test_nested_uncounted_phase_is_excluded_and_charged_exclusively():
    t = ManualTime()
    clock = Clock("cpu", timer=t)
    with clock.phase("train_s") as outer:
        t.sleep(0.02)
        with clock.phase("eval_s", counted=False):
            t.sleep(0.1)
        t.sleep(0.03)
    assert outer.seconds == pytest.approx(0.15)
    assert clock.totals["eval_s"] == pytest.approx(0.1)
    assert clock.totals["train_s"] == pytest.approx(0.05)  # exclusive of the nested evaluation
    assert clock.counted_s == pytest.approx(0.05)


def test_counted_phase_inside_uncounted_is_not_counted():
    t = ManualTime()
    clock = Clock("cpu", timer=t)
    with clock.phase("eval_s", counted=False):
        with clock.phase("predict_s"):
            t.sleep(0.02)
    assert clock.counted_s == 0.0
    assert clock.totals["predict_s"] == pytest.approx(0.02)


def test_charge_books_cached_seconds():
    t = ManualTime()
    clock = Clock("cpu", timer=t)
    with clock.phase("extract_s"):
        clock.charge("extract_s", 3.0)
        t.sleep(0.5)
    assert clock.totals["extract_s"] == pytest.approx(3.5)
    assert clock.counted_s == pytest.approx(3.5)
    assert "extract_s" in clock.charged


def test_the_real_timer_measures_real_time():
    clock = Clock("cpu")
    with clock.phase("fit_s"):
        time.sleep(0.02)
    assert clock.totals["fit_s"] >= 0.02  # a lower bound only: a loaded machine is slower, never faster


def test_phase_names_need_units():
    with pytest.raises(ValueError, match="_s"):
        with Clock().phase("fit"):
            pass


# --- peak memory: real allocations, every page touched ---

MB = 1 << 20


def fresh(n_bytes: int) -> mmap.mmap:
    """``n_bytes`` of new anonymous memory, every page written: resident pages the process did not
    hold before, whatever the C allocator kept from earlier tests (which malloc may hand out again
    without raising the RSS)."""
    buf = mmap.mmap(-1, n_bytes)
    np.frombuffer(buf, dtype=np.uint8)[:] = 1
    return buf


def test_a_cell_reports_its_own_peak_not_the_process_peak():
    """A 1 GB peak before the cell must not be charged to a cell that needs 50 MB."""
    earlier = fresh(1024 * MB)
    earlier.close()
    reset_peak_memory("cpu")
    cell = fresh(50 * MB)
    peak = peak_memory_bytes("cpu")
    cell.close()
    assert 40 * MB <= peak < 400 * MB
    assert peak_memory_bytes("cpu") >= peak  # the window stays open until the next reset
    reset_peak_memory("cpu")
    assert peak_memory_bytes("cpu") < 40 * MB  # the next cell starts afresh


def test_probe_sees_a_peak_freed_before_it_ends():
    with PeakMemory("cpu") as mem:
        fresh(64 * MB).close()
    if mem.method != "rss-high-water-mark":
        pytest.skip("no resettable RSS high-water mark here (/proc/self/clear_refs)")
    assert mem.delta_bytes >= 60 * MB
    assert mem.peak_bytes >= mem.base_bytes + mem.delta_bytes


def test_nested_probes_each_keep_their_own_peak():
    with PeakMemory("cpu") as outer:
        fresh(200 * MB).close()
        with PeakMemory("cpu") as inner:  # resets the high-water mark the outer probe reads
            small = fresh(48 * MB)
        small.close()
    if outer.method != "rss-high-water-mark":
        pytest.skip("no resettable RSS high-water mark here (/proc/self/clear_refs)")
    assert outer.delta_bytes >= 190 * MB
    assert 40 * MB <= inner.delta_bytes < 150 * MB


def test_sampling_fallback_measures_what_is_alive_at_its_end():
    with PeakMemory("cpu", sampling=True) as mem:
        buf = fresh(64 * MB)
    assert mem.method == "rss-sampled"
    assert mem.delta_bytes >= 60 * MB
    buf.close()
    assert not any(t.name == "gradfree-peak-rss" and t.is_alive() for t in threading.enumerate())
