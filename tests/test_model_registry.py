"""The registry: lookup, overrides, errors, sizing, plugins from a file and from entry points."""

import importlib.metadata
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.func import jacrev, vmap

import models
from models import plugins, registry

EXAMPLE_PLUGIN = Path(__file__).parent / "data" / "example_plugin.py"


@pytest.fixture
def scratch_registry(monkeypatch):
    """Registrations made in a test vanish after it."""
    monkeypatch.setattr(registry, "_MODELS", dict(registry._MODELS))
    monkeypatch.setattr(plugins, "_loaded_files", {})
    monkeypatch.setattr(plugins, "_loaded_entry_points", set())
    return registry._MODELS


def fake_entry_points(monkeypatch, eps):
    monkeypatch.setattr(
        importlib.metadata, "entry_points", lambda group=None: eps if group == plugins.ENTRY_POINT_GROUP else []
    )


def test_builtin_names_are_registered():
    names = set(models.list_models())
    required = {"mlp_tanh", "mlp_sigmoid", "mlp_silu", "mlp_gelu", "mlp_softplus", "mlp_relu", "mlp_sine"}
    assert required | {"mlp_forum", "fastkan", "fastkan_noln", "efficient_kan", "chebykan"} <= names


def test_list_models_wildcards_commas_and_natural_sort(scratch_registry):
    assert models.list_models("fastkan*") == ["fastkan", "fastkan_noln"]
    assert models.list_models("chebykan, mlp_s*") == ["chebykan", "mlp_sigmoid", "mlp_silu", "mlp_sine", "mlp_softplus"]
    for n in ("net10", "net2", "net1"):
        models.register_model(lambda n_in=4, n_out=4: None, name=n)
    assert models.list_models("net*") == ["net1", "net2", "net10"]
    assert models.list_models("nothing*") == []


def test_none_overrides_are_dropped():
    a = models.create_model("mlp_tanh", width=None, depth=None, activation=None, seed=0)
    assert a.widths == [4, 64, 64, 64, 4] and a.activation == "tanh"


def test_unknown_override_names_the_accepted_ones():
    with pytest.raises(ValueError, match=r"does not accept 'widht' \(did you mean 'width'\?\).*accepts: width, depth"):
        models.create_model("mlp_tanh", widht=10)
    with pytest.raises(ValueError, match="use_layernorm"):  # fixed by the variant, so not an override
        models.create_model("fastkan_noln", use_layernorm=True)


def test_unknown_model_suggests_close_names():
    with pytest.raises(KeyError, match=r"unknown model 'fastkn'.*did you mean 'fastkan'"):
        models.create_model("fastkn")


def test_registering_a_name_twice_is_an_error(scratch_registry):
    with pytest.raises(ValueError, match="'mlp_tanh' is already registered"):

        @models.register_model
        def mlp_tanh(n_in=4, n_out=4):
            return nn.Linear(n_in, n_out)


def test_seed_is_reproducible_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = models.create_model("efficient_kan", seed=7)
    b = models.create_model("efficient_kan", seed=7)
    assert torch.rand(3).equal(expected)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)


def test_factory_must_return_a_zoo_model(scratch_registry):
    @models.register_model
    def bare_linear(n_in=4, n_out=4):
        return nn.Linear(n_in, n_out)

    with pytest.raises(ValueError, match=r"without \['family'"):
        models.create_model("bare_linear")


def test_describe_table():
    df = models.describe_table("mlp_forum,fastkan*")
    assert list(df.columns[:4]) == ["name", "family", "params", "flops"]
    assert df["name"].tolist() == ["fastkan", "fastkan_noln", "mlp_forum"]
    assert df.set_index("name").loc["mlp_forum", "params"] == 31204


def test_match_params_returns_overrides_for_create_model():
    ov = models.match_params("efficient_kan", 5000, n_in=4, n_out=4, depth=1, grid_size=8)
    assert ov["depth"] == 1 and ov["grid_size"] == 8 and isinstance(ov["width"], int)
    count = models.create_model("efficient_kan", **ov).param_count()
    assert abs(count - 5000) <= 500
    # the chosen width is the closest: its neighbours are not closer
    for w in (ov["width"] - 1, ov["width"] + 1):
        other = models.create_model("efficient_kan", **{**ov, "width": w}).param_count()
        assert abs(other - 5000) >= abs(count - 5000)
    with pytest.raises(ValueError, match="chooses the width itself"):
        models.match_params("mlp_tanh", 5000, hidden=[10])


def test_load_plugin_registers_and_runs(scratch_registry):
    added = models.load_plugin(EXAMPLE_PLUGIN)
    assert added == ["example_restanh"]
    assert models.load_plugin(str(EXAMPLE_PLUGIN)) == []  # idempotent
    model = models.create_model("example_restanh", n_in=3, n_out=2, width=8, seed=0).double()
    x = torch.rand(5, 3, dtype=torch.float64) * 2 - 1
    assert model(x).shape == (5, 2) and model(x[0]).shape == (2,)
    assert vmap(jacrev(model))(x).shape == (5, 2, 3)
    assert model.param_count() == sum(p.numel() for p in model.parameters())
    assert models.describe_table("example_*")["family"].tolist() == ["example"]


def test_plugin_clash_is_a_clear_error_and_rolls_back(scratch_registry, tmp_path):
    bad = tmp_path / "clash.py"
    bad.write_text(
        "from torch import nn\nfrom models import register_model\n\n"
        "@register_model\ndef brand_new(n_in=4, n_out=4):\n    return nn.Linear(n_in, n_out)\n\n"
        "@register_model\ndef fastkan(n_in=4, n_out=4):\n    return nn.Linear(n_in, n_out)\n"
    )
    with pytest.raises(ValueError, match=r"clash\.py.*'fastkan' is already registered"):
        models.load_plugin(bad)
    assert "brand_new" not in models.list_models()
    with pytest.raises(FileNotFoundError, match="not found"):
        models.load_plugin(tmp_path / "missing.py")


def test_entry_points_load_lazily(scratch_registry, tmp_path, monkeypatch):
    (tmp_path / "third_party_zoo.py").write_text(EXAMPLE_PLUGIN.read_text().replace("example_restanh", "tp_restanh"))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "third_party_zoo", raising=False)
    eps = [
        importlib.metadata.EntryPoint("zoo", "third_party_zoo", models.ENTRY_POINT_GROUP),  # a module
        importlib.metadata.EntryPoint("tp_alias", "third_party_zoo:tp_restanh", models.ENTRY_POINT_GROUP),  # a factory
    ]
    fake_entry_points(monkeypatch, eps)
    assert models.list_models("tp_*") == ["tp_alias", "tp_restanh"]
    assert models.create_model("tp_alias", seed=0).family == "example"
    monkeypatch.delitem(sys.modules, "third_party_zoo", raising=False)


def test_broken_entry_point_names_itself(scratch_registry, monkeypatch):
    eps = [importlib.metadata.EntryPoint("broken", "no_such_module_xyz", models.ENTRY_POINT_GROUP)]
    fake_entry_points(monkeypatch, eps)
    with pytest.raises(ValueError, match=r"entry point 'broken'.*failed to load"):
        models.list_models()
