"""The Triton kernels behind `triton_fused_mlp` (bench.engines.triton_mlp explains the layout and the padding).

Imported only when the engine runs (it needs triton). Triton jits these functions at import, reading
TRITON_INTERPRET then; `INTERPRETED` records which mode this import got.
"""

import os

import triton
import triton.language as tl

INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"


@triton.jit
def activation(z, ACT: tl.constexpr):
    """(act(z), act'(z)) for ACT 0 sigmoid, 1 tanh, 2 SiLU, 3 ReLU (autograd's choice at 0: derivative 0)."""
    if ACT == 0:
        h = 1.0 / (1.0 + tl.exp(-z))
        return h, h * (1.0 - h)
    elif ACT == 1:
        e = tl.exp(-2.0 * tl.abs(z))
        t = (1.0 - e) / (1.0 + e)
        h = tl.where(z >= 0, t, -t)
        return h, 1.0 - h * h
    elif ACT == 2:
        s = 1.0 / (1.0 + tl.exp(-z))
        return z * s, s * (1.0 + z * (1.0 - s))
    else:
        pos = z > 0
        return tl.where(pos, z, 0.0), tl.where(pos, 1.0, 0.0)


@triton.jit
def mlp_jacobian_kernel(x_ptr, w_ptr, b_ptr, j_ptr, B, N_IN: tl.constexpr, N_OUT: tl.constexpr,
                        NIN_P: tl.constexpr, P: tl.constexpr, LAYERS: tl.constexpr, ACT: tl.constexpr,
                        BLOCK: tl.constexpr):  # fmt: skip
    """J (B, N_OUT, N_IN) of BLOCK samples per program; w_ptr (LAYERS, P, P) and b_ptr (LAYERS, P) zero-padded."""
    pid = tl.program_id(0)
    rows = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)  # samples; 64-bit offsets: B n_out n_in may pass 2^31
    ok = rows < B
    cols = tl.arange(0, P)
    k = tl.arange(0, P)
    j = tl.arange(0, NIN_P)
    # layer 0: z = x W0^T + b0; the tangents dz/dx_j are W0[:, j]
    xin = tl.load(x_ptr + rows[:, None] * N_IN + cols[None, :], mask=ok[:, None] & (cols[None, :] < N_IN), other=0.0)
    w0t = tl.load(w_ptr + cols[None, :] * P + k[:, None])  # W0^T (P_in, P_out)
    z = tl.dot(xin, w0t, input_precision="ieee") + tl.load(b_ptr + cols)[None, :]
    h, d = activation(z, ACT)
    w0cols = tl.load(w_ptr + cols[None, :] * P + j[:, None], mask=j[:, None] < N_IN, other=0.0)  # (NIN_P, P)
    T = w0cols[:, None, :] * d[None, :, :]  # (NIN_P, BLOCK, P): T[j, b] = W0[:, j] * d[b]
    for layer in tl.static_range(1, LAYERS):
        wt = tl.load(w_ptr + layer * P * P + cols[None, :] * P + k[:, None])  # W_l^T
        Tn = tl.reshape(tl.dot(tl.reshape(T, (NIN_P * BLOCK, P)), wt, input_precision="ieee"), (NIN_P, BLOCK, P))
        if layer < LAYERS - 1:
            z = tl.dot(h, wt, input_precision="ieee") + tl.load(b_ptr + layer * P + cols)[None, :]
            h, d = activation(z, ACT)
            T = Tn * d[None, :, :]
        else:
            T = Tn
    # J[b, o, j] = T[j, b, o]
    o = tl.arange(0, P)
    ptrs = j_ptr + rows[None, :, None] * (N_OUT * N_IN) + o[None, None, :] * N_IN + j[:, None, None]
    mask = ok[None, :, None] & (o[None, None, :] < N_OUT) & (j[:, None, None] < N_IN)
    tl.store(ptrs, T, mask=mask)
