"""``gradfree run``: its flags (the cell's settings, each method's options, ``--set`` for any field of a
method's Config), one cell or a suite, and ``--dry-run`` (the same checks, nothing run)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.harness.results import RESULTS_FILE, check_out_folder

DEFAULT_OUT = "results/local"

# Method options: flag -> (Config field, type, help). Each method takes the ones its Config has.
METHOD_OPTIONS = {
    # random-features
    "--encoder": ("encoder", str, "random-features: feature encoder: sign (x>0 -> 1), threshold, none (float features) [sign]"),
    "--projector": ("projection", str, "random-features: gaussian (|XR|^2, complex Gaussian R), structured "
                    "(Hadamard-based, same statistics), opu (lightonml), linear (Re XR), none (ridge on the encoded features), "
                    "kernel (exact |XR|^2 kernel ridge, k = infinity; n_components reported as -1), or a plugin's "
                    "(a gradfree.projections entry point, module:Class or file.py:Class) [gaussian]"),
    "--n-components": ("n_components", int, "random-features: number of random features k [10000]"),
    "--alphas": ("alphas", "floats", "random-features: comma-separated ridge alphas to choose from on the validation split "
                 "[13-value log grid 1e-6..1e6 times the Gram's mean eigenvalue]"),
    "--classifier": ("classifier", str, "random-features: ridge, or logistic (the control: scikit-learn L-BFGS "
                     "logistic regression, C chosen on validation, on the same features) [ridge]"),
    "--pool-size": ("pool_size", int, "random-features/finetune: average-pool feature maps to NxN first; 0 keeps them whole [0]"),
    "--block-size": ("block_size", int, "random-features: columns of R generated per block [chosen from free memory]"),
    # trainers
    "--epochs": ("epochs", "epochs", "trainers: number of epochs; airbench alone takes a fraction (9.9, as published)"),
    "--lr": ("lr", float, "trainers: (maximum) learning rate; airbench: per 1,024 examples, as published (11.5)"),
    "--mode": ("mode", str, "finetune: linear-probe (backbone frozen) or unfreeze"),
    "--unfreeze-blocks": ("unfreeze_blocks", int, "finetune --mode unfreeze: number of last blocks before the cut to train"),
    "--preset": ("preset", str, "finetune: seed-paper (Adam, lr 1e-6, 5 epochs, batch 32, no augmentation)"),
    "--patience": ("patience", int, "finetune/small_cnn: early stopping, epochs without a better validation "
                   "accuracy before stopping (--epochs is then the budget) [none]"),
    "--lr-grid": ("lr_grid", "floats", "finetune/small_cnn: comma-separated learning rates, the best on validation "
                  "kept; the others' training time is reported as tune_s [none: --lr]"),
    "--tune-epochs": ("tune_epochs", int, "finetune/small_cnn with --lr-grid: try each rate for this many epochs, "
                      "then train the best for --epochs [each rate for --epochs]"),
    "--no-augment": ("augment", "false", "trainers: switch off random-crop and flip augmentation"),
    "--width": ("width", int, "small_cnn: channels of the first conv layer"),
    "--depth": ("depth", int, "small_cnn: number of conv + max-pool blocks"),
}


def _parse_floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _parse_epochs(text: str) -> int | float:
    """A whole number of epochs, or a fraction (airbench's 9.9): each trainer's Config says which it takes."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of epochs, got {text!r}") from None
    return int(value) if value.is_integer() else value


def _add_run_args(p: argparse.ArgumentParser) -> None:
    for add in (_add_what_args, _add_data_args, _add_backbone_args, _add_method_args, _add_execution_args):
        add(p)


def _add_what_args(p: argparse.ArgumentParser) -> None:
    from benchmarks.harness.registry import METHOD_NAMES

    g = p.add_argument_group("what to run")
    g.add_argument("--method", default="random-features", metavar="METHOD",
                   help=f"method under test or baseline: {', '.join(METHOD_NAMES)}; an installed plugin's "
                        "name (entry point group gradfree.methods); or a class of your own, module:Class or "
                        "path/to/file.py:Class [random-features]")
    g.add_argument("--suite", default=None,
                   help="run a benchmark suite by name or TOML path instead of one cell (see `gradfree suites`)")
    g.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
                   help="set any field of the method's Config (or any cell field) by name, e.g. --set "
                        "lr_max=0.01 or --set refit=false (repeatable); with --suite, override an axis or "
                        "setting, e.g. --set seed=0,1")
    g.add_argument("--dry-run", action="store_true",
                   help="list the cell(s) with their memory and time estimates and what a run would refuse, "
                        "run nothing (exit 2 if a cell would be refused)")
    g.add_argument("--rates-from", action="append", default=[], metavar="RESULTS",
                   help="with --dry-run: estimate times from the rates measured in these results folders too "
                        "(repeatable), where OUT has none yet")
    g.add_argument("--set-aside-others", action="store_true",
                   help="with --suite: first move the rows of cells this suite no longer has (an edited "
                        "suite's old configurations) from results.csv to results.superseded.csv, so that "
                        "the report counts this suite's cells only")
    g.add_argument("--retime-busy", action="store_true",
                   help="first move the rows of this run's finished cells that were timed beside other work "
                        "(a load average more than one core above their threads at one of their rows) to "
                        "results.superseded.csv, and their kept predictions to predictions/superseded/, so "
                        "that they run again; with --dry-run, list them as 're-time'")


def _add_data_args(p: argparse.ArgumentParser) -> None:
    from benchmarks.core.datasets import dataset_names

    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="fashion-mnist",
                   help=f"one of {', '.join(dataset_names())}, or module:NAME / file.py:NAME [fashion-mnist]")
    g.add_argument("--data-dir", default=None,
                   help="local copy of the dataset: for cifar10 an image-folder tree train/<class>/*, test/<class>/*; "
                        "for fashion-mnist a folder of the idx .gz files; for animals10 the folder of class folders "
                        "[torchvision download / Debian's /usr/share/datasets/fashion-mnist]")
    g.add_argument("--image-size", type=int, default=96, help="square input size in pixels [96]")
    g.add_argument("--train-per-class", type=int, default=500,
                   help="training images per class, validation carved out of them; 0 = all [500]")
    g.add_argument("--test-per-class", type=int, default=200, help="test images per class; 0 = all [200]")
    g.add_argument("--val-fraction", type=float, default=0.2,
                   help="fraction of each class's training images held out for validation [0.2]")
    g.add_argument("--val-per-class", type=int, default=None,
                   help="instead of --val-fraction: a fixed validation split of N images per class, held out "
                        "once from the whole training pool (the same at every size and seed); the training "
                        "images are then drawn from the rest with --seed (0 or left out: --val-fraction)")


def _add_backbone_args(p: argparse.ArgumentParser) -> None:
    from benchmarks.core.backbones import BACKBONES, PRECISIONS

    g = p.add_argument_group("backbone")
    g.add_argument("--backbone", default="mobilenet_v2", choices=list(BACKBONES),
                   help="ImageNet-pretrained network to cut: a torchvision model or efficientnet_lite0 "
                        "(`gradfree backbones`) [mobilenet_v2]")
    g.add_argument("--cut", default=None, help="cut point (list them with `gradfree cuts`) [the last]")
    g.add_argument("--weights", default="DEFAULT",
                   help="DEFAULT (best pretrained weights to be had), a torchvision weights name "
                        "(efficientnet_lite0: IMAGENET1K), "
                        "or none (random weights; the results say so) [DEFAULT]")
    g.add_argument("--precision", default="fp32", choices=list(PRECISIONS),
                   help="feature-extraction precision [fp32]")
    g.add_argument("--batch-size", type=int, default=None,
                   help="images per batch: of the extraction, and of training for every trainer [128 for "
                        "extraction; each trainer's recipe otherwise: WRN-22 512, airbench 1,024, the others 128]")


def _add_method_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("method options (each method takes those its configuration has)")
    for flag, (dest, typ, help_) in METHOD_OPTIONS.items():
        if typ == "false":
            g.add_argument(flag, dest=dest, action="store_const", const=False, default=None, help=help_)
        elif typ in ("floats", "epochs"):
            g.add_argument(flag, dest=dest, type=_parse_floats if typ == "floats" else _parse_epochs, default=None,
                           help=help_)
        else:
            g.add_argument(flag, dest=dest, type=typ, default=None, help=help_)


def _add_execution_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("execution")
    g.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto [auto]")
    g.add_argument("--threads", type=int, default=None, help="CPU threads for torch [torch's default]")
    g.add_argument("--seed", type=int, default=0, help="seed of the random projection and of training [0]")
    g.add_argument("--out", default=DEFAULT_OUT,
                   help=f"results folder: results.csv and runs/<run id>/metadata.json [{DEFAULT_OUT}]")
    g.add_argument("--cache-dir", default=None,
                   help="keep extracted features here, shared between cells and runs [memory only]")
    g.add_argument("--executor", default="local", choices=["local", "ray"],
                   help="run cells in this process (local) or as Ray tasks [local]")
    g.add_argument("--address", default=None, help="with --executor ray: the cluster address [start a local one]")
    g.add_argument("--fail-fast", action="store_true", help="stop at the first failing cell instead of recording it")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars (the line per finished cell, with the rate and ETA, stays)")


#: A flag's other Config names, the one place they are kept: ``--lr`` is WRN-22's ``lr_max`` (its one
#: cycle's peak learning rate). A method takes whichever of the names its Config has.
FLAG_ALIASES = {"lr": ("lr_max",)}


def _method_options(args: argparse.Namespace) -> dict:
    """The method flags given, by Config field (each under its aliases too: the method keeps what it has)."""
    options = {dest: getattr(args, dest) for dest, _, _ in METHOD_OPTIONS.values()
               if getattr(args, dest, None) is not None}
    for dest, aliases in FLAG_ALIASES.items():
        if dest in options:
            options.update({alias: options[dest] for alias in aliases})
    return options


def _single_run_settings(args: argparse.Namespace) -> dict:
    """``--set NAME=VALUE`` for one run: any field of the method's Config (or a cell field), one value
    each. A list of values is a grid, which is a suite's (--suite); a name also given as its own flag
    is refused rather than silently overridden."""
    from benchmarks.harness.suites import parse_overrides

    settings = parse_overrides(args.overrides, methods=(args.method,))
    for key, value in settings.items():
        if isinstance(value, list):
            raise ValueError(f"--set {key}={','.join(map(str, value))}: one run takes one value; a grid of values "
                             "is a suite's (write a suite, or give --suite NAME --set ...).")
        flag = "--" + key.replace("_", "-")
        given = getattr(args, key, None)
        if given is not None and given != _parser_default(key):
            raise ValueError(f"--set {key}=... and {flag} both given; keep one.")
    for key in [k for k in settings if k in _CELL_ARGS]:
        setattr(args, key, settings.pop(key))
    from benchmarks.harness.registry import config_fields

    fields = config_fields(args.method)
    foreign = sorted(set(settings) - set(fields))
    if foreign:
        raise ValueError(f"--set {', '.join(foreign)}: not a setting of {args.method}; its settings are "
                         f"{', '.join(sorted(fields))}.")
    return settings


def _parser_default(dest: str):
    """The default argparse gives ``dest`` for `gradfree run` (None for a method option)."""
    parser = argparse.ArgumentParser(add_help=False)
    _add_run_args(parser)
    return parser.get_default(dest)


def _warn_unused(method: str, options: dict) -> None:
    import dataclasses

    from benchmarks.harness.registry import get_method

    fields = {f.name for f in dataclasses.fields(get_method(method).Config)}
    names = {dest: {dest, *aliases} for dest, aliases in FLAG_ALIASES.items()}
    unused = set(options) - fields - {n for group in names.values() for n in group}
    unused |= {dest for dest, group in names.items() if dest in options and not fields & group}
    if unused:
        flags = [f for f, (d, _, _) in METHOD_OPTIONS.items() if d in unused]
        print(f"note: {method} does not use {', '.join(flags)}; ignored.", file=sys.stderr)


_CELL_ARGS = ("method", "dataset", "data_dir", "backbone", "cut", "weights", "precision", "image_size",
              "train_per_class", "test_per_class", "val_fraction", "val_per_class", "batch_size", "device", "seed",
              "threads")


def cmd_run(args: argparse.Namespace) -> int:
    """``gradfree run``: one cell from the flags and ``--set``, or the suite of ``--suite``. Prints the cell's
    final row; exit 0 when every row is ``ok``, else 1 (``--dry-run``: 2 if a check would refuse it). Raises
    ``ValueError`` for settings it refuses, such as ``--set-aside-others`` without ``--suite``."""
    from benchmarks.harness.cells import make_cell

    options = _method_options(args)
    if args.suite:
        return run_suite(args, options)
    options.update(_single_run_settings(args))
    if args.set_aside_others:
        raise ValueError("--set-aside-others only applies to --suite (which cells to keep is the suite's "
                         "list); drop it, or give --suite NAME.")
    _warn_unused(args.method, options)
    cell = make_cell({**{k: getattr(args, k) for k in _CELL_ARGS}, **options})
    out = Path(args.out)
    check_out_folder(out)
    if args.dry_run:
        return _dry_run([cell], out, args.rates_from, args.retime_busy)
    from benchmarks.harness.executors import run_cells
    from benchmarks.core.features import FeatureCache
    from benchmarks.harness.runner import Runner

    runner = Runner(progress=args.progress, fail_fast=args.fail_fast, feature_cache=FeatureCache(args.cache_dir))
    rows = run_cells([cell], out, runner, metadata={"arguments": vars(args)}, retime_busy=args.retime_busy)
    results_path = out / RESULTS_FILE
    print_table(rows or [r for r in _final_rows(results_path) if r["cell_key"] == cell.key()])
    print(f"results: {results_path}")
    return 0 if all(r.get("status") == "ok" for r in rows) else 1


def _dry_run(cells: list, out: Path, rates_from: list[str] = (), retime_busy: bool = False) -> int:
    """List the cells with their estimates and the verdict of the checks a run makes: exit 2 if any
    would be refused, as the run would."""
    from benchmarks.harness.estimate import print_plan
    from benchmarks.harness.executors import preflight, retime_keys

    retime = retime_keys(cells, out / RESULTS_FILE) if retime_busy else set()
    return 2 if print_plan(cells, out, preflight(cells, out), rates_from, retime) else 0


def run_suite(args: argparse.Namespace, options: dict) -> int:
    """`gradfree run --suite ...`: expand, then list (--dry-run) or run the cells."""
    from benchmarks.harness import suites

    suite = suites.load_suite(args.suite)
    overrides = _suite_overrides(args, options, suites.suite_methods(suite))
    suite = suites.apply_overrides(suite, overrides)
    cells = suites.expand(suite)
    for note in suites.recipe_notes(suite):
        print(note, file=sys.stderr)
    out = Path(args.out) if args.out != DEFAULT_OUT else Path("results") / suite.name
    check_out_folder(out)
    if args.dry_run:
        return _dry_run(cells, out, args.rates_from, args.retime_busy)
    from benchmarks.harness.executors import make_executor, run_cells
    from benchmarks.core.features import FeatureCache
    from benchmarks.harness.results import finished_keys
    from benchmarks.harness.runner import Runner

    cache_dir = Path(args.cache_dir) if args.cache_dir else out / "cache"
    runner = Runner(progress=args.progress, fail_fast=args.fail_fast, feature_cache=FeatureCache(cache_dir))
    executor = make_executor(args.executor, address=args.address)
    done = finished_keys(out / RESULTS_FILE)
    print(f"suite {suite.name}: {len(cells)} cells, {sum(c.key() in done for c in cells)} done before; "
          f"results in {out / RESULTS_FILE}")  # (--retime-busy: run_cells says which it set aside)
    rows = run_cells(cells, out, runner, executor, metadata={
        "suite": suite.name, "suite_file": str(suite.path), "settings": suite.settings,
        "grids": list(suite.grids), "overrides": overrides,
        "address": args.address, "cache_dir": str(cache_dir)}, set_aside_others=args.set_aside_others,
        retime_busy=args.retime_busy)
    _print_summary(out / RESULTS_FILE, {c.key() for c in cells})
    failed = [r for r in rows if r.get("status") != "ok"]
    if failed:
        print(f"{len(failed)} cell(s) failed; their errors are in {out / RESULTS_FILE} (status=failed).")
    return 1 if failed else 0


def _suite_overrides(args: argparse.Namespace, options: dict, methods=()) -> dict:
    """--set items, then the run command's method flags and non-default execution flags."""
    from benchmarks.harness.suites import parse_overrides

    overrides = parse_overrides(args.overrides, methods)
    overrides.update({k: v for k, v in options.items() if k not in overrides})
    for flag, default in (("device", "auto"), ("threads", None), ("data_dir", None)):
        if getattr(args, flag, default) != default and flag not in overrides:
            overrides[flag] = getattr(args, flag)
    return overrides


def _print_summary(path: Path, keys: set[str]) -> None:
    import pandas as pd

    from benchmarks.report.tables import load_results, summary_table

    df = load_results(path)
    if df.empty:
        return
    table = summary_table(df[df["cell_key"].isin(keys)])
    if not table.empty:
        with pd.option_context("display.width", 200, "display.max_columns", 30, "display.max_colwidth", 40):
            print(table.to_string(index=False))


def _final_rows(path):
    from benchmarks.harness.results import read_rows

    return [r for r in read_rows(path) if r["row_type"] in ("final", "failed")]


def print_table(rows: list[dict]) -> None:
    """Print the main columns of final rows (method, axes, accuracies, time, size, status; ``error`` only
    when some row has one) as a text table; nothing for no rows."""
    import pandas as pd

    if not rows:
        return
    cols = ["method", "dataset", "backbone", "cut", "precision", "encoder", "projection", "n_components",
            "alpha", "val_acc", "test_acc", "train_total_s", "model_bytes", "status", "error"]
    df = pd.DataFrame(rows)
    df = df[[c for c in cols if c in df.columns]]
    for c in ("val_acc", "test_acc", "train_total_s", "alpha"):
        if c in df:
            df[c] = pd.to_numeric(df[c], errors="coerce")
    if "error" in df and df["error"].fillna("").eq("").all():
        df = df.drop(columns="error")
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.float_format", "{:.4g}".format):
        print(df.to_string(index=False))
