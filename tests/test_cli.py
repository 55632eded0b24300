"""End to end through the command line, on real CIFAR-10 JPEGs and real pretrained weights."""

import json

import pytest

from baselines.finetune import FineTuneConfig
from benchmarks.cli import main
from benchmarks.harness.results import read_rows

pytestmark = pytest.mark.slow

TINY = ["--dataset", "cifar10", "--train-per-class", "10", "--test-per-class", "5", "--image-size", "32",
        "--batch-size", "64", "--no-progress"]


def test_run_writes_results_and_metadata_then_resumes(tmp_path, cifar10_dir, mobilenet_weights, capsys):
    args = ["run", *TINY, "--data-dir", str(cifar10_dir), "--n-components", "512", "--out", str(tmp_path)]
    assert main(args) == 0
    rows = read_rows(tmp_path / "results.csv")
    assert len(rows) == 1
    row = rows[0]
    assert (row["row_type"], row["status"], row["method"]) == ("final", "ok", "random-features")
    assert row["weights"] == mobilenet_weights and row["cut"] == "features.18"
    assert (row["n_train"], row["n_val"], row["n_test"]) == ("80", "20", "50")
    assert row["n_components"] == "512" and row["selection"] == "validation split"
    for col in ("extract_s", "encode_s", "project_s", "fit_s", "predict_s", "train_total_s"):
        assert float(row[col]) >= 0.0
    counted = sum(float(row[c]) for c in ("extract_s", "encode_s", "project_s", "fit_s"))
    assert float(row["train_total_s"]) == pytest.approx(counted, rel=1e-3, abs=1e-3)
    assert 0.0 <= float(row["test_acc"]) <= 1.0
    assert int(row["backbone_param_count"]) == 2223872  # MobileNetV2 features, no classifier
    assert int(row["feature_dim"]) == 1280  # 1280 x 1 x 1 at 32 px
    meta = json.loads(next((tmp_path / "runs").glob("*/metadata.json")).read_text())
    assert meta["config"]["cells"][0]["cell_key"] == row["cell_key"]
    assert "results:" in capsys.readouterr().out

    # The same command again resumes: the finished cell is skipped, nothing is duplicated.
    assert main(args) == 0
    assert len(read_rows(tmp_path / "results.csv")) == 1


def test_projection_none_is_the_control(tmp_path, cifar10_dir, mobilenet_weights):
    assert main(["run", *TINY, "--data-dir", str(cifar10_dir), "--projector", "none", "--encoder", "none",
                 "--out", str(tmp_path)]) == 0
    row = read_rows(tmp_path / "results.csv")[0]
    assert row["projection"] == "none" and row["encoder"] == "none"
    assert row["n_components"] == "0"


def test_missing_dataset_is_a_clear_error_before_any_cell(tmp_path, capsys):
    # A suite of cells reading a folder that is not there fails once, up front: no failed row per cell.
    suite = tmp_path / "two.toml"
    suite.write_text('[settings]\ndataset = "cifar10"\nimage_size = 32\ntrain_per_class = 5\n'
                     'test_per_class = 5\n\n[[grid]]\nmethod = "small_cnn"\nseed = [0, 1]\n')
    for argv in (["run", "--dataset", "cifar10"], ["run", "--suite", str(suite)]):
        out = tmp_path / argv[-1].replace("/", "_")
        code = main([*argv, "--data-dir", str(tmp_path / "nowhere"), "--out", str(out), "--no-progress"])
        err = capsys.readouterr().err
        assert code == 2 and f"--data-dir {tmp_path / 'nowhere'} does not exist" in err
        assert not out.exists()


def test_unknown_cut_is_rejected_before_any_work(tmp_path, capsys):
    code = main(["run", "--cut", "denseblock9", "--out", str(tmp_path), "--no-progress"])
    assert code == 2
    assert "gradfree cuts" in capsys.readouterr().err
    assert not (tmp_path / "results.csv").exists()


def test_a_fraction_of_an_epoch_is_airbench_only(tmp_path, capsys, cifar10_dir):
    # airbench94 runs 9.9 epochs as published (any fraction goes); a trainer counting whole epochs refuses 9.5 up front
    common = ["--dataset", "cifar10", "--data-dir", str(cifar10_dir), "--image-size", "32", "--dry-run", "--no-progress"]
    assert main(["run", "--method", "airbench", "--epochs", "9.5", "--out", str(tmp_path / "a"), *common]) == 0
    assert "epochs=9.5" in capsys.readouterr().out
    code = main(["run", "--method", "small_cnn", "--epochs", "9.5", "--out", str(tmp_path / "b"), *common])
    err = capsys.readouterr().err
    assert code == 2 and "epochs = 9.5: expected a whole number" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as stop:  # argparse's own exit
        main(["run", "--method", "small_cnn", "--epochs", "ten", "--out", str(tmp_path / "c"), *common])
    assert stop.value.code == 2 and "expected a number of epochs, got 'ten'" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
    with pytest.raises(ValueError, match="whole number >= 1, got 9.5"):  # and so does its Config, from Python
        FineTuneConfig(epochs=9.5)


def test_cuts_command(capsys):
    assert main(["cuts", "--backbone", "densenet169"]) == 0
    out = capsys.readouterr().out.split()
    assert out[0] == "denseblock1.denselayer1" and out[-1] == "norm5" and "transition3" in out


# ----------------------------------------------------------------------------
# Faults a user meets: a torn results file, two runs into one folder, a read-only file, a bad --out
# ----------------------------------------------------------------------------


def _two_cell_args(data_dir, out):
    return ["run", *TINY, "--data-dir", str(data_dir), "--n-components", "256", "--seed", "{seed}",
            "--out", str(out)]


def test_a_torn_last_row_is_set_aside_and_its_cell_runs_again(tmp_path, cifar10_dir, mobilenet_weights, capsys):
    import pandas as pd

    from benchmarks.report.tables import load_results

    out = tmp_path / "out"
    runs = [[a.replace("{seed}", str(s)) for a in _two_cell_args(cifar10_dir, out)] for s in (0, 1)]
    for args in runs:
        assert main(args) == 0
    csv = out / "results.csv"
    good = csv.read_bytes()
    lines = good.splitlines(keepends=True)
    torn = b"".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2]  # what a crash or a full disk leaves
    csv.write_bytes(torn)

    capsys.readouterr()
    assert main(runs[1]) == 0  # the torn cell counts as not done: it runs again
    assert "set aside" in capsys.readouterr().out
    side = list(out.glob("results.csv.torn-*"))
    assert len(side) == 1 and side[0].read_bytes() == lines[-1][: len(lines[-1]) // 2]
    rows = read_rows(csv)
    assert [r["row_type"] for r in rows] == ["final", "final"] and len({r["cell_key"] for r in rows}) == 2
    assert len(pd.read_csv(csv)) == 2 and len(load_results(out)) == 2
    assert main(runs[0]) == 0 and len(read_rows(csv)) == 2  # and the rest is trusted as done


def test_a_second_run_into_a_busy_folder_refuses_naming_the_holder(tmp_path, capsys):
    import subprocess
    import sys

    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from benchmarks.harness.resultsfile import ResultsFile\n"
         f"with ResultsFile({str(out)!r}):\n    print('held', flush=True); sys.stdin.readline()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        code = main(["run", "--method", "small_cnn", "--out", str(out), "--no-progress"])
        err = capsys.readouterr().err
        assert code == 2 and f"pid {holder.pid}" in err and "another --out" in err
        assert not (out / "results.csv").exists()
    finally:
        holder.communicate("\n", timeout=60)


def test_a_read_only_results_file_is_refused_and_left_alone(tmp_path, capsys):
    import os
    import stat

    out = tmp_path / "out"
    out.mkdir()
    csv = out / "results.csv"
    csv.write_text(",".join(__import__("benchmarks.harness.results", fromlist=["SCHEMA"]).SCHEMA) + "\n")
    os.chmod(csv, 0o444)
    code = main(["run", "--method", "small_cnn", "--out", str(out), "--no-progress"])
    assert code == 2 and "read-only" in capsys.readouterr().err
    assert stat.S_IMODE(csv.stat().st_mode) == 0o444


def test_an_out_that_is_a_file_is_a_clear_error(tmp_path, capsys):
    target = tmp_path / "a-file"
    target.write_text("not a folder")
    code = main(["run", "--method", "small_cnn", "--out", str(target), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("gradfree: error:") and "Traceback" not in err
    assert target.read_text() == "not a folder"


def test_logistic_control_on_the_same_features(tmp_path, cifar10_dir, mobilenet_weights):
    out = tmp_path / "out"
    for extra in ([], ["--classifier", "logistic"]):
        assert main(["run", *TINY, "--data-dir", str(cifar10_dir), "--projector", "none", "--encoder", "none",
                     "--out", str(out), *extra]) == 0
    ridge, logistic = read_rows(out / "results.csv")
    assert ridge["cell_key"] != logistic["cell_key"]
    assert json.loads(logistic["method_config"])["classifier"] == "logistic"
    assert logistic["selection"] == "validation split" and float(logistic["alpha"]) in (1e-3, 1e-2, 1e-1, 1.0,
                                                                                        10.0, 100.0, 1000.0)
    assert 0.0 <= float(logistic["test_acc"]) <= 1.0
    assert ridge["data_fingerprint"] == logistic["data_fingerprint"] and ridge["feature_dim"] == logistic["feature_dim"]
    assert "cached_phases" in logistic["extra"] or float(logistic["extract_s"]) > 0
    iterations = json.loads(logistic["extra"])["lbfgs_iterations"]  # per C of the grid: did L-BFGS converge?
    assert len(iterations) >= 2 and all(1 <= n <= json.loads(logistic["extra"])["lbfgs_max_iter"]
                                        for n in iterations.values())


def _other_value(field, default):
    """A valid value of a Config field other than its default (None where the test cannot make one)."""
    typ = str(field.type)
    if "bool" in typ:
        return not default if isinstance(default, bool) else True
    if "tuple" in typ:
        return (0.5, 0.25)
    if typ.startswith("int") or typ.startswith("float") or "int |" in typ or "float |" in typ:
        if "float" in typ:
            return round((default or 0.25) * 0.5, 6) if isinstance(default, (int, float)) and default else 0.5
        return (default or 1) + 1
    if typ.startswith("str"):  # another of the field's choices
        return next((v for v in _STRING_CHOICES.get(field.name, ()) if v != default), None)
    return None


#: Valid values of the Configs' string fields (each field takes a few; any other than the default will do).
_STRING_CHOICES = {"encoder": ("sign", "threshold"), "projection": ("gaussian", "structured"),
                   "classifier": ("ridge", "logistic"), "mode": ("linear-probe", "unfreeze"), "head": ("pool", "flatten"),
                   "optimizer": ("sgd", "adam"), "schedule": ("onecycle", "none"), "preset": ("seed-paper",)}


@pytest.mark.parametrize("method", sorted(__import__("benchmarks.harness.registry", fromlist=["REGISTRY"]).REGISTRY))
def test_every_config_field_can_be_set_for_one_run_and_makes_its_own_cell(method):
    # --set NAME=VALUE reaches every field of every method's Config on a single run (issue 24, item 3): the
    # Config holds the value, and the cell's key differs from the default cell's
    import argparse
    import dataclasses

    from benchmarks.cli.run import _CELL_ARGS, _add_run_args, _single_run_settings
    from benchmarks.harness.cells import make_cell
    from benchmarks.harness.registry import get_method, make_config

    cls = get_method(method)
    defaults = cls.Config()
    parser = argparse.ArgumentParser()
    _add_run_args(parser)
    base = parser.parse_args(["--method", method, "--weights", "none"])
    default_key = make_cell({k: getattr(base, k) for k in _CELL_ARGS}).key()
    tried, skipped = 0, []
    for field in dataclasses.fields(cls.Config):
        value = _other_value(field, getattr(defaults, field.name))
        if value is None or field.name in ("batch_size", "tune_epochs", "epochs"):
            skipped.append(field.name)  # no value the test can make, or a field that needs a partner
            continue
        text = ",".join(map(str, value)) if isinstance(value, tuple) else str(value).lower()
        args = parser.parse_args(["--method", method, "--weights", "none", "--set", f"{field.name}={text}"])
        settings = _single_run_settings(args)
        try:
            config = make_config(cls, settings)
            cell = make_cell({**{k: getattr(args, k) for k in _CELL_ARGS}, **settings})
        except ValueError:
            skipped.append(field.name)  # a value outside the field's range, or one needing a partner: refused
            continue
        if field.name != "preset":  # a preset rewrites other fields as it is applied
            assert getattr(config, field.name) == value, (method, field.name)
        if field.name not in ("n_components", "block_size") or settings.get("projection") not in ("none", "kernel"):
            assert cell.key() != default_key and field.name in cell.option_dict(), (method, field.name)
        tried += 1
    assert tried >= 3 and len(skipped) <= max(3, len(dataclasses.fields(cls.Config)) // 3), (method, skipped)


def test_set_refuses_a_grid_a_foreign_field_and_a_doubled_flag(capsys):
    assert main(["run", "--set", "seed=0,1", "--dry-run"]) == 2
    assert "one run takes one value" in capsys.readouterr().err
    assert main(["run", "--set", "lr_max=0.1", "--dry-run"]) == 2
    assert "not a setting of random-features" in capsys.readouterr().err
    assert main(["run", "--set", "seed=3", "--seed", "2", "--dry-run"]) == 2
    assert "both given" in capsys.readouterr().err


def test_set_none_is_the_string_none_for_a_setting_that_does_not_take_none():
    # --set weights=none asked for random weights and ran the pretrained ones; --set projection=none ran the
    # Gaussian projection: "none" read as None, and None as "the default". Now "none" is None only for a
    # setting typed "... | None" (cut: the last one; patience: no early stopping).
    import argparse

    from benchmarks.cli.run import _CELL_ARGS, _add_run_args, _single_run_settings
    from benchmarks.harness.cells import make_cell
    from benchmarks.harness.suites import parse_overrides

    parser = argparse.ArgumentParser()
    _add_run_args(parser)
    args = parser.parse_args(["--set", "weights=none", "--set", "projection=none", "--set", "encoder=none"])
    settings = _single_run_settings(args)
    cell = make_cell({**{k: getattr(args, k) for k in _CELL_ARGS}, **settings})
    assert cell.weights == "none" and cell.option_dict() == {"projection": "none", "encoder": "none"}
    assert parse_overrides(["cut=none", "patience=none", "alphas=none"], methods=("finetune", "random-features")) \
        == {"cut": None, "patience": None, "alphas": None}
    assert parse_overrides(["schedule=none"], methods=("finetune",)) == {"schedule": "none"}
