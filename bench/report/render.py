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
    links: dict[int, str] = field(default_factory=dict)  # column -> anchor its header links to (a definition)


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
class Group:
    """A titled part of a section (a subsection): one heading level below its parent, in the contents.

    ``collapsed``: in HTML a ``<details>`` element, closed until the reader opens it, with ``summary`` (one line,
    e.g. the best method) beside the title; Markdown has no such element and shows the summary as a first line.
    """

    title: str
    blocks: list = field(default_factory=list)  # Table | Plot | Note | Code | Group
    collapsed: bool = False
    summary: str = ""
    short: str = ""  # the link text in the contents, where the title is long

    def add(self, block) -> Group:
        self.blocks.append(block)
        return self


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


HEADLINE_ANCHOR = "headline"  # the id of the headline error's definition, which table headers link to


def slug(text: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped (letters, digits, ``_`` and ``-`` kept), spaces to
    hyphens: ``Peers: JENN and SMT kriging`` -> ``peers-jenn-and-smt-kriging``, ``gen:smooth:3`` -> ``gensmooth3``.
    """
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(sections: list[Section]) -> dict[int, str]:
    """id(section or group) -> its anchor, unique in the page the way GitHub makes them (``x``, ``x-1``, ...): both
    renderings use these, so a link into report.md and one into report.html name the same place."""
    seen = {HEADLINE_ANCHOR: 1}
    out = {}

    def visit(obj) -> None:
        base = slug(obj.title) or "section"
        n = seen.get(base, 0)
        out[id(obj)] = base if n == 0 else f"{base}-{n}"
        seen[base] = n + 1
        for b in obj.blocks:
            if isinstance(b, Group):
                visit(b)

    for s in sections:
        visit(s)
    return out


def groups(obj) -> list[Group]:
    return [b for b in obj.blocks if isinstance(b, Group)]


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


def _md_header(t: Table, j: int) -> str:
    text = _md_cell(t.columns[j], False)
    return f"[{text}](#{t.links[j]})" if j in t.links else text


def table_md(t: Table) -> str:
    lines = [f"*{t.caption}*", ""] if t.caption else []
    lines.append("| " + " | ".join(_md_header(t, j) for j in range(len(t.columns))) + " |")
    lines.append("|" + "|".join("---" for _ in t.columns) + "|")
    for i, row in enumerate(t.rows):
        lines.append("| " + " | ".join(_md_cell(c, (i, j) in t.bold) for j, c in enumerate(row)) + " |")
    return "\n".join(lines)


def _md_link(obj, ids: dict[int, str]) -> str:
    return f"[{obj.short or obj.title if isinstance(obj, Group) else obj.title}](#{ids[id(obj)]})"


def contents_md(sections: list[Section], ids: dict[int, str]) -> list[str]:
    """A nested list of links: sections, their groups, and a group's own groups on one line after it."""
    lines = ["**Contents**", ""]
    for s in sections:
        lines.append(f"- {_md_link(s, ids)}")
        for g in groups(s):
            inner = groups(g)
            tail = ": " + " · ".join(_md_link(h, ids) for h in inner) if inner else ""
            lines.append(f"  - {_md_link(g, ids)}{tail}")
    return lines


def _blocks_md(blocks: list, out: Path, ids: dict[int, str], level: int) -> list[str]:
    parts = []
    for b in blocks:
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
        elif isinstance(b, Group):
            parts.append(f"{'#' * min(level, 6)} {b.title}")
            parts += ["", f"*{b.summary}*"] if b.summary else []
            parts += _blocks_md(b.blocks, out, ids, level + 1)
    return parts


def to_markdown(title: str, intro: str, sections: list[Section], out: Path, definition: str = "") -> str:
    """The report as Markdown; writes each figure to ``out/figures/<name>.png``. ``definition``: a paragraph that
    headers link to (``#headline``), after the introduction."""
    (out / "figures").mkdir(parents=True, exist_ok=True)
    ids = anchors(sections)
    parts = [f"# {title}", "", intro, ""]
    if definition:
        parts += [f'<a id="{HEADLINE_ANCHOR}"></a>{definition}', ""]
    parts += contents_md(sections, ids)
    for s in sections:
        parts += ["", f"## {s.title}", "", f"*How to read it:* {s.guide}"]
        parts += _blocks_md(s.blocks, out, ids, 3)
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------- HTML

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto; max-width: 1400px;
       padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; margin-top: 2.5rem; border-bottom: 1px solid #ddd; }
h3 { font-size: 1.05rem; margin: 1.6rem 0 .4rem; } h4 { font-size: .95rem; margin: 1.2rem 0 .3rem; }
.guide { color: #555; font-style: italic; }
.definition { font-size: .9rem; color: #333; background: #f7f9fc; border-left: 4px solid #9bb3d6;
              padding: .4rem .8rem; }
.note { background: #f6f6f6; border-left: 4px solid #bbb; padding: .4rem .8rem; }
table { border-collapse: collapse; margin: .6rem 0 1.2rem; font-size: .85rem; }
th, td { border: 1px solid #ddd; padding: .25rem .5rem; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; white-space: normal; min-width: 3.5rem; vertical-align: bottom; }
td:nth-child(-n+3), th:nth-child(-n+3) { text-align: left; }
th .h { display: inline-block; max-width: 16rem; }  /* a long header wraps instead of widening its column */
th a { color: inherit; text-decoration: underline dotted; }
td.best { font-weight: bold; background: #eef6ee; }
table.text td, table.text th { text-align: left; white-space: normal; min-width: 4rem; }
.caption { text-align: left; font-style: italic; margin: .6rem 0 .2rem; }
.scroll { overflow-x: auto; max-width: 100%; }
.scroll table { margin-top: 0; }
.scroll td:first-child, .scroll th:first-child { position: sticky; left: 0; background: #fff; z-index: 1; }
.scroll th:first-child { background: #f3f3f3; }
img { max-width: 100%; height: auto; display: block; margin: .6rem 0; }
pre { background: #f6f6f6; padding: .6rem; overflow-x: auto; font-size: .8rem; }
nav.toc { font-size: .9rem; border: 1px solid #ddd; border-radius: 4px; padding: .3rem .9rem .5rem; }
nav.toc > p { margin: .2rem 0; font-weight: bold; }
nav.toc > ol { columns: 3; column-gap: 2rem; margin: .2rem 0; padding-left: 1.4rem; }
nav.toc > ol > li { break-inside: avoid; }
nav.toc ul { margin: .1rem 0 .3rem; padding-left: 1.1rem; }
nav.toc .subsets { margin: .2rem 0 0; padding: .3rem 0 0; border-top: 1px solid #eee; list-style: none; }
nav.toc .subsets li { margin: .1rem 0; }
nav.toc .subsets a.set { margin-right: .15rem; padding: 0 .3rem; white-space: nowrap; }
details { border: 1px solid #e3e3e3; border-radius: 4px; margin: .35rem 0; padding: 0 .6rem; }
details[open] { padding-bottom: .4rem; }
summary { cursor: pointer; padding: .3rem 0; }
summary .title { font-weight: bold; }
summary .summary { color: #555; margin-left: .6rem; font-size: .9rem; }
"""


def table_html(t: Table) -> str:
    head = "".join(
        f'<th><a class="h" href="#{t.links[j]}">{html.escape(c)}</a></th>'
        if j in t.links
        else f'<th><span class="h">{html.escape(c)}</span></th>'
        for j, c in enumerate(t.columns)
    )
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


def _block_html(b, ids: dict[int, str], level: int) -> str:
    if isinstance(b, Table):
        return table_html(b)
    if isinstance(b, Plot):
        data = base64.b64encode(b.png).decode("ascii")
        return f'<img alt="{html.escape(b.alt)}" src="data:image/png;base64,{data}">'
    if isinstance(b, Note):
        return f'<p class="note">{html.escape(b.text)}</p>'
    if isinstance(b, Group):
        inner = "\n".join(_block_html(x, ids, level + 1) for x in b.blocks)
        anchor = ids[id(b)]
        if b.collapsed:
            summary = f'<span class="summary">{html.escape(b.summary)}</span>' if b.summary else ""
            return (f'<details id="{anchor}"><summary><span class="title">{html.escape(b.title)}</span>{summary}'
                    f"</summary>\n{inner}\n</details>")  # fmt: skip
        h = f"h{min(level, 6)}"
        summary = f'<p class="guide">{html.escape(b.summary)}</p>' if b.summary else ""
        return f'<section id="{anchor}"><{h}>{html.escape(b.title)}</{h}>{summary}\n{inner}\n</section>'
    caption = f"<p><em>{html.escape(b.caption)}</em></p>" if b.caption else ""
    return f"{caption}<pre>{html.escape(b.text)}</pre>"


def _html_link(obj, ids: dict[int, str], cls: str = "") -> str:
    text = obj.short or obj.title if isinstance(obj, Group) else obj.title
    c = f' class="{cls}"' if cls else ""
    return f'<a{c} href="#{ids[id(obj)]}">{html.escape(text)}</a>'


def contents_html(sections: list[Section], ids: dict[int, str]) -> str:
    """The table of contents: every section in three columns; below them, the groups that hold groups of their own
    (the per-set leaderboards by family), one line each."""
    items = []
    for s in sections:
        subs = [g for g in groups(s) if not groups(g)]
        sub = "<ul>" + "".join(f"<li>{_html_link(g, ids)}</li>" for g in subs) + "</ul>" if subs else ""
        items.append(f"<li>{_html_link(s, ids)}{sub}</li>")
    lines = []
    for s in sections:
        for g in groups(s):
            if inner := groups(g):
                links = " ".join(_html_link(h, ids, "set") for h in inner)
                lines.append(f"<li>{html.escape(s.title)} · {_html_link(g, ids)}: {links}</li>")
    nested = f'<ul class="subsets">{"".join(lines)}</ul>' if lines else ""
    return f'<nav class="toc" aria-label="Contents"><p>Contents</p><ol>{"".join(items)}</ol>{nested}</nav>'


def to_html(title: str, intro: str, sections: list[Section], definition: str = "") -> str:
    """The report as one self-contained HTML page: inline CSS, figures as data URIs, no scripts, no links out.
    ``definition``: a paragraph (id ``headline``) that table headers link to, after the introduction."""
    ids = anchors(sections)
    parts = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1><p>{html.escape(intro)}</p>",
    ]
    if definition:
        parts.append(f'<p class="definition" id="{HEADLINE_ANCHOR}">{html.escape(definition)}</p>')
    parts.append(contents_html(sections, ids))
    for s in sections:
        parts.append(f'<section id="{ids[id(s)]}"><h2>{html.escape(s.title)}</h2>')
        parts.append(f'<p class="guide">How to read it: {html.escape(s.guide)}</p>')
        parts += [_block_html(b, ids, 3) for b in s.blocks]
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)
