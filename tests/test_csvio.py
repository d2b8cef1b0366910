"""CSV in the forum user's layout: exact round trips, and clear errors naming file, line and column."""

import numpy as np
import pandas as pd
import pytest
import torch

from equations.base import DomainError
from equations.csvio import (
    CsvFormatError,
    read_dataset_csv,
    read_minmax_csv,
    read_samples_csv,
    write_dataset_csv,
    write_minmax_csv,
    write_samples_csv,
)
from equations.data import make_dataset
from equations.scaling import MinMax, Scaler

F64 = torch.float64
XN, FN = ("x1", "x2", "x3", "x4"), ("f1", "f2", "f3", "f4")
HEADER = "x1,x2,x3,x4,f1,f2,f3,f4\n"
ROW = "0.53,2.1,1.7,0.98,3.06,37.8,0.97,82.4\n"
MINMAX = "x1,3.0,0.1\nx2,2.5,0.3\nx3,2.9,0.2\nx4,3.0,0.1\nf1,9.7,0.05\nf2,54.1,1.9\nf3,3.4,-0.6\nf4,2034.8,2.4\n"


def _write(tmp_path, text, name="samples.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


# --- round trips ------------------------------------------------------------------------------------


def test_samples_round_trip_is_bit_exact(tmp_path):
    x = torch.rand(50, 4, dtype=F64) * 2.9 + 0.1
    y = torch.randn(50, 4, dtype=F64) * torch.tensor([1e-300, 1.0, 1e5, 1e300], dtype=F64)  # extreme exponents
    y[0, 1] = 0.1 + 0.2  # 0.30000000000000004: needs all 17 significant digits
    p = tmp_path / "s.csv"
    write_samples_csv(p, x, y, XN, FN)
    x2, y2 = read_samples_csv(p, XN, FN)
    assert torch.equal(x2, x) and torch.equal(y2, y)
    assert x2.dtype == F64
    df = pd.read_csv(p)  # the forum user's reader sees the same numbers (pandas < 3 may differ by an ulp)
    assert list(df.columns) == [*XN, *FN]
    np.testing.assert_allclose(df.to_numpy(), torch.cat([x, y], 1).numpy(), rtol=5e-16, atol=0)


def test_inputs_only_file_and_column_order(tmp_path):
    x = torch.rand(5, 4, dtype=F64)
    p = tmp_path / "olhs_input.csv"
    write_samples_csv(p, x, None, XN, FN)
    x2, y2 = read_samples_csv(p, XN, FN)
    assert y2 is None and torch.equal(x2, x)
    # columns are found by name, in any order
    p = _write(tmp_path, "f2,x1,f1,x2,x3,f4,x4,f3\n2,1,3,4,5,6,7,8\n")
    x, y = read_samples_csv(p, XN, FN)
    assert x.tolist() == [[1.0, 4.0, 5.0, 7.0]] and y.tolist() == [[3.0, 2.0, 8.0, 6.0]]


def test_pandas_written_file_reads(tmp_path):
    # the forum user's own files come from pandas: index=False, default float format
    df = pd.DataFrame(torch.rand(6, 8, dtype=F64).numpy(), columns=[*XN, *FN])
    p = tmp_path / "olhs_samples.csv"
    df.to_csv(p, index=False)
    x, y = read_samples_csv(p, XN, FN)
    assert (torch.cat([x, y], 1).numpy() == df.to_numpy()).all()


def test_dataset_round_trip_recomputes_the_jacobian(tmp_path, forum_eq):
    eq = forum_eq
    ds = make_dataset(eq, 12, "sobol", seed=0)
    p = tmp_path / "ds.csv"
    write_dataset_csv(p, ds)
    back = read_dataset_csv(p, eq)
    assert torch.equal(back.x, ds.x) and torch.equal(back.y, ds.y) and torch.equal(back.J, ds.J)


def test_minmax_round_trip_with_and_without_names(tmp_path):
    mm = MinMax(
        torch.rand(4, dtype=F64),
        torch.rand(4, dtype=F64) + 1,
        torch.randn(4, dtype=F64) - 5,
        torch.randn(4, dtype=F64) * 1e4 + 1e5,
    )
    for names_column in (True, False):
        p = tmp_path / f"mm{names_column}.csv"
        write_minmax_csv(p, mm, XN, FN, names_column=names_column)
        back = read_minmax_csv(p, XN, FN)
        for f in ("x_min", "x_max", "y_min", "y_max"):
            assert torch.equal(getattr(back, f), getattr(mm, f))
    assert pd.read_csv(tmp_path / "mmTrue.csv")["Max"].tolist() == torch.cat([mm.x_max, mm.y_max]).tolist()


def test_minmax_layouts(tmp_path):
    expected_hi = [3.0, 2.5, 2.9, 3.0, 9.7, 54.1, 3.4, 2034.8]
    # no name column: rows are inputs then outputs, in order
    body = "".join(",".join(line.split(",")[1:]) + "\n" for line in MINMAX.splitlines())
    mm = read_minmax_csv(_write(tmp_path, "Max,Min\n" + body), XN, FN)
    assert torch.cat([mm.x_max, mm.y_max]).tolist() == expected_hi
    # a saved pandas index (0..7) counts as no names
    indexed = "".join(f"{i},{line}\n" for i, line in enumerate(body.splitlines()))
    mm = read_minmax_csv(_write(tmp_path, ",Max,Min\n" + indexed), XN, FN)
    assert torch.cat([mm.x_max, mm.y_max]).tolist() == expected_hi
    # named rows are matched by name, in any order; Min before Max is fine too
    lines = MINMAX.splitlines()[::-1]
    swapped = "".join(f"{n},{lo},{hi}\n" for n, hi, lo in (line.split(",") for line in lines))
    mm = read_minmax_csv(_write(tmp_path, "name,Min,Max\n" + swapped), XN, FN)
    assert torch.cat([mm.x_max, mm.y_max]).tolist() == expected_hi


def test_from_minmax_reproduces_the_forum_mapping(tmp_path):
    (tmp_path / "olhs_samples_max_min.csv").write_text(
        ",Max,Min\nx1,3.0,0.1\nx2,2.5,0.3\nx3,2.9,0.2\nx4,3.0,0.1\n"
        "f1,9.7,0.05\nf2,54.1,1.9\nf3,3.4,-0.6\nf4,2034.8,2.4\n"
    )
    (tmp_path / "olhs_samples.csv").write_text(
        "x1,x2,x3,x4,f1,f2,f3,f4\n0.53,2.1,1.7,0.98,3.06,37.8,0.97,82.4\n2.9,0.3,0.2,3.0,5.0,11.9,1.4,1817.3\n"
    )
    names = (("x1", "x2", "x3", "x4"), ("f1", "f2", "f3", "f4"))
    mm = read_minmax_csv(tmp_path / "olhs_samples_max_min.csv", *names)
    x, y = read_samples_csv(tmp_path / "olhs_samples.csv", *names)
    s = Scaler.from_minmax(mm)
    # the forum: x_out = (x - x_min) / range_of_x, range = Max - Min, row by row from the file; bit for bit
    x_min = torch.tensor([0.1, 0.3, 0.2, 0.1], dtype=F64)
    x_rng = torch.tensor([3.0, 2.5, 2.9, 3.0], dtype=F64) - x_min
    y_min = torch.tensor([0.05, 1.9, -0.6, 2.4], dtype=F64)
    y_rng = torch.tensor([9.7, 54.1, 3.4, 2034.8], dtype=F64) - y_min
    assert torch.equal(s.transform_x(x), (x - x_min) / x_rng)
    assert torch.equal(s.transform_y(y), (y - y_min) / y_rng)
    yn = s.transform_y(y)
    assert torch.equal(s.inverse_y(yn), yn * y_rng + y_min)
    # the forum's de-normalization: J[m, n] / range_x[n] * range_y[m]
    J = torch.randn(2, 4, 4, dtype=F64)
    # to 1e-12 relative: both are float64 products differing only in rounding order (1-2 ulps)
    torch.testing.assert_close(s.jacobian_to_physical(J), J / x_rng * y_rng[:, None], rtol=1e-12, atol=0)


# --- bad input: every error names the file, line and column -----------------------------------------


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (HEADER + ROW + "0.5,1,1,1,nan,1,1,1\n", r"line 3 \(data row 1\), column 'f1': the value is 'nan'"),
        (HEADER + ROW + ROW + "0.5,1,1,-inf,1,1,1,1\n", r"line 4 \(data row 2\), column 'x4': the value is '-inf'"),
        (HEADER + "0.5,1,1,1,1,abc,1,1\n", r"line 2 \(data row 0\), column 'f2': 'abc' is not a number"),
        (HEADER + "0.5,1,1,1,1,1,,1\n", r"line 2 \(data row 0\), column 'f3': the cell is empty"),
        (HEADER + ROW + "0.5,1,1,1,1,1,1\n", r"line 3 \(data row 1\): 7 fields, but the header has 8 columns"),
        (HEADER + "0.5,1,1,1,1,1,1,1,9\n", r"line 2 \(data row 0\): 9 fields"),
        (HEADER, r"no data rows below the header"),
        ("", r"the file is empty"),
        ("x1,x2,x3,x4,f1,f2,f3,f4,g\n" + ROW[:-1] + ",1\n", r"extra \['g'\], missing \[\]. Expected \['x1'"),
        ("x1,x2,x3,f1,f2,f3,f4\n1,1,1,1,1,1,1\n", r"extra \[\], missing \['x4'\]"),
        ("x1,x2,x3,x4,f1,f2\n1,1,1,1,1,1\n", r"missing \['f3', 'f4'\]"),
        (",x1,x2,x3,x4\n0,1,1,1,1\n", r"extra \[''\].*saved DataFrame index: write with index=False"),
        ("x1,x2,x1,x3,x4\n1,1,1,1,1\n", r"duplicate column names \['x1'\]"),
    ],
    ids=[
        "nan",
        "inf",
        "text",
        "empty-cell",
        "short-row",
        "long-row",
        "no-rows",
        "empty-file",
        "extra-col",
        "missing-input",
        "missing-output",
        "index-col",
        "duplicate",
    ],
)
def test_bad_samples_file(tmp_path, text, match):
    p = _write(tmp_path, text)
    with pytest.raises(CsvFormatError, match=match) as info:
        read_samples_csv(p, XN, FN)
    assert str(p) in str(info.value)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (",Max,Min\n" + MINMAX.replace("f2,54.1,1.9", "f2,1.9,1.9"), r"line 7: variable 'f2' has Max 1.9 <= Min 1.9"),
        (",Max,Min\n" + MINMAX.replace("x3,2.9,0.2", "x3,0.1,0.2"), r"line 4: variable 'x3' has Max 0.1 <= Min 0.2"),
        (
            ",Max,Min\n" + MINMAX.replace("f4,2034.8", "f4,inf"),
            r"line 9 \(data row 7\), column 'Max': the value is 'inf'",
        ),
        (",Max,Min\n" + MINMAX.replace("x1,3.0,0.1", "x1,3.0,NaN"), r"line 2 \(data row 0\), column 'Min'"),
        (",Max,Min\n" + MINMAX.replace("f1,9.7", "f1,9,7"), r"line 6 \(data row 4\): 4 fields, but the header has 3"),
        (",Max,Min\n" + MINMAX.replace("x2,", "x9,"), r"line 3 \(data row 1\): unknown variable 'x9'"),
        (",Max,Min\n" + MINMAX.replace("x2,", "x1,"), r"line 3: variable 'x1' repeats line 2"),
        (",Max,Min\n" + MINMAX.split("f4")[0], r"7 rows, expected 8: one per variable, inputs \['x1'"),
        ("Max,Min\n3,0.1\n", r"1 rows, expected 8"),
        ("Max,Lo\n3,0.1\n", r"needs columns 'Max' and 'Min'"),
        ("Max,Min,name\n3,0.1,x1\n", r"unexpected columns \['name'\]; the layout is \[name,\] Max, Min"),
    ],
    ids=[
        "max-eq-min",
        "max-lt-min",
        "inf",
        "nan",
        "row-width",
        "unknown-name",
        "repeated-name",
        "missing-row",
        "row-count",
        "no-min-column",
        "name-not-first",
    ],
)
def test_bad_minmax_file(tmp_path, text, match):
    p = _write(tmp_path, text, "olhs_samples_max_min.csv")
    with pytest.raises(CsvFormatError, match=match) as info:
        read_minmax_csv(p, XN, FN)
    assert str(p) in str(info.value)


def test_data_outside_the_domain_names_row_and_input(tmp_path, forum_eq):
    p = _write(tmp_path, HEADER + ROW + ROW.replace("1.7", "-1.7"))
    with pytest.raises(DomainError, match=r"samples.csv.*row 1, input 'x3' = -1.7 lies outside"):
        read_dataset_csv(p, forum_eq)


def test_missing_file_and_non_finite_writes(tmp_path):
    with pytest.raises(FileNotFoundError, match="CSV file not found"):
        read_samples_csv(tmp_path / "nope.csv", XN, FN)
    x = torch.ones(3, 4, dtype=F64)
    x[1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"x row 1, column 'x3' is nan"):
        write_samples_csv(tmp_path / "w.csv", x, None, XN, FN)
    with pytest.raises(ValueError, match=r"shape \(B, 4\)"):
        write_samples_csv(tmp_path / "w.csv", torch.ones(3, 3), None, XN, FN)
