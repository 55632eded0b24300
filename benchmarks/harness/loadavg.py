"""Which cells were timed beside other work, from the load averages their rows recorded.

Every row records the machine's 1-minute load average in ``extra`` (``load_at_start`` when its cell began,
``load_at_row`` when the row was written; an epoch's row too, :func:`benchmarks.harness.metadata.load_average`).
A cell alone on the machine keeps it near its own threads. A cell whose load went more than :data:`MARGIN`
(one core's worth) over its threads at any of its rows (of the run that finished it, and of the interrupted
attempts it resumed from: :func:`cell_loads`) is *busy*: its accuracy stands, its times are upper
bounds. The load average lags by a minute and counts niced work that barely slowed the cell, so the flag
errs toward saying too much. The report says so beside such times (:mod:`benchmarks.report.conditions`);
``gradfree run --retime-busy`` sets such cells aside so that they run again.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable

from benchmarks.core.checkpoint import was_resumed

#: Load above the cell's threads, at any of its rows, that marks its times as measured beside other work.
MARGIN = 1.0


def row_loads(extra) -> list[float]:
    """The load averages one row recorded (none for a row without them, or an unreadable ``extra``)."""
    try:
        found = json.loads(extra) if isinstance(extra, str) and extra else {}
    except ValueError:
        return []
    if not isinstance(found, dict):
        return []
    return [float(v) for k in ("load_at_start", "load_at_row")
            if isinstance(v := found.get(k), (int, float)) and not isinstance(v, bool) and math.isfinite(v)]


def is_busy(load: float, threads) -> bool | None:
    """Whether a cell with highest load ``load`` on ``threads`` threads was timed beside other work (None
    when its threads are not known)."""
    try:
        t = float(threads)
    except (TypeError, ValueError):
        return None
    return None if not math.isfinite(t) else load > t + MARGIN


def cell_loads(rows: Iterable[dict], earlier: Iterable[dict] = ()) -> dict[str, tuple[float, object]]:
    """Per cell with a successful final row among ``rows`` (as :func:`benchmarks.harness.results.read_rows` gives
    them, or a DataFrame's records): (the highest load its rows recorded, its threads). Its rows: those of the
    run that finished it (final and epoch rows), and, when it resumed from a checkpoint (``resumed_from``), the
    rows of its earlier attempts in ``earlier`` (``results.interrupted.csv``): the epochs it did not run again
    were timed then. Cells whose rows recorded no load are absent."""
    rows = list(rows)
    finals = {r.get("cell_key"): r for r in rows if r.get("row_type") == "final" and r.get("status") == "ok"}
    highest: dict[str, float] = {}

    def see(key, extra) -> None:
        loads = row_loads(extra)
        if loads:
            highest[key] = max(highest.get(key, -math.inf), *loads)

    for r in rows:
        final = finals.get(r.get("cell_key"))
        if final is not None and r.get("run_id") == final.get("run_id"):
            see(r["cell_key"], r.get("extra"))
    for r in earlier:
        final = finals.get(r.get("cell_key"))
        if final is not None and was_resumed(final.get("extra")):
            see(r["cell_key"], r.get("extra"))
    return {key: (load, finals[key].get("threads")) for key, load in highest.items()}


def busy_cells(rows: Iterable[dict], earlier: Iterable[dict] = ()) -> set[str]:
    """The keys of the finished cells among ``rows`` that were timed beside other work (:func:`cell_loads`)."""
    return {key for key, (load, threads) in cell_loads(rows, earlier).items() if is_busy(load, threads)}
