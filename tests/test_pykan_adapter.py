"""pykan's KAN through the plugin path: registered by an entry point, loads pykan checkpoints, vmap-safe.

The generic zoo tests (tests/test_models.py, tests/test_engines.py) already run on `pykan` because they are
parametrized over list_models(); these are the adapter's own promises.
"""

import random

import numpy as np
import pytest
import torch
from torch.func import jacrev, vmap

import models

kan = pytest.importorskip("kan", reason="pykan not installed (pip install 'jacbench[pykan]')")


def test_registered_through_the_entry_point():
    import importlib.metadata

    eps = importlib.metadata.entry_points(group=models.ENTRY_POINT_GROUP)
    assert "models.pykan_adapter" in {ep.value for ep in eps}
    assert "pykan" in models.list_models("py*")
    m = models.create_model("pykan", layers=[4, 6, 4], seed=0)
    assert m.family == "pykan" and m.input_range == (-1.0, 1.0) and m.param_count() == 2 * 24 * (5 + 3 + 2)


def test_a_plain_pykan_checkpoint_loads_strictly_and_gives_the_same_outputs_and_jacobians(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # pykan's defaults save a checkpoint folder into the working directory
    upstream = kan.KAN(width=[4, 6, 4], grid=5, k=3, seed=3).double()  # pykan's defaults, as a user trains it
    torch.save(upstream.state_dict(), tmp_path / "trained_model.pth")
    ours = models.create_model("pykan", layers=[4, 6, 4], seed=0).double()
    ours.load_state_dict(torch.load(tmp_path / "trained_model.pth"), strict=True)
    x = torch.rand(16, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    torch.testing.assert_close(ours(x), upstream(x), rtol=1e-12, atol=1e-12)
    # pykan (save_act on) takes a std over the batch, so the reference differentiates the batch sum, not one sample
    J_up = torch.autograd.functional.jacobian(lambda v: upstream(v).sum(0), x).permute(1, 0, 2)
    torch.testing.assert_close(vmap(jacrev(ours))(x), J_up, rtol=1e-10, atol=1e-12)


def test_construction_writes_no_files_and_leaves_the_global_rngs_alone(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np_before, py_before = np.random.get_state()[1].copy(), random.getstate()  # noqa: NPY002
    torch_before = torch.get_rng_state()
    models.create_model("pykan", seed=5)  # pykan's constructor reseeds torch, numpy and random globally
    assert torch.equal(torch.get_rng_state(), torch_before)
    models.create_model("pykan")  # without a seed it draws from torch's generator, like any init; not from numpy's
    assert list(tmp_path.iterdir()) == []
    assert np.array_equal(np.random.get_state()[1], np_before) and random.getstate() == py_before  # noqa: NPY002


def test_same_seed_same_weights_and_leading_axes():
    a = models.create_model("pykan", seed=1)
    b = models.create_model("pykan", seed=1)
    for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        # 1e-6: pykan fits its initial spline coefficients by float32 least squares, which MKL does not repeat
        # to the last bit (seen: 7e-9 apart on the same seed); everything else is bitwise equal
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
    x = torch.rand(3, 5, 4) * 2 - 1
    assert a(x).shape == (3, 5, 4) and torch.allclose(a(x)[1], a(x[1]))
