"""Suites: grid expansion, normalisation, overrides; the runner's resume, failure and cache on real tiny runs."""

from __future__ import annotations

import json
import os
import signal
import textwrap
import time

import pytest

from benchmarks.harness import suites
from benchmarks.harness.cells import validate
from benchmarks.cli import main
from benchmarks.harness.results import read_rows
from benchmarks.harness.runner import Runner
from benchmarks.harness.suites import SuiteError, apply_overrides, expand, load_suite, parse_overrides
from tiny_data import restore_torch_threads, tiny_cifar10, tiny_settings  # noqa: F401 (autouse fixture)


def _suite(tmp_path, text: str, name: str = "tiny"):
    path = tmp_path / f"{name}.toml"
    path.write_text(textwrap.dedent(text))
    return path


GRID = """
    description = "test grid"
    [settings]
    dataset = "cifar10"
    image_size = 32
    seed = [0, 1]
    precision = ["fp32", "bf16"]

    [[grid]]
    method = "random-features"
    projector = "gaussian"
    k = [128, 256]
    cut = [ "features.18", "features.14"]

    [[grid]]
    method = "small_cnn"
    epochs = 1
    n_components = 5          # not a small_cnn option: dropped
    cut = ["features.18", "features.14"]   # small_cnn has no backbone: no extra cells
"""


def test_grid_expands_as_a_cartesian_product_and_dedupes(tmp_path):
    cells = expand(load_suite(_suite(tmp_path, GRID)))
    rf = [c for c in cells if c.method == "random-features"]
    cnn = [c for c in cells if c.method == "small_cnn"]
    assert len(rf) == 2 * 2 * 2 * 2  # seed x precision x k x cut
    assert len(cnn) == 2  # seeds only: precision and cut normalised away
    assert len({c.key() for c in cells}) == len(cells)
    assert {c.option_dict()["n_components"] for c in rf} == {128, 256}
    assert all(c.cut is None and c.precision == "fp32" for c in cnn)
    assert all("n_components" not in c.option_dict() for c in cnn)
    assert all(c.suite == "tiny" for c in cells)
    for c in cells:
        validate(c)


def test_default_values_and_resolved_cuts_do_not_make_new_cells(tmp_path):
    path = _suite(tmp_path, """
        [[grid]]
        method = "random-features"
        cut = ["features.18"]
        n_components = [10000]
        [[grid]]
        method = "random-features"
        [[grid]]
        method = "random-features"
        projection = "none"
        n_components = [100, 200]   # meaningless without a projection
    """)
    cells = expand(load_suite(path))
    assert len(cells) == 2
    assert {c.cut for c in cells} == {"features.18"}


def test_set_overrides_axes_and_settings(tmp_path):
    suite = load_suite(_suite(tmp_path, GRID))
    cells = expand(apply_overrides(suite, parse_overrides(["seed=0,1,2", "precision=fp32", "k=64"])))
    rf = [c for c in cells if c.method == "random-features"]
    assert len(rf) == 3 * 1 * 1 * 2
    assert {c.seed for c in cells} == {0, 1, 2}
    assert {c.option_dict()["n_components"] for c in rf} == {64}
    # A key in no table becomes a setting of every cell.
    cells = expand(apply_overrides(suite, parse_overrides(["train_per_class=7"])))
    assert {c.train_per_class for c in cells} == {7}


@pytest.mark.parametrize("bad", ["colour=red", "seed"])
def test_unknown_axis_or_malformed_set_is_an_error(tmp_path, bad):
    with pytest.raises(SuiteError, match="colour|AXIS=VALUE"):
        parse_overrides([bad])


def test_unknown_key_in_a_suite_file_names_the_known_ones(tmp_path):
    with pytest.raises(SuiteError, match="unknown axis or setting 'backbon'.*backbone"):
        load_suite(_suite(tmp_path, '[[grid]]\nmethod = "random-features"\nbackbon = "x"\n'))
    with pytest.raises(SuiteError, match="unknown suite"):
        load_suite("no-such-suite")


def test_bad_option_value_is_caught_at_expansion(tmp_path):
    with pytest.raises(SuiteError, match="mode"):
        expand(load_suite(_suite(tmp_path, '[[grid]]\nmethod = "finetune"\nmode = "sideways"\n')))


@pytest.mark.parametrize("name", sorted(suites.suite_paths()))
def test_every_shipped_suite_expands_to_valid_cells(name, monkeypatch):
    # Planned against the memory of the machine the suites are written for (24 GB, 22 GiB free when idle),
    # not against what other processes leave free at this moment.
    import projector.projections

    monkeypatch.setattr(projector.projections, "available_memory_bytes", lambda device: 22 * 2**30)
    cells = expand(load_suite(name))
    assert cells
    for cell in cells:
        validate(cell)
    if name == "quick":
        assert len(cells) == 10
        assert {c.dataset for c in cells} == {"fashion-mnist"} and {c.image_size for c in cells} == {96}


def test_a_trainer_given_the_settings_batch_instead_of_its_recipes_is_noted_by_a_dry_run(tmp_path, capsys):
    # [settings] reach every cell: a batch size meant for feature extraction would make airbench94's 1,024
    # into 128 unsaid (it did, in curve-cifar10's first grids). A grid naming its own, or a trainer whose
    # default is the cell's batch (small_cnn), is no note.
    path = _suite(tmp_path, """
        [settings]
        batch_size = 128
        image_size = 32
        [[grid]]
        method = "airbench"
        [[grid]]
        method = "airbench"
        batch_size = 1024
        [[grid]]
        method = ["small_cnn", "wrn22"]
    """)
    notes = suites.recipe_notes(load_suite(path))
    assert len(notes) == 2
    assert "[[grid]] 1 (airbench)" in notes[0] and "batch_size = 128" in notes[0] and "batch_size = 1024" in notes[0]
    assert "[[grid]] 3 (wrn22)" in notes[1] and "512" in notes[1]
    assert main(["run", "--suite", str(path), "--dry-run", "--out", str(tmp_path / "out")]) == 0
    assert capsys.readouterr().err.count("note: [[grid]]") == 2


@pytest.mark.parametrize("name", sorted(suites.suite_paths()))
def test_no_shipped_suite_gives_a_trainer_the_settings_batch_unsaid(name):
    assert suites.recipe_notes(load_suite(name)) == []


def test_suites_command_lists_names_and_counts(capsys):
    assert main(["suites"]) == 0
    out = capsys.readouterr().out
    for name in ("quick", "seed-stl10", "seed-animals10-cuts", "cifar10-baselines", "precision"):
        assert name in out
    assert any(line.startswith("quick") and " 10 " in line for line in out.splitlines())


def test_dry_run_lists_cells_with_estimates_and_runs_nothing(tmp_path, capsys, cifar10_dir):
    path = _suite(tmp_path, GRID)
    out_dir = tmp_path / "out"
    assert main(["run", "--suite", str(path), "--dry-run", "--out", str(out_dir), "--data-dir", str(cifar10_dir)]) == 0
    out = capsys.readouterr().out
    cells = suites.expand(suites.apply_overrides(suites.load_suite(path), {"data_dir": str(cifar10_dir)}))
    assert all(c.key() in out for c in cells)
    assert "MiB" in out and "to run" in out and f"{len(cells)} cells" in out
    assert not out_dir.exists()


# ----------------------------------------------------------------------------
# Real tiny runs (CIFAR-10 JPEGs, 32 px, 10 images per class)
# ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_dir(cifar10_dir, tmp_path_factory):
    return tiny_cifar10(cifar10_dir, tmp_path_factory.mktemp("cifar10-tiny"))

SETTINGS = tiny_settings("tiny real run")
RF = """
    [[grid]]
    method = "random-features"
    n_components = [128, 256]
"""
SMALL_CNN = """
    [[grid]]
    method = "small_cnn"
    epochs = 1
    width = 4
"""


def _stop_in_the_second_cell(monkeypatch, stop):
    """Make ``Runner.run_cell`` call ``stop()`` as the second cell starts; return the real method."""
    real_run_cell = Runner.run_cell
    calls = []

    def run_cell(self, cell, sink):
        calls.append(cell.key())
        if len(calls) == 2:
            stop()
        return real_run_cell(self, cell, sink)

    monkeypatch.setattr(Runner, "run_cell", run_cell)
    return real_run_cell


@pytest.mark.slow
def test_interrupted_suite_resumes_without_repeating_or_duplicating(tmp_path, tiny_dir, mobilenet_weights,
                                                                    monkeypatch, capsys):
    path = _suite(tmp_path, SETTINGS + RF + SMALL_CNN)
    out = tmp_path / "out"
    args = ["run", "--suite", str(path), "--data-dir", str(tiny_dir), "--out", str(out), "--no-progress"]
    def ctrl_c():
        raise KeyboardInterrupt  # Ctrl-C in the middle of the second cell

    real_run_cell = _stop_in_the_second_cell(monkeypatch, ctrl_c)
    assert main(args) == 130
    first = read_rows(out / "results.csv")
    assert [r["row_type"] for r in first] == ["final"]

    monkeypatch.setattr(Runner, "run_cell", real_run_cell)
    ran = []
    monkeypatch.setattr(Runner, "run_cell",
                        lambda self, cell, sink: ran.append(cell.key()) or real_run_cell(self, cell, sink))
    assert main(args) == 0
    assert first[0]["cell_key"] not in ran and len(ran) == 2
    rows = read_rows(out / "results.csv")
    finals = [r for r in rows if r["row_type"] == "final"]
    assert len(finals) == 3 and len({r["cell_key"] for r in finals}) == 3
    assert rows[0] == first[0]  # the first row is untouched
    # Both random-features cells share features: the resumed one read them from the disk cache.
    rf = [r for r in finals if r["method"] == "random-features"]
    assert any("cached_phases" in r["extra"] for r in rf)
    assert list((out / "cache").glob("*.pt"))

    # A third run does nothing at all.
    ran.clear()
    assert main(args) == 0
    assert ran == [] and len(read_rows(out / "results.csv")) == len(rows)

    # The dry run now shows the measured times of the cells done (rates: tests/test_estimate.py).
    capsys.readouterr()
    assert main([*args, "--dry-run"]) == 0
    out_text = capsys.readouterr().out
    assert "3 cells, 3 done before" in out_text and out_text.count(" s*") == 3


@pytest.mark.slow
def test_feature_cache_extracts_once_for_two_k(tmp_path, tiny_dir, mobilenet_weights):
    path = _suite(tmp_path, SETTINGS + RF)
    assert main(["run", "--suite", str(path), "--data-dir", str(tiny_dir), "--out", str(tmp_path / "o"),
                 "--no-progress"]) == 0
    first, second = [r for r in read_rows(tmp_path / "o" / "results.csv") if r["row_type"] == "final"]
    assert "cached_phases" not in first["extra"]
    cached = json.loads(second["extra"])["cached_phases"]
    assert "extract_s" in cached and "predict_s" in cached
    # The cached cell is charged exactly what the extraction cost in the first (reading and writing the cache
    # are off the clock in both): the same seconds, whatever the machine's speed or load.
    assert float(second["extract_s"]) > 0
    assert float(second["extract_s"]) == pytest.approx(float(first["extract_s"]), rel=1e-6, abs=2e-8)


@pytest.mark.slow
def test_failing_cell_is_recorded_and_the_sweep_goes_on(tmp_path, tiny_dir, mobilenet_weights, capsys):
    # 11 training images of a class do not exist in the tiny copy (10 do): those cells fail when their data loads.
    path = _suite(tmp_path, SETTINGS.replace("train_per_class = 10", "train_per_class = [10, 11]")
                  .replace("seed = 0", "seed = [0, 1]") + SMALL_CNN)
    out = tmp_path / "out"
    code = main(["run", "--suite", str(path), "--data-dir", str(tiny_dir), "--out", str(out), "--no-progress"])
    assert code == 1
    finals = [r for r in read_rows(out / "results.csv") if r["row_type"] in ("final", "failed")]
    assert len(finals) == 4
    failed = [r for r in finals if r["status"] == "failed"]
    assert len(failed) == 2 and all("asked for 11" in r["error"] for r in failed)
    assert sum(r["status"] == "ok" for r in finals) == 2
    assert "failed" in capsys.readouterr().out


def test_sigterm_stops_a_run_as_ctrl_c_does_and_the_run_resumes(tmp_path, tiny_dir, mobilenet_weights,
                                                                monkeypatch, capsys):
    """A background job ignores SIGINT; SIGTERM (kill, a scheduler, a CI timeout) must stop it as
    cleanly: exit 143, finished cells kept, the cell under way run again on resume."""
    path = _suite(tmp_path, SETTINGS + RF)
    out = tmp_path / "out"
    args = ["run", "--suite", str(path), "--data-dir", str(tiny_dir), "--out", str(out), "--no-progress"]
    def kill():
        os.kill(os.getpid(), signal.SIGTERM)  # delivered to the main thread, in the middle of the cell
        time.sleep(5)  # never reached: the handler raises first

    real_run_cell = _stop_in_the_second_cell(monkeypatch, kill)
    before = signal.getsignal(signal.SIGTERM)
    assert main(args) == 143
    assert signal.getsignal(signal.SIGTERM) == before  # main() leaves the process's handler as it was
    assert "terminated (SIGTERM)" in capsys.readouterr().err
    assert [r["row_type"] for r in read_rows(out / "results.csv")] == ["final"]
    monkeypatch.setattr(Runner, "run_cell", real_run_cell)
    assert main(args) == 0
    finals = [r for r in read_rows(out / "results.csv") if r["row_type"] == "final"]
    assert len({r["cell_key"] for r in finals}) == len(finals) == 2


@pytest.mark.filterwarnings("error::benchmarks.harness.results.ResultsWarning")  # the side file is a clean results file
def test_set_aside_others_moves_an_edited_suites_old_cells_and_only_those(tmp_path, tiny_dir, mobilenet_weights):
    out = tmp_path / "out"
    base = ["run", "--data-dir", str(tiny_dir), "--out", str(out), "--no-progress"]
    assert main([*base, "--suite", str(_suite(tmp_path, SETTINGS + RF, "first"))]) == 0
    before = read_rows(out / "results.csv")
    # The suite is edited: k = 256 stays, k = 128 becomes k = 64.
    edited = _suite(tmp_path, SETTINGS + RF.replace("[128, 256]", "[64, 256]"), "edited")
    assert main([*base, "--suite", str(edited), "--set-aside-others"]) == 0
    rows = read_rows(out / "results.csv")
    aside = read_rows(out / "results.superseded.csv")
    assert [r for r in before if r["n_components"] == "128"] == aside  # byte for byte, nothing else
    header = (out / "results.csv").read_text().splitlines()[0]
    assert (out / "results.superseded.csv").read_text().splitlines().count(header) == 1
    assert sorted(r["n_components"] for r in rows) == ["256", "64"]
    assert [r for r in before if r["n_components"] == "256"] == [r for r in rows if r["n_components"] == "256"]
    # Idempotent, and refused without a suite.
    assert main([*base, "--suite", str(edited), "--set-aside-others"]) == 0
    assert read_rows(out / "results.superseded.csv") == aside and len(read_rows(out / "results.csv")) == 2
    assert main([*base, "--set-aside-others"]) == 2
