"""``gradfree perf --quick``: the report runs end to end and writes its files."""

import ast
import importlib
import json
import mmap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from benchmarks import perf
from benchmarks.perf import command as perf_cli
from benchmarks.cli import build_parser, main
from benchmarks.core.timing import PeakMemory


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_perf_subcommand_is_registered():
    args = build_parser().parse_args(["perf", "--quick", "--sections", "ridge"])
    assert args.func is perf.cmd_perf and args.quick and args.out == perf.DEFAULT_OUT


def test_quick_perf_writes_table_csv_plot_and_metadata(tmp_path, capsys, restore_threads):
    out = tmp_path / "perf"
    rc = main(["perf", "--quick", "--no-task", "--threads", "1", "--out", str(out),
               "--sections", "projection,structured,ridge,streaming"])
    assert rc == 0
    df = pd.read_csv(out / "perf.csv")
    assert set(df["section"]) == {"projection", "structured", "ridge", "streaming"}
    for metric in ("dense_vs_bare_matmul", "structured_speedup", "ridge_grid_vs_sklearn_fit",
                   "sklearn_loop_vs_ridge_grid", "ridge_same_predictions"):
        row = df[df["metric"] == metric].iloc[0]
        assert row["value"] > 0 and row["target"] == "{} {:g}".format(*perf.TARGETS[metric][:2])
    assert df.loc[df["metric"] == "ridge_same_predictions", "value"].iloc[0] == 1.0
    assert (out / "perf.png").stat().st_size > 1000
    meta = json.loads(next((out / "runs").glob("*/metadata.json")).read_text())
    assert meta["config"]["mode"] == "quick" and "packages" in meta
    printed = capsys.readouterr().out
    assert "dense_vs_bare_matmul" in printed and "wrote" in printed


def test_targets_and_peak_memory(tmp_path):
    rep = perf.Report("cpu", "test")
    assert rep.add("x", "a", "", 0.85, "dense_vs_bare_matmul")["met"] is True
    assert rep.add("x", "b", "", 3.5, "ridge_grid_vs_sklearn_fit")["met"] is False
    assert rep.add("x", "c", "", 1.0, "no_target")["met"] is None
    assert perf.PeakMemory is PeakMemory  # the runner's probe, not one of perf's own
    with perf.PeakMemory("cpu") as mem:
        # 64 MB of fresh anonymous pages, every one written: memory the process did not hold before (a
        # tensor could reuse pages the allocator kept from earlier tests, without raising the RSS)
        buf = mmap.mmap(-1, 64 << 20)
        np.frombuffer(buf, dtype=np.uint8)[:] = 1
        buf.close()
    assert mem.delta_bytes >= 32 << 20 and mem.peak_bytes >= mem.delta_bytes
    perf.plot_perf(pd.DataFrame(rep.rows), tmp_path / "p.png")
    assert (tmp_path / "p.png").exists()


def test_extraction_pipeline_equals_the_plain_forward(restore_threads):
    """channels-last, one batch prepared ahead: the same features as the plain NCHW forward."""
    from benchmarks.core.backbones import build_backbone, extract_features
    from benchmarks.core.data import IMAGENET_MEAN, IMAGENET_STD, to_float

    torch.set_num_threads(1)
    torch.manual_seed(0)
    ext = build_backbone("mobilenet_v2", "features.6", weights="none")
    images = torch.randint(0, 256, (10, 3, 32, 32), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    with torch.inference_mode():
        ref = ext(to_float(images, IMAGENET_MEAN, IMAGENET_STD)).flatten(1)
    feats = extract_features(ext, images, IMAGENET_MEAN, IMAGENET_STD, batch_size=4)  # 3 batches, ragged
    torch.testing.assert_close(feats, ref, rtol=1e-4, atol=1e-4)
    pooled = extract_features(ext, images, IMAGENET_MEAN, IMAGENET_STD, batch_size=4, pool_size=1)
    torch.testing.assert_close(pooled, ref.reshape(10, 32, -1).mean(2), rtol=1e-4, atol=1e-4)


def test_unknown_section_is_an_error_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "perf"
    assert main(["perf", "--quick", "--sections", "ridge,ridgex", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "ridgex" in err and "streaming" in err  # the bad name and the valid ones
    assert not out.exists()


def test_interrupted_perf_keeps_its_rows_and_the_previous_report(tmp_path, capsys, monkeypatch, restore_threads):
    out = tmp_path / "perf"
    assert main(["perf", "--quick", "--no-task", "--threads", "1", "--out", str(out), "--sections", "ridge"]) == 0
    before = (out / "perf.csv").read_text()

    def ctrl_c(*args, **kwargs):  # the user stops the run once the ridge rows are in
        raise KeyboardInterrupt

    monkeypatch.setattr(perf_cli, "section_streaming", ctrl_c)  # where the command looks it up
    assert main(["perf", "--quick", "--no-task", "--threads", "1", "--out", str(out),
                 "--sections", "ridge,streaming"]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert (out / "perf.csv").read_text() == before
    partial = [pd.read_csv(p) for p in (out / "runs").glob("*/perf.csv")]
    assert len(partial) == 2  # the finished run's rows and the interrupted one's
    assert all(set(df["section"]) == {"ridge"} and len(df) == 3 for df in partial)


def test_perf_help_lists_the_sections(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["perf", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "--quick" in out and "--full" in out and all(name in out for name in perf.SECTIONS)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["perf", "--quick", "--full"])  # one mode at a time


def test_every_section_has_its_module():
    for name in perf.SECTIONS:
        module = importlib.import_module(f"benchmarks.perf.{name}")
        assert callable(getattr(module, f"section_{name}")) and module.__doc__.startswith(f"``perf --sections {name}``")


def _perf_imports(path: Path) -> set[str]:
    """The benchmarks.perf modules a file imports, at any depth (functions included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
        found |= {n for n in names if n == "benchmarks.perf" or n.startswith("benchmarks.perf.")}
    return found


def test_perf_imports_point_one_way():
    """cli -> sections -> common: no section imports the command or the package, no circle."""
    folder = Path(perf.__file__).parent
    graph = {f"benchmarks.perf.{p.stem}": _perf_imports(p) for p in folder.glob("*.py") if p.stem != "__init__"}
    for module, imports in graph.items():
        assert "benchmarks.perf" not in imports, module
        if module != "benchmarks.perf.command":
            assert "benchmarks.perf.command" not in imports, module
    assert graph["benchmarks.perf.common"] == set()
    done, stack = set(), []

    def visit(module):
        assert module not in stack, f"import circle: {' -> '.join(stack + [module])}"
        if module in done:
            return
        stack.append(module)
        for dep in graph.get(module, ()):
            visit(dep)
        stack.pop()
        done.add(module)

    for module in graph:
        visit(module)


def test_the_full_size_kernel_section_runs_its_reduced_shape_untargeted(tmp_path, cifar10_dir, restore_threads):
    # --quick: a few images per class through the very code --full runs on all of CIFAR-10; no target
    # is applied to a reduced shape, and the figures are the ones the full run compares.
    out = tmp_path / "perf"
    assert main(["perf", "--quick", "--threads", "1", "--out", str(out), "--data-dir", str(cifar10_dir),
                 "--sections", "kernel_full"]) == 0
    df = pd.read_csv(out / "perf.csv").set_index("metric")
    assert set(df.index) == {"kernel_full_minutes", "kernel_full_peak_gb"}
    assert df["target"].isna().all()  # a reduced shape: untargeted
    assert 0 < df.loc["kernel_full_minutes", "value"] < 60 and 0 <= df.loc["kernel_full_minutes", "test_acc"] <= 1
    assert df.loc["kernel_full_peak_gb", "peak_memory_bytes"] > 0
    assert "extraction" in df.loc["kernel_full_minutes", "note"] and "m=11520 sign" in df.loc["kernel_full_minutes", "shape"]
    assert perf.FULL.kfull_per_class == 0 and perf.FULL.kfull_test_per_class == 0  # --full: the targeted shape
