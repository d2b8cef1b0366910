"""`python -m bench <command>`: one small module per command under bench/commands/.

Each command module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``.
To add a command, write the module and list it in ``COMMANDS`` below.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = [
    "bench.commands.list_cmd",
    "bench.commands.selfcheck",
    "bench.commands.throughput",
    "bench.commands.run",
    "bench.commands.evaluate",
    "bench.commands.fit",
    "bench.commands.report",
    "bench.commands.compare",
    "bench.commands.study",
    "bench.commands.map_cmd",
]


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="jacbench: how faithful are the Jacobians of neural surrogates?",
    )
    parser.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="FILE.py",
        help="load a Python file that registers extra models (@models.register_model); repeatable",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = {}
    for path in COMMANDS:
        mod = importlib.import_module(path)
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.add_argument("--plugin", action="append", default=[], dest="plugin_after", metavar="FILE.py",
                       help="load a Python file that registers extra models (also before COMMAND)")  # fmt: skip
        modules[mod.NAME] = mod
    return parser, modules


def main(argv: list[str] | None = None) -> int:
    parser, modules = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    args.plugin = [*args.plugin, *getattr(args, "plugin_after", [])]  # before or after the command
    try:
        if args.plugin:
            import models  # lazily: `report` must stay torch-free

            for path in args.plugin:
                models.load_plugin(path)
        return int(modules[args.command].run(args) or 0)
    except (ValueError, FileNotFoundError) as err:  # user mistakes: one clear line, no traceback
        # Unknown names (models, equations, engines) are ValueErrors too; a bare KeyError or any other
        # exception from inside the code is a bug and keeps its traceback.
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: one line and the shell's convention (128 + SIGINT), no traceback
        print(f"\ninterrupted: python -m bench {args.command} stopped", file=sys.stderr)
        return 130
