"""The zoo rebuilt in JAX for the throughput peer: `f(params, x)` per sample, with the torch model's weights.

Rebuilt: plain MLPs (an `nn.Sequential` of `nn.Linear` and elementwise activations, like the forum's model) and
the three KAN families jacbench writes itself, layer by layer from their definitions in `models/`:

- FastKAN (`models.fastkan.FastKANLayer`): optional LayerNorm, Gaussian bumps exp(-((z - g) / h)^2) flattened
  input-major, a bias-free spline Linear plus a base Linear of silu(x);
- efficient-KAN (`models.efficient_kan.KANLinear`): silu(x) @ base_weight.T plus the Cox-de Boor B-spline bases on
  each input's own knots @ (spline_weight * spline_scaler).T, the scaled weight formed inside the function as
  torch's forward forms it;
- ChebyKAN (`models.chebykan.ChebyKANLayer`): optional LayerNorm, tanh, the Chebyshev recurrence, one contraction.

Anything else is `unsupported` with the reason (`why_not`). Every matmul and contraction runs at
`jax.lax.Precision.HIGHEST`. `bench.speed.jax_peer` checks the rebuilt Jacobian against torch's float64 one
before any timing, so a rebuild that drifts from the torch model is never timed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from models.base import KANStack
from models.chebykan import ChebyKANLayer
from models.efficient_kan import KANLinear
from models.fastkan import FastKANLayer
from models.mlp import Sine


def _jax():
    import jax

    return jax


def activation(module: nn.Module) -> Callable | None:
    """The JAX function of a torch elementwise activation module, or None if unknown."""
    jax = _jax()
    jnp = jax.numpy
    if isinstance(module, nn.Sigmoid):
        return jax.nn.sigmoid
    if isinstance(module, nn.Tanh):
        return jnp.tanh
    if isinstance(module, nn.SiLU):
        return jax.nn.silu
    if isinstance(module, nn.ReLU):
        return jax.nn.relu
    if isinstance(module, Sine):
        w0 = module.w0
        return lambda z: jnp.sin(w0 * z)
    if isinstance(module, nn.Identity):
        return lambda z: z
    if isinstance(module, nn.GELU):
        approximate = module.approximate == "tanh"
        return lambda z: jax.nn.gelu(z, approximate=approximate)
    if isinstance(module, nn.Softplus):
        beta, threshold = float(module.beta), float(module.threshold)
        return lambda z: jnp.where(beta * z > threshold, z, jax.nn.softplus(beta * z) / beta)
    return None


KAN_LAYERS = (FastKANLayer, KANLinear, ChebyKANLayer)


def why_not(model: nn.Module) -> str | None:
    """Why `model` cannot be rebuilt in JAX, or None."""
    if isinstance(model, KANStack):
        if type(model).forward is not KANStack.forward:
            return f"{type(model).__name__} overrides the KAN stack's forward; the JAX peer rebuilds the stack only"
        for i, layer in enumerate(model.layers):
            if type(layer) not in KAN_LAYERS:
                return f"the JAX peer has no equivalent of KAN layer {i} ({type(layer).__name__})"
        return None
    if not isinstance(model, nn.Sequential):
        return (
            "the JAX peer rebuilds nn.Sequential MLPs (Linear + activation) and the FastKAN, efficient-KAN and "
            f"ChebyKAN stacks; got {type(model).__name__}"
        )
    for i, layer in enumerate(model):
        if not isinstance(layer, nn.Linear) and activation(layer) is None:
            return f"the JAX peer has no equivalent of layer {i} ({type(layer).__name__})"
    return None


def _array(t, device):
    return None if t is None else _jax().device_put(t.detach().cpu().numpy(), device)


def _layernorm(ln: nn.LayerNorm | None, device) -> tuple[Callable, Any]:
    """(g(params, x), params) of an optional LayerNorm over the last axis (biased variance, as torch)."""
    jnp = _jax().numpy
    if ln is None:
        return (lambda p, x: x), None
    eps = float(ln.eps)

    def g(p, x):
        mu = jnp.mean(x, axis=-1, keepdims=True)
        c = x - mu
        z = c / jnp.sqrt(jnp.mean(c * c, axis=-1, keepdims=True) + eps)
        w, b = p
        z = z if w is None else z * w
        return z if b is None else z + b

    return g, (_array(ln.weight, device), _array(ln.bias, device))


def _fastkan_layer(layer: FastKANLayer, device) -> tuple[Callable, Any]:
    jax = _jax()
    jnp, hi = jax.numpy, jax.lax.Precision.HIGHEST
    norm, norm_p = _layernorm(layer.layernorm, device)
    den = float(layer.rbf.denominator)

    def f(p, x):
        ln_p, grid, w_spline, w_base, b_base = p
        z = norm(ln_p, x)
        phi = jnp.exp(-(((z[:, None] - grid) / den) ** 2)).reshape(-1)  # (in * G,), input-major
        y = jnp.matmul(w_spline, phi, precision=hi) + jnp.matmul(w_base, jax.nn.silu(x), precision=hi)
        return y if b_base is None else y + b_base

    base = layer.base_linear
    return f, (norm_p, _array(layer.rbf.grid, device), _array(layer.spline_linear.weight, device),
               _array(base.weight, device), _array(base.bias, device))  # fmt: skip


def _bspline_basis(x, knots, order: int):
    """x (in,), knots (in, m) -> (in, m - 1 - order): Cox-de Boor, as models.efficient_kan.bspline_basis."""
    x = x[:, None]
    basis = ((x >= knots[:, :-1]) & (x < knots[:, 1:])).astype(x.dtype)
    for p in range(1, order + 1):
        left = (x - knots[:, : -(p + 1)]) / (knots[:, p:-1] - knots[:, : -(p + 1)])
        right = (knots[:, p + 1 :] - x) / (knots[:, p + 1 :] - knots[:, 1:-p])
        basis = left * basis[:, :-1] + right * basis[:, 1:]
    return basis


def _efficient_kan_layer(layer: KANLinear, device) -> tuple[Callable, Any]:
    jax = _jax()
    jnp, hi = jax.numpy, jax.lax.Precision.HIGHEST
    order = int(layer.spline_order)

    def f(p, x):
        grid, w_base, w_spline, scaler = p
        scaled = (w_spline * scaler[..., None]).reshape(w_spline.shape[0], -1)  # (out, in * (G + k))
        basis = _bspline_basis(x, grid, order).reshape(-1)
        return jnp.matmul(w_base, jax.nn.silu(x), precision=hi) + jnp.matmul(scaled, basis, precision=hi)

    return f, (_array(layer.grid, device), _array(layer.base_weight, device), _array(layer.spline_weight, device),
               _array(layer.spline_scaler, device))  # fmt: skip


def _chebykan_layer(layer: ChebyKANLayer, device) -> tuple[Callable, Any]:
    jax = _jax()
    jnp, hi = jax.numpy, jax.lax.Precision.HIGHEST
    norm, norm_p = _layernorm(layer.layernorm, device)
    degree = int(layer.degree)

    def f(p, x):
        ln_p, coeffs = p
        t = jnp.tanh(norm(ln_p, x))
        T = [jnp.ones_like(t), t]
        for _ in range(2, degree + 1):
            T.append(2 * t * T[-1] - T[-2])
        basis = jnp.stack(T[: degree + 1], axis=-1)  # (in, D + 1)
        return jnp.einsum("in,ion->o", basis, coeffs, precision=hi)

    return f, (norm_p, _array(layer.cheby_coeffs, device))


_KAN_BUILDERS = {FastKANLayer: _fastkan_layer, KANLinear: _efficient_kan_layer, ChebyKANLayer: _chebykan_layer}


def _mlp(model: nn.Sequential, device) -> tuple[Callable, list]:
    jax = _jax()
    jnp, hi = jax.numpy, jax.lax.Precision.HIGHEST
    ops, params = [], []
    for layer in model:
        if isinstance(layer, nn.Linear):
            ops.append(("linear", len(params)))
            params.append((_array(layer.weight, device), _array(layer.bias, device)))
        else:
            ops.append(("act", activation(layer)))

    def f(params: list, x):
        for kind, arg in ops:
            if kind == "linear":
                w, b = params[arg]
                x = jnp.matmul(w, x, precision=hi)
                x = x if b is None else x + b
            else:
                x = arg(x)
        return x

    return f, params


def to_jax(model: nn.Module, device: Any) -> tuple[Callable, Any]:
    """Rebuild `model` as `f(params, x)` with x (n_in,) -> (n_out,), and its params (a pytree) on the JAX `device`.

    Raises ValueError with `why_not`'s reason for a model that cannot be rebuilt.
    """
    reason = why_not(model)
    if reason is not None:
        raise ValueError(reason)
    if not isinstance(model, KANStack):
        return _mlp(model, device)
    built = [_KAN_BUILDERS[type(layer)](layer, device) for layer in model.layers]
    fns = [f for f, _ in built]

    def f(params: list, x):
        for g, p in zip(fns, params, strict=True):
            x = g(p, x)
        return x

    return f, [p for _, p in built]
