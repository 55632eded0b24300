"""Cell keys name what a cell is, never how it was spelled; committed results re-key and resume; a run
never mixes rows computed on different data; bad input is refused before any work, by a dry run too.

Issue 21, cases 5, 6, 6b, 10 (the up-front half), 12, 13 and 14.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from benchmarks.harness.cells import MAX_SEED, CellError, make_cell, validate
from benchmarks.cli import main
from benchmarks.harness.rekey import cell_from_record, key_mapping, rekey
from benchmarks.harness import suites
from benchmarks.harness.results import RESULTS_FILE, finished_keys, read_rows
from benchmarks.report.tables import aggregate, load_results, summary_table
from tiny_data import tiny_cifar10

REPO = Path(__file__).resolve().parent.parent
COMMITTED = sorted(p.parent for p in (REPO / "results").glob("*/results.csv"))


@pytest.fixture(scope="module")
def tiny_dir(cifar10_dir, tmp_path_factory):
    return tiny_cifar10(cifar10_dir, tmp_path_factory.mktemp("cifar10-tiny"), train_per_class=10, test_per_class=5)


TINY = ["--dataset", "cifar10", "--image-size", "32", "--train-per-class", "10", "--test-per-class", "5",
        "--n-components", "64", "--batch-size", "64", "--device", "cpu", "--threads", "1", "--no-progress"]


# ----------------------------------------------------------------------------
# One cell, one key (case 6, 6b)
# ----------------------------------------------------------------------------


def test_the_key_does_not_depend_on_how_the_data_folder_is_spelled(tiny_dir, tmp_path, monkeypatch):
    link = tmp_path / "link"
    link.symlink_to(tiny_dir)
    monkeypatch.chdir(tiny_dir.parent)
    spellings = [str(tiny_dir), str(tiny_dir) + "/", tiny_dir.name, str(link), str(tiny_dir / ".." / tiny_dir.name)]
    for dataset in ("cifar10", "imagefolder:{}"):
        keys = {make_cell({"dataset": dataset.format(s), "data_dir": s if dataset == "cifar10" else None}).key()
                for s in spellings}
        assert len(keys) == 1, (dataset, keys)


def test_a_named_dataset_moved_to_another_folder_keeps_its_key(tiny_dir, tmp_path):
    moved = shutil.copytree(tiny_dir, tmp_path / "elsewhere")
    assert make_cell({"dataset": "cifar10", "data_dir": str(tiny_dir)}).key() == \
        make_cell({"dataset": "cifar10", "data_dir": str(moved)}).key()


def test_an_image_folder_is_named_by_its_files(tiny_dir, tmp_path):
    copy = shutil.copytree(tiny_dir, tmp_path / "copy")
    key = make_cell({"dataset": f"imagefolder:{copy}"}).key()
    assert key == make_cell({"dataset": f"imagefolder:{tiny_dir}"}).key()  # the same files elsewhere
    victim = next((copy / "train" / "cat").iterdir())
    Image.new("RGB", (32, 32), (255, 0, 0)).save(victim, quality=100)  # re-encoded: another size
    assert make_cell({"dataset": f"imagefolder:{copy}"}).key() != key
    (copy / "train" / "cat" / "extra.png").write_bytes(victim.read_bytes())
    assert len({make_cell({"dataset": f"imagefolder:{p}"}).key() for p in (tiny_dir, copy)}) == 2


@pytest.mark.parametrize("spelling", ["DEFAULT", "default", "MobileNet_V2_Weights.{w}", "{w}", "{lower}"])
def test_one_network_one_key_whatever_the_weights_spelling(spelling, mobilenet_weights):
    spelled = spelling.format(w=mobilenet_weights, lower=mobilenet_weights.lower())
    cell = make_cell({"weights": spelled})
    assert cell.weights == mobilenet_weights  # resolved to the weights that will be loaded
    assert cell.key() == make_cell({"weights": mobilenet_weights}).key()


def test_unknown_weights_are_refused_before_any_work(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", "--weights", "IMAGENET1K_V9", "--out", str(out), "--no-progress"]) == 2
    assert "unknown weights 'IMAGENET1K_V9'" in capsys.readouterr().err
    assert not out.exists()


# ----------------------------------------------------------------------------
# Committed results re-key, resume and re-report identically (case 6b)
# ----------------------------------------------------------------------------


#: Committed suites whose cells are not all run yet: cells added to them (the budget to converge at the
#: small sizes, docs/learning-curve-plan.md) run with the learning curves.
STILL_RUNNING: set[str] = set()


@pytest.mark.parametrize("folder", COMMITTED, ids=[p.name for p in COMMITTED])
def test_committed_results_are_current_and_resume(folder, mobilenet_weights):
    # Every key a run recorded maps onto itself: the folder holds today's keys...
    mapping = key_mapping(folder)
    assert mapping and all(old == new for old, new in mapping.items())
    # ...every row's key is one of them...
    rows = read_rows(folder / RESULTS_FILE)
    assert {r["cell_key"] for r in rows} <= set(mapping)
    # ...and the suite that wrote them (a folder of single runs has none), expanded today, finds every one
    # of its cells done: it resumes.
    if folder.name not in suites.suite_paths():
        return
    suite = suites.load_suite(folder.name)
    cells = suites.expand(suites.apply_overrides(suite, {}))
    done = finished_keys(folder / RESULTS_FILE)
    assert done <= {c.key() for c in cells}  # no finished row orphaned by its own suite
    if folder.name not in STILL_RUNNING:
        assert [c for c in cells if c.key() not in done] == []


@pytest.mark.parametrize("folder", COMMITTED, ids=[p.name for p in COMMITTED])
def test_committed_results_rekey_from_their_former_keys_byte_for_byte(folder, tmp_path):
    copy = shutil.copytree(folder, tmp_path / folder.name, ignore=shutil.ignore_patterns("report", "cache"))
    before = {p.name: p.read_bytes() for p in copy.glob("results*.csv")}
    # Put the keys back as the older gradfree wrote them (metadata keeps them as rekeyed_from).
    former = {}
    for meta in (copy / "runs").glob("*/metadata.json"):
        data = json.loads(meta.read_text())
        for record in data["config"]["cells"]:
            if "rekeyed_from" in record:
                former[record["cell_key"]] = record.pop("rekeyed_from")
                record["cell_key"] = former[record["cell_key"]]
        meta.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    if not former:  # written with today's keys: re-keying changes nothing
        assert rekey(copy).rows_changed == 0
        assert {p.name: p.read_bytes() for p in copy.glob("results*.csv")} == before
        return
    for name, data in before.items():
        text = data.decode()
        for new, old in former.items():
            text = text.replace(new, old)
        (copy / name).write_text(text)
    assert summary_table(load_results(copy / RESULTS_FILE)).equals(summary_table(load_results(folder / RESULTS_FILE)))
    result = rekey(copy)
    assert not result.unknown_keys and result.rows_changed > 0
    assert {p.name: p.read_bytes() for p in copy.glob("results*.csv")} == before  # every other byte as it was
    assert rekey(copy).rows_changed == 0  # idempotent


def test_rekey_keeps_rows_it_cannot_place_and_says_so(tiny_dir, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["run", *TINY, "--data-dir", str(tiny_dir), "--out", str(out)]) == 0
    path = out / RESULTS_FILE
    text = path.read_text()
    key = read_rows(path)[0]["cell_key"]
    path.write_text(text + text.splitlines()[1].replace(key, "0123456789abcdef") + "\n")
    assert main(["rekey", str(out)]) == 0
    said = capsys.readouterr().out
    assert "0 row(s) re-keyed" in said and "0123456789abcdef" in said
    assert "0123456789abcdef" in path.read_text()


def test_cell_from_record_takes_the_weights_the_rows_say_were_loaded():
    record = {"method": "random-features", "weights": "DEFAULT", "cut": "features.18", "options": [["n_components", 64]]}
    assert cell_from_record(record, "IMAGENET1K_V1").weights == "IMAGENET1K_V1"
    assert cell_from_record(record).weights == "DEFAULT"


# ----------------------------------------------------------------------------
# Never mix two data (case 5)
# ----------------------------------------------------------------------------


def _swap_two_classes(folder: Path) -> None:
    """The same file names, other pictures: each cat image's file now holds a dog image."""
    cats, dogs = sorted((folder / "train" / "cat").iterdir()), sorted((folder / "train" / "dog").iterdir())
    for cat, dog in zip(cats, dogs):
        cat.write_bytes(dog.read_bytes())


def test_resuming_on_changed_data_refuses_and_names_both_fingerprints(tiny_dir, tmp_path, capsys):
    data = shutil.copytree(tiny_dir, tmp_path / "data")
    out = tmp_path / "r"
    assert main(["run", *TINY, "--data-dir", str(data), "--out", str(out), "--seed", "0"]) == 0
    first = read_rows(out / RESULTS_FILE)
    _swap_two_classes(data)
    before = (out / RESULTS_FILE).read_bytes()
    capsys.readouterr()
    code = main(["run", "--suite", str(_two_seed_suite(tmp_path)), "--data-dir", str(data), "--out", str(out),
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert first[0]["data_fingerprint"] in err and "differ" in err and "--out" in err
    assert (out / RESULTS_FILE).read_bytes() == before  # nothing written, nothing mixed


def test_the_same_data_elsewhere_resumes(tiny_dir, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["run", *TINY, "--data-dir", str(tiny_dir), "--out", str(out)]) == 0
    moved = shutil.copytree(tiny_dir, tmp_path / "moved")
    assert main(["run", *TINY, "--data-dir", str(moved) + "/", "--out", str(out)]) == 0
    assert "done before, skipped" in capsys.readouterr().out
    assert sum(r["row_type"] == "final" for r in read_rows(out / RESULTS_FILE)) == 1


def _two_seed_suite(tmp_path: Path) -> Path:
    path = tmp_path / "two-seeds.toml"
    path.write_text("""
description = "seeds 0 and 1"
[settings]
dataset = "cifar10"
image_size = 32
train_per_class = 10
test_per_class = 5
n_components = 64
batch_size = 64
device = "cpu"
threads = 1
seed = [0, 1]
[[grid]]
method = "random-features"
""")
    return path


# ----------------------------------------------------------------------------
# Refused before any work, by a run and by its dry run alike (cases 10, 12, 13, 14)
# ----------------------------------------------------------------------------

REFUSED = [
    (["--dataset", "cifar-10"], "unknown dataset 'cifar-10'"),
    (["--train-per-class", "-5"], "train_per_class = -5"),
    (["--n-components", "100000000000"], "largest number of random features"),
    (["--method", "finetune", "--precision", "int8"], "int8 is post-training quantization"),
    (["--backbone", "vit_b_16", "--weights", "none", "--precision", "int8"], "cannot quantize vit_b_16"),
    (["--weights", "IMAGENET1K_V9"], "unknown weights"),
    (["--seed", str(MAX_SEED + 1)], "32-bit"),
    (["--threads", "100000"], "threads = 100000"),
]

REFUSED_WHEN_BUILT = [
    (["--method", "finetune", "--lr", "nan"], "lr = nan: expected a finite number"),
    (["--method", "finetune", "--lr", "-1"], "lr must be a finite number > 0"),
    (["--method", "wrn22", "--lr", "inf"], "expected a finite number"),
    (["--alphas", "1,nan"], "alphas = .*expected a finite number"),
    (["--alphas", "inf"], "expected a finite number"),
    (["--method", "airbench", "--epochs", "inf"], "epochs = inf: expected a finite number"),
    (["--method", "small_cnn", "--lr-grid", "0.01,inf"], "expected a finite number"),
]


@pytest.mark.parametrize("flags, message", REFUSED, ids=[" ".join(f) for f, _ in REFUSED])
def test_a_dry_run_refuses_what_a_run_refuses(flags, message, tmp_path, capsys, cifar10_dir):
    base = ["--data-dir", str(cifar10_dir)] if "--dataset" not in flags else []
    out = tmp_path / "out"
    assert main(["run", *base, *flags, "--out", str(out), "--dry-run", "--no-progress"]) == 2
    said = capsys.readouterr().out
    assert "REFUSED" in said and message in said, said
    assert main(["run", *base, *flags, "--out", str(out), "--no-progress"]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("flags, message", REFUSED_WHEN_BUILT, ids=[" ".join(f) for f, _ in REFUSED_WHEN_BUILT])
def test_non_finite_and_out_of_range_values_are_refused_when_the_cell_is_built(flags, message, tmp_path, capsys):
    import re

    out = tmp_path / "out"
    for extra in (["--dry-run"], []):
        assert main(["run", *flags, "--out", str(out), "--no-progress", *extra]) == 2
        assert re.search(message, capsys.readouterr().err)
    assert not out.exists()


def test_seeds_are_32_bit_and_every_one_of_them_is_taken():
    validate(make_cell({"seed": MAX_SEED, "dataset": "fashion-mnist"}))
    with pytest.raises(CellError, match="32-bit"):
        validate(make_cell({"seed": MAX_SEED + 1}))
    with pytest.raises(CellError, match="seed = -1"):
        validate(make_cell({"seed": -1}))


def test_a_suite_dry_run_marks_each_refused_cell_and_lists_the_others(tmp_path, capsys, cifar10_dir):
    path = tmp_path / "mixed.toml"
    path.write_text("""
description = "one good cell, one refused"
[settings]
dataset = "cifar10"
image_size = 32
train_per_class = 10
test_per_class = 5
[[grid]]
method = "random-features"
n_components = [64, 100000000000]
""")
    assert main(["run", "--suite", str(path), "--data-dir", str(cifar10_dir), "--out", str(tmp_path / "o"),
                 "--dry-run"]) == 2
    said = capsys.readouterr().out
    assert said.count("REFUSED") == 2 and "to run" in said and "1 cell(s) REFUSED" in said
    assert os.listdir(tmp_path) == ["mixed.toml"]


def test_a_report_never_averages_rows_of_two_data(tiny_dir, tmp_path):
    data = shutil.copytree(tiny_dir, tmp_path / "data")
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["run", *TINY, "--data-dir", str(data), "--out", str(a), "--seed", "0"]) == 0
    _swap_two_classes(data)
    assert main(["run", *TINY, "--data-dir", str(data), "--out", str(b), "--seed", "1"]) == 0
    # A folder written before the check existed: seed 1's row, on other images, beside seed 0's.
    with (a / RESULTS_FILE).open("a") as f:
        f.write((b / RESULTS_FILE).read_text().split("\n", 1)[1])
    table = aggregate(load_results(a / RESULTS_FILE).query("row_type == 'final'"), ["test_acc"])
    assert len(table) == 2 and list(table["seeds"]) == [1, 1]
    assert main(["run", *TINY, "--data-dir", str(data), "--out", str(a), "--seed", "2"]) == 2  # and a run refuses it
