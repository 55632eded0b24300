"""The ``gradfree`` command line. Argument parsing lives here and only here (nothing imports it):
:mod:`benchmarks.cli.run` (``gradfree run``), :mod:`benchmarks.cli.commands` (the others)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from benchmarks.cli.commands import _add_optional_commands, cmd_backbones, cmd_cuts
from benchmarks.cli.run import _add_run_args, cmd_run

def build_parser() -> argparse.ArgumentParser:
    """The ``gradfree`` argument parser: ``run``, ``cuts``, ``backbones`` and the other commands, each with
    its handler as ``func``."""
    from benchmarks.core.backbones import BACKBONES

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


class Terminated(KeyboardInterrupt):
    """SIGTERM (what a scheduler, ``kill`` or a CI timeout sends), handled as Ctrl-C is: the cell under way
    is recorded as interrupted, finished cells stay, and the same command resumes."""


def _on_sigterm(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    """Run the ``gradfree`` command ``argv`` (default: ``sys.argv[1:]``) and return its exit status. A
    dataset, value, import or OS error is printed as ``gradfree: error: ...`` (status 2); Ctrl-C exits 130
    and SIGTERM 143, finished cells kept."""
    from benchmarks.core.data import DatasetError

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
