"""Reports from results tables only: ``build_report(run_dir)`` and ``write_compare(run_a, run_b)``.

Reads the files of results/README.md with pandas; never imports torch, ``models`` or ``equations``, so a
report can be rebuilt anywhere from ``results/`` (tests/test_report.py checks this in a fresh interpreter).
"""

from bench.report.build import SECTION_TITLES, build_report
from bench.report.compare import compare_runs, write_compare
from bench.report.load import RunData, load_run

__all__ = ["SECTION_TITLES", "RunData", "build_report", "compare_runs", "load_run", "write_compare"]
