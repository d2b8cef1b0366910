"""Many models in one launch: the cells of a group (one architecture; different seeds, betas and learning rates)
trained together on stacked parameters with torch.func, equal to training each alone with `train.fit`.

    results = fit_stacked(models, trains, vals, cfgs, seeds)     # one train.FitResult per member; weights in the models

Members must share the architecture (the same module structure and parameter shapes), the training data's shapes
and every TrainConfig field but `beta`, `lr`, `lr_grid` and `patience`. Each step evaluates all members' losses at once,
`vmap` over the stacked parameters of `torch.func.functional_call`, and sums them (members do not interact, so
each member's gradient is its own loss's). Adam (or AdamW) is written out elementwise over the stack, with each
member's own learning rate and schedule: the same update as `torch.optim.Adam` member by member. The loop around the
step is train's own (`train.train_members`, which `train.fit` runs with one member): the schedule, validation,
early stopping, restore-best and the L-BFGS polish, per member; a member that stopped early keeps its best weights
and is no longer updated. On a GPU this turns many small launches into one; on the CPU it is what the tests check
against separate training.

Not stacked: efficient-KAN grid updates (they change buffers per member from its data), the regularization
term, mini-batches, a Hessian term and a wall-time budget: `fit_stacked` refuses them (train members with
`train.fit`). Frozen parameters (FastKAN's grid) stay frozen. The steps run eagerly (no `compile_step`), and a
member whose loss diverges stops the whole stack with TrainingDiverged naming it.
"""

from __future__ import annotations

import math
import time

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from bench.engines.tangents import tangent_reason, value_and_jacobian
from bench.fidelity import train  # a module import: train picks this module for stacked candidates
from bench.run.config import TrainConfig

BETAS, EPS = (0.9, 0.999), 1e-8  # torch.optim.Adam's defaults, which train.fit uses

# fields members may differ in; the others must be equal
PER_MEMBER = ("beta", "lr", "lr_grid", "patience")


def _check(models: list[nn.Module], trains: list, cfgs: list[TrainConfig]) -> None:
    if not models or len({len(models), len(trains), len(cfgs)}) != 1:
        raise ValueError(f"fit_stacked needs one train set and config per model ({len(models)} models, "
                         f"{len(trains)} train sets, {len(cfgs)} configs)")  # fmt: skip
    shapes = [[(k, tuple(p.shape)) for k, p in m.named_parameters()] for m in models]
    if any(s != shapes[0] for s in shapes) or len({type(m) for m in models}) != 1:
        raise ValueError("fit_stacked: the members must share the architecture (same class and parameter shapes)")
    data = [d.shapes() if isinstance(d, train.TrainData) else type(d).__name__ for d in trains]
    if any(d != data[0] for d in data):
        raise ValueError(
            f"fit_stacked: the members' training data must have one shape, got {sorted(set(data), key=str)}"
        )
    base = {k: v for k, v in vars(cfgs[0]).items() if k not in PER_MEMBER}
    for c in cfgs:
        other = {k: v for k, v in vars(c).items() if k not in PER_MEMBER}
        if other != base:
            diff = sorted(k for k in base if base[k] != other[k])
            raise ValueError(
                f"fit_stacked: the members' configs may differ in {', '.join(PER_MEMBER)} only, not {diff}"
            )
    c = cfgs[0]
    unsupported = {"grid_update_every": c.grid_update_every > 0, "reg_weight": c.reg_weight > 0,
                   "batch_size": c.batch_size is not None, "hess_weight": c.hess_weight > 0,
                   "steps": c.steps is None, "max_seconds": c.max_seconds is not None}  # fmt: skip
    bad = [k for k, v in unsupported.items() if v]
    if bad:
        raise ValueError(f"fit_stacked does not stack {', '.join(bad)}: train these members with train.fit")
    if any(c.beta < 1 for c in cfgs) and tangent_reason(models[0]) is not None:
        raise ValueError(f"fit_stacked: Sobolev members need tangent rules ({tangent_reason(models[0])})")


class _ValueAndJacobian(nn.Module):
    """The tangent pass as a module, so `functional_call` can swap a member's parameters into it."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return value_and_jacobian(self.net, x, True)


class _StackedAdam:
    """Adam / AdamW over stacked parameters (M, ...), one learning rate per member: torch.optim.Adam's update."""

    def __init__(self, params: dict[str, Tensor], cfg: TrainConfig):
        self.params, self.cfg, self.t = params, cfg, 0
        self.m = {k: torch.zeros_like(p) for k, p in params.items()}
        self.v = {k: torch.zeros_like(p) for k, p in params.items()}

    @torch.no_grad()
    def step(self, grads: dict[str, Tensor], lr: Tensor, active: Tensor, frozen: dict[str, Tensor]) -> None:
        """lr, active: (M,): each member's learning rate, and whether it is still trained; frozen[name] (M,):
        members whose loss does not reach that parameter (torch.optim.Adam skips a parameter without a grad)."""
        self.t += 1
        b1, b2 = BETAS
        bc1, bc2 = 1 - b1**self.t, 1 - b2**self.t
        wd, decoupled = self.cfg.weight_decay, self.cfg.optimizer == "adamw"
        for k, p in self.params.items():
            shape = (-1,) + (1,) * (p.dim() - 1)
            g, step_lr = grads[k], lr.view(shape)
            a = (active & ~frozen[k]).view(shape) if k in frozen else active.view(shape)
            if wd and not decoupled:
                g = g + wd * p
            m_new = self.m[k] * b1 + g * (1 - b1)
            v_new = self.v[k] * b2 + g * g * (1 - b2)
            self.m[k] = torch.where(a, m_new, self.m[k])
            self.v[k] = torch.where(a, v_new, self.v[k])
            denom = self.v[k].sqrt() / math.sqrt(bc2) + EPS
            new = p * (1 - step_lr * wd) if (wd and decoupled) else p
            new = new - (step_lr / bc1) * self.m[k] / denom
            p.copy_(torch.where(a, new, p))


def _unreached(model: nn.Module, data, cfgs: list[TrainConfig], like: Tensor) -> dict[str, Tensor]:
    """name -> (M,) members whose loss never reaches that parameter: with beta = 0 (Jacobian only) the output
    layer's bias, say. train.fit's optimizer leaves such a parameter alone (no grad), weight decay included."""
    out = {}
    named = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
    names = [k for k, _ in named]
    for beta in {c.beta for c in cfgs}:
        cfg = TrainConfig(**{**vars(cfgs[0]), "beta": beta, "lr_grid": ()})
        loss = train.sobolev_loss(model, data.x, data.y, data.J, cfg, None)
        grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
        for k, g in zip(names, grads, strict=True):
            if g is None:
                mask = out.setdefault(k, torch.zeros(len(cfgs), dtype=torch.bool, device=like.device))
                mask |= torch.tensor([c.beta == beta for c in cfgs], device=like.device)
    return out


def _load_member(model: nn.Module, params: dict[str, Tensor], i: int) -> None:
    with torch.no_grad():
        for k, p in model.named_parameters():
            if k in params:
                p.copy_(params[k][i])


def stack_reason(models: list[nn.Module], trains: list, cfgs: list[TrainConfig]) -> str | None:
    """Why these members cannot train as one stack (None: they can)."""
    try:
        _check(models, trains, cfgs)
    except ValueError as err:
        return str(err)
    return None


class _Stack:
    """The members on stacked parameters: each step evaluates every member's loss at once (``vmap`` over
    ``functional_call``) and updates them with `_StackedAdam`; ``train.train_members`` runs the loop."""

    def __init__(self, models: list[nn.Module], trains: list[train.TrainData], cfgs: list[TrainConfig]):
        self.models, self.cfgs, self.loss_fn = models, cfgs, None
        self.notes: list[list[str]] = [[] for _ in models]
        like = next(models[0].parameters())
        self.like, M = like, len(models)
        self.X, self.Y = torch.stack([d.x for d in trains]), torch.stack([d.y for d in trains])
        self.betas = torch.tensor([c.beta for c in cfgs], dtype=like.dtype, device=like.device)
        sobolev = any(c.beta < 1 for c in cfgs)
        self.Jd = torch.stack([d.J for d in trains]) if sobolev else torch.zeros(M, 1, dtype=like.dtype)
        stacked_params, buffers = stack_module_state(models)
        trainable = {k for k, p in models[0].named_parameters() if p.requires_grad}
        # frozen parameters (FastKAN's grid) ride with the buffers: swapped in, never differentiated or updated
        self.params = {k: p.detach().requires_grad_(True) for k, p in stacked_params.items() if k in trainable}
        self.buffers = {**buffers, **{k: p.detach() for k, p in stacked_params.items() if k not in trainable}}
        base, both = models[0], _ValueAndJacobian(models[0])

        def member(p, b, x, y, J, beta):
            """train.sobolev_loss of one member (the values and J from one tangent pass where it trains on J)."""
            if not sobolev:
                return beta * torch.mean((functional_call(base, (p, b), (x,)) - y) ** 2)
            y_m, J_m = functional_call(both, ({f"net.{k}": v for k, v in p.items()},
                                              {f"net.{k}": v for k, v in b.items()}), (x,))  # fmt: skip
            return beta * torch.mean((y_m - y) ** 2) + (1 - beta) * torch.mean((J_m - J) ** 2)

        self.losses_of = vmap(member, in_dims=(0, 0, 0, 0, 0, 0))
        self.frozen = _unreached(models[0], trains[0], cfgs, like)
        self.opt = _StackedAdam(self.params, cfgs[0])

    def step(self, step: int, lrs: list[float], active: list[bool]) -> list[float]:
        kw = {"device": self.like.device}
        losses = self.losses_of(self.params, self.buffers, self.X, self.Y, self.Jd, self.betas)
        values = losses.detach().tolist()
        for i, v in enumerate(values):
            if active[i] and not math.isfinite(v):
                c = self.cfgs[i]
                raise train.TrainingDiverged(
                    f"member {i} of the stack: training loss is {v} at step {step} (lr {c.lr:g}, beta {c.beta:g}); "
                    "the whole stack stops: train the members with train.fit to keep the others"
                )
        grads = dict(zip(self.params, torch.autograd.grad(losses.sum(), list(self.params.values())), strict=True))
        lr = torch.tensor(lrs, dtype=self.like.dtype, **kw)
        self.opt.step(grads, lr, torch.tensor(active, dtype=torch.bool, **kw), self.frozen)
        return values

    def load(self, i: int) -> None:
        _load_member(self.models[i], self.params, i)

    def snapshot(self, i: int) -> dict[str, Tensor]:
        return {k: p[i].detach().clone() for k, p in self.params.items()}

    def restore(self, i: int, weights: dict[str, Tensor]) -> None:
        _load_member(self.models[i], {k: w[None] for k, w in weights.items()}, 0)


def fit_stacked(
    models: list[nn.Module],
    trains: list[train.TrainData],
    vals: list[train.TrainData | None] | None,
    cfgs: list[TrainConfig],
    seeds: list[int] | None = None,
) -> list[train.FitResult]:
    """Train every member at once; each ends as `train.fit(models[i], trains[i], vals[i], cfgs[i])` would leave it.

    `seeds` are accepted for the call's symmetry with train.fit: full-batch training draws no random numbers.
    """
    start = time.perf_counter()
    _check(models, trains, cfgs)
    like = next(models[0].parameters())
    trains = [train._prepare(d, c, like, "train") for d, c in zip(trains, cfgs, strict=True)]
    vals = (
        [None] * len(models)
        if vals is None
        else [train._prepare(d, c, like, "val") for d, c in zip(vals, cfgs, strict=True)]
    )
    return train.train_members(_Stack(models, trains, cfgs), trains, vals, cfgs, start)
