"""Suites: TOML grids of cells, expanded, normalised and run by the runner.

A suite file (``benchmarks/suites/NAME.toml``, or any path) holds a
``description``, a ``[settings]`` table fixed for every cell and one or more
``[[grid]]`` tables. Each grid is a cartesian product: a key with a list value
is an axis, a scalar is fixed; the grid's keys win over the settings' (a list
in ``[settings]``, e.g. ``seed = [0, 1]``, is an axis of every grid). Keys are
the fields of :class:`~benchmarks.harness.runner.Cell` (dataset, backbone, cut,
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

import dataclasses
import itertools
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.core.backbones import BackboneError, list_cuts
from benchmarks.core.protocol import recipe_batch_size
from benchmarks.harness.cells import ALIASES, Cell, CellError, canonical, config_fields, make_cell
from benchmarks.core.datasets import remembered_identities
from benchmarks.harness.registry import REGISTRY, get_method

SUITES_DIR = Path(__file__).resolve().parents[1] / "suites"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class SuiteError(CellError):
    """A suite file or a --set override that cannot be turned into cells."""


@dataclass(frozen=True)
class Suite:
    """A suite as loaded: its name (``results/NAME``), description, ``settings`` fixed for every cell,
    ``grids`` (each a cartesian product of its list values) and the file it came from."""

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
        doc = tomllib.loads(_read_text(path))
    except tomllib.TOMLDecodeError as err:
        raise SuiteError(f"{path} is not valid TOML: {err}") from err
    unknown = set(doc) - {"name", "description", "settings", "grid"}
    if unknown:
        raise SuiteError(f"{path}: unknown top-level key(s) {sorted(unknown)}; expected description, "
                         "[settings] and [[grid]] tables.")
    grids = doc.get("grid") or [{}]
    if isinstance(grids, dict):
        grids = [grids]
    name = doc.get("name", path.stem)
    if not isinstance(name, str) or not _NAME.match(name):
        raise SuiteError(f"{path}: suite name {name!r} is not a name (letters, digits, '.', '_', '-'; "
                         "no '/' or '..'): it names the folder results/NAME. Rename it.")
    methods = _methods_named([doc.get("settings", {}), *grids])  # plugins' settings are known too
    suite = Suite(name=name, description=doc.get("description", ""),
                  settings=_canonical(doc.get("settings", {}), path, methods),
                  grids=tuple(_canonical(g, path, methods) for g in grids), path=path)
    return suite


def _read_text(path: Path) -> str:
    """The suite file's text: UTF-8 (TOML's encoding; a leading byte-order mark is allowed)."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise SuiteError(f"cannot read the suite file {path}: {err.strerror or err}.") from err
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise SuiteError(f"{path} is not UTF-8 text (byte 0x{data[err.start]:02x} on line {line} is not "
                         "UTF-8); TOML files must be UTF-8: save it again as UTF-8 (e.g. `iconv -f latin1 "
                         "-t utf-8`).") from None


def _canonical(table: dict, where, methods=()) -> dict[str, Any]:
    try:
        return canonical(table, where, methods)
    except CellError as err:
        raise SuiteError(str(err)) from None


def suite_methods(suite: "Suite") -> set[str]:
    """Every method a suite's settings and grids name (plugins' settings are then known keys)."""
    return _methods_named([suite.settings, *suite.grids])


def _methods_named(tables) -> set[str]:
    names = set()
    for table in tables:
        value = table.get("method")
        names |= {value} if isinstance(value, str) else {v for v in value or () if isinstance(v, str)} \
            if isinstance(value, (list, tuple)) else set()
    return names


# ----------------------------------------------------------------------------
# Overrides (--set axis=v1,v2 and the run command's method flags)
# ----------------------------------------------------------------------------


def parse_value(text: str, optional: bool = True) -> Any:
    """A --set value: int, float, true/false, none, else the string itself. ``none`` (and ``null``)
    is None only for a setting that takes None (``optional``); for one that does not, it is the string
    ``"none"``, a value many settings name (``--set weights=none``: random weights; ``projection=none``)."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null") and not optional:
        return low
    if low in ("none", "null", ""):
        return None
    for typ in (int, float):
        try:
            return typ(text)
        except ValueError:
            pass
    return text.strip()


def parse_overrides(items: list[str], methods=()) -> dict[str, Any]:
    """``["seed=0,1,2", "cut=features.14"]`` -> ``{"seed": [0, 1, 2], "cut": "features.14"}``."""
    out = {}
    for item in items:
        if "=" not in item:
            raise SuiteError(f"--set {item!r}: expected AXIS=VALUE or AXIS=V1,V2,... (e.g. --set seed=0,1,2).")
        key, text = item.split("=", 1)
        key = ALIASES.get(key.strip(), key.strip())
        optional = _takes_none(key, methods)
        if key in _tuple_options() and parse_value(text, optional) is None:
            values = None  # alphas=none: the setting unset (its default grid)
        elif key in _tuple_options():
            values = tuple(parse_value(v, optional) for v in text.split(",") if v.strip())  # one tuple-valued setting
        else:
            values = [parse_value(v, optional) for v in text.split(",")]
            values = values[0] if len(values) == 1 else values
        out[key] = values
    _canonical(out, "--set", methods)  # (the settings of plugin ``methods`` are known too)
    return out


def apply_overrides(suite: Suite, overrides: dict[str, Any]) -> Suite:
    """Each override replaces its key wherever it appears (settings and every grid), else becomes a setting."""
    overrides = _canonical(overrides, "--set", suite_methods(suite))
    settings = dict(suite.settings)
    grids = [dict(g) for g in suite.grids]
    for key, value in overrides.items():
        holders = [t for t in [settings, *grids] if key in t]
        for table in holders or [settings]:
            table[key] = value
    return dataclasses.replace(suite, settings=settings, grids=tuple(grids))


def _takes_none(key: str, methods=()) -> bool:
    """Whether None is a value of setting ``key``: a cell field or a Config field (of ``methods``, else of
    every registered method) typed ``... | None``. An unknown key: True (it is refused further on)."""
    types = [str(f.type) for f in dataclasses.fields(Cell) if f.name == key]
    for method in methods or REGISTRY:
        try:
            field = config_fields(method).get(key)
        except ValueError:  # a plugin that cannot be had: its settings are checked where it is loaded
            continue
        if field is not None:
            types.append(str(field.type))
    return not types or any("None" in t for t in types)


def _tuple_options() -> set[str]:
    return {name for m in REGISTRY for name, f in config_fields(m).items() if "tuple" in str(f.type)}


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
    with remembered_identities():  # an image folder's files listed once, not once a cell
        return _expand(suite)


def _expand(suite: Suite) -> list[Cell]:
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
            try:
                cell = make_cell({**fixed, **dict(zip(axes, combo))}, suite.name)
            except CellError as err:
                raise SuiteError(f"{suite.path or suite.name}: {err}") from None
            cells.setdefault(cell.key(), cell)
    # Cells sharing data, backbone, cut and precision next to each other: the feature cache hits.
    return sorted(cells.values(), key=_feature_order)


def recipe_notes(suite: Suite) -> list[str]:
    """A line for each grid whose trainer takes its batch size from ``[settings]`` where its recipe has its
    own (a setting reaches every cell: ``batch_size = 128`` meant for feature extraction makes airbench94's
    1,024 and WRN-22's 512 into 128): the cells are what they are (their key holds the batch), but a
    reader of the suite should not take them for the published recipe, and the report labels them so."""
    if "batch_size" not in suite.settings:
        return []
    setting, notes = suite.settings["batch_size"], []
    for i, grid in enumerate(suite.grids, 1):
        methods = grid.get("method", suite.settings.get("method"))
        for method in (methods if isinstance(methods, list) else [methods]):
            if "batch_size" in grid or not isinstance(method, str):
                continue
            try:
                recipe = recipe_batch_size(get_method(method))
            except ValueError:
                continue  # an unknown method: the expansion says so
            if recipe is not None and setting != recipe:
                notes.append(f"note: [[grid]] {i} ({method}) trains with [settings] batch_size = {setting}, not "
                             f"its recipe's {recipe}; give that grid its own batch_size = {recipe} to run the recipe.")
    return notes


def _feature_order(cell: Cell) -> tuple:
    try:
        cut_index = list_cuts(cell.backbone).index(cell.cut) if cell.uses_backbone else -1
    except (BackboneError, ValueError):
        cut_index = -1
    return (str(cell.data_key()), not cell.uses_backbone, cell.backbone, cut_index, cell.precision)
