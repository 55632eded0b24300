"""One cell builder for the command line and suites; validation before any work; the method registry."""

from __future__ import annotations

import textwrap

import pytest

from benchmarks.harness.cells import CellError, cell_shape, make_cell, plan_memory, validate
from benchmarks.cli import build_parser, main
from benchmarks.cli.run import _CELL_ARGS
from benchmarks.harness.registry import REGISTRY, backbone_methods, backprop_methods
from benchmarks.core.protocol import CellShape
from benchmarks.harness.suites import SuiteError, apply_overrides, expand, load_suite, parse_overrides


def _cli_cell(*flags: str):
    """The cell `gradfree run FLAGS` would run, built the way cmd_run builds it."""
    from benchmarks.cli.run import _method_options

    args = build_parser().parse_args(["run", *flags])
    return make_cell({**{k: getattr(args, k) for k in _CELL_ARGS}, **_method_options(args)})


def _suite_cells(tmp_path, grid: str):
    path = tmp_path / "s.toml"
    path.write_text(textwrap.dedent(grid))
    return expand(load_suite(path))


def test_cli_suite_and_spelled_out_default_give_one_key(tmp_path):
    plain = _cli_cell()
    spelled = _cli_cell("--n-components", "10000", "--cut", "features.18", "--encoder", "sign")
    (suite,) = _suite_cells(tmp_path, """
        [[grid]]
        method = "random-features"
        dataset = "fashion-mnist"
        n_components = 10000
    """)
    assert plain.key() == spelled.key() == suite.key()
    assert plain.cut == "features.18"


def test_cli_and_suite_agree_for_every_method(tmp_path):
    for name in REGISTRY:
        cli = _cli_cell("--method", name, "--epochs", "3")
        (suite,) = _suite_cells(tmp_path, f'[[grid]]\nmethod = "{name}"\nepochs = 3\n')
        assert cli.key() == suite.key(), name


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_registered_method_declares_the_protocol(name):
    cls = REGISTRY[name]
    assert cls.name == name
    assert isinstance(cls.uses_backbone, bool) and isinstance(cls.is_backprop, bool)
    config = cls.Config()  # a method's cost model and label take its Config (issue 24, item 4)
    shape = CellShape(backbone="mobilenet_v2", cut="features.18", image_size=32, n_classes=10,
                      n_train=80, n_val=20, n_test=50)
    flops, info = cls.flops(config, shape)
    assert flops and all(v >= 0 for v in flops.values()) and sum(flops.values()) > 0
    assert info["params"] > 0
    assert cls.memory_bytes(config, shape) > 80 * 3 * 32 * 32
    assert isinstance(cls.label(config), str) and cls.label(config)
    # Every registered method can be asked for by the CLI and built as a cell.
    assert build_parser().parse_args(["run", "--method", name]).method == name
    cell = make_cell({"method": name})
    assert (cell.backbone == "mobilenet_v2") == cls.uses_backbone or not cls.uses_backbone
    assert (name in backbone_methods()) == cls.uses_backbone
    assert (name in backprop_methods()) == cls.is_backprop


def test_methods_without_a_backbone_lose_its_axes():
    for name in REGISTRY:
        cell = make_cell({"method": name, "cut": "features.14", "precision": "bf16"})
        if REGISTRY[name].uses_backbone:
            assert (cell.cut, cell.precision) == ("features.14", "bf16")
        else:
            assert (cell.cut, cell.precision) == (None, "fp32")


@pytest.mark.parametrize("values, match", [
    ({"train_per_class": -9}, "train_per_class = -9"),
    ({"test_per_class": -1}, "test_per_class = -1"),
    ({"val_fraction": 1.0}, r"val_fraction = 1.0.*\[0, 1\)"),
    ({"val_fraction": -0.1}, "val_fraction"),
    ({"val_fraction": 0.0}, "nothing to select on"),
    ({"image_size": 8}, "too small"),
    ({"n_components": 0}, "n_components = 0"),
    ({"batch_size": 0}, "batch_size"),
    ({"threads": 0}, "threads"),
    ({"device": "tpu:7"}, "device"),
    ({"method": "finetune", "precision": "int8"}, "int8 is post-training quantization"),
    ({"method": "finetune", "patience": 0}, "patience must be >= 1"),
    ({"method": "small_cnn", "tune_epochs": 2}, "needs an lr_grid"),
    ({"method": "small_cnn", "lr_grid": [0.0, 0.1]}, "positive, finite learning rates"),
    ({"classifier": "svm"}, "unknown classifier 'svm'"),
    ({"projection": "hologram"}, "unknown projection 'hologram'"),
])
def test_bad_values_are_rejected_before_any_work(values, match):
    with pytest.raises(ValueError, match=match):
        validate(make_cell({"method": "random-features", **values}))


def test_val_fraction_zero_is_fine_with_one_fixed_alpha():
    validate(make_cell({"method": "random-features", "val_fraction": 0.0, "alphas": [1.0]}))


@pytest.mark.parametrize("values, match", [
    ({"image_size": "big"}, "image_size = 'big': expected a whole number"),
    ({"seed": 1.5}, "seed = 1.5"),
    ({"val_fraction": "x"}, "expected a number"),
    ({"n_components": "many"}, "n_components"),
    ({"method": "nope"}, "unknown method 'nope'"),
    ({"augment": "yes", "method": "finetune"}, "expected true or false"),
])
def test_wrong_types_are_clear_errors(values, match):
    with pytest.raises(CellError, match=match):
        make_cell({"method": "random-features", **values})


def test_wrong_typed_suite_value_and_set_are_clear_errors(tmp_path, capsys):
    with pytest.raises(SuiteError, match="image_size = 'big'"):
        _suite_cells(tmp_path, '[[grid]]\nmethod = "small_cnn"\nimage_size = "big"\n')
    path = tmp_path / "t.toml"
    path.write_text('[[grid]]\nmethod = "small_cnn"\n')
    with pytest.raises(SuiteError, match="image_size = 'abc'"):
        expand(apply_overrides(load_suite(path), parse_overrides(["image_size=abc"])))
    assert main(["run", "--suite", str(path), "--set", "image_size=abc", "--out", str(tmp_path / "o")]) == 2
    assert "gradfree: error:" in capsys.readouterr().err and not (tmp_path / "o").exists()


@pytest.mark.parametrize("name", ["../../x", "/abs/path", "a/b", ".."])
def test_a_suite_name_is_a_name_not_a_path(tmp_path, name):
    path = tmp_path / "s.toml"
    path.write_text(f'name = "{name}"\n[[grid]]\nmethod = "small_cnn"\n')
    with pytest.raises(SuiteError, match="is not a name"):
        load_suite(path)


@pytest.mark.parametrize("streaming", [False, None], ids=["materialised", "streamed"])
def test_infeasible_size_is_refused_with_the_estimate_and_the_largest_k(streaming):
    # Streamed (the default), the Gram stays (N, N) whatever k, but the training mean (k,) and the
    # weights (k, classes) do not: k = 10^12 once passed the plan and failed after extraction.
    import torch

    free = 16 << 30  # a fixed budget: what is free on the machine moves with whatever else runs
    values = {"method": "random-features", "backbone": "densenet169", "image_size": 224}
    if streaming is not None:
        values["streaming"] = streaming
    cell = make_cell({**values, "n_components": 10**12})
    with pytest.raises(CellError, match=r"needs about .* largest number of random features .* k = [\d,]+") as err:
        plan_memory(cell, torch.device("cpu"), free)
    k = int(str(err.value).split("k = ")[1].split(";")[0].replace(",", ""))
    plan_memory(make_cell({**values, "n_components": k}), torch.device("cpu"), free)  # the k it names fits
    with pytest.raises(CellError):
        plan_memory(make_cell({**values, "n_components": 2 * k}), torch.device("cpu"), free)  # and twice not


def test_full_cifar10_exact_kernel_is_refused_up_front_where_it_does_not_fit(tmp_path, capsys, monkeypatch):
    # 50,000 training images: one float32 (N, N) Gram (conjugate gradients, issue 22) is 10 GB, the
    # plan ~12 GiB: on a machine with 8 GiB free it is refused before any work, naming what fits.
    import projector.projections

    monkeypatch.setattr(projector.projections, "available_memory_bytes", lambda device: 8 << 30)
    code = main(["run", "--dataset", "cifar10", "--data-dir", str(tmp_path), "--train-per-class", "0",
                 "--test-per-class", "0", "--image-size", "32", "--projector", "kernel", "--device", "cpu",
                 "--out", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "needs about" in err and "GiB" in err and "--train-per-class" in err
    assert not (tmp_path / "o").exists()


def test_cell_shape_counts_an_image_folder(tmp_path):
    for split, n in (("train", 7), ("test", 3)):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                (tmp_path / split / cls / f"{i}.png").write_bytes(b"")
    cell = make_cell({"method": "small_cnn", "dataset": f"imagefolder:{tmp_path}", "train_per_class": 0,
                      "test_per_class": 0, "device": "cpu"})
    shape = cell_shape(cell)
    assert (shape.n_classes, shape.n_train + shape.n_val, shape.n_test) == (2, 14, 6)


def test_set_on_one_run_is_that_runs_setting_and_dry_run_runs_nothing(tmp_path, capsys):
    assert main(["run", "--set", "seed=1", "--out", str(tmp_path / "a"), "--dry-run"]) == 0
    assert make_cell({"seed": 1}).key() in capsys.readouterr().out
    assert main(["run", "--dry-run", "--out", str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "1 cells, 0 done before" in out and _cli_cell().key() in out
    assert not (tmp_path / "b").exists()


def test_each_trainer_keeps_its_recipes_batch_size_unless_one_is_asked_for():
    from benchmarks.harness.registry import make_config

    for name in REGISTRY:
        default = getattr(REGISTRY[name].Config(), "batch_size", "n/a")
        cell = _cli_cell("--method", name)
        config = make_config(REGISTRY[name], cell.option_dict())
        assert getattr(config, "batch_size", "n/a") == default, name  # WRN-22's 512, airbench's 1,024
        asked = _cli_cell("--method", name, "--batch-size", "64")
        assert asked.batch_size == 64
        if default != "n/a":
            assert make_config(REGISTRY[name], asked.option_dict()).batch_size == 64, name
