"""Issue 23, item 4 (report): the learning curve of each side's validation-chosen configuration and the
crossover, from the answer's verdicts (so after Holm's correction); drawn and tabled from the committed
EfficientNet-Lite0 curve (three sizes of CIFAR-10, both sides, kept predictions)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks.report.answer import Answer, Entry, answer
from benchmarks.report.build import build_report
from benchmarks.report.curve import configurations_by_size, crossovers, curve_table, every_configuration, figure
from benchmarks.report.tables import load_results, split_rows
from benchmarks.report.verdict import BP_AHEAD, GF_AHEAD, TIE, Comparison, accuracy_variance

REPO = Path(__file__).resolve().parent.parent
EFFNET = REPO / "results" / "curve-effnet-cifar10"


def _entry(n_train: int, diff: float, low: float, high: float, p_holm: float, dataset: str = "cifar10") -> Entry:
    e = Entry({"dataset": dataset, "n_train": n_train, "n_val": 5000, "n_test": 10000}, None, None, None)
    e.comparison = Comparison(diff, low, high, p_holm, "paired", 10000, p_holm=p_holm)
    return e


WIN_GF, WIN_BP, TIED = (0.03, 0.02, 0.04, 1e-4), (-0.03, -0.04, -0.02, 1e-4), (0.005, -0.005, 0.015, 0.3)


def _curve(*verdicts) -> Answer:
    return Answer([_entry(n, *v) for n, v in zip([500, 1500, 5000, 15000, 45000], verdicts)])


def test_the_crossover_lies_between_the_last_lead_of_one_side_and_the_first_of_the_other():
    (c,) = crossovers(_curve(WIN_GF, WIN_GF, TIED, WIN_BP, WIN_BP))
    assert (c.first, c.then, c.low, c.high) == (GF_AHEAD, BP_AHEAD, 1500, 15000)
    assert "crossover between 1,500 and 15,000 training images" in c.line()


def test_a_tie_is_no_lead_and_one_side_throughout_is_no_crossover():
    (c,) = crossovers(_curve(WIN_GF, TIED, TIED, WIN_GF, TIED))
    assert c.low is None and c.high is None
    assert ("none detected in the range (500–45,000 training images; 500: gradient-free ahead; 1,500: tie; "
            "5,000: tie; 15,000: gradient-free ahead; 45,000: tie)") in c.line()
    (c,) = crossovers(_curve(TIED, TIED, TIED, TIED, TIED))
    assert "none detected" in c.line() and "gradient-free ahead" not in c.line()


def test_a_lead_that_comes_back_is_said():
    (c,) = crossovers(_curve(WIN_BP, WIN_GF, WIN_GF, WIN_BP, TIED))
    assert (c.first, c.low, c.high) == (BP_AHEAD, 500, 1500)
    assert "but backprop ahead again at 15,000" in c.line()


def test_the_verdicts_come_from_holm_not_the_raw_p():
    """A difference whose interval excludes 0 but whose Holm p does not pass is a tie, hence no lead."""
    not_after_holm = (0.03, 0.01, 0.05, 0.2)
    (c,) = crossovers(_curve(WIN_GF, not_after_holm, WIN_BP))
    assert c.verdicts == [GF_AHEAD, TIE, BP_AHEAD]
    assert (c.low, c.high) == (500, 5000)


def test_one_size_or_one_dataset_per_size_makes_no_curve():
    assert crossovers(Answer([_entry(500, *WIN_GF)])) == []
    two = Answer([_entry(500, *WIN_GF, dataset="a"), _entry(1500, *WIN_BP, dataset="b")])
    assert crossovers(two) == []
    assert figure(pd.DataFrame(), "a").png is None


@pytest.fixture(scope="module")
def effnet():
    finals, _, _ = split_rows(load_results(EFFNET))
    return finals, answer(finals, EFFNET)


def test_the_committed_curve_has_both_sides_at_each_size_chosen_on_validation(effnet):
    finals, found = effnet
    table = curve_table(found, finals)
    assert sorted(table["n_train"].unique()) == [500, 1500, 5000]
    assert set(table["side"]) == {"gradient-free", "backprop"} and len(table) == 6
    for row in table.itertuples():
        mine = finals[(finals["n_train"] == row.n_train) & (finals["dataset"] == row.dataset)]
        side = mine[mine["method"] != "finetune"] if row.side == "gradient-free" else mine[mine["method"] == "finetune"]
        best = side.groupby("config")["val_acc"].mean()
        assert row.configuration.endswith(best.idxmax()) or best.idxmax() in row.configuration
        assert row.band_low < row.test_acc < row.band_high
        assert row.train_s > 0 and row.model_mb > 0
        # The test scoring's time per image; blank only for trainers' rows from before they timed it apart.
        chosen = side[side["config"] == best.idxmax()]
        per_image = 1e3 * chosen["predict_s"].mean() / chosen["n_test"].max()
        assert row.inference_ms_per_image == pytest.approx(per_image, nan_ok=True)
        assert row.inference_ms_per_image > 0 or (row.side == "backprop" and chosen["predict_s"].isna().all())
    (c,) = crossovers(found)
    assert c.sizes == [500, 1500, 5000] and c.verdicts == [e.verdict() for e in found.entries if e.cut is None]


def test_the_report_draws_the_curve_and_says_the_crossover(effnet, tmp_path):
    md = build_report(EFFNET, tmp_path / "report").read_text()
    assert "## Learning curve" in md and "cifar10: crossover" in md
    (png,) = (tmp_path / "report").glob("learning_curve__cifar10.*.png")
    assert png.stat().st_size > 10_000 and f"]({png.name})" in md
    (every,) = (tmp_path / "report").glob("every_configuration__cifar10.*.png")  # right after it
    assert md.index(f"]({every.name})") > md.index(f"]({png.name})")
    # its table as a reader wants it: rounded, the band one interval (no 0.5115999999999999)
    table = md.split("## Learning curve")[1].split("## Plots")[0]
    assert "| 95% band |" in table and "\\[0.6707, 0.6926\\]" in table
    assert not re.search(r"\d\.\d{6}", table)


def test_every_configuration_is_drawn_at_each_size_with_its_band(effnet):
    finals, found = effnet
    drawn = configurations_by_size(finals, "cifar10")
    assert len(drawn) == len(finals.groupby(["method", "config", "n_train"]))
    assert drawn.groupby("series")["n_train"].nunique().max() == 3  # a configuration's line through the sizes
    for row in drawn.itertuples():
        seeds = finals[(finals["config"] == row.config) & (finals["n_train"] == row.n_train)]["test_acc"]
        mean, var = accuracy_variance(seeds, int(row.n_test))
        assert row.test_acc == pytest.approx(mean) and row.half == pytest.approx(1.959964 * np.sqrt(var), rel=1e-4)
    assert configurations_by_size(finals, "no-such-data").empty
    fig = every_configuration(finals, curve_table(found, finals), "cifar10")
    assert fig.png is not None and "nothing is chosen" in fig.caption


def test_compare_says_the_crossover_after_the_answer_for_reference(effnet):
    from benchmarks.report.gate import _say_answers

    said: list[str] = []
    _say_answers([("A", EFFNET, effnet[0])], said.append)
    (c,) = crossovers(effnet[1])
    lines = "\n".join(said).splitlines()
    assert f"  {c.line()}" in lines and lines.index(f"  {c.line()}") > max(
        i for i, line in enumerate(lines) if "each chosen on validation" in line)
