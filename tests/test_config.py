"""Grid and run configuration: TOML profiles, layered overrides, wildcard expansion, clear errors."""

from pathlib import Path

import pytest

from bench.run import config as C
from bench.run.config import Config, ConfigError, expand_names, fnmatch_lister, load_config, parse_overrides


def write(tmp_path, text, name="my.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_quick_profile_loads_and_counts_its_cells():
    cfg = load_config("quick", expand=False)
    assert cfg.run.profile == "quick"
    assert set(cfg.grid.betas) == {1.0, 0.5}
    from bench import peers

    zoo = [m for m in cfg.grid.models if not peers.is_peer(m)]
    # value and Sobolev for the zoo and JENN, one variant for each kriging peer, on every set; Hessian on forum4x4
    per_set = (len(zoo) + 1) * 2 + sum(m in ("krg", "gekpls") for m in cfg.grid.models)
    hess = len(cfg.grid.hess_models) * len(cfg.grid.seeds)  # the MLP and efficient-KAN (the peers have no Hessian term)
    assert len(C.grid_cells(cfg.grid)) == len(cfg.grid.equations) * per_set * len(cfg.grid.seeds) + hess == 172


@pytest.mark.parametrize(("profile", "per_family"), [("quick", 2), ("suite", 10)])
def test_the_comparison_profiles_train_generated_sets_at_matched_size_with_a_tuned_lr(profile, per_family):
    from equations.generated import FAMILIES, parse_name

    cfg = load_config(profile, expand=False)
    generated = [parse_name(e) for e in cfg.grid.equations if e.startswith("gen:")]
    for family in FAMILIES:
        assert sum(g[0] == family for g in generated) >= per_family, (profile, family)
    assert all(g[2:] == (4, 4) for g in generated) and "forum4x4" in cfg.grid.equations
    assert cfg.grid.match_params and len(cfg.train["lr_grid"]) >= 2 and cfg.grid.val_fraction > 0
    assert len(cfg.grid.seeds) >= 2 and set(cfg.grid.betas) == {1.0, 0.5}


def test_full_profile_loads():
    cfg = load_config("full", expand=False)
    assert cfg.grid.betas == (1.0, 0.9, 0.5, 0.1, 1e-3, 1e-7)
    assert len(cfg.grid.seeds) == 5 and len(cfg.grid.n_train) > 1 and cfg.run.device == "auto"


def test_every_shipped_profile_loads_and_expands():
    for path in sorted(C.PROFILES_DIR.glob("*.toml")):
        cfg = load_config(path.stem)  # expands names through the registries: a typo in a profile fails here
        assert cfg.run.profile == path.stem and C.grid_cells(cfg.grid), path.name


def test_the_quick_profiles_run_time_is_quoted_in_the_readme_only():
    """One measured figure in one place: the Makefile, the profile and the help text point to the README."""
    import re

    from bench.cli import build_parser

    root = Path(__file__).resolve().parents[1]
    # minutes or seconds of a run (per-step costs in ms are the profile's sizing, not its run time)
    duration = re.compile(r"\d+(\.\d+)?\s*(-\s*\d+\s*)?(min\b|minutes?\b|s\b|seconds?\b)", re.I)
    parser, _ = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["run"]
    for where, text in (("Makefile", (root / "Makefile").read_text()),
                        ("quick.toml", (C.PROFILES_DIR / "quick.toml").read_text()),
                        ("run --help", sub.format_help())):  # fmt: skip
        assert not duration.search(text), f"{where} quotes a run time: {duration.search(text).group(0)!r}"
    readme = (root / "README.md").read_text()
    assert re.search(r"`make bench`.{0,400}?measured", readme, re.S), "the README states the measured time"


def test_probe_profile_is_the_issue_probe():
    cfg = load_config("probe", expand=False)
    assert cfg.grid.models == ("mlp_tanh",) and cfg.grid.n_train == (1000,) and cfg.train["steps"] == 4000
    assert cfg.train["schedule"] == "constant" and set(cfg.grid.betas) == {1.0, 0.5}


def test_layers_file_then_command_line(tmp_path):
    path = write(tmp_path, "[grid]\nseeds = [7]\nn_test = 50\n[train]\nsteps = 20\n")
    cfg = load_config("quick", path, {"grid.seeds": "0,1,2", "train.lr": 0.01, "run.workers": 3}, expand=False)
    assert cfg.grid.seeds == (0, 1, 2)  # command line beats the file
    assert cfg.grid.n_test == 50  # the file beats the profile
    assert cfg.train["steps"] == 20 and cfg.train["lr"] == 0.01 and cfg.train["optimizer"] == "adam"
    assert cfg.run.workers == 3 and cfg.grid.equations == load_config("quick", expand=False).grid.equations


def test_config_file_without_profile(tmp_path):
    path = write(tmp_path, '[grid]\nequations = "forum4x4"\nmodels = "mlp_tanh,fastkan"\n')
    cfg = load_config(None, path, expand=False)
    assert cfg.run.profile == "my" and cfg.grid.models == ("mlp_tanh", "fastkan") and cfg.grid.seeds == (0,)


def test_unknown_key_names_the_file_and_suggests(tmp_path):
    path = write(tmp_path, "[grid]\nmodles = ['fastkan']\n")
    with pytest.raises(ConfigError, match=r"my\.toml: unknown key grid\.modles \(did you mean 'models'\?\)"):
        load_config("quick", path, expand=False)


def test_unknown_table_and_command_line_key():
    with pytest.raises(ConfigError, match=r"unknown table \[trian\] \(did you mean 'train'\?\)"):
        load_config("quick", overrides={"trian.steps": 3}, expand=False)
    with pytest.raises(ConfigError, match=r"command line: unknown key run\.worker \(did you mean 'workers'\?\)"):
        load_config("quick", overrides={"run.worker": 3}, expand=False)


def test_unknown_train_key_is_checked_against_trainconfig():
    with pytest.raises(ConfigError, match=r"unknown key train\.stesp \(did you mean 'steps'\?\)"):
        load_config("quick", overrides={"train.stesp": 3}, expand=False)


def test_beta_belongs_to_the_grid():
    with pytest.raises(ConfigError, match=r"grid\.betas"):
        load_config("quick", overrides={"train.beta": 0.5}, expand=False)


def test_bad_values_are_named():
    with pytest.raises(ConfigError, match=r"grid\.scaling = 'fourm'.*did you mean 'forum'"):
        load_config("quick", overrides={"grid.scaling": "fourm"}, expand=False)
    with pytest.raises(ConfigError, match=r"grid\.seeds"):
        load_config("quick", overrides={"grid.seeds": "zero"}, expand=False)
    with pytest.raises(ConfigError, match=r"grid\.betas must lie in \[0, 1\]"):
        load_config("quick", overrides={"grid.betas": [1.0, 2.0]}, expand=False)
    with pytest.raises(ConfigError, match="duplicates"):
        load_config("quick", overrides={"grid.seeds": [1, 1]}, expand=False)


def test_unknown_profile_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown profile 'quik' \(did you mean 'quick'\?\)"):
        load_config("quik")
    with pytest.raises(ConfigError, match=r"bad\.toml: not valid TOML"):
        load_config("quick", write(tmp_path, "[grid\n", "bad.toml"), expand=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config("quick", tmp_path / "missing.toml")


def test_parse_overrides():
    got = parse_overrides(["train.steps=200", "grid.betas=[1, 0.5]", "grid.models=fastkan*", "run.device=cpu"])
    assert got == {"train.steps": 200, "grid.betas": [1, 0.5], "grid.models": "fastkan*", "run.device": "cpu"}
    with pytest.raises(ConfigError, match=r"TABLE\.KEY=VALUE"):
        parse_overrides(["steps=3"])


def test_model_overrides_from_toml_and_command_line(tmp_path):
    path = write(tmp_path, "[model_overrides.fastkan]\nnum_grids = 12\n")
    cfg = load_config("quick", path, {"model_overrides.mlp_tanh.width": 32}, expand=False)
    assert cfg.grid.model_overrides == {"fastkan": {"num_grids": 12}, "mlp_tanh": {"width": 32}}


def test_round_trip_through_json_dict():
    cfg = load_config("quick", overrides={"grid.match_params": 2000}, expand=False)
    assert Config.from_dict(cfg.to_dict()) == cfg


# ---- wildcard expansion ----

NAMES = ["mlp_tanh", "mlp_silu", "fastkan", "fastkan_noln", "efficient_kan"]


def check(name):
    if name not in NAMES:
        raise KeyError(f"unknown model {name!r}{C.suggest(name, NAMES)}")


def test_expand_keeps_order_and_drops_duplicates():
    got = expand_names(["fastkan*", "mlp_tanh", "fastkan", "*kan"], fnmatch_lister(NAMES), check, "model")
    assert got == ("fastkan", "fastkan_noln", "mlp_tanh", "efficient_kan")


def test_expand_errors_suggest_close_names():
    with pytest.raises(ConfigError, match=r"unknown model 'fastkn' \(did you mean 'fastkan'"):
        expand_names(["fastkn"], fnmatch_lister(NAMES), check, "model")
    with pytest.raises(ConfigError, match=r"model pattern 'resnet\*' matches nothing; available: mlp_tanh"):
        expand_names(["resnet*"], fnmatch_lister(NAMES), check, "model")


def test_expand_models_against_the_registry():
    assert C.expand_models("fastkan*,mlp_tanh") == ("fastkan", "fastkan_noln", "mlp_tanh")
    with pytest.raises(ConfigError, match="did you mean 'efficient_kan'"):
        C.expand_models("eficient_kan")


def test_expand_equations_against_the_registry():
    assert C.expand_equations("forum4x4,gen:smooth:3") == ("forum4x4", "gen:smooth:3")
    with pytest.raises(ConfigError, match="forum4x4"):
        C.expand_equations("forum4x5")


def test_hessian_weights_are_a_grid_dimension_restricted_to_their_sets():
    cfg = load_config("quick", overrides={"grid.hess_weights": [0.0, 0.1], "grid.hess_equations": "forum4x4",
                                          "grid.equations": "forum4x4,gen:smooth:0", "grid.hess_betas": [1.0, 0.5]},
                      expand=True)  # fmt: skip
    cells = C.grid_cells(cfg.grid)
    hess = [c for c in cells if c.variant == "hessian"]
    # the zoo's 4 models and JENN train both betas, krg and gekpls one each; the peers have no Hessian variant
    per_set = (5 * len(cfg.grid.betas) + 2) * len(cfg.grid.seeds)
    zoo = len(cfg.grid.hess_models) * len(cfg.grid.betas) * len(cfg.grid.seeds)  # quick's grid.hess_models
    assert len(cells) == 2 * per_set + zoo and len(hess) == zoo and {c.equation for c in hess} == {"forum4x4"}
    ids = {c.cell_id for c in hess}
    assert "forum4x4__mlp_tanh__sobolev0.5_h0.1__n256__s0" in ids and "forum4x4__mlp_tanh__value_h0.1__n256__s0" in ids
    assert len({c.cell_id for c in cells}) == len(cells)
    assert Config.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match=r"grid\.hess_weights"):
        load_config("quick", overrides={"train.hess_weight": 0.1}, expand=False)
    with pytest.raises(ConfigError, match="at most one weight"):
        C.check(load_config("quick", overrides={"grid.hess_weights": [0.1, 0.2]}, expand=False))
    # hess_equations and hess_betas are filters: a set or beta the grid lacks selects no cell (so a profile's
    # Hessian variant follows --equations / --betas), but an unknown name is still an error
    cfg = load_config("quick", overrides={"grid.hess_equations": "sine1d", "grid.hess_weights": [0, 0.1]})
    C.check(cfg)
    assert not [c for c in C.grid_cells(cfg.grid) if c.variant == "hessian"]
    with pytest.raises(ConfigError, match="forum4x4"):
        load_config("quick", overrides={"grid.hess_equations": "forum4x5"})
    with pytest.raises(ConfigError, match="finite weights >= 0"):
        C.check(load_config("quick", overrides={"grid.hess_weights": [-1.0]}, expand=False))
    cfg = load_config("quick", overrides={"grid.hess_betas": [0.1]})
    assert not [c for c in C.grid_cells(cfg.grid) if c.variant == "hessian"]
    with pytest.raises(ConfigError, match=r"grid\.hess_betas must be value-loss weights in \[0, 1\]"):
        C.check(load_config("quick", overrides={"grid.hess_betas": [2.0]}, expand=False))


def test_hessian_betas_restrict_the_hessian_variant_to_those_betas():
    # the quick profile: the Hessian term on forum4x4 with the Sobolev beta only (value + Jacobian + Hessian)
    cfg = load_config("quick", expand=True)
    hess = [c for c in C.grid_cells(cfg.grid) if c.variant == "hessian"]
    assert cfg.grid.hess_betas == (0.5,) and {(c.equation, c.beta, c.hess_weight) for c in hess} == {
        ("forum4x4", 0.5, 0.1)
    }
    assert {c.model for c in hess} == set(cfg.grid.hess_models) == {"mlp_tanh", "efficient_kan"}
    assert len(hess) == len(cfg.grid.hess_models) * len(cfg.grid.seeds)
    assert Config.from_dict(cfg.to_dict()) == cfg
