"""The ``gradfree`` command line. Argument parsing lives here and only here."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

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
    "--pool-size": ("pool_size", int, "random-features/finetune: average-pool feature maps to NxN first; 0 keeps them whole [0]"),
    "--block-size": ("block_size", int, "random-features: columns of R generated per block [chosen from free memory]"),
    # trainers
    "--epochs": ("epochs", int, "trainers: number of epochs"),
    "--lr": ("lr", float, "trainers: (maximum) learning rate"),
    "--mode": ("mode", str, "finetune: linear-probe (backbone frozen) or unfreeze"),
    "--unfreeze-blocks": ("unfreeze_blocks", int, "finetune --mode unfreeze: number of last blocks before the cut to train"),
    "--preset": ("preset", str, "finetune: seed-paper (Adam, lr 1e-6, 5 epochs, batch 32, no augmentation)"),
    "--no-augment": ("augment", "false", "trainers: switch off random-crop and flip augmentation"),
    "--width": ("width", int, "small_cnn: channels of the first conv layer"),
    "--depth": ("depth", int, "small_cnn: number of conv + max-pool blocks"),
}


def _parse_floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _add_run_args(p: argparse.ArgumentParser) -> None:
    from benchmarks.backbones import BACKBONES, PRECISIONS
    from benchmarks.data import DATASET_NAMES
    from benchmarks.methods import METHOD_NAMES

    g = p.add_argument_group("what to run")
    g.add_argument("--method", default="random-features", choices=METHOD_NAMES,
                   help="method under test or baseline [random-features]")
    g.add_argument("--suite", default=None,
                   help="run a benchmark suite by name or TOML path instead of one cell (see `gradfree suites`)")
    g.add_argument("--set", dest="overrides", action="append", default=[], metavar="AXIS=VALUE",
                   help="with --suite: override an axis or setting, e.g. --set seed=0,1 (repeatable)")
    g.add_argument("--dry-run", action="store_true", help="with --suite: list the cells with estimates, run nothing")
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
    g = p.add_argument_group("backbone")
    g.add_argument("--backbone", default="mobilenet_v2", choices=list(BACKBONES),
                   help="ImageNet-pretrained CNN to cut [mobilenet_v2]")
    g.add_argument("--cut", default=None, help="cut point (list them with `gradfree cuts`) [the last]")
    g.add_argument("--weights", default="DEFAULT",
                   help="DEFAULT (best pretrained weights to be had), a torchvision weights name, "
                        "or none (random weights; the results say so) [DEFAULT]")
    g.add_argument("--precision", default="fp32", choices=list(PRECISIONS),
                   help="feature-extraction precision [fp32]")
    g.add_argument("--batch-size", type=int, default=128, help="images per batch [128]")
    g = p.add_argument_group("method options (each method takes those its configuration has)")
    for flag, (dest, typ, help_) in METHOD_OPTIONS.items():
        if typ == "false":
            g.add_argument(flag, dest=dest, action="store_const", const=False, default=None, help=help_)
        elif typ == "floats":
            g.add_argument(flag, dest=dest, type=_parse_floats, default=None, help=help_)
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
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")


def _method_options(args: argparse.Namespace) -> dict:
    options = {dest: getattr(args, dest) for dest, _, _ in METHOD_OPTIONS.values()
               if getattr(args, dest, None) is not None}
    if "lr" in options:  # wrn22's one-cycle calls its peak learning rate lr_max
        options["lr_max"] = options["lr"]
    return options


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


def cmd_run(args: argparse.Namespace) -> int:
    from benchmarks.runner import Cell, FeatureCache, Runner, with_options

    options = _method_options(args)
    if args.suite:
        from benchmarks.sweep import run_suite

        return run_suite(args, options)
    _warn_unused(args.method, options)
    cell = Cell(method=args.method, dataset=args.dataset, data_dir=args.data_dir, backbone=args.backbone,
                cut=args.cut, weights=args.weights, precision=args.precision, image_size=args.image_size,
                train_per_class=args.train_per_class or None, test_per_class=args.test_per_class or None,
                val_fraction=args.val_fraction, batch_size=args.batch_size, device=args.device,
                seed=args.seed, threads=args.threads)
    cell = with_options(cell, **options)
    runner = Runner(Path(args.out), progress=args.progress, fail_fast=args.fail_fast,
                    feature_cache=FeatureCache(args.cache_dir))
    _write_metadata(runner, args, [cell])
    rows = runner.run([cell])
    print_table(rows or [r for r in _final_rows(runner.results_path) if r["cell_key"] == cell.key()])
    print(f"results: {runner.results_path}")
    return 0 if all(r.get("status") == "ok" for r in rows) else 1


def _write_metadata(runner, args, cells) -> None:
    import dataclasses

    from benchmarks.results import write_metadata

    write_metadata(runner.out_dir, runner.run_id,
                   {"arguments": vars(args), "cells": [dataclasses.asdict(c) | {"cell_key": c.key()} for c in cells]})


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
    from benchmarks.backbones import build_base, list_cuts, resolve_weights, truncate

    cuts = list_cuts(args.backbone)
    if not args.shapes:
        print("\n".join(cuts))
        return 0
    base = build_base(args.backbone, "none")
    print(f"{'cut':32s} {'shape at ' + str(args.image_size) + ' px':>22s} {'features':>10s} {'params':>11s}")
    for cut in cuts:
        ext = truncate(args.backbone, base, cut, resolve_weights(args.backbone, "none"))
        c, h, w = ext.out_shape(args.image_size)
        print(f"{cut:32s} {str((c, h, w)):>22s} {c * h * w:>10d} {ext.param_count:>11,d}")
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
    p = sub.add_parser("cuts", help="list the cut points of a backbone")
    p.add_argument("--backbone", default="densenet169", choices=list(BACKBONES))
    p.add_argument("--shapes", action="store_true", help="also print output shape, feature count, parameters")
    p.add_argument("--image-size", type=int, default=224, help="input size for --shapes [224]")
    p.set_defaults(func=cmd_cuts)
    _add_optional_commands(sub)
    return parser


def _add_optional_commands(sub) -> None:
    """Subcommands implemented in their own modules (suites, report, compare, perf)."""
    import importlib

    for module in ("benchmarks.sweep", "benchmarks.report", "benchmarks.perf"):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name == module:
                continue
            raise
        mod.add_commands(sub)


def main(argv: list[str] | None = None) -> int:
    from benchmarks.backbones import BackboneError
    from benchmarks.data import DatasetError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (DatasetError, BackboneError, ValueError, ImportError) as err:
        print(f"gradfree: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: finished cells are saved; run the same command again to resume.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
