"""What validation chose: the report's table of tuned hyperparameters.

Every method that tunes on the validation split records, in its row's ``extra``, the
grid's validation accuracies (``grid_val_acc``: value -> accuracy), the values whose
training or fit diverged and were left out of the choice (``grid_diverged``: value ->
why) and, for backprop, the value kept (``tuned_value``) and the grid's cost
(``tune_s``); random features keep their penalty in the ``alpha`` column. Per
configuration, over seeds, the table gives the values chosen, how many were at an end
of their grid (the grid may have cut the optimum off: a wider one could do better), the
spread of validation accuracy over the grid (how sensitive the method is to that
hyperparameter), the tuning time and, when any diverged, which values did and in how
many seeds. Nothing here reads the test split.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmarks.report.tables import GROUP, aggregate, json_dict


def _tuned(row) -> tuple[str, float | None, dict[float, float], list[float]]:
    """(hyperparameter name, value kept, {grid value: validation accuracy}, [grid values that
    diverged]) of one final row."""
    extra, config = json_dict(row["extra"]), json_dict(row["method_config"])
    grid = {float(k): float(v) for k, v in (extra.get("grid_val_acc") or {}).items()}
    diverged = sorted(float(k) for k in (extra.get("grid_diverged") or {}))
    if extra.get("tuned_value") is not None:
        return "lr", float(extra["tuned_value"]), grid, diverged
    if pd.notna(row.get("alpha")):
        name = "C" if config.get("classifier") == "logistic" else "alpha"
        return name, float(row["alpha"]), grid, diverged
    return "", None, grid, diverged


def _describe_diverged(picks, n_seeds: int) -> str:
    """Grid values whose training diverged (left out of the choice), with how many seeds each."""
    counts: dict[float, int] = {}
    for *_, diverged in picks:
        for v in diverged:
            counts[v] = counts.get(v, 0) + 1
    return ", ".join(f"{_fmt(v)} ({n} of {n_seeds})" for v, n in sorted(counts.items()))


DIVERGED = "diverged, left out (seeds)"


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def _describe_grids(grids: list[list[float]]) -> str:
    """One seed's grid, or, where each seed had its own (ridge scales its alphas to the features), the
    size of one and the range of all."""
    if not grids:
        return "(not recorded)"
    if all(g == grids[0] for g in grids):
        g = grids[0]
        return ", ".join(_fmt(v) for v in g) if len(g) <= 8 else f"{len(g)} values, {_fmt(g[0])} to {_fmt(g[-1])}"
    lo, hi = min(g[0] for g in grids), max(g[-1] for g in grids)
    return f"{max(len(g) for g in grids)} values a seed (scaled per seed), {_fmt(lo)} to {_fmt(hi)}"


def tuning_table(finals: pd.DataFrame) -> pd.DataFrame:
    """One line per configuration that chose something on validation (module docstring)."""
    cols = ["hyperparameter", "grid", "chosen (per seed)", "at an end of the grid",
            "val acc over the grid (min-max)", "tune_s", DIVERGED]
    if finals.empty:
        return pd.DataFrame(columns=[*GROUP, "seeds", *cols[:-1]])
    rows = []
    filled = finals.fillna({c: "" for c in GROUP})
    for key, cells in filled.groupby(GROUP, sort=False, dropna=False):
        picks = [_tuned(r) for r in finals.loc[cells.index].to_dict("records")]
        picks = [p for p in picks if p[1] is not None]
        if not picks:
            continue
        name = picks[0][0]
        # the grid as tried: the values scored and those that diverged
        tried = [sorted({*g, *d}) for _, _, g, d in picks]
        grids = [t for t in tried if len(t) > 1]
        chosen = [v for _, v, _, _ in picks]
        edges = [v for v, t in zip(chosen, tried) if len(t) > 1 and v in (t[0], t[-1])]
        scored = [g for _, _, g, _ in picks if len(g) > 1]
        spreads = [max(g.values()) - min(g.values()) for g in scored]
        lows = [min(g.values()) for g in scored]
        highs = [max(g.values()) for g in scored]
        tune = pd.to_numeric(finals.loc[cells.index, "tune_s"], errors="coerce") if "tune_s" in finals else None
        rows.append({
            **dict(zip(GROUP, key)), "seeds": cells["seed"].nunique(), "hyperparameter": name,
            "grid": _describe_grids(grids),
            "chosen (per seed)": ", ".join(_fmt(v) for v in chosen),
            "at an end of the grid": f"{len(edges)} of {len(chosen)}" if grids else "",
            "val acc over the grid (min-max)": (f"{np.mean(lows):.3f}-{np.mean(highs):.3f} "
                                                f"(spread {np.mean(spreads):.3f})") if spreads else "",
            "tune_s": f"{tune.mean():.1f}" if tune is not None and tune.notna().any() else "",
            DIVERGED: _describe_diverged(picks, len(picks)),
        })
    out = pd.DataFrame(rows, columns=[*GROUP, "seeds", *cols])
    if not out[DIVERGED].astype(bool).any():  # a column only when some training diverged
        out = out.drop(columns=DIVERGED)
    order = aggregate(finals, ["seed"])[GROUP].astype(str).agg("|".join, axis=1).tolist()
    rank = {k: i for i, k in enumerate(order)}
    out["_r"] = [rank.get(k, len(rank)) for k in out[GROUP].astype(str).agg("|".join, axis=1)]
    return out.sort_values("_r", kind="stable").drop(columns="_r").reset_index(drop=True)
