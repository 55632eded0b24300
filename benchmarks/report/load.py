"""Whether a cell's times were measured beside other work.

Every row records the machine's 1-minute load average (``extra``: ``load_at_start`` when its cell began,
``load_at_row`` when the row was written; an epoch's row too). A cell alone on the machine keeps it near
its own threads; other work shows as load above them. A cell whose load went more than :data:`MARGIN`
(one core's worth) over its threads at any of its rows is *busy*: its accuracy stands, its times are upper
bounds and the report says so beside them. The load average lags by a minute and counts niced work that
barely slowed the cell, so the flag errs toward saying too much.
"""

from __future__ import annotations

import json

import pandas as pd

#: Load above the cell's threads, at any of its rows, that marks its times as measured beside other work.
MARGIN = 1.0


def _loads(extra) -> list[float]:
    """The load averages a row recorded (none for a row without them, or an unreadable ``extra``)."""
    try:
        found = json.loads(extra) if isinstance(extra, str) and extra else {}
    except ValueError:
        return []
    if not isinstance(found, dict):
        return []
    return [float(v) for k in ("load_at_start", "load_at_row") if isinstance(v := found.get(k), (int, float))]


def highest_loads(rows: pd.DataFrame) -> pd.Series:
    """The highest load average each cell's rows recorded (final and epoch rows alike), by ``cell_key``;
    cells without one are absent."""
    pairs = [(key, max(loads)) for key, extra in zip(rows.get("cell_key", ()), rows.get("extra", ()))
             if (loads := _loads(extra))]
    if not pairs:
        return pd.Series(dtype=float)
    return pd.DataFrame(pairs, columns=["cell_key", "load"]).groupby("cell_key")["load"].max()


def mark_busy(finals: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """``finals`` with ``highest_load`` (over all of the cell's ``rows``) and ``busy``: 1.0 where that load
    exceeded the cell's threads by more than :data:`MARGIN`, 0.0 where it did not, NaN where either is not
    known. Means over seeds of ``busy`` above 0 say some seed was timed beside other work."""
    out = finals.copy()
    highest = highest_loads(rows)
    out["highest_load"] = out["cell_key"].map(highest) if len(highest) else float("nan")
    threads = pd.to_numeric(out["threads"], errors="coerce") if "threads" in out else float("nan")
    busy = (out["highest_load"] > threads + MARGIN).astype(float)
    out["busy"] = busy.where(out["highest_load"].notna() & pd.notna(threads))
    return out


def busy_note(rows: pd.DataFrame) -> str:
    """'' where no row of ``rows`` (one configuration's final rows, marked by :func:`mark_busy`) is busy;
    else how many of its seeds were timed beside other work and the highest load, against the threads."""
    if "busy" not in rows or not (rows["busy"] > 0).any():
        return ""
    busy = rows[rows["busy"] > 0]
    threads = pd.to_numeric(busy["threads"], errors="coerce").max()
    return (f"{len(busy)} of {len(rows)} timed beside other work (load up to {busy['highest_load'].max():.1f} on "
            f"{int(threads)} threads): times are upper bounds")
