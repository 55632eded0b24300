"""The runner's clock: a synchronising phase timer.

Methods never time themselves. The runner hands each method a :class:`Clock`;
a method only *declares* phases (``with clock.phase("extract_s"): ...``) and
the clock measures them, synchronising the device at both ends so that
asynchronous CUDA work is charged to the phase that launched it.

Phases are accumulated by name and become result columns. A phase opened with
``counted=False`` (evaluation, warm-up) is measured and reported but is left
out of ``train_total_s``; a counted phase nested inside an uncounted one is not
counted either, so evaluation can never leak into training time.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Iterator

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
    counted or not.
    """

    def __init__(self, device: torch.device | str | None = None):
        self.device = torch.device(device) if device is not None else torch.device("cpu")
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
        start = time.perf_counter()
        try:
            yield span
        finally:
            synchronize(self.device)
            elapsed = time.perf_counter() - start
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

    def elapsed(self, name: str) -> float:
        return self.totals.get(name, 0.0)

    def columns(self) -> dict[str, float]:
        """Result columns: every phase seen, plus ``train_total_s``."""
        cols = {name: round(sec, 6) for name, sec in self.totals.items()}
        cols["train_total_s"] = round(self.counted_s, 6)
        return cols


def peak_memory_bytes(device: torch.device | str | None = None) -> int:
    """Peak memory of this process so far: CUDA allocator peak on GPU, max RSS on CPU."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    import resource

    # ru_maxrss is in kilobytes on Linux.
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def reset_peak_memory(device: torch.device | str | None = None) -> None:
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
