"""Issue 23, item 11: the published findings are read from committed files. Every interval the README and
results/README.md state is one a committed report states (``gradfree report results/NAME`` recomputes it),
every file they and docs/ link is there (figures are named by their content: a report made again with
another figure leaves a stale link otherwise), and every committed suite is whole."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", REPO / "results" / "README.md"]
INTERVAL = re.compile(r"\[[+-]\d+\.\d\d, [+-]\d+\.\d\d\]")
LINK = re.compile(r"\]\(([^)#\s]+)\)")


def _plain(text: str) -> str:
    return text.replace("−", "-").replace("\\", "")  # the READMEs' minus sign; the reports' Markdown escapes


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_interval_stated_is_a_committed_reports(doc):
    reports = "\n".join(_plain(p.read_text()) for p in (REPO / "results").glob("*/report/report.md"))
    stated = INTERVAL.findall(_plain(doc.read_text()))
    assert stated, f"{doc.name} states no interval: the pattern no longer matches how it writes them"
    assert [i for i in stated if i not in reports] == []


@pytest.mark.parametrize("doc", DOCS + sorted((REPO / "docs").glob("*.md")), ids=lambda p: str(p.relative_to(REPO)))
def test_every_file_linked_is_there(doc):
    links = [link for link in LINK.findall(doc.read_text()) if "://" not in link]
    assert links or doc not in DOCS  # (the two READMEs link their reports and figures)
    assert [link for link in links if not (doc.parent / link).exists()] == []


@pytest.mark.parametrize("folder", sorted(p.parent for p in (REPO / "results").glob("*/results.csv")),
                         ids=lambda p: p.name)
def test_every_committed_suite_is_whole(folder):
    # A published study is all of its suite: no cell its latest run planned lacks a finished row.
    import warnings

    from benchmarks.report.completeness import unfinished
    from benchmarks.report.tables import load_results, split_rows

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (an older file's unreadable values: the report tests see them)
        finals, _, failed = split_rows(load_results(folder))
    assert unfinished(folder, finals, failed) == []
