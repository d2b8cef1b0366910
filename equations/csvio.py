"""CSV in and out in the forum user's layout, so users can bring their own sampled data.

Samples (``olhs_samples.csv``): a header row naming the columns, then one row per sample::

    x1,x2,x3,x4,f1,f2,f3,f4
    0.53,2.1,1.7,0.98,3.06,37.8,0.97,82.4

Columns are found by name (input names, then output names, any order); a file with only the input
columns is an inputs-only file (y is None). Min/max (``olhs_samples_max_min.csv``): one row per
variable, the inputs first and then the outputs, columns ``Max`` and ``Min``, and optionally a first
column naming the variable::

    variable,Max,Min
    x1,3.0,0.1
    ...
    f4,2034.8,2.4

Numbers are parsed with Python's ``float`` (correctly rounded) and written with ``repr`` (the shortest
string that reads back to the same float64), so a write/read round trip is exact. Every problem raises
``CsvFormatError`` (a ValueError) naming the file, line, data row (0-based, below the header) and column.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from equations.base import EquationSet
from equations.data import Dataset
from equations.scaling import MinMax

PathLike = str | os.PathLike


class CsvFormatError(ValueError):
    """A CSV file does not have the expected layout or holds a bad value."""


# --- samples ----------------------------------------------------------------------------------------


def read_samples_csv(
    path: PathLike, input_names: Sequence[str], output_names: Sequence[str]
) -> tuple[Tensor, Tensor | None]:
    """Read x (B, n_in) and y (B, n_out) float64 tensors by column name; y is None for an inputs-only file."""
    header, rows, lines = _read_table(path)
    _check_sample_columns(path, header, list(input_names), list(output_names))
    has_y = output_names[0] in header if output_names else False
    wanted = list(input_names) + (list(output_names) if has_y else [])
    values = _parse(path, header, rows, lines, [header.index(n) for n in wanted])
    x = torch.from_numpy(values[:, : len(input_names)].copy())
    y = torch.from_numpy(values[:, len(input_names) :].copy()) if has_y else None
    return x, y


def write_samples_csv(
    path: PathLike,
    x: Tensor | np.ndarray,
    y: Tensor | np.ndarray | None,
    input_names: Sequence[str],
    output_names: Sequence[str],
) -> None:
    """Write columns input_names (then output_names, unless y is None), exactly (repr of float64)."""
    x = _matrix(x, "x", len(input_names), input_names)
    names = list(input_names)
    table = x
    if y is not None:
        y = _matrix(y, "y", len(output_names), output_names)
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"x has {x.shape[0]} rows but y has {y.shape[0]}")
        names += list(output_names)
        table = np.concatenate([x, y], axis=1)
    _write_table(path, names, [[repr(v) for v in row] for row in table.tolist()])


def read_dataset_csv(path: PathLike, eq: EquationSet) -> Dataset:
    """A Dataset from a samples file for ``eq``: domain-checked; y from the file or from ``eq``; exact J."""
    x, y = read_samples_csv(path, eq.input_names, eq.output_names)
    return Dataset.from_arrays(eq, x, y, what=f"{path} (data rows count from 0 below the header)")


def write_dataset_csv(path: PathLike, ds: Dataset) -> None:
    """Write a Dataset's x and y (not J) in the samples layout."""
    write_samples_csv(path, ds.x, ds.y, ds.input_names, ds.output_names)


# --- min / max --------------------------------------------------------------------------------------


def read_minmax_csv(path: PathLike, input_names: Sequence[str], output_names: Sequence[str]) -> MinMax:
    """Read a min/max file: one row per variable (inputs, then outputs), columns Max and Min.

    An optional first column names the variables; if present, rows are matched by those names (a saved
    integer index 0..N-1 counts as no names). Without it the rows must be in order and number n_in + n_out.
    """
    header, rows, lines = _read_table(path)
    expected = list(input_names) + list(output_names)
    lower = [h.lower() for h in header]
    if "max" not in lower or "min" not in lower:
        raise CsvFormatError(
            f"{path}: needs columns 'Max' and 'Min' (and optionally a first name column), found {header}"
        )
    i_max, i_min = lower.index("max"), lower.index("min")
    others = [j for j in range(len(header)) if j not in (i_max, i_min)]
    if len(others) > 1 or (others and others[0] != 0):
        raise CsvFormatError(
            f"{path}: unexpected columns {[header[j] for j in others]}; the layout is [name,] Max, Min "
            "with the optional name column first"
        )
    if len(rows) != len(expected):
        raise CsvFormatError(
            f"{path}: {len(rows)} rows, expected {len(expected)}: one per variable, inputs {list(input_names)} "
            f"first, then outputs {list(output_names)}"
        )
    if others and [r[0].strip() for r in rows] != [str(i) for i in range(len(rows))]:
        order = _match_names(path, [r[0].strip() for r in rows], lines, expected)
        rows, lines = [rows[i] for i in order], [lines[i] for i in order]
    values = _parse(path, header, rows, lines, [i_max, i_min])
    hi, lo = values[:, 0], values[:, 1]
    for r in range(len(rows)):
        if not hi[r] > lo[r]:
            raise CsvFormatError(
                f"{path}, line {lines[r]}: variable {expected[r]!r} has Max {float(hi[r])!r} <= Min {float(lo[r])!r}; "
                "a min/max row needs Max > Min (a constant variable cannot be min-max scaled)"
            )
    n = len(input_names)
    t = torch.from_numpy
    return MinMax(t(lo[:n].copy()), t(hi[:n].copy()), t(lo[n:].copy()), t(hi[n:].copy()))


def write_minmax_csv(
    path: PathLike, mm: MinMax, input_names: Sequence[str], output_names: Sequence[str], names_column: bool = True
) -> None:
    """Write the forum layout: one row per variable (inputs, then outputs), columns [variable,] Max, Min."""
    names = list(input_names) + list(output_names)
    hi = torch.cat([mm.x_max, mm.y_max]).tolist()
    lo = torch.cat([mm.x_min, mm.y_min]).tolist()
    if len(names) != len(hi):
        raise ValueError(f"{len(names)} names {names} for {len(hi)} min/max rows")
    rows = [[repr(h), repr(l)] for h, l in zip(hi, lo, strict=True)]
    if names_column:
        _write_table(path, ["variable", "Max", "Min"], [[n, *r] for n, r in zip(names, rows, strict=True)])
    else:
        _write_table(path, ["Max", "Min"], rows)


# --- helpers ----------------------------------------------------------------------------------------


def _read_table(path: PathLike) -> tuple[list[str], list[list[str]], list[int]]:
    """Header, data rows (blank lines skipped) and each row's line number; checks every row's width."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise CsvFormatError(f"{path}: the file is empty; expected a header row")
            header = [h.strip() for h in header]
            rows, lines = [], []
            for row in reader:
                if not any(c.strip() for c in row):
                    continue
                if len(row) != len(header):
                    raise CsvFormatError(
                        f"{path}, line {reader.line_num} (data row {len(rows)}): {len(row)} fields, but the header "
                        f"has {len(header)} columns {header}"
                    )
                rows.append(row)
                lines.append(reader.line_num)
    except FileNotFoundError:
        raise FileNotFoundError(f"CSV file not found: {path}") from None
    except csv.Error as e:
        raise CsvFormatError(f"{path}: not a readable CSV file ({e})") from None
    except UnicodeDecodeError as e:
        raise CsvFormatError(f"{path}: not a UTF-8 text file ({e})") from None
    dup = sorted({h for h in header if header.count(h) > 1})
    if dup:
        raise CsvFormatError(f"{path}: duplicate column names {dup} in the header {header}")
    if not rows:
        raise CsvFormatError(f"{path}: no data rows below the header {header}")
    return header, rows, lines


def _parse(path: PathLike, header: list[str], rows: list[list[str]], lines: list[int], cols: list[int]) -> np.ndarray:
    """The cells of ``cols`` as float64 (R, len(cols)); non-numeric, empty, NaN or inf cells are errors."""
    try:
        out = np.array([[float(row[c]) for c in cols] for row in rows], dtype=np.float64).reshape(len(rows), len(cols))
        suspects = [tuple(rk) for rk in np.argwhere(~np.isfinite(out))[:1]]
    except ValueError:  # some cell is not a number: find the first one
        out, suspects = None, ((r, k) for r in range(len(rows)) for k in range(len(cols)))
    for r, k in suspects:
        c = cols[k]
        cell, where = rows[r][c].strip(), f"{path}, line {lines[r]} (data row {r}), column {header[c]!r}"
        if not cell:
            raise CsvFormatError(f"{where}: the cell is empty (a missing value); fill it or drop the row")
        try:
            v = float(cell)
        except ValueError:
            raise CsvFormatError(f"{where}: {cell!r} is not a number") from None
        if not np.isfinite(v):
            raise CsvFormatError(f"{where}: the value is {cell!r}; every value must be finite")
    assert out is not None
    return out


def _check_sample_columns(path: PathLike, header: list[str], inputs: list[str], outputs: list[str]) -> None:
    expected = inputs + outputs
    extra = [h for h in header if h not in expected]
    missing = [n for n in inputs if n not in header]
    if any(n in header for n in outputs):  # outputs present: all of them, or none (inputs-only file)
        missing += [n for n in outputs if n not in header]
    if extra or missing:
        hint = ""
        if any(h == "" or h.startswith("Unnamed") for h in extra):
            hint = " (an unnamed first column is usually a saved DataFrame index: write with index=False)"
        raise CsvFormatError(
            f"{path}: columns do not match; extra {extra}, missing {missing}{hint}. Expected {expected}, "
            f"or only the inputs {inputs}; found {header}"
        )


def _match_names(path: PathLike, names: list[str], lines: list[int], expected: list[str]) -> list[int]:
    """Row order that puts the named rows in ``expected`` order; unknown, repeated or missing names are errors."""
    seen: dict[str, int] = {}
    for r, name in enumerate(names):
        if name not in expected:
            raise CsvFormatError(
                f"{path}, line {lines[r]} (data row {r}): unknown variable {name!r} in the name column; "
                f"expected the names {expected} (inputs, then outputs)"
            )
        if name in seen:
            raise CsvFormatError(f"{path}, line {lines[r]}: variable {name!r} repeats line {lines[seen[name]]}")
        seen[name] = r
    return [seen[n] for n in expected]  # all present: same count, no repeats, all known


def _matrix(a: Tensor | np.ndarray, what: str, width: int, names: Sequence[str]) -> np.ndarray:
    a = a.detach().cpu().to(torch.float64).numpy() if isinstance(a, Tensor) else np.asarray(a, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != width:
        raise ValueError(f"{what} must have shape (B, {width}) for columns {list(names)}, got {a.shape}")
    bad = ~np.isfinite(a)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ValueError(f"{what} row {r}, column {names[c]!r} is {a[r, c]}; only finite values are written")
    return a


def _write_table(path: PathLike, header: list[str], rows: list[list[str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
