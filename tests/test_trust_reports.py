"""`gradfree report` never deletes, overwrites or half-replaces what it did not write (issue 21, items 2,
4, 15, 16 and 17), driven through the command on copies of the committed quick results: a user's files in
--out stay byte-identical, kill -9 and a full disk leave a whole report, file names and Markdown are safe
whatever the data's names, and a CSV with nothing to report is refused."""

from __future__ import annotations

import csv
import errno
import fcntl
import hashlib
import html
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from benchmarks.cli import main
from benchmarks.report.reportdir import MANIFEST

REPO = Path(__file__).resolve().parent.parent
QUICK = REPO / "results" / "quick"


def _rows(keep=lambda r: True) -> tuple[list[str], list[dict]]:
    with open(QUICK / "results.csv", newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames), [r for r in reader if keep(r)]


def _results(folder: Path, rows: list[dict] | None = None) -> Path:
    """A results folder: the quick results' rows (or ``rows``) and its runs' metadata."""
    folder.mkdir(parents=True)
    shutil.copytree(QUICK / "runs", folder / "runs")
    fields, quick = _rows()
    with open(folder / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(quick if rows is None else rows)
    return folder


def _png(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buf, format="PNG")
    return buf.getvalue()


def _user_files(folder: Path, old_name: str = "acc_vs_size.png") -> dict[str, bytes]:
    """What a user keeps in the folder they pass as --out, a figure under an old gradfree name
    (``old_name``, not linked from any report) included."""
    files = {"thesis_figure.png": _png((200, 10, 10)), old_name: _png((10, 200, 10)),
             "notes.txt": b"my notes\n", ".thesis.tmp": b"half a thesis"}
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return files


def _state(folder: Path) -> dict[str, str]:
    """Every file of ``folder``: name -> SHA-256 of its content."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _report(results: Path, out: Path) -> int:
    return main(["report", str(results), "--out", str(out)])


def _report_files(state: dict[str, str], user: dict[str, bytes]) -> dict[str, str]:
    """The files of a state that are the report's (not the user's, not the manifest)."""
    return {n: s for n, s in state.items() if n not in user and n != MANIFEST}


def _linked(md: str) -> list[str]:
    return re.findall(r"!\[[^\n]*\]\(([^()\s]+)\)", md)


@pytest.fixture(scope="module")
def two_results(tmp_path_factory):
    """(A, B): the quick results, and the same without the small CNN (other figures)."""
    root = tmp_path_factory.mktemp("two")
    return _results(root / "a"), _results(root / "b", _rows(lambda r: r["method"] != "small_cnn")[1])


# ----------------------------------------------------------------------------
# Item 2: only the figures this report wrote before are removed
# ----------------------------------------------------------------------------


def test_a_new_report_removes_only_the_figures_the_previous_one_wrote(two_results, tmp_path):
    a, b = two_results
    out = tmp_path / "out"
    user = _user_files(out)
    assert _report(a, out) == 0
    first = _report_files(_state(out), user)
    assert _report(b, out) == 0
    state = _state(out)
    for name, data in user.items():
        assert state[name] == _sha(data), name
    second = _report_files(state, user)
    md = (out / "report.md").read_text()
    assert set(second) == {"report.md", "report.html", *_linked(md)}  # no figure of the first report is left
    gone = set(first) - set(second)
    assert gone and all(n.endswith(".png") for n in gone)
    listed = json.loads((out / MANIFEST).read_text())["files"]
    assert {(f["name"], f["sha256"]) for f in listed} == set(second.items())


def _older_report(folder: Path) -> None:
    """A report as an older gradfree wrote it (before Session 9): no manifest, figures under fixed names
    linked from a report.md that opens with its title, and a report.html titled so."""
    folder.mkdir(parents=True)
    figures = ["acc_vs_size.png", "pareto_acc_vs_time.png", "time_breakdown.png", "time_to_accuracy.png"]
    for i, name in enumerate(figures):
        (folder / name).write_bytes(_png((i, 100, 200)))
    (folder / "report.md").write_text("# gradfree report: quick\n\nGenerated from `results/quick/results.csv`.\n\n"
                                      + "".join(f"![{n}]({n})\n\n" for n in figures))
    (folder / "report.html").write_text("<!DOCTYPE html>\n<html><head><title>gradfree report: quick</title></head>"
                                        + "".join(f'<img src="{n}">' for n in figures) + "</html>\n")


def test_a_report_an_older_gradfree_wrote_is_replaced_and_the_users_files_stay(tmp_path):
    results = tmp_path / "quick"
    shutil.copytree(QUICK, results, ignore=shutil.ignore_patterns("report"))
    _older_report(results / "report")
    old = _state(results / "report")
    user = _user_files(results / "report", old_name="by_cut.png")  # not a figure of that report
    assert main(["report", str(results)]) == 0
    state = _state(results / "report")
    for name, data in user.items():
        assert state[name] == _sha(data), name
    assert not set(old) & set(state) - {"report.md", "report.html"}  # its figures went, the user's stayed
    assert set(_report_files(state, user)) == {"report.md", "report.html",
                                               *_linked((results / "report" / "report.md").read_text())}


def test_a_file_put_in_place_of_a_figure_and_a_foreign_report_md_are_never_touched(two_results, tmp_path):
    a, b = two_results
    out = tmp_path / "out"
    assert _report(a, out) == 0
    replaced = next(n for n in _linked((out / "report.md").read_text()) if n.startswith("time_breakdown"))
    (out / replaced).write_bytes(_png((1, 2, 3)))  # the user's figure now, under gradfree's name
    assert _report(a, out) == 0  # the same report again: its figure goes beside the user's
    again = next(n for n in _linked((out / "report.md").read_text()) if n.startswith("time_breakdown"))
    assert again == replaced.replace(".png", "-2.png") and (out / again).is_file()
    assert _report(b, out) == 0
    assert (out / replaced).read_bytes() == _png((1, 2, 3)) and not (out / again).exists()

    mine = tmp_path / "thesis"
    (mine / "report.md").parent.mkdir()
    (mine / "report.md").write_text("# My thesis report\n")
    before = _state(mine)
    assert _report(a, mine) == 2
    assert _state(mine) == before


# ----------------------------------------------------------------------------
# Item 4: kill -9 and a full disk leave a whole report
# ----------------------------------------------------------------------------

#: Runs `gradfree report` with every change to the folder's entries observed (the folder's state before
#: each, in "trace" mode) or, in "kill" mode, a SIGKILL just before the k-th change.
HOOK = r"""
import hashlib, json, os, signal, sys
from pathlib import Path

folder, mode, k, log = Path(sys.argv[1]).resolve(), sys.argv[2], int(sys.argv[3]), sys.argv[4]
count = 0


def state():
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}


def change(op, path):
    global count
    count += 1
    with open(log, "a") as f:
        f.write(json.dumps({"op": op, "name": os.path.basename(os.fsdecode(path)),
                            "state": state() if mode == "trace" else None}) + "\n")
    if count == k:
        os.kill(os.getpid(), signal.SIGKILL)


def hook(name, paths):
    real = getattr(os, name)

    def wrapped(*args, **kwargs):
        for path in paths(*args, **kwargs):
            if isinstance(path, (str, bytes, os.PathLike)) and \
                    Path(os.fsdecode(path)).absolute().parent.resolve() == folder:
                change(name, path)
                break
        return real(*args, **kwargs)

    setattr(os, name, wrapped)


hook("open", lambda path, flags, *a, **kw: [path] if flags & os.O_CREAT else [])
hook("fsync", lambda fd: [os.readlink(f"/proc/self/fd/{fd}")])
for name in ("replace", "rename", "link"):
    hook(name, lambda src, dst, *a, **kw: [dst, src])
for name in ("unlink", "remove"):
    hook(name, lambda path, *a, **kw: [path])

from benchmarks.cli import main

sys.exit(main(sys.argv[5:]))
"""


def _hooked(tmp_path: Path, out: Path, results: Path, mode: str, k: int = 0) -> tuple[int, list[dict]]:
    script, log = tmp_path / "hook.py", tmp_path / f"{mode}{k}.jsonl"
    script.write_text(HOOK)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(script), str(out), mode, str(k), str(log),
                           "report", str(results), "--out", str(out)], env=env, capture_output=True, text=True)
    steps = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return proc.returncode, steps


def _assert_whole(state: dict[str, str], old: dict[str, str], new: dict[str, str], user: dict[str, bytes]):
    """The user's files as they were, and one whole report: report.md and every figure it links, the
    previous one or the new one; beside them at most the manifest and temporary files."""
    for name, data in user.items():
        assert state.get(name) == _sha(data), name
    report = old if state.get("report.md") == old["report.md"] else new
    assert state.get("report.md") == report["report.md"]
    assert state.get("report.html") in (old["report.html"], new["report.html"])
    for name, sha in report.items():  # report.md and its figures (report.html holds its own)
        if name != "report.html":
            assert state.get(name) == sha, f"{name} of the report on disk is missing or changed"
    others = set(state) - set(user) - set(old) - set(new) - {MANIFEST}
    assert all(re.fullmatch(r"\..+\.tmp", n) for n in others), others


@pytest.mark.slow
def test_kill_9_at_any_step_leaves_a_whole_report_and_the_next_one_completes(two_results, tmp_path):
    a, b = two_results
    reference = tmp_path / "reference"  # what report B writes into a folder holding the user's files
    user = _user_files(reference)
    assert _report(b, reference) == 0
    new = _report_files(_state(reference), user)
    previous = tmp_path / "previous"  # the folder as the kill finds it: the user's files and report A
    _user_files(previous)
    assert _report(a, previous) == 0
    old = _report_files(_state(previous), user)
    assert old != new and old["report.md"] != new["report.md"]

    traced = tmp_path / "traced"
    shutil.copytree(previous, traced)
    code, steps = _hooked(tmp_path, traced, b, "trace")
    for step in steps:  # the folder as a kill -9 before each change would leave it
        _assert_whole(step["state"], old, new, user)
    assert code == 0 and len(steps) > 10  # the hook saw the writes
    assert _state(traced) == _state(reference)

    def first(op: str, name=lambda n: True, nth: int = 1) -> int:
        hits = [i + 1 for i, s in enumerate(steps) if s["op"] == op and name(s["name"])]
        return hits[nth - 1] if len(hits) >= nth else hits[-1]

    kills = sorted({first("link", lambda n: n.endswith(".png"), nth=2),  # while the figures are written
                    first("fsync", lambda n: n.startswith(".report.html.")),  # new report.md and .html in temporaries
                    first("replace", lambda n: n == "report.html"),  # report.md renamed, report.html not yet
                    first("unlink", lambda n: n in old)})  # while the previous figures are deleted
    for k in kills:
        out = tmp_path / f"killed{k}"
        shutil.copytree(previous, out)
        code, _ = _hooked(tmp_path, out, b, "kill", k)
        assert code == -9, f"not killed at step {k}"
        _assert_whole(_state(out), old, new, user)
        assert _report(b, out) == 0  # the next report finishes the job: no figure or temporary file left over
        assert _state(out) == _state(reference), k


def test_a_full_disk_leaves_the_previous_report_whole_and_says_what_to_do(two_results, tmp_path, monkeypatch,
                                                                         capsys):
    a, b = two_results
    out = tmp_path / "out"
    user = _user_files(out)
    assert _report(a, out) == 0
    before = _state(out)
    free = [150_000]  # bytes: the new report's manifest and two figures fit, not all of it
    real_write, real_unlink = os.write, os.unlink

    def here(path) -> bool:
        return Path(os.fsdecode(path)).absolute().parent.resolve() == out.resolve()

    def write(fd, data):
        if here(os.readlink(f"/proc/self/fd/{fd}")):
            if len(data) > free[0]:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            free[0] -= len(data)
        return real_write(fd, data)

    def unlink(path, *args, **kwargs):
        if here(path) and os.path.isfile(path):
            free[0] += os.path.getsize(path)
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "write", write)
    monkeypatch.setattr(os, "unlink", unlink)
    capsys.readouterr()
    assert _report(b, out) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "the disk is full" in err and "previous report there is unchanged" in err
    assert "free some space" in err and "[Errno" not in err
    assert _state(out) == before
    monkeypatch.undo()
    assert _report(b, out) == 0
    assert all(_state(out)[name] == _sha(data) for name, data in user.items())


def test_two_reports_into_one_folder_at_once_are_refused(two_results, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    fd = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # what a report under way holds
        assert _report(two_results[0], out) == 2
    finally:
        os.close(fd)
    assert "another gradfree report is writing into" in capsys.readouterr().err and not list(out.iterdir())


# ----------------------------------------------------------------------------
# Items 16 and 17: the data's names in file names and in Markdown
# ----------------------------------------------------------------------------


def _renamed(changes: list[dict]) -> list[dict]:
    """The quick rows once per change (keys made distinct), each with the change applied."""
    _, rows = _rows()
    return [{**r, **change, "cell_key": f"{i}{r['cell_key']}"} for i, change in enumerate(changes) for r in rows]


def test_training_sizes_of_image_folders_get_safe_distinct_figure_names(tmp_path):
    one, other = "imagefolder:/data/my images/cifar", "imagefolder:/data/my-images/cifar"  # one slug
    results = _results(tmp_path / "r", _renamed([{"dataset": one, "n_train": "18"},
                                                 {"dataset": one, "n_train": "36"},
                                                 {"dataset": other, "n_train": "18"}]))
    out = tmp_path / "out"
    assert _report(results, out) == 0
    md = (out / "report.md").read_text()
    linked = _linked(md)
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+\.[0-9a-f]{8}\.png", n) and (out / n).is_file() for n in linked)
    pareto = sorted(n for n in linked if n.startswith("pareto_acc_vs_time__"))
    assert len(pareto) == 3 and len({n.split(".")[0] for n in pareto}) == 3
    for dataset, n in ((one, 18), (one, 36), (other, 18)):
        assert f"({dataset}, {n} training images)" in md


def test_markdown_shows_names_from_the_data_literally(tmp_path):
    markdown_it = pytest.importorskip("markdown_it")
    hostile = {"dataset": "imagefolder:/tmp/<img src=x onerror=alert(1)>",
               "suite": "[a](javascript:alert(2))", "cut": "features.14 *x* `y` $z$ ~~s~~"}
    error = "class <script>alert(3)</script> has [b](javascript:alert(4)) | 3 images <b>"
    rows = _renamed([hostile])
    rows.append({**rows[-1], "cell_key": "f" * 16, "row_type": "failed", "status": "failed", "error": error})
    out = tmp_path / "out"
    assert _report(_results(tmp_path / "r", rows), out) == 0
    md = (out / "report.md").read_text()
    assert "<img src=x" not in md and "<script>" not in md and not re.search(r"(?<!\\)\]\(javascript:", md)
    rendered = markdown_it.MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(md)
    assert "<script" not in rendered and "href=" not in rendered and "<del>" not in rendered
    assert set(re.findall(r'<img src="([^"]*)"', rendered)) == set(_linked(md))  # the figures only
    text = html.unescape(re.sub(r"<[^>]+>", "", rendered))
    for value in (*hostile.values(), error):
        assert value in text, value  # shown as it is, not as markup


# ----------------------------------------------------------------------------
# Item 15: nothing to report is an error, before anything is written
# ----------------------------------------------------------------------------


def _perf_csv(path: Path) -> str:
    shutil.copyfile(REPO / "results" / "perf" / "perf.csv", path)  # another gradfree CSV
    return "not a gradfree results file: its columns are section, case"


def _empty(path: Path) -> str:
    path.write_text("")
    return "not a gradfree results file: it is empty"


def _header_only(path: Path) -> str:
    path.write_text(",".join(_rows()[0]) + "\n")
    return "nothing to report"


def _failed_only(path: Path) -> str:
    fields, rows = _rows(lambda r: r["row_type"] == "failed")
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return f"no finished cell ({len(rows)} failed"


@pytest.mark.parametrize("make", [_perf_csv, _empty, _header_only, _failed_only],
                         ids=["perf-csv", "empty", "header-only", "failed-only"])
def test_a_csv_with_nothing_to_report_is_refused_before_anything_is_written(tmp_path, capsys, make):
    path = tmp_path / "some.csv"
    expected = make(path)
    assert _report(path, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert str(path) in err and expected in err
    assert not (tmp_path / "out").exists()
