"""The wall time a suite's cells took, read back from its results folder.

Each run (``runs/<run_id>/metadata.json``) runs its cells one after another; a cell's *wall* is
the time from the end of the cell before it in the same run (or from the run's start) to its own
final or failed row. Everything a run spends is thereby some cell's: data loading, evaluation and
the learning-rate search included, which the counted training time leaves out. The cells before
it may since have been set aside (``results.superseded.csv``) or interrupted
(``results.interrupted.csv``): their rows still mark where the next cell began.

The sum over the cells a report counts is the suite's measured time, even when its cells ran in
several resumed runs. With parallel workers the cells overlap and only a run's total is a wall.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from benchmarks.harness.metadata import read_metadata
from benchmarks.harness.results import INTERRUPTED_FILE, RESULTS_FILE, SUPERSEDED_FILE, read_rows


def _stamp(text: str | None) -> float | None:
    try:
        return datetime.fromisoformat(text).timestamp() if text else None
    except ValueError:
        return None


def _ends(folder: Path) -> dict[str, list[tuple[float, str]]]:
    """(time, cell_key) of every final or failed row, per run id, in time order (the files read as
    strictly as a report reads them: a torn row is skipped, with a warning)."""
    ends: dict[str, list[tuple[float, str]]] = {}
    for name in (RESULTS_FILE, SUPERSEDED_FILE, INTERRUPTED_FILE):
        for row in read_rows(folder / name):
            t = _stamp(row.get("finished_at"))
            if row.get("row_type") in ("final", "failed") and t is not None:
                ends.setdefault(row.get("run_id") or "", []).append((t, row.get("cell_key") or ""))
    return {run: sorted(times) for run, times in ends.items()}


def run_starts(folder: Path) -> dict[str, float]:
    """Each run's start (its metadata's ``started_at``), by run id."""
    starts = {}
    for meta in read_metadata(folder):
        t = _stamp(meta.get("started_at"))
        if meta.get("run_id") and t is not None:
            starts[meta["run_id"]] = t
    return starts


def cell_walls(folder: str | Path) -> dict[tuple[str, str], float]:
    """Seconds of wall time of each (run_id, cell_key) that ended in ``folder``'s files; a run
    without metadata has no start, so its first cell has no wall."""
    folder = Path(folder)
    starts = run_starts(folder)
    walls = {}
    for run, ends in _ends(folder).items():
        previous = starts.get(run)
        for t, key in ends:
            if previous is not None and t >= previous:
                walls[(run, key)] = t - previous
            previous = t
    return walls


def suite_wall(walls: dict[tuple[str, str], float], cells: list[tuple[str, str]]) -> tuple[float, int, int]:
    """(seconds, cells timed, runs) of the (run_id, cell_key) pairs a report counts, from
    :func:`cell_walls`."""
    timed = [c for c in cells if c in walls]
    return sum(walls[c] for c in timed), len(timed), len({run for run, _ in timed})


def format_duration(seconds: float) -> str:
    """``45 s``, ``12.3 min``, ``2 h 09 min``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes:02d} min"


def wall_note(walls: dict[tuple[str, str], float], finals) -> str:
    """One sentence for a report: the wall time of the cells ``finals`` (its rows) counts."""
    seconds, timed, runs = suite_wall(walls, list(zip(finals["run_id"], finals["cell_key"])))
    if not timed:
        return "No wall time on record (no run metadata)."
    missing = f"; {len(finals) - timed} without a start on record" if timed < len(finals) else ""
    return (f"Wall time of the counted cells: {format_duration(seconds)} ({timed} cells over {runs} run(s){missing}; "
            f"a cell's wall runs from the end of the cell before it in its run, loading, evaluation and "
            f"learning-rate search included).")


__all__ = ["cell_walls", "format_duration", "run_starts", "suite_wall", "wall_note"]
