"""``gradfree perf``: the command (its options are parsed in :mod:`benchmarks.cli`). The
sections it runs in order, and what it writes: ``OUT/perf.csv``, ``OUT/perf.png`` (one bar per targeted figure, as a fraction
of its target), ``OUT/runs/<run id>/`` and the printed table.

Rows are written to ``OUT/runs/<run id>/perf.csv`` as they are measured, so an interrupted
run keeps them; ``OUT/perf.csv`` is replaced only by a finished run.
"""

from __future__ import annotations

import sys
import textwrap
import uuid
from dataclasses import asdict, replace
from pathlib import Path

import pandas as pd
import torch

from benchmarks.perf.binary_gram import section_binary_gram
from benchmarks.perf.common import FULL, QUICK, TARGETS, Report, Sizes
from benchmarks.perf.extraction import section_extraction
from benchmarks.perf.kernel_full import section_kernel_full
from benchmarks.perf.projection import section_projection
from benchmarks.perf.ridge import section_ridge
from benchmarks.perf.seed_shape import section_seed_shape
from benchmarks.perf.streaming import section_streaming
from benchmarks.perf.structured import section_structured
from benchmarks.perf.task import section_task
from benchmarks.core.atomic import atomic_write_text
from benchmarks.harness.metadata import write_metadata

DEFAULT_OUT = "results/perf"
SECTIONS = ("task", "projection", "structured", "ridge", "streaming", "extraction", "binary_gram", "seed_shape",
            "kernel_full")
# The development copy of CIFAR-10 that the tests unpack beside the checkout (tests/conftest.py).
_LOCAL_CIFAR10 = Path(__file__).resolve().parents[2] / ".cache" / "cifar10-jpg"


def run_perf(args) -> int:
    """Run ``gradfree perf``'s sections (``--threads``: torch's and the BLAS libraries' threads, restored
    after), write ``OUT/perf.csv`` and ``OUT/perf.png`` and print the table. Exit status 0; 2 when nothing
    was measured, 130 when interrupted (the rows so far stay in ``OUT/runs/<run id>/``). An unknown section
    is a ``ValueError``."""
    import warnings

    from scipy.linalg import LinAlgWarning

    threads, limiter = torch.get_num_threads(), None
    if args.threads:
        torch.set_num_threads(args.threads)
        try:  # numpy/scipy/scikit-learn's BLAS on as many threads as torch
            from threadpoolctl import threadpool_limits

            limiter = threadpool_limits(args.threads)
        except ImportError:  # pragma: no cover
            pass
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", LinAlgWarning)  # sklearn's solve at the grid's tiniest alphas
            return _run_perf(args)
    finally:
        torch.set_num_threads(threads)
        if limiter is not None:
            limiter.restore_original_limits()


def _run_perf(args) -> int:
    from benchmarks.core.backbones import resolve_weights  # lazy: torchvision, only when perf runs
    from benchmarks.harness.runner import resolve_device  # lazy: the runner imports every method

    device = resolve_device(args.device)
    mode = "quick" if args.quick else "full" if args.full else "default"
    sz = QUICK if args.quick else FULL if args.full else Sizes()
    if args.no_task:
        sz = replace(sz, task=False)
    sections = _sections(args.sections)
    out = Path(args.out)
    run_id = uuid.uuid4().hex[:12]
    write_metadata(out, run_id, {"arguments": vars(args), "mode": mode, "sizes": asdict(sz), "device": str(device)})
    rows_so_far = out / "runs" / run_id / "perf.csv"
    weights = args.weights
    try:
        resolve_weights("mobilenet_v2", weights)
    except Exception:  # noqa: BLE001 - no pretrained weights here: random ones, said in the rows
        weights = "none"
    rep = Report(device, mode, path=rows_so_far)
    rep.log(f"gradfree perf ({mode}) on {device}, {torch.get_num_threads()} threads; writing {out}")
    try:
        task_done = False
        if "task" in sections and sz.task:
            task_done = section_task(rep, sz, device, args.data_dir, weights, sklearn_loop=True)
        if "projection" in sections:
            section_projection(rep, sz, device)
        if "structured" in sections:
            section_structured(rep, sz, device)
        if "ridge" in sections and not task_done:
            section_ridge(rep, sz, device)
        if "streaming" in sections:
            section_streaming(rep, sz, device)
        if "extraction" in sections:
            section_extraction(rep, sz, device, weights)
        if "binary_gram" in sections:
            section_binary_gram(rep, sz, device)
        if "seed_shape" in sections:
            section_seed_shape(rep, sz, device, args.data_dir)
        if "kernel_full" in sections:
            section_kernel_full(rep, sz, device, args.data_dir, weights)
    except KeyboardInterrupt:
        print(f"\ninterrupted: the {len(rep.rows)} rows measured so far are in {rows_so_far}; "
              f"{out / 'perf.csv'} is left as it was.", file=sys.stderr)
        return 130
    if not rep.rows:
        print(f"gradfree perf: nothing was measured (sections {sorted(sections)}, task "
              f"{'on' if sz.task else 'off'}); {out / 'perf.csv'} is left as it was.", file=sys.stderr)
        return 2
    df = pd.DataFrame(rep.rows)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "perf.csv", df.to_csv(index=False))
    plot_perf(df, out / "perf.png")
    print_table(df)
    print(f"wrote {out / 'perf.csv'}, {out / 'perf.png'}, {out / 'runs' / run_id / 'metadata.json'}")
    return 0


def _sections(arg: str | None) -> set[str]:
    """--sections as a set, every name checked before anything runs or is written."""
    if not arg:
        return set(SECTIONS)
    asked = [name.strip().replace("-", "_") for name in arg.split(",") if name.strip()]  # seed-shape = seed_shape
    unknown = [name for name in asked if name not in SECTIONS]
    if unknown or not asked:
        raise ValueError(f"--sections {arg!r}: unknown section(s) {', '.join(unknown) or '(none given)'}; "
                         f"give a comma-separated subset of {', '.join(SECTIONS)}.")
    return set(asked)


def print_table(df) -> None:
    """Print the perf rows' main columns as a text table, peak memory in MB."""
    cols = ["section", "case", "metric", "value", "target", "met", "time_s", "ref_time_s", "peak_memory_bytes", "note"]
    show = df[[c for c in cols if c in df]].copy()
    show["peak_memory_bytes"] = pd.to_numeric(show["peak_memory_bytes"], errors="coerce") / 1e6
    show = show.rename(columns={"peak_memory_bytes": "peak_MB"})
    with pd.option_context("display.width", 250, "display.max_columns", 20, "display.max_colwidth", 70,
                           "display.float_format", "{:.4g}".format):
        print(show.to_string(index=False))


def plot_perf(df, path: Path) -> None:
    """One bar per targeted figure, as a fraction of its target (>= 1: met), coloured by met."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = df[df["target"].fillna("").astype(str) != ""]
    fig, ax = plt.subplots(figsize=(12, 0.55 * max(len(rows), 1) + 1.2))
    labels, values, colors, texts = [], [], [], []
    for _, r in rows.iterrows():
        cmp, thr = TARGETS[r["metric"]][:2]
        v = float(r["value"])
        if cmp == ">=":
            score = v / thr if thr > 0 else (1.0 + v if v >= 0 else 1.0 / (1.0 - v))
        else:
            score = thr / v if v > 0 else 10.0
        labels.append("\n".join(textwrap.wrap(f"{r['section']}: {r['case']}", 60)))
        values.append(min(score, 10.0))
        colors.append("tab:green" if str(r["met"]) == "True" else "tab:red")  # a bool, or read from perf.csv
        texts.append(f"{v:.3g} ({r['target']})")
    ax.barh(range(len(values)), values, color=colors)
    for i, (v, t) in enumerate(zip(values, texts)):
        ax.text(v, i, " " + t, va="center", fontsize=7)
    ax.axvline(1.0, color="k", lw=1)
    ax.set_yticks(range(len(values)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("figure / target (>= 1 meets the target; capped at 10)")
    ax.set_title(f"gradfree perf ({df['mode'].iloc[0] if len(df) else ''}, {df['device'].iloc[0] if len(df) else ''})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cmd_perf(args) -> int:
    """``gradfree perf``: :func:`run_perf`, reading the development copy of CIFAR-10 (``.cache/cifar10-jpg``)
    when ``--data-dir`` is not given and that copy is there."""
    if args.data_dir is None:
        if (_LOCAL_CIFAR10 / "train").is_dir():
            args.data_dir = str(_LOCAL_CIFAR10)
    return run_perf(args)
