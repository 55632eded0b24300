"""Strict reading of a results CSV: every record with its byte range, every malformed stretch apart.

:func:`scan_rows` never glues two rows together: a record is good only when it ends with a
newline, its quoting is strict, it has as many fields as the header and its ``row_type`` and
``status`` are ones gradfree writes; after a bad record it resynchronises on the next line.
The results file (:mod:`benchmarks.harness.results`) reads, repairs and checks its rewrites with it.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field

ROW_TYPES = ("final", "epoch", "failed")
STATUSES = ("ok", "failed")


@dataclass
class Scan:
    """A results file parsed with the byte range of each row and of each malformed stretch."""

    header: list[str] | None  # None: not even one complete line
    body_start: int  # the byte after the header line
    rows: list[tuple[int, int, dict[str, str]]] = field(default_factory=list)  # (start, end, row)
    bad: list[tuple[int, int]] = field(default_factory=list)  # (start, end), merged, in file order


def scan_rows(data: bytes) -> Scan:
    """Parse ``data`` strictly, one record at a time, resynchronising on the next line after a bad one.

    A record is good when it ends with a newline, its quoting is strict (an
    unterminated quote or text after a closing quote is an error, so an open
    quote cannot silently swallow the rows after it), it has as many fields as
    the header and its ``row_type``/``status`` are ones gradfree writes.
    """
    first = data.find(b"\n")
    if first < 0:
        return Scan(None, 0, bad=[(0, len(data))] if data else [])
    try:
        header = next(csv.reader([data[:first + 1].decode()], strict=True))
    except (csv.Error, UnicodeDecodeError, StopIteration):
        header = []
    scan = Scan(header, first + 1)
    starts, ends = [], []
    pos = first + 1
    while pos < len(data):
        nl = data.find(b"\n", pos)
        end = len(data) if nl < 0 else nl + 1
        starts.append(pos)
        ends.append(end)
        pos = end
    i = 0
    while i < len(starts):
        j, row = _parse_record(data, starts, ends, i, header)
        if row is not None:
            scan.rows.append((starts[i], ends[j - 1], row))
            i = j
            continue
        if scan.bad and scan.bad[-1][1] == starts[i]:
            scan.bad[-1] = (scan.bad[-1][0], ends[i])
        else:
            scan.bad.append((starts[i], ends[i]))
        i += 1
    return scan


def _parse_record(data: bytes, starts: list[int], ends: list[int], i: int,
                  header: list[str]) -> tuple[int, dict[str, str] | None]:
    consumed = i

    def lines():
        nonlocal consumed
        for k in range(i, len(starts)):
            consumed = k + 1
            yield data[starts[k]:ends[k]].decode()

    try:
        fields = next(csv.reader(lines(), strict=True))
    except (csv.Error, UnicodeDecodeError, StopIteration):
        return i + 1, None
    if data[ends[consumed - 1] - 1:ends[consumed - 1]] != b"\n" or len(fields) != len(header):
        return i + 1, None
    row = dict(zip(header, fields))
    if row.get("row_type", "") not in (*ROW_TYPES, "") or row.get("status", "") not in (*STATUSES, ""):
        return i + 1, None
    return consumed, row


def describe_bad(scan: Scan) -> str:
    """``N malformed byte(s) (bytes S-E, ...)``: how many bytes ``scan`` found malformed, the first five
    stretches named."""
    where = ", ".join(f"bytes {s}-{e}" for s, e in scan.bad[:5]) + (" ..." if len(scan.bad) > 5 else "")
    return f"{sum(e - s for s, e in scan.bad)} malformed byte(s) ({where})"
