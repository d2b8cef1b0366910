"""FLOPs per forward pass and per Jacobian by hand, the measured peak, the TF32 switch."""

import pytest
import torch
from speed_fixtures import forum_mlp

import models
from bench.speed import roofline

MATMULS = 2 * (4 * 100 + 3 * 100 * 100 + 100 * 4)  # the forum MLP's multiply-adds: 61,600 FLOP per sample
BIASES = 4 * 100 + 4


def test_forum_mlp_flops_by_hand():
    model = forum_mlp()  # a plain nn.Sequential: Linear layers counted, activations not
    assert roofline.linear_flops(model) == roofline.forward_flops(model) == MATMULS + BIASES
    assert roofline.jacobian_flops(model, n_in=4) == 5 * (MATMULS + BIASES)  # primal + 4 tangents


def test_zoo_forum_mlp_jacobian_flops_by_hand():
    model = models.create_model("mlp_forum")
    sigmoids = 3 * 4 * 100  # exp, add, div per hidden unit (models/mlp.py)
    assert roofline.jacobian_flops(model) == 5 * (MATMULS + BIASES + sigmoids)  # about 5 x 62k of ANCHORS


def test_a_models_own_flop_count_wins():
    model = forum_mlp()
    model.flops_per_sample = lambda: 12345
    model.n_in = 4
    assert roofline.jacobian_flops(model) == 5 * 12345


def test_peak_flops_is_measured_once_per_key(monkeypatch):
    threads = torch.get_num_threads()
    first = roofline.peak_flops("cpu", torch.float64, n=64, budget_s=0.01)
    assert first > 0 and torch.get_num_threads() == threads  # all cores while measuring, then restored
    monkeypatch.setattr(roofline, "time_callable", lambda *a, **k: pytest.fail("measured twice"))
    assert roofline.peak_flops("cpu", torch.float64, n=64) == first
    from bench.run.results import limit_fraction

    assert limit_fraction(1e3, 1e6, first) == pytest.approx(1e9 / first)


def test_tf32_mode_sets_and_restores_the_flags():
    before = (torch.backends.cuda.matmul.allow_tf32, torch.get_float32_matmul_precision())
    with roofline.tf32_mode(True):
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    with roofline.tf32_mode(False):
        assert not torch.backends.cuda.matmul.allow_tf32
        assert torch.get_float32_matmul_precision() == "highest"
    assert (torch.backends.cuda.matmul.allow_tf32, torch.get_float32_matmul_precision()) == before
    from bench.run.machine import tf32_enabled

    assert tf32_enabled("cpu") is False
