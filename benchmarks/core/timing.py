"""The runner's clock: a synchronising phase timer.

Methods never time themselves. The runner hands each method a :class:`Clock`;
a method only *declares* phases (``with clock.phase("extract_s"): ...``) and
the clock measures them, synchronising the device at both ends so that
asynchronous CUDA work is charged to the phase that launched it.

Phases are accumulated by name and become result columns. A phase opened with
``counted=False`` (evaluation, warm-up) is measured and reported but is left
out of ``train_total_s``; a counted phase nested inside an uncounted one is not
counted either, so evaluation can never leak into training time.

It also owns the memory probe, :class:`PeakMemory`, which ``gradfree perf``
and the runner share: the runner brackets each cell with
:func:`reset_peak_memory` / :func:`peak_memory_bytes`, so a cell reports what
*it* added at its peak, not the process's peak of everything run before it.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator

import torch

#: Phases of the gradient-free pipeline and of the trainers, in report order.
PHASES = (
    "warmup_s",
    "extract_s",
    "encode_s",
    "project_s",
    "fit_s",
    "train_s",
    "predict_s",
    "eval_s",
)


def synchronize(device: torch.device | str | None) -> None:
    """Wait for all queued work on ``device`` (no-op on CPU)."""
    if device is None:
        return
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":  # pragma: no cover - not on the reference machines
        torch.mps.synchronize()


class Span:
    """What ``Clock.phase`` yields: ``seconds`` is set when the phase ends."""

    def __init__(self, name: str):
        self.name = name
        self.seconds = 0.0


class Clock:
    """Accumulates wall-clock seconds per named phase, device-synchronised.

    ``counted_s`` is the running total of counted phases: the training time a
    method is charged with. ``totals`` maps each phase name to its seconds,
    counted or not. ``timer``: the seconds source (``time.perf_counter``); tests
    pass one they advance themselves, so that no test depends on the machine's speed.
    """

    def __init__(self, device: torch.device | str | None = None, timer: Callable[[], float] | None = None):
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self._timer = timer or time.perf_counter
        self.totals: dict[str, float] = defaultdict(float)
        self.uncounted: set[str] = set()
        self.counted_s = 0.0
        self.charged: set[str] = set()
        # One frame per open phase: [counted (ancestors included), seconds spent in children].
        self._stack: list[list] = []

    @contextlib.contextmanager
    def phase(self, name: str, counted: bool = True) -> Iterator["Span"]:
        """Measure the enclosed block as phase ``name`` (a column, e.g. ``fit_s``).

        Nested phases are charged exclusively: the outer phase gets its own time
        minus its children's, so no second is counted twice.
        """
        if not name.endswith("_s"):
            raise ValueError(f"phase names carry their unit: expected '..._s', got {name!r}")
        effective = counted and all(frame[0] for frame in self._stack)
        if not effective:
            self.uncounted.add(name)
        synchronize(self.device)
        frame = [effective, 0.0]
        self._stack.append(frame)
        span = Span(name)
        start = self._timer()
        try:
            yield span
        finally:
            synchronize(self.device)
            elapsed = self._timer() - start
            self._stack.pop()
            exclusive = elapsed - frame[1]
            self.totals[name] += exclusive
            if effective:
                self.counted_s += exclusive
            if self._stack:
                self._stack[-1][1] += elapsed
            span.seconds = elapsed

    def charge(self, name: str, seconds: float, counted: bool = True) -> None:
        """Book ``seconds`` measured earlier (e.g. a cached extraction) to phase ``name``.

        Used when a result is reused instead of recomputed, so that a cell still
        reports what its pipeline costs; the runner marks such cells.
        """
        effective = counted and all(frame[0] for frame in self._stack)
        self.totals[name] += seconds
        if effective:
            self.counted_s += seconds
        else:
            self.uncounted.add(name)
        self.charged.add(name)

    def book(self, name: str, seconds: float, counted: bool = True) -> None:
        """Book ``seconds`` measured by another clock of this run to phase ``name`` (not a cache hit)."""
        self.totals[name] += seconds
        if counted and all(frame[0] for frame in self._stack):
            self.counted_s += seconds
        else:
            self.uncounted.add(name)

    def merge(self, other: "Clock") -> None:
        """Add every phase of ``other`` (a clock that timed part of this cell's work) to this one."""
        for name, seconds in other.totals.items():
            self.totals[name] += seconds
        self.counted_s += other.counted_s if all(frame[0] for frame in self._stack) else 0.0
        self.uncounted |= other.uncounted
        self.charged |= other.charged

    def state(self) -> dict:
        """Every phase's seconds so far, for a checkpoint (:mod:`benchmarks.core.checkpoint`); taken between phases."""
        if self._stack:
            raise RuntimeError("a clock's state is taken between phases, not inside one")
        return {"totals": dict(self.totals), "uncounted": sorted(self.uncounted), "counted_s": self.counted_s,
                "charged": sorted(self.charged)}

    def restore(self, state: dict) -> None:
        """Set the clock back to a :meth:`state`: what a resumed training had counted when it was saved. What
        this clock measured since (the resumed process's set-up, a cut-short epoch) is replaced, so the time
        of the work before the checkpoint is counted once, as it was measured then."""
        if self._stack:
            raise RuntimeError("a clock is restored between phases, not inside one")
        self.totals = defaultdict(float, state["totals"])
        self.uncounted, self.charged = set(state["uncounted"]), set(state["charged"])
        self.counted_s = float(state["counted_s"])

    def elapsed(self, name: str) -> float:
        """Seconds booked to phase ``name`` so far, counted or not (0.0 for a phase never seen)."""
        return self.totals.get(name, 0.0)

    def columns(self) -> dict[str, float]:
        """Result columns: every phase seen, plus ``train_total_s``."""
        cols = {name: round(sec, 6) for name, sec in self.totals.items()}
        cols["train_total_s"] = round(self.counted_s, 6)
        return cols


# --- peak memory ---------------------------------------------------------------------------------


def _status_bytes(*keys: str) -> dict[str, int]:
    """Fields of /proc/self/status (VmRSS, VmHWM, ...) in bytes; missing ones are absent."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in keys:
                out[key] = int(value.split()[0]) * 1024  # the kernel writes kB
    return out


def _rss_bytes() -> int:
    """Resident set size of this process now (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _process_peak_rss_bytes() -> int:
    """The process's peak RSS since it started, or since the high-water mark was last reset."""
    try:
        return _status_bytes("VmHWM")["VmHWM"]
    except (OSError, KeyError):
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # kB on Linux


# The kernel's RSS high-water mark may still be a little above RSS after a reset if pages were
# freed between the reset and the read; beyond this, the reset did not happen.
_HWM_SLACK_BYTES = 8 << 20


def _reset_rss_high_water_mark() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write "5" to /proc/self/clear_refs).

    Returns whether it worked, checked by reading VmHWM back: some kernels and sandboxes
    accept the write and ignore it.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        status = _status_bytes("VmHWM", "VmRSS")
        return status["VmHWM"] <= status["VmRSS"] + _HWM_SLACK_BYTES
    except (OSError, KeyError):
        return False


# Probes now open, by what they read: resetting the kernel's or the allocator's peak for a new
# probe first folds it into the open ones, so nested probes (a perf case inside a cell) stay right.
_OPEN: list["PeakMemory"] = []


class PeakMemory:
    """Peak memory between ``start()`` and ``stop()`` (or over a ``with`` block).

    What is read, by ``method``:

    * ``cuda-allocator`` (CUDA devices): PyTorch's caching-allocator peak of allocated bytes,
      ``torch.cuda.max_memory_allocated``: tensors only, not the allocator's reserved cache
      nor the CUDA context;
    * ``rss-high-water-mark`` (CPU, Linux): the kernel's peak resident set size of the whole
      process, ``VmHWM`` in /proc/self/status, reset at ``start()`` through
      /proc/self/clear_refs: exact, every page counted, however short the peak;
    * ``rss-sampled`` (CPU elsewhere, or ``sampling=True``): RSS read every 2 ms by a thread;
      a peak shorter than that can be missed.

    ``peak_bytes`` is the absolute peak during the window (the process's RSS, or allocated CUDA
    bytes); ``base_bytes`` the level at ``start()``; ``delta_bytes = max(0, peak - base)``, what
    the window added at its peak. Memory freed inside the window before its peak is not
    subtracted, and on CPU the whole process counts (other threads included). RSS only grows
    for pages the process did not already hold: memory freed earlier but kept by the C
    allocator (small blocks; glibc returns blocks above 32 MB at most to the system) is
    reused without raising it, so a window's small allocations may read as 0.
    """

    SAMPLE_S = 0.002

    def __init__(self, device: torch.device | str | None = None, sampling: bool = False):
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.sampling = sampling
        self.method = ""
        self.base_bytes = self.peak_bytes = self.delta_bytes = 0
        self._peak = 0
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None

    # one reader per method: (current level, peak since the last reset)
    def _kernel_peak(self) -> int:
        if self.method == "cuda-allocator":
            return int(torch.cuda.max_memory_allocated(self.device))
        return _status_bytes("VmHWM")["VmHWM"]

    def _shares_peak_with(self, other: "PeakMemory") -> bool:
        return other.method == self.method and (self.method != "cuda-allocator" or other.device == self.device)

    def _fold_open_probes(self) -> None:
        """Before a reset of the shared peak: the open probes keep what it has seen so far."""
        for probe in _OPEN:
            if probe is not self and self._shares_peak_with(probe):
                probe._peak = max(probe._peak, probe._kernel_peak())

    def start(self) -> "PeakMemory":
        """Open the window: pick the method for the device, reset the peak it reads (or start the sampler)
        and record ``base_bytes``; returns the probe."""
        if self.device.type == "cuda":
            self.method = "cuda-allocator"
            torch.cuda.synchronize(self.device)
            self._fold_open_probes()
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base_bytes = self._peak = int(torch.cuda.memory_allocated(self.device))
        else:
            self.method = "rss-high-water-mark"
            self._fold_open_probes()
            if self.sampling or not _reset_rss_high_water_mark():
                self.method = "rss-sampled"
                self._start_sampler()
            self.base_bytes = self._peak = _rss_bytes()
        _OPEN.append(self)
        return self

    def _start_sampler(self) -> None:
        self._stop = threading.Event()

        def sample():
            while not self._stop.wait(self.SAMPLE_S):
                self._peak = max(self._peak, _rss_bytes())

        self._thread = threading.Thread(target=sample, name="gradfree-peak-rss", daemon=True)
        self._thread.start()

    def read(self) -> int:
        """``delta_bytes`` so far (``peak_bytes`` updated too); the window stays open."""
        if self not in _OPEN:
            return self.delta_bytes
        if self.method == "cuda-allocator":
            torch.cuda.synchronize(self.device)
            self._peak = max(self._peak, self._kernel_peak())
        elif self.method == "rss-high-water-mark":
            self._peak = max(self._peak, self._kernel_peak())
        else:
            self._peak = max(self._peak, _rss_bytes())
        self.peak_bytes = self._peak
        self.delta_bytes = max(0, self.peak_bytes - self.base_bytes)
        return self.delta_bytes

    def stop(self) -> "PeakMemory":
        """Close the window: stop the sampler if any and set ``peak_bytes`` and ``delta_bytes`` a last time;
        returns the probe."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        self.read()
        if self in _OPEN:
            _OPEN.remove(self)
        return self

    def __enter__(self) -> "PeakMemory":
        return self.start()

    def __exit__(self, *exc) -> bool:
        self.stop()
        return False


# The runner's per-cell probe, one per device.
_CELL_PROBES: dict[str, PeakMemory] = {}


def reset_peak_memory(device: torch.device | str | None = None) -> None:
    """Start a fresh peak-memory measurement on ``device`` (the runner: at the start of each cell)."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    old = _CELL_PROBES.pop(str(device), None)
    if old is not None:
        old.stop()
    _CELL_PROBES[str(device)] = PeakMemory(device).start()


def peak_memory_bytes(device: torch.device | str | None = None) -> int:
    """Bytes added at the peak since the last :func:`reset_peak_memory` on ``device``.

    That is ``PeakMemory.delta_bytes``: on CPU the peak RSS of the process since the reset
    less its RSS at the reset (data loaded before the reset is not counted; what the cell
    builds, weights and features included, is); on CUDA the allocator's peak of allocated
    bytes less those allocated at the reset. The measurement stays open: a later call can
    only return as much or more. Without a reset on ``device`` it is the process's peak
    since it started (RSS, or allocated CUDA bytes).
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    probe = _CELL_PROBES.get(str(device))
    if probe is not None:
        return probe.read()
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return _process_peak_rss_bytes()
