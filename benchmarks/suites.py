"""Suites: TOML grids of cells, expanded, normalised and run by the runner.

A suite file (``benchmarks/suites/NAME.toml``, or any path) holds a
``description``, a ``[settings]`` table fixed for every cell and one or more
``[[grid]]`` tables. Each grid is a cartesian product: a key with a list value
is an axis, a scalar is fixed; the grid's keys win over the settings' (a list
in ``[settings]``, e.g. ``seed = [0, 1]``, is an axis of every grid). Keys are
the fields of :class:`~benchmarks.runner.Cell` (dataset, backbone, cut,
precision, seed, ...) and the options of the methods' ``Config`` (encoder,
projection, n_components, epochs, ...); ``projector`` and ``k`` are accepted
for ``projection`` and ``n_components``.

Cells are normalised so that what a method does not use cannot make two cells
out of one: backprop-from-scratch methods lose backbone, cut, weights and
precision; options absent from the method's Config are dropped, as are options
equal to their default, and ``n_components`` when there is no projection; the
cut is resolved to its name. Cells are then deduplicated by ``Cell.key()``.

``gradfree suites`` lists the suites; ``gradfree run --suite NAME [--set
axis=v1,v2 ...] [--dry-run]`` runs (or lists) one. Rows go to
``results/NAME/results.csv`` unless ``--out`` is given, extracted features to
``OUT/cache`` unless ``--cache-dir`` is.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.runner import BACKBONE_METHODS, Cell

SUITES_DIR = Path(__file__).resolve().parent / "suites"
ALIASES = {"projector": "projection", "k": "n_components", "n_random_features": "n_components"}
_CELL_FIELDS = {f.name: f for f in dataclasses.fields(Cell) if f.name not in ("options", "suite")}
_NONE_IF_ZERO = ("train_per_class", "test_per_class")


class SuiteError(ValueError):
    """A suite file or a --set override that cannot be turned into cells."""


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    settings: dict[str, Any]
    grids: tuple[dict[str, Any], ...]
    path: Path | None = None


# ----------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------


def suite_paths() -> dict[str, Path]:
    """The suites shipped with gradfree, by name."""
    return {p.stem: p for p in sorted(SUITES_DIR.glob("*.toml"))}


def load_suite(name_or_path: str | Path) -> Suite:
    """A shipped suite by name, or a suite file by path."""
    path = Path(name_or_path)
    if not (path.suffix == ".toml" or path.exists()):
        shipped = suite_paths()
        if str(name_or_path) not in shipped:
            raise SuiteError(f"unknown suite {str(name_or_path)!r}; choose one of: {', '.join(shipped)} "
                             "(`gradfree suites` describes them), or give the path of a .toml file.")
        path = shipped[str(name_or_path)]
    if not path.is_file():
        raise SuiteError(f"suite file {path} does not exist.")
    try:
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise SuiteError(f"{path} is not valid TOML: {err}") from err
    unknown = set(doc) - {"name", "description", "settings", "grid"}
    if unknown:
        raise SuiteError(f"{path}: unknown top-level key(s) {sorted(unknown)}; expected description, "
                         "[settings] and [[grid]] tables.")
    grids = doc.get("grid") or [{}]
    if isinstance(grids, dict):
        grids = [grids]
    suite = Suite(name=doc.get("name", path.stem), description=doc.get("description", ""),
                  settings=_canonical(doc.get("settings", {}), path),
                  grids=tuple(_canonical(g, path) for g in grids), path=path)
    return suite


def _option_fields() -> dict[str, dict[str, dataclasses.Field]]:
    from benchmarks.methods import METHOD_NAMES, get_method

    return {m: {f.name: f for f in dataclasses.fields(get_method(m).Config)} for m in METHOD_NAMES}


def known_keys() -> list[str]:
    keys = set(_CELL_FIELDS)
    for fields in _option_fields().values():
        keys |= set(fields)
    return sorted(keys)


def _canonical(table: dict, where) -> dict[str, Any]:
    """Aliases resolved, unknown keys rejected with the list of known ones."""
    out = {}
    known = set(known_keys())
    for key, value in table.items():
        key = ALIASES.get(key, key)
        if key not in known:
            raise SuiteError(f"{where}: unknown axis or setting {key!r}; known: {', '.join(sorted(known))} "
                             f"(aliases: {', '.join(f'{a}={b}' for a, b in ALIASES.items())}).")
        out[key] = value
    return out


# ----------------------------------------------------------------------------
# Overrides (--set axis=v1,v2 and the run command's method flags)
# ----------------------------------------------------------------------------


def parse_value(text: str) -> Any:
    """A --set value: int, float, true/false, none, else the string itself."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null", ""):
        return None
    for typ in (int, float):
        try:
            return typ(text)
        except ValueError:
            pass
    return text.strip()


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["seed=0,1,2", "cut=features.14"]`` -> ``{"seed": [0, 1, 2], "cut": "features.14"}``."""
    out = {}
    for item in items:
        if "=" not in item:
            raise SuiteError(f"--set {item!r}: expected AXIS=VALUE or AXIS=V1,V2,... (e.g. --set seed=0,1,2).")
        key, text = item.split("=", 1)
        key = ALIASES.get(key.strip(), key.strip())
        if key in _tuple_options():
            values = tuple(parse_value(v) for v in text.split(",") if v.strip())  # one tuple-valued setting
        else:
            values = [parse_value(v) for v in text.split(",")]
            values = values[0] if len(values) == 1 else values
        out[key] = values
    _canonical(out, "--set")
    return out


def apply_overrides(suite: Suite, overrides: dict[str, Any]) -> Suite:
    """Each override replaces its key wherever it appears (settings and every grid), else becomes a setting."""
    overrides = _canonical(overrides, "--set")
    settings = dict(suite.settings)
    grids = [dict(g) for g in suite.grids]
    for key, value in overrides.items():
        holders = [t for t in [settings, *grids] if key in t]
        for table in holders or [settings]:
            table[key] = value
    return dataclasses.replace(suite, settings=settings, grids=tuple(grids))


def _tuple_options() -> set[str]:
    return {name for fields in _option_fields().values() for name, f in fields.items() if "tuple" in str(f.type)}


# ----------------------------------------------------------------------------
# Expansion and normalisation
# ----------------------------------------------------------------------------


def _is_axis(key: str, value: Any, tuple_options: set[str]) -> bool:
    if not isinstance(value, list):
        return False
    # A flat list of numbers for a tuple-valued option (alphas) is one value, a list of lists an axis.
    return not (key in tuple_options and not any(isinstance(v, list) for v in value))


def expand(suite: Suite) -> list[Cell]:
    """Every cell of ``suite``: the union of its grids, normalised, deduplicated, grouped to share features."""
    tuple_options = _tuple_options()
    cells: dict[str, Cell] = {}
    for grid in suite.grids:
        merged = {**suite.settings, **grid}
        if "method" not in merged:
            raise SuiteError(f"{suite.path or suite.name}: a [[grid]] has no method (and [settings] none either).")
        axes = {k: v for k, v in merged.items() if _is_axis(k, v, tuple_options)}
        for k, v in axes.items():
            if not v:
                raise SuiteError(f"{suite.path or suite.name}: axis {k!r} is an empty list.")
        fixed = {k: v for k, v in merged.items() if k not in axes}
        for combo in itertools.product(*axes.values()):
            cell = make_cell({**fixed, **dict(zip(axes, combo))}, suite.name)
            cells.setdefault(cell.key(), cell)
    # Cells sharing data, backbone, cut and precision next to each other: the feature cache hits.
    return sorted(cells.values(), key=_feature_order)


def _feature_order(cell: Cell) -> tuple:
    from benchmarks.backbones import BackboneError, list_cuts

    try:
        cut_index = list_cuts(cell.backbone).index(cell.cut) if cell.method in BACKBONE_METHODS else -1
    except (BackboneError, ValueError):
        cut_index = -1
    return (str(cell.data_key()), cell.method not in BACKBONE_METHODS, cell.backbone, cut_index, cell.precision)


def make_cell(values: dict[str, Any], suite_name: str = "") -> Cell:
    """One normalised Cell from a flat dict of cell fields and method options."""
    from benchmarks.backbones import BackboneError, resolve_cut
    from benchmarks.methods import get_method, make_config

    values = _canonical(values, "cell")
    method = values.get("method", Cell.method)
    try:
        method_cls = get_method(method)
    except ValueError as err:
        raise SuiteError(str(err)) from None
    fields = {k: _coerce(k, v, _CELL_FIELDS[k]) for k, v in values.items() if k in _CELL_FIELDS}
    for k in _NONE_IF_ZERO:
        if fields.get(k) == 0:
            fields[k] = None
    cfg_fields = {f.name: f for f in dataclasses.fields(method_cls.Config)}
    options = {k: _coerce(k, v, cfg_fields[k]) for k, v in values.items() if k in cfg_fields}
    if "batch_size" in cfg_fields and "batch_size" in fields and "batch_size" not in options:
        options["batch_size"] = fields["batch_size"]  # the trainers' batch size is part of what they are
    if method in BACKBONE_METHODS:
        try:
            fields["cut"] = resolve_cut(fields.get("backbone", Cell.backbone), fields.get("cut"))
        except BackboneError:
            pass  # validate() reports it with the list of cuts
    else:
        for k in ("backbone", "cut", "weights", "precision"):
            fields.pop(k, None)
    if method == "random-features" and options.get("projection") == "none":
        options.pop("n_components", None)
        options.pop("block_size", None)
    defaults = method_cls.Config()
    options = {k: v for k, v in options.items() if v != getattr(defaults, k)}
    try:
        make_config(method_cls, options)
    except (TypeError, ValueError) as err:
        raise SuiteError(f"{method} with {options}: {err}") from None
    return Cell(**fields, suite=suite_name, options=tuple(sorted(options.items())))


def _coerce(key: str, value: Any, field: dataclasses.Field) -> Any:
    """TOML and --set values to the field's type: 1 -> 1.0 for floats, lists -> tuples."""
    typ = str(field.type)
    if value is None:
        return None
    if "tuple" in typ:
        return tuple(float(v) for v in (value if isinstance(value, (list, tuple)) else [value]))
    if typ.startswith("float") and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typ.startswith("int") and isinstance(value, float) and value.is_integer():
        return int(value)
    if typ.startswith("str") and not isinstance(value, str):
        raise SuiteError(f"{key} = {value!r}: expected a string.")
    return value


# ----------------------------------------------------------------------------
# Commands
# ----------------------------------------------------------------------------


def suite_overrides(args: argparse.Namespace, options: dict) -> dict[str, Any]:
    """--set items, then the run command's method flags and non-default execution flags."""
    overrides = parse_overrides(args.overrides)
    overrides.update({k: v for k, v in options.items() if k not in overrides})
    for flag, default in (("device", "auto"), ("threads", None), ("data_dir", None)):
        if getattr(args, flag, default) != default and flag not in overrides:
            overrides[flag] = getattr(args, flag)
    return overrides


def suite_out_dir(args: argparse.Namespace, suite: Suite) -> Path:
    from benchmarks.cli import DEFAULT_OUT

    return Path(args.out) if args.out != DEFAULT_OUT else Path("results") / suite.name


def run_suite(args: argparse.Namespace, options: dict) -> int:
    """`gradfree run --suite ...`: expand, then list (--dry-run) or run the cells."""
    from benchmarks import results as res
    from benchmarks.executors import make_executor
    from benchmarks.runner import FeatureCache, Runner, validate

    suite = apply_overrides(load_suite(args.suite), suite_overrides(args, options))
    cells = expand(suite)
    out = suite_out_dir(args, suite)
    if args.dry_run:
        from benchmarks.estimate import print_plan

        print_plan(cells, out)
        return 0
    for cell in cells:
        validate(cell)
    cache_dir = Path(args.cache_dir) if args.cache_dir else out / "cache"
    runner = Runner(out, progress=args.progress, fail_fast=args.fail_fast, feature_cache=FeatureCache(cache_dir))
    done = res.finished_keys(runner.results_path)
    print(f"suite {suite.name}: {len(cells)} cells, {sum(c.key() in done for c in cells)} done before; "
          f"results in {runner.results_path}")
    res.write_metadata(out, runner.run_id, {
        "suite": suite.name, "suite_file": str(suite.path), "settings": suite.settings,
        "grids": list(suite.grids), "overrides": suite_overrides(args, options),
        "executor": args.executor, "address": args.address, "cache_dir": str(cache_dir),
        "cells": [dataclasses.asdict(c) | {"cell_key": c.key()} for c in cells]})
    executor = make_executor(args.executor, address=args.address)
    rows = executor.run(runner, cells)
    _print_summary(runner.results_path, {c.key() for c in cells})
    failed = [r for r in rows if r.get("status") != "ok"]
    if failed:
        print(f"{len(failed)} cell(s) failed; their errors are in {runner.results_path} (status=failed).")
    return 1 if failed else 0


def _print_summary(path: Path, keys: set[str]) -> None:
    import pandas as pd

    from benchmarks.report import load_results, summary_table

    df = load_results(path)
    if df.empty:
        return
    table = summary_table(df[df["cell_key"].isin(keys)])
    if not table.empty:
        with pd.option_context("display.width", 200, "display.max_columns", 30, "display.max_colwidth", 40):
            print(table.to_string(index=False))


def cmd_suites(args: argparse.Namespace) -> int:
    """`gradfree suites`: name, number of cells and description of every shipped suite."""
    rows = []
    for name, path in suite_paths().items():
        try:
            suite = load_suite(path)
            n = str(len(expand(suite)))
        except SuiteError as err:
            suite, n = None, f"error: {err}"
        rows.append((name, n, suite.description if suite else ""))
    width = max(len(r[0]) for r in rows) if rows else 5
    print(f"{'suite':{width}s}  {'cells':>5s}  description")
    for name, n, desc in rows:
        print(f"{name:{width}s}  {n:>5s}  {desc}")
    print("\nrun one with `gradfree run --suite NAME [--set axis=v1,v2] [--dry-run]`; "
          f"suite files are in {SUITES_DIR}")
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("suites", help="list the benchmark suites (name, number of cells, description)",
                       description="List the suites shipped in benchmarks/suites/. Run one with "
                                   "`gradfree run --suite NAME`; --suite also takes the path of a TOML file.")
    p.set_defaults(func=cmd_suites)
