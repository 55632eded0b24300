"""The conditions a time was measured in, for the report: beside other work or alone (the cells' load averages;
the rule is in :mod:`benchmarks.harness.loadavg`), and on which CPU model (``device_name``): a time measured
beside other work is an upper bound, and two times measured on two CPU models make no ratio."""

from __future__ import annotations

import pandas as pd

from benchmarks.harness.loadavg import is_busy, row_loads


def highest_loads(rows: pd.DataFrame) -> pd.Series:
    """The highest load average each cell's rows recorded (final and epoch rows alike), by ``cell_key``;
    cells without one are absent."""
    pairs = [(key, max(loads)) for key, extra in zip(rows.get("cell_key", ()), rows.get("extra", ()))
             if (loads := row_loads(extra))]
    if not pairs:
        return pd.Series(dtype=float)
    return pd.DataFrame(pairs, columns=["cell_key", "load"]).groupby("cell_key")["load"].max()


def mark_busy(finals: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """``finals`` with ``highest_load`` (over all of the cell's ``rows``) and ``busy``: 1.0 where the cell was
    timed beside other work, 0.0 where it was not, NaN where its load or threads are not known. A mean over
    seeds of ``busy`` above 0 says some seed was."""
    out = finals.copy()
    highest = highest_loads(rows)
    out["highest_load"] = out["cell_key"].map(highest) if len(highest) else float("nan")
    threads = out["threads"] if "threads" in out else pd.Series(None, index=out.index, dtype=object)
    busy = [None if pd.isna(load) else is_busy(load, t) for load, t in zip(out["highest_load"], threads)]
    out["busy"] = pd.Series([float("nan") if b is None else float(b) for b in busy], index=out.index, dtype=float)
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


def machines(rows: pd.DataFrame) -> list[str]:
    """The CPU models (``device_name``) the cells of ``rows`` ran on, sorted."""
    names = rows.get("device_name", pd.Series(dtype=object)).dropna()
    return sorted({str(m) for m in names if str(m)})
