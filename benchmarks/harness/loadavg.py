"""Which cells were timed beside other work, from the load averages their rows recorded.

Every row records the machine's 1-minute load average in ``extra`` (``load_at_start`` when its cell began,
``load_at_row`` when the row was written; an epoch's row too, :func:`benchmarks.harness.metadata.load_average`).
A cell alone on the machine keeps it near its own threads. A cell whose load went more than :data:`MARGIN`
(one core's worth) over its threads at any of its rows is *busy*: its accuracy stands, its times are upper
bounds. The load average lags by a minute and counts niced work that barely slowed the cell, so the flag
errs toward saying too much. The report says so beside such times (:mod:`benchmarks.report.conditions`);
``gradfree run --retime-busy`` sets such cells aside so that they run again.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable

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


def busy_cells(rows: Iterable[dict]) -> set[str]:
    """The keys of the cells among ``rows`` (as :func:`benchmarks.harness.results.read_rows` gives them: every
    row of a cell, final and epoch rows alike) that were timed beside other work."""
    highest: dict[str, float] = {}
    threads: dict[str, str] = {}
    for r in rows:
        key = r.get("cell_key") or ""
        loads = row_loads(r.get("extra"))
        if key and loads:
            highest[key] = max(highest.get(key, -math.inf), *loads)
        if key and r.get("threads") not in (None, ""):
            threads[key] = r["threads"]
    return {key for key, load in highest.items() if is_busy(load, threads.get(key))}
