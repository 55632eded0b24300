"""Whether a suite's results are whole: the cells its latest run planned, against those with a finished row.

A suite's run records the cells it was asked to run (``runs/<run_id>/metadata.json``: its ``config``'s
``suite`` and ``cells``, each with its ``cell_key``). A report answers from the rows that finished; when
the latest run of a suite planned cells that have none yet (a suite still running, stopped for the
night, or whose cells failed), the report says so before its answer: an answer from part of a suite can
change when the rest has run, and a reader should not take it for the suite's.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from benchmarks.harness.metadata import read_metadata


def _latest_plans(folder: Path) -> dict[str, dict]:
    """The metadata of each suite's latest run (by start) that recorded its planned cells, by suite name."""
    latest: dict[str, dict] = {}
    for meta in read_metadata(folder):
        config = meta.get("config")
        if not isinstance(config, dict) or not config.get("suite") or not isinstance(config.get("cells"), list):
            continue
        suite = str(config["suite"])
        if suite not in latest or str(meta.get("started_at") or "") >= str(latest[suite].get("started_at") or ""):
            latest[suite] = meta
    return latest


def unfinished(folder: str | Path, finals: pd.DataFrame, failed: pd.DataFrame | None = None) -> list[str]:
    """A sentence for each suite of ``folder`` whose latest run planned cells that have no finished row among
    ``finals`` (``failed``: the failed rows, to say how many of those failed); none when every suite is whole."""
    done = set(finals["cell_key"].astype(str)) if not finals.empty else set()
    broke = set(failed["cell_key"].astype(str)) if failed is not None and not failed.empty else set()
    lines = []
    for suite, meta in sorted(_latest_plans(Path(folder)).items()):
        planned = {str(c["cell_key"]) for c in meta["config"]["cells"] if isinstance(c, dict) and c.get("cell_key")}
        missing = planned - done
        if not missing:
            continue
        failures = len(missing & broke)
        why = f" ({failures} of them failed: their errors are under Failed cells)" if failures else ""
        lines.append(f"Unfinished: suite {suite} planned {len(planned)} cells (its latest run, {meta.get('run_id')}, "
                     f"started {meta.get('started_at')}); {len(missing)} have no finished row yet{why}. What follows "
                     f"answers from the {len(planned) - len(missing)} that have, and can change when the rest have "
                     "run: run the suite's command again to finish it.")
    return lines


__all__ = ["unfinished"]
