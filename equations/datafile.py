"""Data-only sets: ``data:path/to/samples.csv``, simulation samples with optional measured derivatives.

The file is a samples CSV (``equations.csvio``'s layout and errors): a header, then one row per sample with the
inputs, the outputs and, optionally, one derivative column per output and input in the layout ``evaluate``
writes, ``d<output>_d<input>`` (``dA_domega``)::

    omega,zeta,A,phi,dA_domega,dA_dzeta,dphi_domega,dphi_dzeta
    0.83,0.21,2.6,0.61,4.9,-7.6,1.9,2.4

Which columns are inputs and which outputs comes from the derivative columns' names, or from a sidecar file
next to the CSV with the same stem (``samples.json``), which may also give the domain (default: the data's
bounding box), a description and the noise level of the values and derivatives::

    {"inputs": ["omega", "zeta"], "outputs": ["A", "phi"], "domain": {"omega": [0.2, 3.0], "zeta": [0.05, 0.5]},
     "description": "...", "noise": {"values": "0.5% relative", "derivatives": "1% relative"}}

A data set has no formula: its reference values and Jacobians are the file's, measured (or finite-differenced)
with whatever noise the file has; it has no Hessians. ``draw`` hands out a seeded subset of its rows, which the
harness then splits as it splits sampled sets. Without derivative columns the Jacobian is all NaN and
``has_jacobian`` is False: fit metrics work, Sobolev training and Jacobian metrics do not (and say so).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from equations import csvio
from equations.base import EquationSet
from equations.csvio import CsvFormatError

PREFIX = "data:"
SIDECAR_KEYS = ("inputs", "outputs", "domain", "description", "noise", "derivatives")
# the sidecar's "derivatives": how the file's derivative columns were obtained
DERIVATIVE_KINDS = ("exact", "measured", "finite_difference")


class DataOnly(RuntimeError):
    """Something needs a formula (values or derivatives off the data's samples) that a data set does not have."""


@dataclass(frozen=True)
class DataSet(EquationSet):
    """An EquationSet whose samples are a file's rows: x (R, n_in), y (R, n_out), J (R, n_out, n_in) or NaN."""

    samples: tuple[Tensor, Tensor, Tensor] | None = field(default=None, compare=False, repr=False)
    has_derivatives: bool = False
    noise: str = ""  # the sidecar's noise level as text ("" when the file gives none)
    path: str = ""
    derivatives: str = ""  # the sidecar's "derivatives" (DERIVATIVE_KINDS), "" when it does not say

    @property
    def n_rows(self) -> int:
        return 0 if self.samples is None else self.samples[0].shape[0]

    @property
    def has_jacobian(self) -> bool:
        return self.has_derivatives

    @property
    def has_hessian(self) -> bool:
        return False

    @property
    def reference(self) -> str:
        """What the fidelity numbers are measured against, in words (the report and the diagnosis print it)."""
        if not self.has_derivatives:
            what = "data without derivatives"
        elif self.derivatives == "exact":
            what = "data: the file's derivative columns (exact, per its sidecar)"
        else:
            how = {"finite_difference": "finite differences"}.get(self.derivatives, "measured or finite differences")
            what = f"data: the file's derivative columns ({how}: their own error is part of the comparison)"
        return f"{what}; noise {self.noise}" if self.noise else f"{what}; no noise level given"

    def draw(self, n: int, seed: int, what: str = "") -> tuple[Tensor, Tensor, Tensor]:
        """n rows (x, y, J) chosen by a seeded permutation, in file order; all rows when n equals their number."""
        if n > self.n_rows:
            raise ValueError(
                f"{self.name}: {what or 'the requested samples'} need {n} rows, but the file has {self.n_rows}; "
                "lower n_train / n_test (or val_fraction), or add rows to the file"
            )
        idx = np.sort(np.random.default_rng(seed).permutation(self.n_rows)[:n])
        idx_t = torch.from_numpy(idx)
        return tuple(t[idx_t] for t in self.samples)  # type: ignore[return-value,union-attr]

    def jacobian(self, x: Tensor) -> Tensor:
        raise DataOnly(f"{self.name} is data: it has no formula to differentiate at new points; use its rows (draw)")

    def hessian(self, x: Tensor) -> Tensor:
        raise DataOnly(
            f"{self.name} is data and has no second derivatives; Hessian metrics and training need a formula"
        )


def _no_formula(name: str):
    def fn(x: Tensor) -> Tensor:
        raise DataOnly(f"{name} is data: it has no formula to evaluate at new points; use its rows (draw)")

    return fn


def file_stamp(name: str) -> tuple:
    """(mtime_ns, size) of a ``data:`` name's file and sidecar, () for any other name: a cache key that changes when
    the file does."""
    if not name.startswith(PREFIX):
        return ()
    path = Path(name.removeprefix(PREFIX))
    return _stamp(path, sidecar_path(path))


def _stamp(*paths: Path) -> tuple:
    """(mtime_ns, size) per path, None for a missing one."""
    return tuple((p.stat().st_mtime_ns, p.stat().st_size) if p.is_file() else None for p in paths)


def sha256(name: str) -> str:
    """The content hash of a ``data:`` name's CSV (recorded in a run's config.json)."""
    return hashlib.sha256(Path(name.removeprefix(PREFIX)).read_bytes()).hexdigest()


def sidecar_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def load(path: str | Path, sidecar: str | Path | None = None, name: str | None = None) -> DataSet:
    """The data set in the CSV ``path`` (sidecar: default ``path`` with .json, used when it exists)."""
    path = Path(path).expanduser()
    if not path.is_file() and any(c in str(path) for c in "*?["):
        raise FileNotFoundError(
            f"data:{path}: wildcards are not expanded; a data: set is one CSV file. Name each file "
            "(--equations data:a.csv,data:b.csv) or concatenate them into one"
        )
    if not path.is_file():
        raise FileNotFoundError(
            f"data file {str(path)!r} not found (resolved to {str(path.resolve())!r}); data:<path> names a samples "
            "CSV with inputs, outputs and optional d<output>_d<input> columns"
        )
    side = Path(sidecar) if sidecar is not None else sidecar_path(path)
    return _load(str(path), str(side), name or f"{PREFIX}{path}", _stamp(path, side))


@functools.lru_cache(maxsize=16)
def _load(path: str, side: str, name: str, stamp: tuple) -> DataSet:
    """The file read once per (path, sidecar, name) and stamp: an edited file or sidecar is read again."""
    meta = _read_sidecar(side) if stamp[1] is not None else {}
    header, rows, lines = csvio._read_table(path)
    inputs, outputs, derivs = _columns(path, side, header, meta)
    cols = [header.index(c) for c in (*inputs, *outputs, *derivs)]
    values = torch.from_numpy(csvio._parse(path, header, rows, lines, cols))
    n_in, n_out, R = len(inputs), len(outputs), len(rows)
    x, y = values[:, :n_in].clone(), values[:, n_in : n_in + n_out].clone()
    nan = torch.full((R, n_out, n_in), np.nan, dtype=torch.float64)
    J = values[:, n_in + n_out :].reshape(R, n_out, n_in).clone() if derivs else nan
    _check_unique(path, x, lines)
    lower, upper = _domain(path, side, meta, inputs, x)
    doc = str(meta.get("description", "")) or f"Samples from {path}: {R} rows."
    eq = DataSet(
        name=name, fn=_no_formula(name), lower=lower, upper=upper, input_names=tuple(inputs),
        output_names=tuple(outputs), doc=f"{doc} Reference: data ({R} rows).", samples=(x, y, J),
        has_derivatives=bool(derivs), noise=_noise_text(side, meta.get("noise")), path=path,
        derivatives=str(meta.get("derivatives", "")),
    )  # fmt: skip
    eq.check_domain(x, f"{path} (data rows count from 0 below the header; the domain is {side}'s)")
    return eq


def _check_unique(path: str, x: Tensor, lines: list[int]) -> None:
    """Two rows with the same inputs would let a test point leak into training (a merge that doubled the file)."""
    _, first, counts = np.unique(x.numpy(), axis=0, return_index=True, return_counts=True)
    if (counts > 1).any():
        row = int(first[counts > 1].min())  # the earliest row that repeats
        dup = [r for r in range(len(x)) if r != row and torch.equal(x[r], x[row])]
        raise CsvFormatError(
            f"{path}, line {lines[row]} (data row {row}) and line {lines[dup[0]]} (data row {dup[0]}) have the same "
            f"inputs ({int((counts > 1).sum())} inputs repeat, {int((counts - 1).sum())} extra rows): a repeated "
            "sample would fall into both a training and a test split; drop the duplicate rows (or average them)"
        )


def _read_sidecar(side: str) -> dict:
    try:
        meta = json.loads(Path(side).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CsvFormatError(f"{side}, line {e.lineno}, column {e.colno}: not valid JSON ({e.msg})") from None
    if not isinstance(meta, Mapping):
        raise CsvFormatError(f"{side}: the sidecar must be a JSON object with keys {list(SIDECAR_KEYS)}")
    unknown = [k for k in meta if k not in SIDECAR_KEYS]
    if unknown:
        raise CsvFormatError(f"{side}: unknown keys {unknown}; a sidecar may have {list(SIDECAR_KEYS)}")
    if "derivatives" in meta and meta["derivatives"] not in DERIVATIVE_KINDS:
        got = meta["derivatives"]
        raise CsvFormatError(f"{side}: 'derivatives' must be one of {list(DERIVATIVE_KINDS)}, got {got!r}")
    for key in ("inputs", "outputs"):
        if key in meta and not (
            isinstance(meta[key], list) and meta[key] and all(isinstance(s, str) for s in meta[key])
        ):
            raise CsvFormatError(f"{side}: {key!r} must be a non-empty list of column names, got {meta[key]!r}")
    return dict(meta)


def _columns(path: str, side: str, header: list[str], meta: Mapping) -> tuple[list[str], list[str], list[str]]:
    """(inputs, outputs, derivative columns in output-major order) from the sidecar or the derivative names."""
    if "inputs" in meta or "outputs" in meta:
        if not ("inputs" in meta and "outputs" in meta):
            raise CsvFormatError(f"{side}: give both 'inputs' and 'outputs' (or neither, to read them from {path})")
        inputs, outputs = list(meta["inputs"]), list(meta["outputs"])
    else:
        slashed = [h for h in header if re.fullmatch(r"d[^/_]+/d[^/]+", h)]
        if slashed:
            fixes = ", ".join(f"{h!r} to {h.replace('/', '_')!r}" for h in slashed)
            raise CsvFormatError(
                f"{path}: derivative columns are named d<output>_d<input> (an underscore, not a slash): rename {fixes}"
            )
        plain = set(header)
        pairs = [(a, b) for a in header for b in header if a != b and f"d{a}_d{b}" in plain]
        outputs = list(dict.fromkeys(a for a, _ in pairs))
        inputs = list(dict.fromkeys(b for _, b in pairs))
        if not pairs:
            raise CsvFormatError(
                f"{path}: cannot tell inputs from outputs in the header {header}: there are no derivative columns "
                f"d<output>_d<input>. Name them in the sidecar {side}: "
                '{"inputs": ["x1", ...], "outputs": ["f1", ...]}'
            )
        inputs = [h for h in header if h in inputs]  # header order
        outputs = [h for h in header if h in outputs]
    both = sorted(set(inputs) & set(outputs))
    if both:
        raise CsvFormatError(
            f"{path}: columns {both} read as both inputs and outputs from the derivative names; name the inputs and "
            f"outputs in the sidecar {side}: "
            '{"inputs": [...], "outputs": [...]}'
        )
    wanted = [f"d{o}_d{i}" for o in outputs for i in inputs]
    present = [c for c in wanted if c in header]
    missing = [c for c in (*inputs, *outputs) if c not in header]
    if present and len(present) != len(wanted):
        missing += [c for c in wanted if c not in header]
    extra = [h for h in header if h not in (*inputs, *outputs, *wanted)]
    if missing or extra:
        raise CsvFormatError(
            f"{path}: columns do not match; missing {missing}, extra {extra}. Inputs {inputs}, outputs {outputs}, "
            f"and either every derivative column d<output>_d<input> ({len(wanted)}) or none; found {header}"
        )
    return inputs, outputs, present


def _domain(path: str, side: str, meta: Mapping, inputs: list[str], x: Tensor) -> tuple[tuple, tuple]:
    """The sidecar's domain per input, else the data's bounding box (a constant input is an error)."""
    given = meta.get("domain", {})
    if not isinstance(given, Mapping) or [k for k in given if k not in inputs]:
        raise CsvFormatError(f"{side}: 'domain' must map input names {inputs} to [lower, upper], got {given!r}")
    lo, hi = x.amin(0).tolist(), x.amax(0).tolist()
    for k, name in enumerate(inputs):
        if name in given:
            pair = given[name]
            numbers = isinstance(pair, list) and len(pair) == 2
            if not (numbers and all(isinstance(v, int | float) and not isinstance(v, bool) for v in pair)):
                raise CsvFormatError(f"{side}: domain[{name!r}] must be [lower, upper], got {pair!r}")
            if not float(pair[0]) < float(pair[1]):
                raise CsvFormatError(f"{side}: domain[{name!r}] = {pair!r} is empty; write it as [lower, upper]")
            lo[k], hi[k] = float(pair[0]), float(pair[1])
        if not lo[k] < hi[k]:
            raise CsvFormatError(
                f"{path}: input {name!r} is constant ({lo[k]!r}) in the data, so it has no bounding box; drop the "
                f"column or give its domain in {side}"
            )
    return tuple(lo), tuple(hi)


def _noise_text(side: str, noise) -> str:
    if noise is None:
        return ""
    if isinstance(noise, str):
        return noise
    if isinstance(noise, Mapping):
        return ", ".join(f"{k} {v}" for k, v in noise.items())
    raise CsvFormatError(f'{side}: \'noise\' must be text or an object like {{"values": "0.5% relative"}}')
