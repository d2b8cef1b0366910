"""CLI commands, one module each (see bench/cli.py)."""
