"""Every Jacobian engine agrees with the float64 `loop` reference on every model, chunks exactly, and keeps the
graph where it says it does."""

from __future__ import annotations

import gc

import pytest
import torch
from torch import nn
from zoo_fixtures import small_overrides

import models
from bench.engines import ENGINES, UnsupportedEngine, choose, compiled, guards, jacobian, tangents
from bench.engines.chunking import default_chunk_size
from bench.engines.fused_mlp import fusable, fused_mlp_jacobian
from bench.engines.tangents import run_tangents, tangent_reason
from bench.run.machine import tf32_enabled
from equations.scaling import PhysicalModel, Scaler

# the Triton kernel is a float32 GPU engine, checked in tests/test_triton_mlp.py under Triton's interpreter
EAGER = [name for name, e in ENGINES.items() if not e.compiled and name != "triton_fused_mlp"]
# float64: every engine is the same chain rule in a different order: 1e-10 relative to max |J| leaves a
# factor ~1e5 above the rounding seen (2e-15).
TOL64 = 1e-10
# float32 against the float64 reference: rounding (6e-8 per op) through 2-3 layers of width 8, amplified by
# FastKAN's LayerNorm (1/std of a sample's features) and Sine's w0 = 30, stays below ~3e-6 of max |J|.
TOL32 = 1e-5


def small(name: str) -> nn.Module:
    """A zoo model at test size: 3 inputs, 2 outputs, width 8."""
    torch.manual_seed(0)
    return models.create_model(name, n_in=3, n_out=2, **small_overrides(name))


def inputs(model: nn.Module, n: int = 13, dtype=torch.float64, seed: int = 1) -> torch.Tensor:
    lo, hi = getattr(model, "input_range", (-1.0, 1.0))
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, generator=g, dtype=torch.float64) * 1.2 * (hi - lo) + lo - 0.1 * (hi - lo)).to(dtype)


def rel_err(J: torch.Tensor, ref: torch.Tensor) -> float:
    return float((J.double() - ref).abs().max() / ref.abs().max())


class LayerNormNet(nn.Module):
    """A non-Sequential model with a LayerNorm and a custom op: forward_tangents must fall back."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.ln, self.b = nn.Linear(3, 6), nn.LayerNorm(6), nn.Linear(6, 2)

    def forward(self, x):
        return self.b(torch.sin(self.ln(self.a(x))) ** 2)


def raw_inputs(n: int, g: torch.Generator) -> torch.Tensor:
    """Raw inputs with very different ranges per column (no large offsets: float32 would lose digits to them)."""
    x = torch.rand(n, 3, generator=g, dtype=torch.float64)
    return x * torch.tensor([1.0, 10.0, 0.1], dtype=torch.float64) + torch.tensor([1.0, -5.0, 0.0], dtype=torch.float64)


def physical(name: str) -> nn.Module:
    """A zoo model behind a raw-units scaler, as the runner uses it."""
    g = torch.Generator().manual_seed(3)
    x = raw_inputs(50, g)
    y = torch.rand(50, 2, generator=g, dtype=torch.float64) * torch.tensor([100.0, 0.01], dtype=torch.float64)
    return PhysicalModel(small(name), Scaler.fit(x, y, "minmax", x_range=(-1, 1), y_range=(0, 1)))


CUSTOM = {
    "sequential_layernorm": lambda: nn.Sequential(nn.Linear(3, 8), nn.LayerNorm(8), nn.GELU(approximate="tanh"),
                                                  nn.Linear(8, 8), nn.Softplus(beta=3.0, threshold=0.5),
                                                  nn.Linear(8, 8), nn.LeakyReLU(0.2), nn.Linear(8, 2)),
    "sequential_odd": lambda: nn.Sequential(nn.Linear(3, 8, bias=False), nn.Linear(8, 8), nn.Tanh(), nn.Identity(),
                                            nn.Linear(8, 2), nn.Sigmoid()),
    "layernorm_net": LayerNormNet,
    "physical_mlp_tanh": lambda: physical("mlp_tanh"),
    "physical_fastkan": lambda: physical("fastkan"),
}  # fmt: skip
MODELS = {name: (lambda name=name: small(name)) for name in models.list_models()} | CUSTOM


def custom_inputs(model: nn.Module, dtype=torch.float64) -> torch.Tensor:
    if isinstance(model, PhysicalModel):
        return raw_inputs(13, torch.Generator().manual_seed(2)).to(dtype)
    return inputs(model, dtype=dtype)


def references_for(name: str) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """(float64 model, x, loop Jacobian) for a model in MODELS."""
    m = MODELS[name]().double()
    x = custom_inputs(m).float().double()  # exact in float32 too: float32 runs see the same points
    return m, x, jacobian(m, x, engine="loop")


@pytest.fixture(scope="module")
def references() -> dict:
    return {name: references_for(name) for name in MODELS}


@pytest.mark.parametrize("engine", EAGER)
@pytest.mark.parametrize("name", list(MODELS))
def test_engine_agrees_with_loop_float64(references, name, engine):
    m, x, ref = references[name]
    if engine == "loop":  # the loop against itself would prove nothing: against torch.func's reverse mode instead
        ref = jacobian(m, x, engine="vmap_jacrev").detach()
    J = jacobian(m, x, engine=engine)
    assert J.shape == ref.shape and J.dtype == torch.float64
    assert rel_err(J, ref) < TOL64


@pytest.mark.parametrize("engine", ["forward_tangents", "vmap_jacrev", "batch_sum_reverse"])
@pytest.mark.parametrize("name", list(MODELS))
def test_engine_float32_within_documented_tolerance(references, name, engine):
    m64, x64, ref = references[name]
    m = MODELS[name]()
    m.load_state_dict(m64.state_dict())
    m = m.float()
    J = jacobian(m, x64.float(), engine=engine)
    assert J.dtype == torch.float32
    assert rel_err(J, ref) < TOL32


def built_in(model) -> bool:
    """A model of jacbench's own families (plugins, like the pykan adapter, get the generic engines)."""
    return model.family in ("mlp", "fastkan", "efficient_kan", "chebykan")


def test_tangent_rules_cover_the_zoo():
    """Every built-in zoo model gets the hand-written pass, not the vmap(jacfwd) fallback (plugins fall back)."""
    for name in models.list_models():
        model = small(name)
        if not built_in(model):  # a third-party model (pykan): the fallback, and the reason is named
            assert "no tangent rule" in tangent_reason(model), name
            continue
        assert tangent_reason(model) is None, name
    assert "no tangent rule" in tangent_reason(LayerNormNet())  # its own forward: forward_tangents falls back
    assert tangent_reason(physical("efficient_kan")) is None


def test_fused_mlp_path_matches_the_per_module_rules():
    """Plain MLPs without a graph take the fused pass (one buffer per layer); it equals the generic rules."""
    for name in [n for n in models.list_models() if n.startswith("mlp")] + ["sequential_odd"]:
        m = MODELS[name]().double()
        assert fusable(m) is not None, name
        x = inputs(m, n=40)
        assert rel_err(fused_mlp_jacobian(fusable(m), x, rows=16), run_tangents(m, x, False)) < 1e-14, name
    assert fusable(nn.Sequential(nn.Tanh(), nn.Linear(3, 2))) is None  # must not overwrite x in place
    assert fusable(MODELS["sequential_layernorm"]()) is None


@pytest.mark.parametrize("act", [nn.Sigmoid, nn.Tanh, nn.GELU, nn.SiLU, nn.Softplus, nn.ReLU])
@pytest.mark.parametrize("batch", [1, 7, 64, 300])
def test_mlp_plan_paths_match_reverse_mode(act, batch):
    """The preallocated plan (bench.engines.fused_mlp._Plan): torch.mm path below ONEDNN_ROWS stacked rows
    (B = 1, 7 here), oneDNN above (64, 300), a bias-free layer, every activation rule; float32 against float64."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 16), act(), nn.Linear(16, 16, bias=False), act(), nn.Linear(16, 2))
    assert fusable(m) is not None
    x64 = inputs(m, n=batch)
    ref = jacobian(m.double(), x64, engine="vmap_jacrev")
    assert rel_err(jacobian(m, x64, engine="forward_tangents"), ref) < 1e-13  # float64: rounding only
    m32 = m.float()
    assert rel_err(jacobian(m32, x64.float(), engine="forward_tangents"), ref) < TOL32


@pytest.mark.parametrize("batch", [1, 5, 600])
def test_a_single_linear_layer_is_its_weight(batch):
    """No activation: the fused pass's fall-through (not the plan), J = W for every sample."""
    m = nn.Sequential(nn.Linear(3, 2))
    J = jacobian(m, torch.rand(batch, 3), engine="forward_tangents")
    assert J.shape == (batch, 2, 3) and torch.equal(J, m[0].weight.detach().expand(batch, 2, 3))


def test_mlp_plan_returns_fresh_jacobians():
    """The plan's buffers are reused by the next call: a returned J must never alias them."""
    m = MODELS["mlp_forum"]().float()
    x1, x2 = inputs(m, n=5, dtype=torch.float32), inputs(m, n=5, dtype=torch.float32, seed=2)
    J1 = jacobian(m, x1, engine="forward_tangents")
    kept = J1.clone()
    J2 = jacobian(m, x2, engine="forward_tangents")
    assert torch.equal(J1, kept) and not torch.equal(J1, J2)


@pytest.mark.parametrize("name", ["mlp_forum", "efficient_kan"])
def test_cpu_shares_per_core_equal_one_pass(monkeypatch, name):
    """With 2 threads, each core takes its own blocks (bench.engines.blocks): same J, thread count restored."""
    monkeypatch.setattr(tangents, "CPU_BLOCK_BYTES", 1)  # 64-row blocks: 1100 rows make 18 blocks, 2 shares
    m = small(name).double()
    x = inputs(m, n=1100)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        J = jacobian(m, x, engine="forward_tangents")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    assert rel_err(J, run_tangents(m, x, False)) < 1e-14


def test_subclass_with_own_forward_gets_no_rule():
    class Doubled(nn.Sequential):
        def forward(self, x):
            return 2 * super().forward(x)

    class Steeper(nn.Tanh):
        def forward(self, x):
            return torch.tanh(3 * x)

    m = Doubled(nn.Linear(3, 4), Steeper(), nn.Linear(4, 2)).double()
    assert "no tangent rule" in tangent_reason(m)
    x = inputs(m)
    assert rel_err(jacobian(m, x, engine="forward_tangents"), jacobian(m, x, engine="loop")) < TOL64


def test_activation_kinks_match_autograd():
    """Softplus switches to the identity where beta z > threshold, ReLU's derivative at 0 is 0: as autograd."""
    x = torch.tensor([[-1.0], [0.0], [0.1666], [1 / 6], [0.17], [2.0]], dtype=torch.float64)
    cases = {
        nn.Softplus(beta=3.0, threshold=0.5): [None, None, None, None, 1.0, 1.0],
        nn.ReLU(): [0.0, 0.0, 1.0, 1.0, 1.0, 1.0],
        nn.LeakyReLU(0.3): [0.3, 0.3, 1.0, 1.0, 1.0, 1.0],
        models.mlp.Sine(3.0): [None] * 6,
    }
    for act, exact in cases.items():
        m = nn.Sequential(nn.Identity(), act)
        J, ref = jacobian(m, x, engine="forward_tangents").flatten(), jacobian(m, x, engine="loop").flatten()
        assert rel_err(J, ref) < 1e-15, act
        for j, r, e in zip(J.tolist(), ref.tolist(), exact, strict=True):
            assert e is None or j == r == e, act


def flat_gradients(loss: torch.Tensor, m: nn.Module) -> torch.Tensor:
    """d loss / d theta, flattened; 0 where the loss does not depend on a parameter (e.g. biases before a ReLU)."""
    params = [p for p in m.parameters() if p.requires_grad]
    g = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if gi is None else gi).flatten() for p, gi in zip(params, g, strict=True)])


def parameter_gradients(m: nn.Module, x: torch.Tensor, engine: str) -> torch.Tensor:
    """d/dtheta sum J^2 through `engine`'s J (create_graph)."""
    return flat_gradients(jacobian(m, x, engine=engine, create_graph=True).square().sum(), m)


@pytest.fixture(scope="module")
def loop_gradients(references) -> dict:
    """name -> parameter gradients through the loop engine's J (computed once per model)."""
    return {name: parameter_gradients(m, x, "loop") for name, (m, x, _) in references.items()}


@pytest.mark.parametrize("engine", [n for n in EAGER if ENGINES[n].differentiable and n != "loop"])
@pytest.mark.parametrize("name", list(MODELS))
def test_create_graph_gives_the_same_parameter_gradients(references, loop_gradients, name, engine):
    """A loss on J backpropagates to the parameters exactly as through the loop reference (Sobolev training)."""
    m, x, _ = references[name]
    if engine == "vmap_jacfwd" and set(guards.BROKEN) & guards.trace(m, x).nodes:
        with pytest.raises(UnsupportedEngine, match="196700"):
            parameter_gradients(m, x, engine)
        return
    assert rel_err(parameter_gradients(m, x, engine), loop_gradients[name]) < TOL64


def test_vmap_jacfwd_graph_through_layernorm_is_wrong_in_torch():
    """Why vmap_jacfwd refuses create_graph with a LayerNorm: torch's own result is off (pytorch#196700).
    If this starts failing, torch fixed it: drop NativeLayerNormBackward0 from guards.BROKEN."""
    m, x, _ = references_for("sequential_layernorm")
    with torch.enable_grad():
        J = torch.func.vmap(torch.func.jacfwd(lambda xi: m(xi[None])[0]))(x)
    assert rel_err(flat_gradients(J.square().sum(), m), parameter_gradients(m, x, "forward_tangents")) > 0.01


def test_training_default_is_batched_and_differentiable():
    m = small("mlp_tanh")
    x = inputs(m, dtype=torch.float32)
    chosen = choose(m, x, create_graph=True)
    assert chosen.differentiable and chosen.name != "loop" and not chosen.batch_sum
    J = jacobian(m, x, create_graph=True)
    assert J.requires_grad
    assert not jacobian(m, x).requires_grad


def test_auto_picks_the_hand_written_pass_for_the_zoo():
    for name in models.list_models():
        m = small(name)
        if not built_in(m):
            continue
        assert choose(m, inputs(m, dtype=torch.float32)).name == "forward_tangents", name


def test_engines_without_graph_refuse_create_graph():
    m = small("mlp_tanh").double()
    with pytest.raises(UnsupportedEngine, match="create_graph"):
        jacobian(m, inputs(m), engine="functional_forward", create_graph=True)


def test_bad_arguments_get_clear_errors():
    m = small("mlp_tanh").double()
    with pytest.raises(KeyError, match="vmap_jacrev"):
        jacobian(m, inputs(m), engine="vmap_jacrv")
    with pytest.raises(ValueError, match=r"\(B, n_in\)"):
        jacobian(m, torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="chunk_size"):
        jacobian(m, inputs(m), chunk_size=0)


@pytest.mark.parametrize("engine", ["forward_tangents", "vmap_jacrev", "batch_sum_reverse"])
@pytest.mark.parametrize("chunk", [1, 5, 100])
@pytest.mark.parametrize("create_graph", [False, True])
def test_chunked_equals_unchunked(engine, chunk, create_graph):
    """Chunk boundaries are right (B = 13 is not a multiple of 4 or 5): the chunked result is exactly the
    engine's result on each chunk, in order, and equals the one-pass result up to the last bit (BLAS picks
    kernels by matrix size, so a GEMM on 4 rows may round differently than on 13)."""
    m = small("fastkan").double()
    x = inputs(m, n=13)
    J = jacobian(m, x, engine=engine, chunk_size=chunk, create_graph=create_graph)
    assert J.shape == (13, 2, 3) and J.requires_grad == create_graph
    pieces = torch.cat([ENGINES[engine].fn(m, xc, create_graph=create_graph) for xc in x.split(chunk)])
    assert torch.equal(J, pieces)
    assert rel_err(J.detach(), jacobian(m, x, engine=engine, chunk_size=13)) < 1e-14


def test_default_chunk_size_bounds_memory():
    forum = models.create_model("mlp_forum")
    x = torch.zeros(10, 4)
    # (1 + 4) x 500 floats x 4 bytes x 4 temporaries = 40 KB a sample -> 256 MiB / 40 KB
    assert default_chunk_size(forum, x) == 256 * 2**20 // 40_000
    assert default_chunk_size(forum, x.double()) == 256 * 2**20 // 80_000
    wide = models.create_model("mlp_tanh", width=4096, depth=4)
    assert 1 <= default_chunk_size(wide, x) < default_chunk_size(forum, x)


def test_tf32_is_off_by_default():
    assert tf32_enabled() is False


def test_every_engine_documents_itself():
    for name, e in ENGINES.items():
        assert e.name == name and e.doc
        reason = e.supports(small("mlp_tanh"), torch.device("cpu"), torch.float32)
        if name == "triton_fused_mlp":  # a GPU kernel: on the CPU only under Triton's interpreter, and it says so
            assert reason is None or "CUDA only" in reason or "triton not installed" in reason
        else:
            assert reason is None, name


@pytest.mark.slow
def test_compiled_engine_agrees():
    """One compiled engine end to end (a cold torch.compile costs ~25 s here; the others share its wrapper)."""
    m64 = small("mlp_tanh").double()
    x = inputs(m64)
    m = small("mlp_tanh").float()
    J = jacobian(m, x.float(), engine="compiled_forward_tangents")
    assert rel_err(J, jacobian(m64, x, engine="loop")) < TOL32


@pytest.mark.slow
def test_compiled_tangents_in_padded_blocks_equal_one_pass(monkeypatch):
    """compiled_forward_tangents on CPU: blocks of one compiled shape, the last one padded (150 rows in blocks of
    64: 64, 64, then 22 rows + 42 of padding); equal to the eager pass, one compiled shape for any batch size."""
    monkeypatch.setattr(compiled, "COMPILED_BLOCK_ROWS", 64)
    m = small("chebykan").float()
    for n in (150, 100):
        x = inputs(m, n=n, dtype=torch.float32)
        J = jacobian(m, x, engine="compiled_forward_tangents")
        assert J.shape == (n, m.n_out, x.shape[1])
        assert rel_err(J, run_tangents(m, x, False)) < TOL32  # float32: eager and inductor round differently
    _, shapes = compiled._COMPILED["compiled_forward_tangents"][m]
    assert {s[0] for s in shapes} == {(64, x.shape[1])}  # one compiled shape, whatever the batch


def test_compile_failure_is_reported_not_raised():
    """torch 2.13 cannot compile vmap(jacfwd) of ChebyKAN: UnsupportedEngine with torch's reason, and
    `supports` says so from then on (the throughput sweep records it as unsupported)."""
    m = small("chebykan")
    engine = ENGINES["compiled_vmap_jacfwd"]
    keys = str(torch._C._dispatch_tls_local_exclude_set())
    try:
        jacobian(m, inputs(m, dtype=torch.float32), engine=engine)
    except UnsupportedEngine as err:
        assert "could not compile model ChebyKAN" in str(err)
        assert engine.supports(m, torch.device("cpu"), torch.float32).startswith("torch.compile failed")
    else:  # a torch that compiles it must also get it right
        pytest.skip("this torch compiles vmap(jacfwd) of ChebyKAN")
    # the failed trace's garbage must not switch autograd off in this thread when it is collected
    gc.collect()
    assert str(torch._C._dispatch_tls_local_exclude_set()) == keys
    x = torch.ones(2, requires_grad=True)
    assert (2 * x).sum().grad_fn is not None
    assert "no tangent rule" in ENGINES["compiled_forward_tangents"].supports(LayerNormNet(), "cpu", torch.float32)


COMPILED = [name for name, e in ENGINES.items() if e.compiled]


@pytest.mark.slow
@pytest.mark.parametrize("engine", COMPILED)
@pytest.mark.parametrize("name", models.list_models())
def test_compiled_engines_agree_or_refuse_on_every_model(name, engine):
    """Every engine the throughput sweep times, the compiled ones too, on every zoo model: right within the float32
    tolerance against the float64 loop, or an UnsupportedEngine saying it could not compile (the sweep then
    records `unsupported` and times nothing). Placed after the compile-failure test, which needs the first failure.
    Cold compiles: a few seconds each, about a minute in all here."""
    m64 = small(name).double()
    x = inputs(m64)
    m = small(name).float()
    eng = ENGINES[engine]
    if eng.supports(m, torch.device("cpu"), torch.float32) is not None:
        with pytest.raises(UnsupportedEngine):
            jacobian(m, x.float(), engine=engine)
        return
    try:
        J = jacobian(m, x.float(), engine=engine)
    except UnsupportedEngine as err:
        assert "could not compile" in str(err)
        return
    assert J.shape == (len(x), 2, 3) and rel_err(J, jacobian(m64, x, engine="loop")) < TOL32


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("engine", ["forward_tangents", "vmap_jacrev", "vmap_jacfwd", "batch_sum_reverse"])
def test_cuda_engines_agree_with_cpu(engine):
    for name in ["mlp_forum", "fastkan", "efficient_kan", "chebykan"]:
        m = small(name).double()
        x = inputs(m)
        ref = jacobian(m, x, engine="loop")
        J = jacobian(m.cuda(), x.cuda(), engine=engine)
        assert J.device.type == "cuda" and rel_err(J.cpu(), ref) < TOL64
