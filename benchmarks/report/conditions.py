"""The conditions a time was measured in, for the report: beside other work or alone (the cells' load averages;
the rule is in :mod:`benchmarks.harness.loadavg`), and on which CPU model (``device_name``): a time measured
beside other work is an upper bound, and two times measured on two CPU models make no ratio."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from benchmarks.harness.loadavg import cell_loads, is_busy
from benchmarks.harness.results import INTERRUPTED_FILE, read_rows


def earlier_attempts(folder: str | Path) -> pd.DataFrame:
    """The rows of the interrupted attempts kept beside a results file (``results.interrupted.csv``; empty
    when there is none): where a cell resumed, its first epochs were timed in them."""
    return pd.DataFrame(read_rows(Path(folder) / INTERRUPTED_FILE))


def mark_busy(finals: pd.DataFrame, rows: pd.DataFrame, earlier: pd.DataFrame | None = None) -> pd.DataFrame:
    """``finals`` with ``highest_load`` (over the cell's ``rows``, and over ``earlier`` attempts, the rows of
    ``results.interrupted.csv``, where it resumed from one: :func:`benchmarks.harness.loadavg.cell_loads`) and
    ``busy``: 1.0 where the cell was timed beside other work, 0.0 where it was not, NaN where its load or threads
    are not known. A mean over seeds of ``busy`` above 0 says some seed was."""
    out = finals.copy()
    loads = cell_loads(rows.to_dict("records"), [] if earlier is None else earlier.to_dict("records"))
    out["highest_load"] = pd.Series([loads.get(k, (float("nan"), None))[0] for k in out["cell_key"]],
                                    index=out.index, dtype=float)
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
