"""Sections of a report and their two renderings: self-contained HTML and Markdown with PNGs beside it."""

from __future__ import annotations

import base64
import html
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.figure import Figure


@dataclass
class Table:
    columns: list[str]
    rows: list[list[str]]
    bold: set[tuple[int, int]] = field(default_factory=set)  # (row, column) cells marked as best
    caption: str = ""
    text: bool = False  # a table of words (errors, settings): left-aligned, long cells wrap


@dataclass
class Plot:
    name: str  # file name stem under figures/
    png: bytes
    alt: str


@dataclass
class Section:
    title: str
    guide: str  # one sentence on how to read it
    blocks: list = field(default_factory=list)  # Table | Plot | Note | Code, in order

    def add(self, block) -> Section:
        self.blocks.append(block)
        return self


@dataclass
class Note:
    text: str


@dataclass
class Code:
    text: str
    caption: str = ""


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG bytes (the figure is rendered by Agg; no window, no pyplot state)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def plot(name: str, fig: Figure, alt: str) -> Plot:
    return Plot(name, png_bytes(fig), alt)


def pretty_json(obj) -> str:
    """Indented JSON with lists of plain values kept on one line (a config's grid reads as a grid)."""
    text = json.dumps(obj, indent=2, sort_keys=False, default=str)
    flat = re.compile(r"\[\n\s*([^\[\]{}]*?)\n\s*\]")
    return flat.sub(lambda m: "[" + ", ".join(re.split(r",\n\s*", m.group(1))) + "]", text)


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


def table_text(t: Table) -> str:
    """Fixed-width text for a terminal."""
    widths = [max(len(str(c)) for c in col) for col in zip(t.columns, *t.rows, strict=True)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in [t.columns, *t.rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


# ---------------------------------------------------------------- Markdown


def _md_cell(text: str, bold: bool) -> str:
    text = str(text).replace("|", "\\|").replace("\n", " ")
    return f"**{text}**" if bold and text not in ("", "–") else text


def table_md(t: Table) -> str:
    lines = [f"*{t.caption}*", ""] if t.caption else []
    lines.append("| " + " | ".join(_md_cell(c, False) for c in t.columns) + " |")
    lines.append("|" + "|".join("---" for _ in t.columns) + "|")
    for i, row in enumerate(t.rows):
        lines.append("| " + " | ".join(_md_cell(c, (i, j) in t.bold) for j, c in enumerate(row)) + " |")
    return "\n".join(lines)


def to_markdown(title: str, intro: str, sections: list[Section], out: Path) -> str:
    """The report as Markdown; writes each figure to ``out/figures/<name>.png``."""
    (out / "figures").mkdir(parents=True, exist_ok=True)
    parts = [f"# {title}", "", intro, "", "Contents: " + " · ".join(f"[{s.title}](#{slug(s.title)})" for s in sections)]
    for s in sections:
        parts += ["", f"## {s.title}", "", f"*How to read it:* {s.guide}"]
        for b in s.blocks:
            parts.append("")
            if isinstance(b, Table):
                parts.append(table_md(b))
            elif isinstance(b, Plot):
                (out / "figures" / f"{b.name}.png").write_bytes(b.png)
                parts.append(f"![{b.alt}](figures/{b.name}.png)")
            elif isinstance(b, Note):
                parts.append(f"> {b.text}")
            elif isinstance(b, Code):
                parts += [f"*{b.caption}*", ""] if b.caption else []
                parts += ["```", b.text, "```"]
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------- HTML

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto; max-width: 1400px;
       padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; margin-top: 2.5rem; border-bottom: 1px solid #ddd; }
.guide { color: #555; font-style: italic; }
.note { background: #f6f6f6; border-left: 4px solid #bbb; padding: .4rem .8rem; }
table { border-collapse: collapse; margin: .6rem 0 1.2rem; font-size: .85rem; }
th, td { border: 1px solid #ddd; padding: .25rem .5rem; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; } td:nth-child(-n+3), th:nth-child(-n+3) { text-align: left; }
td.best { font-weight: bold; background: #eef6ee; }
table.text td, table.text th { text-align: left; white-space: normal; min-width: 4rem; }
.caption { text-align: left; font-style: italic; margin: .6rem 0 .2rem; }
.scroll { overflow-x: auto; max-width: 100%; }
.scroll table { margin-top: 0; }
.scroll td:first-child, .scroll th:first-child { position: sticky; left: 0; background: #fff; z-index: 1; }
.scroll th:first-child { background: #f3f3f3; }
img { max-width: 100%; height: auto; display: block; margin: .6rem 0; }
pre { background: #f6f6f6; padding: .6rem; overflow-x: auto; font-size: .8rem; }
nav a { margin-right: .8rem; }
"""


def table_html(t: Table) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in t.columns)
    body = []
    for i, row in enumerate(t.rows):
        cells = "".join(
            f'<td class="best">{html.escape(str(c))}</td>' if (i, j) in t.bold else f"<td>{html.escape(str(c))}</td>"
            for j, c in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    # The caption sits above the scrolling box, so it wraps at the page's width; a table wider than the window
    # scrolls inside its box (first column pinned) instead of widening the page or losing its last columns.
    caption = f'<p class="caption">{html.escape(t.caption)}</p>' if t.caption else ""
    cls = ' class="text"' if t.text else ""
    table = f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    return f'{caption}<div class="scroll">{table}</div>'


def _block_html(b) -> str:
    if isinstance(b, Table):
        return table_html(b)
    if isinstance(b, Plot):
        data = base64.b64encode(b.png).decode("ascii")
        return f'<img alt="{html.escape(b.alt)}" src="data:image/png;base64,{data}">'
    if isinstance(b, Note):
        return f'<p class="note">{html.escape(b.text)}</p>'
    caption = f"<p><em>{html.escape(b.caption)}</em></p>" if b.caption else ""
    return f"{caption}<pre>{html.escape(b.text)}</pre>"


def to_html(title: str, intro: str, sections: list[Section]) -> str:
    """The report as one self-contained HTML page: inline CSS, figures as data URIs, no scripts, no links out."""
    nav = "".join(f'<a href="#{slug(s.title)}">{html.escape(s.title)}</a>' for s in sections)
    parts = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1><p>{html.escape(intro)}</p><nav>{nav}</nav>",
    ]
    for s in sections:
        parts.append(f'<section id="{slug(s.title)}"><h2>{html.escape(s.title)}</h2>')
        parts.append(f'<p class="guide">How to read it: {html.escape(s.guide)}</p>')
        parts += [_block_html(b) for b in s.blocks]
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)
