"""Reading the box-drawn tables that npu-smi, mx-smi and ht-smi print, by their headers.

The tools draw tables with ``|`` between cells and rule lines (``+----+``, ``+====+``,
``|----+----|``) between blocks of rows. Versions move columns around (mx-smi 2.3.1 splits the
old three columns into four; npu-smi on Atlas A3 adds a ``Phy-ID`` label; old npu-smi drops the
hugepages column), so nothing here knows a position: :func:`blocks` cuts the text into blocks of
rows, and :func:`cell_fields` pairs the labels of a header cell with the values of the same cell
in a data row. Within a cell, values are single tokens except ``used / total`` pairs, which stay
together, and one *rest* label (a device name, which may contain spaces) that takes whatever the
labels to its left and right leave over.

Purely computational, no side effects.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from tokenfab.errors import PermanentError

Row = tuple[str, ...]
_RULE = re.compile(r"^[+|][-=+|]*[+|]$")
_TOKEN = re.compile(r"\S+\s*/\s*\S+|\S+")


class CellMismatch(PermanentError, ValueError):
    """A data cell does not fit the labels of its header cell."""


@dataclass(frozen=True, slots=True)
class Block:
    """Rows between two rule lines; ``after_gap`` when text or a blank line came before it."""

    rows: tuple[Row, ...]
    after_gap: bool


def cells(line: str) -> Row:
    """``'| a | b  c |'`` -> ``('a', 'b  c')``."""
    body = line.strip()
    return (
        tuple(part.strip() for part in body[1:-1].split("|")) if body.endswith("|") else (body[1:].strip(),)
    )


def blocks(text: str) -> list[Block]:
    """Cut the text into blocks of table rows. Rule lines end a block; blank or non-table lines
    end a block and mark the next one as coming after a gap (a new table)."""
    out: list[Block] = []
    current: list[Row] = []
    gap = True
    pending_gap = True
    for raw in text.splitlines():
        line = raw.strip()
        is_rule = bool(line) and _RULE.match(line) is not None and ("-" in line or "=" in line)
        if line.startswith("|") and not is_rule:
            if not current:
                gap, pending_gap = pending_gap, False
            current.append(cells(line))
            continue
        if current:
            out.append(Block(tuple(current), gap))
            current = []
        if not is_rule:
            pending_gap = True
    if current:
        out.append(Block(tuple(current), gap))
    return out


def tokens(value: str) -> list[str]:
    """Whitespace tokens, keeping ``used / total`` pairs ('3416 / 65536', '97W / NA') whole."""
    return _TOKEN.findall(value)


def labels(header_cell: str) -> list[str]:
    return header_cell.split()


def cell_fields(header_cell: str, value: str, *, rest: Iterable[str] = ()) -> dict[str, str]:
    """Pair a header cell's labels with a data cell's values. Raises CellMismatch when they
    cannot be paired (the caller then reports that device as unreadable, not the node)."""
    names = labels(header_cell)
    if not names:
        return {}
    if len(names) == 1:
        return {names[0]: value.strip()}
    values = tokens(value)
    if len(values) == len(names):
        return dict(zip(names, values, strict=True))
    rest_names = [n for n in names if n in set(rest)]
    if len(values) > len(names) and len(rest_names) == 1:
        at = names.index(rest_names[0])
        left, right = names[:at], names[at + 1 :]
        out = dict(zip(left, values[: len(left)], strict=True))
        out.update(zip(right, values[len(values) - len(right) :], strict=True))
        out[rest_names[0]] = " ".join(values[len(left) : len(values) - len(right)])
        return out
    raise CellMismatch(f"cell {value.strip()!r} does not fit header {header_cell.strip()!r}")


def row_fields(header: Row, row: Row, *, rest: Iterable[str] = ()) -> tuple[dict[str, str], list[str]]:
    """Fields of a whole row by its header row; cells that do not fit are reported, not raised."""
    fields: dict[str, str] = {}
    problems: list[str] = []
    if len(row) != len(header):
        problems.append(f"{len(row)} cells where the header has {len(header)}")
    for head, value in zip(header, row, strict=False):
        try:
            fields.update(cell_fields(head, value, rest=rest))
        except CellMismatch as exc:
            problems.append(str(exc))
    return fields, problems


_PAIR = re.compile(r"^\s*(\d+)\s*/\s*(\d+)")


def used_total(text: str) -> tuple[int, int] | None:
    """``'3416 / 65536'`` or ``'826/65536 MiB'`` -> ``(3416, 65536)``; None when not a pair."""
    match = _PAIR.match(text)
    return (int(match.group(1)), int(match.group(2))) if match else None
