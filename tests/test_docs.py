"""The README and the guides stay true: every relative link resolves (a #anchor to a heading of the target), every
`python -m bench` command they show parses with the real command line (without running it), every subcommand
shown answers --help, and every `make` target shown exists.

Checked files: README.md, equations/README.md, models/README.md, bench/README.md, results/README.md and
results/*/README.md. External (http, https, mailto) links are not fetched.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GUIDES = ["README.md", "equations/README.md", "models/README.md", "bench/README.md", "results/README.md"]
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})")
SHELL_OPERATORS = {"&&", "||", ";", "|", "&"}


def doc_files() -> list[Path]:
    files = [ROOT / name for name in GUIDES] + sorted((ROOT / "results").glob("*/README.md"))
    return [path for path in files if path.exists()]


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def split_fences(text: str) -> tuple[str, list[tuple[int, str]]]:
    """The text with fenced blocks blanked (line numbers kept), and each fenced line as (line number, text)."""
    prose, fenced, fence = [], [], None
    for number, line in enumerate(text.split("\n"), 1):
        match = FENCE.match(line)
        if fence is None and match:
            fence = match.group(2)
            prose.append("")
        elif fence is not None:
            if match and match.group(2).startswith(fence[0] * len(fence)) and not line.strip()[len(fence) :].strip():
                fence = None
            else:
                fenced.append((number, line))
            prose.append("")
        else:
            prose.append(line)
    return "\n".join(prose), fenced


INLINE_CODE = re.compile(r"(`+)(.+?)\1", re.S)


def inline_code(prose: str) -> list[tuple[int, str]]:
    """Inline code spans of the prose (a span may wrap over lines) as (line number, text)."""
    return [(prose.count("\n", 0, m.start()) + 1, " ".join(m.group(2).split())) for m in INLINE_CODE.finditer(prose)]


# ---------------------------------------------------------------------------------------------------------- links
def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lowercase, punctuation removed, each space a hyphen."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links and images: their text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").replace("*", "")
    text = text.strip().lower()
    text = "".join(ch for ch in text if ch.isalnum() or ch in " -_")
    return text.replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    """Every anchor of a markdown file's headings, duplicates numbered as GitHub does (-1, -2, ...)."""
    prose, _ = split_fences(path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    out = set()
    for line in prose.split("\n"):
        match = re.match(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        slug = github_slug(match.group(1))
        out.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return frozenset(out)


LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def links(path: Path) -> list[tuple[int, str]]:
    prose, _ = split_fences(path.read_text(encoding="utf-8"))
    prose = INLINE_CODE.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), prose)  # no links inside code spans
    return [(prose.count("\n", 0, m.start()) + 1, m.group(1)) for m in LINK.finditer(prose)]


def link_problem(source: Path, target: str) -> str | None:
    """Why a link does not resolve, or None."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto: ... not fetched
        return None
    path_part, _, anchor = target.partition("#")
    dest = (source.parent / path_part).resolve() if path_part else source
    if not dest.exists():
        return f"{path_part} does not exist"
    if anchor and dest.is_file() and dest.suffix.lower() == ".md" and anchor not in anchors(dest):
        return f"{path_part or source.name} has no heading with the anchor #{anchor}"
    return None


@pytest.mark.parametrize("path", doc_files(), ids=rel)
def test_links_resolve(path):
    problems = [f"{rel(path)}:{line}: ({target}) {why}" for line, target in links(path)
                if (why := link_problem(path, target))]  # fmt: skip
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_the_link_checker_can_fail(tmp_path):
    """A missing file and a missing heading are both reported; a good anchor and an external link are not."""
    (tmp_path / "a.md").write_text("# Title: one `two`\n\n## Title: one two\n```\n# not a heading\n```\n")
    source = tmp_path / "b.md"
    assert link_problem(source, "a.md#title-one-two") is None
    assert link_problem(source, "a.md#title-one-two-1") is None  # the duplicate's anchor
    assert link_problem(source, "https://example.invalid/x") is None
    assert "does not exist" in link_problem(source, "missing.md")
    assert "no heading" in link_problem(source, "a.md#not-a-heading")
    assert github_slug("Crossover: where networks overtake kriging") == "crossover-where-networks-overtake-kriging"
    assert github_slug("The first forum post: `python -m bench study pinn`") == (
        "the-first-forum-post-python--m-bench-study-pinn"
    )


# ------------------------------------------------------------------------------------------------------- commands
def joined_code_lines(path: Path) -> list[tuple[int, str]]:
    """Shell lines of fenced blocks (with `\\` continuations joined) and inline code spans, as (line, text)."""
    prose, fenced = split_fences(path.read_text(encoding="utf-8"))
    lines, pending, start = [], "", 0
    for number, line in fenced:
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        lines.append((start, pending + line))
        pending = ""
    if pending:
        lines.append((start, pending))
    return lines + inline_code(prose)


def shell_commands(line: str) -> list[list[str]]:
    """The simple commands of one shell line: comments stripped, split at &&, ||, ;, | and &."""
    try:
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        tokens = list(lexer)
    except ValueError:  # not shell (an unbalanced quote in a Python or JSON block)
        return []
    commands, current = [], []
    for token in tokens:
        if token in SHELL_OPERATORS:
            commands.append(current)
            current = []
        else:
            current.append(token)
    return [c for c in [*commands, current] if c]


def bench_argv(tokens: list[str]) -> list[str] | None:
    """The arguments after `python -m bench` (also `.venv/bin/python`, `python3`), or None for another command."""
    while tokens and re.match(r"^[A-Z_][A-Z0-9_]*=", tokens[0]):  # VAR=value before the command
        tokens = tokens[1:]
    if len(tokens) >= 3 and re.fullmatch(r"(.*/)?python3?", tokens[0]) and tokens[1:3] == ["-m", "bench"]:
        return tokens[3:]
    return None


def shown(kind: str) -> list[tuple[str, int, list[str]]]:
    """Every `python -m bench` (kind "bench") or `make` (kind "make") command the docs show: (file, line, argv)."""
    out = []
    for path in doc_files():
        for line, text in joined_code_lines(path):
            for tokens in shell_commands(text):
                if kind == "bench" and (argv := bench_argv(tokens)) is not None:
                    out.append((rel(path), line, argv))
                elif kind == "make" and tokens[0] == "make":
                    out.append((rel(path), line, tokens[1:]))
    return out


def parse_problem(argv: list[str]) -> str | None:
    """Why the real command-line parser rejects argv, or None. Nothing runs: parse_args only."""
    from bench.cli import build_parser

    parser, _ = build_parser()
    parser.exit_on_error = False
    try:
        args = parser.parse_args(argv)
    except SystemExit as err:  # argparse reports an unknown flag or a bad choice on stderr, then exits
        return f"the parser exits with {err.code}"
    except Exception as err:  # argparse.ArgumentError and friends
        return f"{type(err).__name__}: {err}"
    if args.command is None:
        return "no command"
    return None


def test_the_readme_shows_every_command():
    """The README's command table names every subcommand the command line has."""
    from bench.cli import build_parser

    _, handlers = build_parser()
    in_readme = {argv[0] for where, _, argv in shown("bench") if where == "README.md" and argv}
    assert set(handlers) <= in_readme, f"not shown in README.md: {sorted(set(handlers) - in_readme)}"


@pytest.mark.parametrize(
    "where,line,argv", [pytest.param(*c, id=f"{c[0]}:{c[1]}:{(c[2] or ['-'])[0]}") for c in shown("bench")]
)
def test_bench_command_parses(where, line, argv, capsys):
    problem = parse_problem(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert problem is None, f"{where}:{line}: python -m bench {shlex.join(argv)}: {problem}: {err[-1] if err else ''}"


def test_the_command_checker_can_fail():
    """A wrong flag, a bad choice and a missing required option are all caught; comments and continuations are not
    taken for arguments."""
    assert parse_problem(["run", "--profile", "quick", "--dry-run"]) is None
    assert parse_problem(["run", "--no-such-flag"])
    assert parse_problem(["list", "nothing"])
    assert parse_problem(["evaluate", "--model", "mlp_tanh"])
    assert parse_problem(["nosuchcommand"])
    assert shell_commands("python -m bench map --report-only   # the report # again") == [
        ["python", "-m", "bench", "map", "--report-only"]
    ]
    assert shell_commands("python -m bench run --profile oscillator && python -m bench report") == [
        ["python", "-m", "bench", "run", "--profile", "oscillator"],
        ["python", "-m", "bench", "report"],
    ]
    assert bench_argv(["OUT=x", ".venv/bin/python", "-m", "bench", "list", "models"]) == ["list", "models"]


def test_every_subcommand_shown_answers_help():
    """Once per distinct subcommand the docs show, the real entry point in a fresh interpreter: `--help` exits 0."""
    subcommands = sorted({argv[0] for _, _, argv in shown("bench") if argv and not argv[0].startswith("-")})
    failed = []
    for sub in subcommands:
        proc = subprocess.run([sys.executable, "-m", "bench", sub, "--help"], cwd=ROOT, capture_output=True,
                              text=True, timeout=120)  # fmt: skip
        if proc.returncode != 0 or "usage:" not in proc.stdout:
            failed.append(f"python -m bench {sub} --help: exit {proc.returncode}: {proc.stderr.strip()[-300:]}")
    assert not failed, "\n".join(failed)


def makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return {m.group(1) for m in re.finditer(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", text, re.M)}


def test_make_targets_shown_exist():
    targets = makefile_targets()
    shown_make = shown("make")
    assert {"bench", "test", "setup"} <= {argv[0] for _, _, argv in shown_make if argv}
    missing = [f"{where}:{line}: make {' '.join(argv)}" for where, line, argv in shown_make
               if any(not a.startswith("-") and "=" not in a and a not in targets for a in argv)]  # fmt: skip
    assert not missing, f"targets not in the Makefile ({sorted(targets)}):\n" + "\n".join(missing)
    assert "nosuchtarget" not in targets and "bench" in targets
