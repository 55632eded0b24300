"""No cell with a non-finite training state is recorded ``ok`` (issue 21, item 10), and an image
whose header declares more pixels than PIL decodes is refused naming the file (item 14).

Real cells on a tiny copy of the CIFAR-10 JPEGs: rates so large that training really diverges
(finite values: nan and inf are refused before any work), never a mocked trainer.
"""

from __future__ import annotations

import json
import re
import struct
import zlib

import pytest

from benchmarks.harness.cells import make_cell
from benchmarks.cli import main
from benchmarks.core.features import FeatureCache
from benchmarks.harness.results import read_rows
from benchmarks.harness.runner import Runner
from benchmarks.report.tables import load_results, split_rows
from benchmarks.report.tuning import tuning_table
from tiny_data import restore_torch_threads, tiny_cifar10  # noqa: F401 (autouse fixture: --threads 1)

pytestmark = pytest.mark.usefixtures("one_thread")

SANE_LR, HUGE_LR = 0.01, 1e10  # 1e10 takes small_cnn's loss to NaN within two steps


@pytest.fixture(scope="module")
def data_dir(cifar10_dir, tmp_path_factory):
    return tiny_cifar10(cifar10_dir, tmp_path_factory.mktemp("cifar10"), train_per_class=10, test_per_class=5)


def gradfree_run(data_dir, out, *args) -> tuple[int, list[dict]]:
    """``gradfree run`` on the tiny CIFAR-10 (80 training, 20 validation, 50 test images at 32 px)."""
    code = main(["run", "--dataset", "cifar10", "--data-dir", str(data_dir), "--image-size", "32",
                 "--train-per-class", "10", "--test-per-class", "5", "--device", "cpu", "--threads", "1",
                 "--no-progress", "--out", str(out), *args])
    return code, read_rows(out / "results.csv")


def rows_of(rows, row_type):
    return [r for r in rows if r["row_type"] == row_type]


# ----------------------------------------------------------------------------
# A learning-rate grid: the diverged rate is left out and noted
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("tune_epochs", [None, 2])
def test_a_rate_that_diverges_in_the_grid_is_left_out_of_the_choice_and_noted(data_dir, tmp_path, tune_epochs):
    short = ["--tune-epochs", str(tune_epochs)] if tune_epochs else []
    code, rows = gradfree_run(data_dir, tmp_path / "out", "--method", "small_cnn", "--epochs", "3",
                              "--lr-grid", f"{SANE_LR},{HUGE_LR}", *short)
    assert code == 0
    (final,) = rows_of(rows, "final")
    extra = json.loads(final["extra"])
    assert final["status"] == "ok" and extra["tuned_value"] == SANE_LR
    assert list(extra["grid_val_acc"]) == [str(SANE_LR)]  # the diverged rate has no score to compare
    (reason,) = extra["grid_diverged"].values()
    assert list(extra["grid_diverged"]) == [str(HUGE_LR)] and re.fullmatch(r"epoch [12]: loss .*(nan|inf)", reason)
    assert float(extra["tune_s"]) > 0  # the diverged trial's time is the grid's cost, not dropped
    assert [r["epoch"] for r in rows_of(rows, "epoch")] == ["1", "2", "3"]  # the sane rate's curve only

    # The report's tuning table shows the grid as tried and the rate left out.
    finals, _, _ = split_rows(load_results(tmp_path / "out"))
    (line,) = tuning_table(finals).to_dict("records")
    assert line["grid"] == "0.01, 1e+10" and line["chosen (per seed)"] == "0.01"
    assert line["at an end of the grid"] == "1 of 1"
    assert line["diverged, left out (seeds)"] == "1e+10 (1 of 1)"


def test_a_grid_whose_every_rate_diverges_fails_the_cell(data_dir, tmp_path):
    code, rows = gradfree_run(data_dir, tmp_path / "out", "--method", "small_cnn", "--epochs", "3",
                              "--lr-grid", f"{HUGE_LR},{10 * HUGE_LR}")
    assert code == 1 and not rows_of(rows, "final") and not rows_of(rows, "epoch")
    (failed,) = rows_of(rows, "failed")
    assert re.fullmatch(r"GridDiverged: training diverged at every learning rate of the grid \(lr 1e\+10 at epoch "
                        r"\d: loss .*; lr 1e\+11 at epoch \d: loss .*\); lower the learning rates of lr_grid",
                        failed["error"])


# ----------------------------------------------------------------------------
# A training that diverges is a failed cell, stopped at once
# ----------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "options"), [
    ("small_cnn", {"lr": HUGE_LR}),
    ("airbench", {"lr": 1e30}),  # BatchNorm everywhere: only an absurd rate reaches NaN
    ("wrn22", {"lr_max": 1e6, "width": 1, "blocks_per_group": 1}),  # fastai's Learner
    ("finetune", {"lr": 1e6, "mode": "unfreeze", "weights": "none", "cut": "features.4"}),
])
def test_a_cell_whose_training_diverges_is_failed_with_the_reason_and_stops_there(data_dir, method, options):
    epochs = 4
    cell = make_cell({"method": method, "dataset": "cifar10", "data_dir": str(data_dir), "image_size": 32,
                      "train_per_class": 10, "test_per_class": 5, "device": "cpu", "threads": 1,
                      "epochs": epochs, **options})
    rows: list[dict] = []
    row = Runner(progress=False, feature_cache=FeatureCache(None)).run_cell(cell, rows.extend)
    assert row["row_type"] == row["status"] == "failed" and rows[-1] is row
    lr = options.get("lr", options.get("lr_max"))
    prefix = "TrainingDiverged: training diverged at epoch "
    assert row["error"].startswith(prefix) and row["error"].endswith("; lower the learning rate")
    epoch = int(row["error"][len(prefix):].split(" ")[0])
    assert f"at epoch {epoch} (learning rate {lr:g}): loss " in row["error"]
    # Stopped at the epoch that diverged: no row for it, nor for the epochs after it.
    assert [r["epoch"] for r in rows if r["row_type"] == "epoch"] == list(range(1, epoch))
    assert epoch < epochs


# ----------------------------------------------------------------------------
# The gradient-free fit: features or decision values that are not finite fail the cell
# ----------------------------------------------------------------------------


@pytest.mark.parametrize(("scale", "projector", "expected"), [
    # |XR|^2 of features of 1e30 overflows float32: the random features are inf
    (1e30, "gaussian", "NonFiniteFit: the train random features (gaussian, k=500) are not finite"),
    # a backbone whose activations overflowed
    (float("inf"), "none", "NonFiniteFit: the train features of mobilenet_v2 at features.4 (fp32) are not finite"),
])
def test_non_finite_features_fail_the_gradient_free_cell(data_dir, tmp_path, monkeypatch, scale, projector,
                                                         expected):
    import benchmarks.methods.random_features as rf

    extract = rf.extract_features
    # The backbone's real features, scaled as an overflowing extraction would leave them.
    monkeypatch.setattr(rf, "extract_features", lambda *a, **k: extract(*a, **k) * scale)
    code, rows = gradfree_run(data_dir, tmp_path / "out", "--encoder", "none", "--projector", projector,
                              "--n-components", "500", "--weights", "none", "--cut", "features.4")
    assert code == 1 and not rows_of(rows, "final")
    (failed,) = rows_of(rows, "failed")
    # (the projector may refuse the overflow first, with its own reason: either way the cell fails, saying why)
    assert (failed["error"].startswith(expected) and "NaN or infinite" in failed["error"]) or \
        (scale != float("inf") and "overflowed float32" in failed["error"])


# ----------------------------------------------------------------------------
# A decompression bomb in an image folder
# ----------------------------------------------------------------------------


def _png_header_only(width: int, height: int) -> bytes:
    """A 69-byte PNG whose header declares ``width x height`` RGB pixels (its data is a few bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 4))
            + chunk(b"IEND", b""))


def test_a_decompression_bomb_is_refused_naming_the_file_before_training(data_dir, tmp_path):
    import shutil

    folder = shutil.copytree(data_dir, tmp_path / "images")
    bomb = folder / "train" / "cat" / "zz_huge.png"
    bomb.write_bytes(_png_header_only(1, 200_000_000))  # over PIL's limit of 2 x 89,478,485 pixels
    out = tmp_path / "out"
    code = main(["run", "--method", "small_cnn", "--dataset", f"imagefolder:{folder}", "--image-size", "32",
                 "--train-per-class", "0", "--test-per-class", "0", "--epochs", "1", "--device", "cpu",
                 "--threads", "1", "--no-progress", "--out", str(out)])
    rows = read_rows(out / "results.csv")
    assert code == 1 and [r["row_type"] for r in rows] == ["failed"]  # not one epoch trained
    error = rows[0]["error"]
    assert error.startswith(f"DatasetError: {bomb} is too large to decode: ")
    assert "200000000 pixels" in error and "limit of 178956970 pixels" in error
    assert error.endswith("Resize it (gradfree scales every image to --image-size anyway) or remove it.")
