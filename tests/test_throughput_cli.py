"""`python -m bench throughput`: the command, its name patterns and its argument parsing."""

import argparse

import pandas as pd
import pytest
import torch
from speed_fixtures import ENGINES, small_mlp

from bench.commands import throughput as cmd
from bench.speed import sweep as throughput
from bench.speed.sweep import FORWARD


def test_cli_command_writes_csv_and_prints_the_table(tmp_path, monkeypatch, capsys):
    real_sweep = throughput.sweep
    monkeypatch.setattr(throughput, "sweep", lambda cfg, **kw: real_sweep(cfg, model_factory=small_mlp,
                                                                         engines=ENGINES, **kw))  # fmt: skip
    monkeypatch.setattr(cmd, "expand_models", lambda names: names)  # "tiny" is this test's own model
    monkeypatch.setattr(cmd, "expand_engines", lambda names, order=1: names)  # and so are its engines
    parser = argparse.ArgumentParser()
    cmd.add_arguments(parser)
    out = tmp_path / "throughput.csv"
    args = parser.parse_args(
        ["--models", "tiny", "--engines", "loop,vmap_jacrev,explodes", "--batch-sizes", "2,8", "--device", "cpu",
         "--repeats", "2", "--no-jax", "--max-batch", "loop=4", "--threads", "1", "--out", str(out)]
    )  # fmt: skip
    threads = torch.get_num_threads()
    try:
        assert cmd.run(args) == 1  # "explodes" failed: the sweep finished, the exit code says so
    finally:
        torch.set_num_threads(threads)
    text = capsys.readouterr().out
    assert "tiny 3->2  batch 8" in text and "x loop" in text and "failed: RuntimeError: boom" in text
    assert "best jacbench engine: vmap_jacrev" in text
    df = pd.read_csv(out, keep_default_na=False)
    assert set(df.engine) == {"loop", "vmap_jacrev", "explodes", FORWARD} and set(df.threads) == {1}
    assert (tmp_path / "env.json").exists()
    # the sweep refreshed the table engine "auto" reads (this test's own: tests/conftest.py): real engines' ok rows
    from bench.engines import auto

    measured = {(r["model"], r["batch_size"], r["engine"]) for r in auto.read(auto.user_table())}
    assert measured == {("tiny", b, e) for b in (2, 8) for e in ("vmap_jacrev", "loop") if (e, b) != ("loop", 8)}


def test_cli_model_patterns_expand_through_the_registry():
    assert cmd.expand_models(("mlp_forum", "fastkan*", "mlp_forum")) == ("mlp_forum", "fastkan", "fastkan_noln")


def test_cli_model_pattern_that_matches_nothing_is_a_clear_error(capsys):
    from bench.cli import main

    assert main(["throughput", "--models", "fastkn*", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "error: model pattern 'fastkn*' matches nothing" in err and "fastkan" in err


def test_engine_patterns_expand_and_a_typo_is_a_clear_error(capsys):
    assert cmd.expand_engines(("vmap*", "loop")) == ("vmap_jacrev", "vmap_jacfwd", "loop")
    assert cmd.expand_engines(()) == ()
    from bench.cli import main

    assert main(["throughput", "--engines", "vmap_jacrevv", "--device", "cpu"]) == 2
    assert "did you mean 'vmap_jacrev'" in capsys.readouterr().err


def test_an_internal_key_error_keeps_its_traceback(monkeypatch):
    from bench import cli

    def broken(args):
        return {}["missing"]  # a bug inside the code, not a user mistake

    parser, modules = cli.build_parser()
    monkeypatch.setattr(modules["list"], "run", broken)
    monkeypatch.setattr(cli, "build_parser", lambda: (parser, modules))
    with pytest.raises(KeyError, match="missing"):
        cli.main(["list", "models"])


def test_cli_max_batch_parses():
    assert cmd._caps("loop=64, functional_forward=8") == (("loop", 64), ("functional_forward", 8))
    with pytest.raises(argparse.ArgumentTypeError):
        cmd._caps("loop")


def test_cli_batch_sizes_parse():
    assert cmd._sizes("1,64, 2e3") == (1, 64, 2000)
    with pytest.raises(argparse.ArgumentTypeError):
        cmd._sizes("1,x")
    with pytest.raises(argparse.ArgumentTypeError):
        cmd._sizes("0")
