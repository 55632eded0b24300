"""Reports and comparisons, from the results of a tiny real run made once for this module (slow), and
from copies of the committed quick results (fast): labels, order and sides from the method registry,
torn files, and the import structure of the reporting modules."""

from __future__ import annotations

import ast
import csv
import json
import shutil
import textwrap
from pathlib import Path

import pytest

from benchmarks.cli import main
from benchmarks.report.gate import compare
from benchmarks.harness.registry import REGISTRY
from benchmarks.report.plots import time_to_accuracy_data
from benchmarks.report.build import build_report
from benchmarks.report.tables import (BACKPROP, GRADIENT_FREE, UNKNOWN, load_results, side, split_rows, split_sides,
                               summary_table, time_table)
from tiny_data import restore_torch_threads, tiny_cifar10, tiny_settings  # noqa: F401 (autouse fixture)

REPO = Path(__file__).resolve().parent.parent
QUICK = REPO / "results" / "quick" / "results.csv"

SUITE = tiny_settings("tiny report", seed="[0, 1]") + """
    [[grid]]                   # two cuts, two seeds
    method = "random-features"
    n_components = 128
    cut = ["features.14", "features.18"]
    [[grid]]
    method = "random-features"
    n_components = 256
    seed = 0
    [[grid]]
    method = "finetune"
    epochs = 2
    batch_size = 16            # one-cycle needs more than a handful of steps
    seed = 0
    [[grid]]
    method = "small_cnn"
    epochs = 2
    width = 4
    seed = 0
    [[grid]]                   # fails when its data loads (the tiny copy has 10 images per class)
    method = "small_cnn"
    train_per_class = 11
    seed = 0
"""
PLOTS = ("acc_vs_size", "time_vs_size", "pareto_acc_vs_time", "pareto_acc_vs_time_with_tuning", "pareto_acc_vs_size",
         "time_breakdown", "time_to_accuracy")


@pytest.fixture(scope="module")
def results(tmp_path_factory, cifar10_dir, mobilenet_weights):
    root = tmp_path_factory.mktemp("report")
    data = tiny_cifar10(cifar10_dir, root / "cifar10-tiny")
    (root / "tiny.toml").write_text(textwrap.dedent(SUITE))
    code = main(["run", "--suite", str(root / "tiny.toml"), "--data-dir", str(data),
                 "--out", str(root / "results"), "--no-progress"])
    assert code == 1  # the one failing cell
    return root / "results"


@pytest.mark.slow
def test_report_writes_markdown_html_and_every_plot(results, tmp_path):
    md_path = build_report(results, tmp_path / "rep")
    out = md_path.parent
    md = md_path.read_text()
    html = (out / "report.html").read_text()
    assert "selected on the validation split" in md and "selected on the validation split" in html
    for name in PLOTS:
        png, = out.glob(f"{name}.*.png")  # named by its content
        assert png.stat().st_size > 5000 and f"]({png.name})" in md, name
    assert html.count("data:image/png;base64,") == len(PLOTS)
    assert "Skipped" not in md
    # mean ± std over the two seeds, the failed cell and its error
    assert "±" in md and "## Failed cells" in md and "DatasetError" in md and "asked for 11" in md
    for title in ("## Accuracy", "## Time breakdown", "## Model size", "features.14", "linear-probe"):
        assert title in md
    # the suite's measured wall time, from its rows' timestamps and its run's start
    n_finals = sum(r["row_type"] == "final" for r in csv.DictReader(open(results / "results.csv")))
    assert "Wall time of the counted cells: " in md and f"({n_finals} cells over 1 run(s);" in md


@pytest.mark.slow
def test_report_command_defaults_to_a_report_folder_beside_the_results(results):
    assert main(["report", str(results)]) == 0
    assert (results / "report" / "report.html").exists()
    assert main(["report", str(results / "nowhere")]) == 2


@pytest.mark.slow
def test_plots_degrade_when_an_axis_is_missing(results, tmp_path):
    # Only random-features rows: no epoch rows -> the time-to-accuracy plot is skipped with a note.
    rows = list(csv.DictReader(open(results / "results.csv")))
    only_rf = tmp_path / "rf.csv"
    with open(only_rf, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=rows[0].keys())
        w.writeheader()
        w.writerows(r for r in rows if r["method"] == "random-features")
    md = build_report(only_rf, tmp_path / "rep").read_text()
    assert "_Skipped: no per-epoch rows" in md
    assert len(list((tmp_path / "rep").glob("pareto_acc_vs_time.*.png"))) == 1
    assert not list((tmp_path / "rep").glob("time_to_accuracy.*.png"))


@pytest.mark.slow
def test_orphan_epoch_rows_of_an_interrupted_attempt_are_ignored(results):
    df = load_results(results)
    finals, epochs, failed = split_rows(df)
    assert len(failed) == 1
    assert set(epochs["cell_key"]) <= set(finals["cell_key"])
    table = summary_table(df)
    assert (table["seeds"] == 2).any()


def _edit(src, dst, change):
    rows = list(csv.DictReader(open(src / "results.csv")))
    for r in rows:
        change(r)
    dst.mkdir()
    with open(dst / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=rows[0].keys())
        w.writeheader()
        w.writerows(rows)
    return dst


@pytest.mark.slow
def test_compare_passes_on_identical_results_and_flags_regressions(results, tmp_path, capsys):
    assert compare(results, results) == 0
    assert "failed" in capsys.readouterr().out

    def worse(r):
        if r["row_type"] == "final" and r["method"] == "random-features" and r["n_components"] == "128":
            r["test_acc"] = str(float(r["test_acc"]) - 0.05)
    assert compare(results, _edit(results, tmp_path / "worse", worse), tolerance=0.01) == 1
    assert "ACC REGRESSION" in capsys.readouterr().out

    def slower(r):
        if r["row_type"] == "final" and r["train_total_s"]:
            r["train_total_s"] = str(float(r["train_total_s"]) * 3)
    slow = _edit(results, tmp_path / "slow", slower)
    assert compare(results, slow) == 0  # time regressions are warnings...
    assert "slower" in capsys.readouterr().out
    assert compare(results, slow, fail_on_time=True) == 1  # ...unless asked otherwise

    # Keys differ (e.g. another data folder): cells are matched by their axes instead.
    def rekey(r):
        r["cell_key"] = "x" + r["cell_key"][1:]
    assert compare(results, _edit(results, tmp_path / "rekeyed", rekey)) == 0
    assert " axes " in capsys.readouterr().out


@pytest.mark.slow
def test_compare_command_exit_status(results, tmp_path):
    shutil.copytree(results, tmp_path / "same")
    assert main(["compare", str(results), str(tmp_path / "same"), "--tolerance", "0.01"]) == 0


# ----------------------------------------------------------------------------
# Fast: copies of the committed quick results
# ----------------------------------------------------------------------------


def _quick_rows() -> tuple[list[str], list[dict]]:
    with open(QUICK, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames), list(reader)


def _write_rows(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=_quick_rows()[0], lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.mark.parametrize("name", list(REGISTRY))
def test_each_registered_method_is_drawn_on_its_side(name, tmp_path):
    expected = BACKPROP if REGISTRY[name].is_backprop else GRADIENT_FREE
    rows = [dict(r, method=name, method_config="") for r in _quick_rows()[1]]
    finals, epochs, _ = split_rows(load_results(_write_rows(tmp_path / "results.csv", rows)))
    assert side(name) == expected
    sides = split_sides(finals)
    assert len(sides[expected]) == len(finals) > 0
    assert all(sides[s].empty for s in sides if s != expected)
    _, points = time_to_accuracy_data(finals, epochs)
    assert len(points) == (len(finals) if expected == GRADIENT_FREE else 0)


def test_an_unknown_method_is_labelled_by_name_ordered_last_and_on_no_side(tmp_path):
    rows = _quick_rows()[1]
    for r in rows:
        if r["method"] == "finetune":  # a method of another gradfree version, with options of its own
            r.update(method="future-method", method_config=json.dumps({"mode": "warp", "lr": 0.1}))
    for r in rows:
        if r["method"] == "small_cnn":  # a mode this version's Config rejects
            r["method_config"] = json.dumps({**json.loads(r["method_config"]), "optimizer": "lion"})
    csv_path = _write_rows(tmp_path / "results.csv", rows)
    df = load_results(csv_path)
    assert side("future-method") == UNKNOWN
    assert set(df.loc[df["method"] == "future-method", "config"]) == {"future-method"}
    assert set(df.loc[df["method"] == "small_cnn", "config"]) == {"small_cnn"}
    table = summary_table(df)
    assert list(table["method"])[-1] == "future-method" and list(table["method"])[-2] == "small_cnn"
    finals, epochs, _ = split_rows(df)
    curves, points = time_to_accuracy_data(finals, epochs)
    assert "future-method" not in set(points["method"])  # not drawn as gradient-free...
    assert "future-method" in set(curves["method"])  # ...but its per-epoch rows are curves like any trainer's
    md = build_report(csv_path, tmp_path / "rep").read_text()
    assert "| future-method | future-method |" in md


def test_labels_come_from_each_method(tmp_path):
    fields, rows = _quick_rows()
    rf = next(r for r in rows if r["method"] == "random-features" and r["row_type"] == "final")
    kernel = dict(rf, cell_key="k" * 16, projection="kernel", n_components="-1",
                  method_config=json.dumps({**json.loads(rf["method_config"]), "projection": "kernel"}))
    older = dict(rf, cell_key="o" * 16, seed="9", method_config="")  # a file without method_config
    df = load_results(_write_rows(tmp_path / "results.csv", [*rows, kernel, older]))
    labels = dict(zip(df["cell_key"], df["config"]))
    assert labels["k" * 16] == "sign+kernel k=inf"
    assert labels["o" * 16] == "sign+gaussian k=1000"
    assert set(df.loc[df["row_type"] == "final", "config"]) == {
        "sign+gaussian k=1000", "sign+gaussian k=10000", "ridge on raw features", "linear-probe", "small_cnn",
        "sign+kernel k=inf"}


def _labels(folder: Path, rows: list[dict]) -> dict[str, str]:
    df = load_results(_write_rows(folder / "results.csv", rows))
    return dict(zip(df["cell_key"], df["config"]))


def test_a_search_grid_is_named_only_where_it_alone_tells_configurations_apart(tmp_path):
    _, rows = _quick_rows()
    probe = next(r for r in rows if r["method"] == "finetune" and r["row_type"] == "final")
    options = json.loads(probe["method_config"])

    def variant(key: str, cut: str, grid: list[float], **more) -> dict:
        return dict(probe, cell_key=key * 16, cut=cut,
                    method_config=json.dumps({**options, "lr_grid": grid, **more}))

    per_cut = [variant("a", "features.7", [0.1, 1.0]), variant("b", "features.18", [0.03, 0.3])]
    labels = _labels(tmp_path / "a", per_cut)
    assert labels["a" * 16] == labels["b" * 16] == "linear-probe"  # one line across cuts

    # two grids at the same cut and nothing else different: the grid is what tells them apart
    same_cut = [*per_cut, variant("c", "features.18", [0.001, 0.01])]
    labels = _labels(tmp_path / "b", same_cut)
    assert labels["b" * 16] == "linear-probe (lr_grid=[0.03, 0.3])"
    assert labels["c" * 16] == "linear-probe (lr_grid=[0.001, 0.01])"

    # another option differs too: it names them, and the grid stays out of the label
    other = [*per_cut, variant("d", "features.18", [0.001, 0.01], epochs=9)]
    labels = _labels(tmp_path / "c", other)
    assert labels["a" * 16] == labels["b" * 16] == "linear-probe (epochs=2)"
    assert labels["d" * 16] == "linear-probe (epochs=9)"


def test_cached_marks_follow_their_rows():
    finals, _, _ = split_rows(load_results(QUICK))
    table = time_table(finals)
    cached = {(m, c, cut): v for m, c, cut, v in zip(table["method"], table["config"], table["cut"], table["cached"])}
    # From the rows' own extra column: which cells reused cached features.
    expected = {}
    for r in finals.itertuples():
        key = (r.method, r.config, r.cut)
        expected[key] = "yes" if r.cached or expected.get(key) == "yes" else ""
    assert cached == expected
    assert cached[("finetune", "linear-probe", "features.18")] == ""
    assert cached[("random-features", "sign+gaussian k=10000", "features.18")] == "yes"


def test_a_torn_results_file_is_reported_without_its_torn_rows(tmp_path, capsys):
    lines = QUICK.read_text().splitlines()
    # A torn row with the next appended after it (lines 3 and 4), and a torn tail inside a quoted field.
    torn = tmp_path / "results.csv"
    tail = lines[-1][: lines[-1].index('{""') + 5]
    torn.write_text("\n".join(lines[:3] + [lines[3][:40] + lines[4]] + lines[5:-1] + [tail]))
    md = build_report(torn, tmp_path / "rep").read_text()
    err = capsys.readouterr().err
    assert "warning: " in err and "malformed" in err
    lost = {line.split(",")[1] for line in (lines[3], lines[4], lines[-1])}
    kept = [line.split(",") for line in lines[1:] if line.split(",")[1] not in lost]
    n_finals = len({f[1] for f in kept if f[2:4] == ["final", "ok"]})
    assert f"{n_finals} finished cells" in md and n_finals < len(split_rows(load_results(QUICK))[0])


REPORTING = ("report.tables", "report.plots", "report.build", "report.gate")


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """(module-level, function-level) imports of gradfree's own packages by the file at ``path``."""
    own = ("benchmarks", "baselines", "projector")
    top, inner = set(), set()

    def names(node) -> set[str]:
        if isinstance(node, ast.Import):
            return {a.name for a in node.names if a.name.split(".")[0] in own}
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in own:
            subs = {f"{node.module}.{a.name}" for a in node.names}
            return {node.module} | {m for m in subs if (REPO / (m.replace(".", "/") + ".py")).exists()}
        return set()

    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for sub in ast.walk(node):
                inner |= names(sub)
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for sub in ast.walk(node):
            if not any(isinstance(sub, t) for t in (ast.FunctionDef, ast.AsyncFunctionDef)):
                top |= names(sub)
    return top, inner


def test_reporting_modules_import_without_circles():
    graph = {}
    for pkg in ("benchmarks", "baselines", "projector"):
        for path in (REPO / pkg).rglob("*.py"):
            graph[".".join(path.relative_to(REPO).with_suffix("").parts)] = _imports(path)[0]
    for name in REPORTING:
        module = f"benchmarks.{name}"
        top, inner = _imports(REPO / "benchmarks" / f"{name.replace('.', '/')}.py")
        assert not inner, f"{module} imports {inner} inside a function"
        seen, todo = set(), list(graph[module])
        while todo:  # everything the module imports, directly or not
            m = todo.pop()
            if m not in seen and m in graph:
                seen.add(m)
                todo += graph[m]
        assert module not in seen, f"{module} imports a module that imports it back"
    mine = {f"benchmarks.{n}" for n in REPORTING}
    assert graph["benchmarks.report.plots"] & mine == {"benchmarks.report.tables"}
    assert graph["benchmarks.report.gate"] & mine == {"benchmarks.report.tables"}
    assert graph["benchmarks.report.build"] & mine == {"benchmarks.report.tables", "benchmarks.report.plots"}
    assert not graph["benchmarks.report.tables"] & mine


def test_a_report_of_an_unfinished_suite_says_so_before_its_answer(tmp_path, capsys):
    # The quick suite's run planned 10 cells (runs/*/metadata.json); with one cell's rows gone, 9 finished:
    # the answer is of those 9 and can change, and the report says it first (and on the terminal).
    folder = tmp_path / "quick"
    shutil.copytree(QUICK.parent, folder, ignore=shutil.ignore_patterns("report"))
    with open(QUICK, newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames, list(reader)
    gone = next(r["cell_key"] for r in rows if r["row_type"] == "final" and r["method"] == "small_cnn")
    with open(folder / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(r for r in rows if r["cell_key"] != gone)
    md = build_report(folder).read_text()
    said = "Unfinished: suite quick planned 10 cells"
    assert said in md and "9 that have" in md and md.index(said) < md.index("fashion-mnist, 2000 training")
    assert said in capsys.readouterr().err
    assert "Unfinished" not in build_report(QUICK.parent, tmp_path / "whole").read_text()
    compare(QUICK.parent, folder)  # the gate judges cells (the missing one fails it); its answer says so too
    shown = capsys.readouterr().out
    b = shown[shown.index("B's answer"):]
    assert said in b and b.index(said) < b.index("fashion-mnist, 2000 training") and said not in shown[:-len(b)]
