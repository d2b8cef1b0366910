"""One look for every figure: family colours, variant markers, axis labels, and the seaborn theme.

Colours follow the architecture family through every figure of a report (and across reports): known
families have fixed colours; a new family gets the next unused colour in sorted order.
"""

from __future__ import annotations

import json
import math
import zlib

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter, NullLocator

from bench.report.stats import aggregate

_COLORBLIND = sns.color_palette("colorblind", 10).as_hex()
FAMILY_COLORS = {  # fixed: the same family has the same colour in every report
    "mlp": _COLORBLIND[0],
    "fastkan": _COLORBLIND[1],
    "efficient_kan": _COLORBLIND[2],
    "chebykan": _COLORBLIND[3],
    "pykan": _COLORBLIND[4],
    "kan": _COLORBLIND[5],
    "jenn": _COLORBLIND[6],  # the JENN peer
    "kriging": _COLORBLIND[7],  # the SMT peers (krg, kpls, gekpls)
}
_SPARE_COLORS = [*_COLORBLIND[8:], *sns.color_palette("dark", 10).as_hex()]
VARIANT_MARKERS = {"value": "o", "sobolev": "s", "hessian": "^"}
_SPARE_MARKERS = ["D", "v", "P", "X", "<"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "p", "*", "h", "d", "8"]  # one per model where needed
DASHES = ["", (4, 1.5), (1, 1), (3, 1, 1, 1), (5, 1, 1, 1, 1, 1)]  # line styles of a second grouping

# Axis labels, with units, shared by every figure.
JAC_ERR = "Jacobian error\n(RMS over test points)"
VALUE_ERR = "1 - R² (min over outputs, test)"
JAC_PER_S = "Jacobians / s"
BATCH = "batch size (Jacobians per call)"
ENTRY_ERR = "Jacobian entry nRMSE (test)"
HESS_ERR = "Hessian error\n(RMS over test points)"
HESS_ENTRY_ERR = "Hessian entry nRMSE (test)"
EDGE = "distance to the domain boundary\n(normalized, upper edge of the bin)"
BETA = "β (value-loss weight; 1 = value only)"
N_TRAIN = "training-set size (samples)"


def family_order(families) -> list[str]:
    """Known families in their fixed order, then any others alphabetically."""
    present = set(families)
    return [f for f in FAMILY_COLORS if f in present] + sorted(present - set(FAMILY_COLORS))


def family_palette(families) -> dict[str, str]:
    """A colour for each family: the fixed ones, then spare colours in sorted order of the rest."""
    palette = {f: FAMILY_COLORS[f] for f in families if f in FAMILY_COLORS}
    others = sorted(set(families) - set(FAMILY_COLORS))
    palette.update({f: _SPARE_COLORS[i % len(_SPARE_COLORS)] for i, f in enumerate(others)})
    return palette


def variant_markers(variants) -> dict[str, str]:
    variants = set(variants)
    known = {v: m for v, m in VARIANT_MARKERS.items() if v in variants}  # value first, then sobolev
    others = sorted(variants - set(VARIANT_MARKERS))
    known.update({v: _SPARE_MARKERS[i % len(_SPARE_MARKERS)] for i, v in enumerate(others)})
    return known


# Every engine has its own colour AND marker, fixed here, so that it looks the same in every figure and report
# (and stays told apart in grey print or by a colour-blind reader). Compiled engines take a dark twin of their
# eager engine's colour with another marker; the forward pass (a yardstick, not a Jacobian) is grey.
ENGINE_STYLES = {  # engine -> (colour, marker); Okabe-Ito hues first, compiled engines darker twins
    "loop": ("#000000", "o"),
    "functional_vectorized": ("#E69F00", "s"),
    "functional_forward": ("#8C510A", "D"),
    "batch_sum_reverse": ("#6A3D9A", "v"),
    "vmap_jacrev": ("#D55E00", "^"),
    "vmap_jacfwd": ("#009E73", "<"),
    "forward_tangents": ("#0072B2", ">"),
    "compiled_vmap_jacrev": ("#8B2500", "P"),
    "compiled_vmap_jacfwd": ("#00563B", "X"),
    "compiled_forward_tangents": ("#003F66", "*"),
    "triton_fused_mlp": ("#CC79A7", "h"),
    "jax_jit_vmap_jacfwd": ("#56B4E9", "p"),
    "forward": ("#8C8C8C", "x"),
}
_SPARE_ENGINE_MARKERS = ["d", "8", "H", "1", "2", "3", "4"]


def engine_style(engine: str) -> tuple[str, str]:
    """(colour, marker) of an engine: the fixed one, else one picked by a hash of its name (the same in every
    figure and every run, whatever other engines a table holds)."""
    if engine in ENGINE_STYLES:
        return ENGINE_STYLES[engine]
    h = zlib.crc32(engine.encode())
    return _SPARE_COLORS[h % len(_SPARE_COLORS)], _SPARE_ENGINE_MARKERS[(h >> 8) % len(_SPARE_ENGINE_MARKERS)]


def config_label(config: str, limit: int = 30) -> str:
    """A throughput configuration (results.model_config_id, ``mlp_tanh 4->4 {"width": 61}``) for a title:
    ``mlp_tanh · 4→4 · width=61``; overrides past ``limit`` characters are cut with an ellipsis."""
    name, _, rest = str(config).partition(" ")
    dims, _, overrides = rest.partition(" ")
    parts = [name, *([dims.replace("->", "→")] if dims else [])]
    if overrides:
        try:
            kw = json.loads(overrides)
            text = ", ".join(f"{k}={v if isinstance(v, str | int | float) else json.dumps(v, separators=(',', ':'))}"
                             for k, v in kw.items())  # fmt: skip
        except (json.JSONDecodeError, AttributeError):
            text = overrides
        parts.append(text if len(text) <= limit else text[: limit - 1] + "…")
    return " · ".join(parts)


def set_group(equation: str) -> str:
    """The panel an equation set is drawn in: generated sets pool by family (and dimensions), `gen:hard:*`, so a
    population of sets makes one panel per family; every other set is its own panel."""
    parts = equation.split(":")
    if parts[0] != "gen" or len(parts) < 3:
        return equation
    return ":".join([*parts[:2], "*", *parts[3:]])


SET_FAMILIES = ("smooth", "mixed", "hard")  # generated families in order of difficulty; others follow by name
NAMED = "named"  # the built-in formula sets (forum4x4, lorenz96, rosenbrock_grad, ...): equations/sets/
FILE = "file"  # a user's own formulas (file:path.py)
DATA = "data"  # measured data (data:path.csv): errors include the data's noise


def set_family(equation: str) -> str:
    """The family an equation set is summarized in: ``gen:<family>:...`` -> its generated family (smooth, mixed,
    hard), ``data:...`` -> data, ``file:...`` -> file, any built-in set by name -> named."""
    parts = str(equation).split(":")
    if parts[0] == "gen" and len(parts) > 1:
        return parts[1]
    return {"data": DATA, "file": FILE}.get(parts[0], NAMED) if len(parts) > 1 else NAMED


def family_sort_key(family: str) -> tuple:
    """Generated families by difficulty, then other generated ones, then named, file and data sets."""
    fixed = [*SET_FAMILIES, "", NAMED, FILE, DATA]
    return (fixed.index(family), "") if family in fixed else (fixed.index(""), family)


def set_panels(df: pd.DataFrame) -> tuple[pd.Series, list[str], dict[str, str]]:
    """(panel of each row, panels in order, panel -> title with its number of sets) for per-set figures."""
    panel = df["equation"].map(set_group)
    order = sorted(panel.unique(), key=lambda p: (p.startswith("gen:"), p))
    sets = df.groupby(panel)["equation"].nunique()
    pooled = {p: p.endswith("*") or ":*:" in p for p in order}
    titles = {p: f"{p} ({sets[p]} set{'s' if sets[p] > 1 else ''})" if pooled[p] else p for p in order}
    return panel, order, titles


def training_label(variant: str, beta: float) -> str:
    """`value` or `sobolev β=1e-07`: the way training is named in tables and legends."""
    return "value" if variant == "value" else f"{variant} β={beta:g}"


def theme():
    """The seaborn theme every figure is drawn and saved under: ``with theme(): ...``.

    A context, not ``sns.set_theme``: building a report leaves the caller's matplotlib settings alone.
    """
    rc = {**sns.axes_style("whitegrid"), **sns.plotting_context("notebook", font_scale=0.85)}
    rc.update({"figure.dpi": 110, "savefig.dpi": 110, "axes.titlesize": "medium", "legend.frameon": False})
    return matplotlib.rc_context(rc)


def new_figure(ncols: int, nrows: int = 1, width: float = 4.2, height: float = 3.4, margin: float = 1.8, **kw):
    """A constrained-layout figure (no pyplot state) and its axes grid, shape (nrows, ncols).

    ``width`` x ``height`` inches per panel, plus ``margin`` inches on the right for the legend.
    """
    fig = Figure(figsize=(width * ncols + margin, height * nrows + 0.4), layout="constrained")
    FigureCanvasAgg(fig)  # the Agg backend, attached to this figure only: pyplot's global backend is untouched
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def legend_outside(fig: Figure, handles: list, title: str | None = None) -> None:
    """One legend for the whole figure, right of the axes, never on top of data."""
    if handles:
        fig.legend(handles=handles, loc="outside right upper", title=title, fontsize="small")


def family_handles(palette: dict[str, str], families: list[str], title: str = "family") -> list:
    head = [Line2D([], [], linestyle="", label=title)] if title else []
    return head + [Line2D([], [], color=palette[f], marker="o", linestyle="", label=f) for f in families]


def marker_handles(markers: dict[str, str], title: str = "") -> list:
    head = [Line2D([], [], linestyle="", label=title)] if title else []
    return head + [Line2D([], [], color="0.3", marker=m, linestyle="", label=v) for v, m in markers.items()]


def log_ticks_at(ax, values, axis: str = "x") -> None:
    """Ticks exactly at ``values`` (e.g. the beta sweep) on a log axis, labelled with %g."""
    values = sorted(set(float(v) for v in values))
    set_ticks, set_labels = (ax.set_xticks, ax.set_xticklabels) if axis == "x" else (ax.set_yticks, ax.set_yticklabels)
    set_ticks(values)
    set_labels([f"{v:g}" for v in values])
    getattr(ax, f"{axis}axis").set_minor_locator(NullLocator())


def grid_shape(n: int, max_cols: int = 5) -> tuple[int, int]:
    """(ncols, nrows) of a balanced grid of n panels: 5 -> 5x1, 7 -> 4x2, 12 -> 4x3."""
    nrows = -(-n // max_cols)
    return -(-n // nrows), nrows


def compact(v: float, _pos=None) -> str:
    """Tick label: 0.01, 0.5, 300, then 1e4, 2e5, 1e-7 (short, no mathtext, no '+0')."""
    if v == 0 or 1e-3 <= abs(v) < 1e4:
        return f"{v:g}"
    mantissa, exponent = f"{v:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _label_2_and_5(v: float, _pos=None) -> str:
    return compact(v) if round(v / 10 ** math.floor(math.log10(v))) in (2, 5) else ""


def tidy_log(ax) -> None:
    """Log axes: short labels on decades; minor ticks labelled only where the view spans under two decades.

    Call once the data is drawn (the view is known). Under two decades, minor ticks at 2 and 5 are labelled
    too, so that every axis has at least two numbers; over three, minor ticks go (they only crowd).
    """
    for axis, (lo, hi) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
        if axis.get_scale() != "log" or lo <= 0 or hi <= 0:
            continue
        if isinstance(axis.get_major_locator(), FixedLocator):  # ticks placed on purpose (log_ticks_at)
            continue
        axis.set_major_locator(LogLocator(base=10, numticks=8))
        axis.set_major_formatter(FuncFormatter(compact))
        decades = abs(math.log10(hi / lo))
        if decades > 3:  # minor ticks add nothing readable over many decades, and cost layout time
            axis.set_minor_locator(NullLocator())
        elif decades >= 2:
            axis.set_minor_formatter(NullFormatter())
        else:
            axis.set_minor_formatter(FuncFormatter(_label_2_and_5))


def mean_ci_lines(ax, df, x: str, y: str, palette: dict[str, str], dashes: dict | None = None, by: str | None = None):
    """One line per family (and per ``by`` level, told apart by ``dashes``): mean of ``y`` over the rows at each x,
    with its 95% Student-t interval as a band, the same statistic as the leaderboard's.

    On a log axis a band reaching below a tenth of the mean is cut there (an interval through zero has no
    log-scale picture).
    """
    keys = ["family", *([by] if by else []), x]
    agg = aggregate(df.rename(columns={y: "value"})[[*keys, "value"]], keys)
    for key, g in agg.groupby(keys[:-1], sort=False):
        family, level = (key[0], key[1] if by else None) if isinstance(key, tuple) else (key, None)
        g = g.sort_values(x)
        color, dash = palette[family], (dashes or {}).get(level, "")
        ax.plot(g[x], g["mean"], marker="o", ms=4, color=color, dashes=dash or (None, None))
        lo = np.maximum(g["mean"] - g["ci"], g["mean"] / 10)
        ax.fill_between(g[x], lo, g["mean"] + g["ci"], color=color, alpha=0.2, linewidth=0)
