"""The architecture bench/README.md shows, checked on the source: imports go down the floors, never up or sideways.

    commands, cli  ->  studies  ->  fidelity, speed, report  ->  engines, run  ->  peers  ->  models, equations

Within a folder anything goes; the report imports nothing of bench but bench.report and bench.run.results (it
must run without torch); the runner never imports a pipeline (it is handed its cell function).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLOOR = {"__main__": 4, "commands": 3, "cli": 3, "studies": 2.5, "fidelity": 2, "speed": 2, "report": 2, "engines": 1}
FLOOR["run"] = 1
FLOOR["peers"] = 0.5  # other projects' surrogates behind one face: numpy in, numpy out; they import no pipeline


def imports(path: Path) -> set[str]:
    """Every module a file imports (top-level and inside functions), as dotted names."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def part(module: str) -> str | None:
    """The floor key of a bench module: bench.speed.sweep -> speed, bench.cli -> cli."""
    bits = module.split(".")
    return bits[1] if bits[0] == "bench" and len(bits) > 1 else None


FILES = sorted(p for p in (ROOT / "bench").rglob("*.py") if p.name != "__init__.py" or p.parent.name != "bench")


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_go_down(path):
    own = path.relative_to(ROOT / "bench").parts[0].removesuffix(".py")
    for mod in imports(path):
        other = part(mod)
        if other is None or other == own or other not in FLOOR:
            continue
        assert FLOOR[other] < FLOOR[own], f"{path.relative_to(ROOT)} imports {mod}: {own} may not import {other}"


def test_the_report_imports_only_results_tables_code():
    for path in (ROOT / "bench" / "report").glob("*.py"):
        for mod in imports(path):
            assert not mod.startswith(("torch", "models", "equations")), f"{path.name} imports {mod}"
            if mod.startswith("bench.") and not mod.startswith("bench.report"):
                assert mod.startswith("bench.run.results") or mod == "bench.run", f"{path.name} imports {mod}"


def test_what_is_benchmarked_never_imports_the_harness():
    for folder, allowed in (("equations", ()), ("models", ("equations.names",))):
        for path in (ROOT / folder).rglob("*.py"):
            for mod in imports(path):
                assert not mod.startswith("bench"), f"{path.relative_to(ROOT)} imports {mod}"
                other = "models" if folder == "equations" else "equations"
                if mod.split(".")[0] == other:
                    assert mod.startswith(allowed), f"{path.relative_to(ROOT)} imports {mod}"


ALL_FILES = sorted((ROOT / "bench").rglob("*.py"))


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_import_hides_from_these_checks(path):
    """Relative imports and import_module strings would slip past the floor test: only cli.py may use the latter
    (its COMMANDS table, the one edge cli -> commands)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.relative_to(ROOT)}: relative import (write bench.<folder>.<module>)"
        if isinstance(node, ast.Attribute) and node.attr == "import_module":
            assert path.name == "cli.py", f"{path.relative_to(ROOT)}: importlib.import_module outside cli.py"


def test_what_the_report_imports_of_run_is_torch_free():
    """The report reaches bench/__init__.py, bench/run/__init__.py and bench/run/results.py: none may pull in torch,
    models or equations (so `python -m bench report` works where only pandas and seaborn are installed)."""
    for rel in ("bench/__init__.py", "bench/run/__init__.py", "bench/run/results.py"):
        for mod in imports(ROOT / rel):
            assert not mod.startswith(("torch", "models", "equations")), f"{rel} imports {mod}"
            assert not mod.startswith("bench.") or mod.startswith("bench.run.results"), f"{rel} imports {mod}"


# Imported inside a function without saying why: only these, whose import is optional or costs seconds.
OPTIONAL = ("jax", "jaxlib", "ray", "kan", "triton", "smt", "jenn", "matplotlib", "seaborn", "sklearn", "threadpoolctl")
SOURCES = sorted(p for d in ("bench", "models", "equations") for p in (ROOT / d).rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_sit_at_the_top_of_the_module(path):
    """A module's dependencies are readable at its top. An import inside a function is an optional or heavy one
    (OPTIONAL), sits in a command module that says once why its imports are lazy ("# Lazy imports:"), or says on
    its own line why it is there (a cycle, say)."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    lazy_module = "# Lazy imports:" in text
    hidden = []
    functions = [n for n in ast.walk(ast.parse(text)) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    for node in {i for f in functions for i in ast.walk(f) if isinstance(i, (ast.Import, ast.ImportFrom))}:
        if isinstance(node, ast.ImportFrom) and node.level:
            continue
        name = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
        if name.split(".")[0] in OPTIONAL or lazy_module or "#" in lines[node.end_lineno - 1]:
            continue
        hidden.append(f"line {node.lineno}: {lines[node.lineno - 1].strip()}")
    assert not hidden, f"{path.relative_to(ROOT)} imports inside functions without a reason: {hidden}"
