"""Generate ``oscillator.csv``: a damped driven oscillator's steady state, with derivatives and stated noise.

    x'' + 2 zeta omega_n x' + omega_n^2 x = F0/m cos(omega t),   F0/m = 1 m/s^2
    steady state x(t) = A cos(omega t - phi):
        A   = 1 / sqrt((omega_n^2 - omega^2)^2 + (2 zeta omega_n omega)^2)        [m]
        phi = atan2(2 zeta omega_n omega, omega_n^2 - omega^2)                     [rad], in (0, pi)

Inputs: omega (forcing frequency, rad/s) in [0.2, 3], omega_n (natural frequency, rad/s) in [0.8, 1.6], zeta
(damping ratio) in [0.1, 0.6]; 1000 Latin-hypercube samples (scipy, seed 2026). Outputs A and phi, and their six
partial derivatives in evaluate's layout (dA_domega, ...), hand-derived (tests/test_datafile.py checks them
against torch.func and the closed form against a numerical solution of the ODE). Then measurement-like noise:
independent Gaussian noise of 0.2% of each output column's standard deviation on the values and 1% of each
derivative column's standard deviation on the derivatives (seed 7), as the sidecar ``oscillator.json`` states.
The model is not in the zoo. Run from the repository root: ``python equations/examples/make_oscillator.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy.stats import qmc

HERE = Path(__file__).resolve().parent
INPUTS = ("omega", "omega_n", "zeta")
OUTPUTS = ("A", "phi")
DOMAIN = {"omega": [0.2, 3.0], "omega_n": [0.8, 1.6], "zeta": [0.1, 0.6]}
ROWS, SAMPLE_SEED, NOISE_SEED = 1000, 2026, 7
VALUE_NOISE, DERIV_NOISE = 0.002, 0.01  # std as a share of each column's standard deviation


def steady_state(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x (B, 3) = (omega, omega_n, zeta) -> y (B, 2) = (A, phi), J (B, 2, 3), exact, float64."""
    w, wn, z = x[:, 0], x[:, 1], x[:, 2]
    a, b = wn**2 - w**2, 2 * z * wn * w  # A = (a^2 + b^2)^(-1/2), phi = atan2(b, a)
    da = np.stack([-2 * w, 2 * wn, np.zeros_like(w)], axis=1)  # d a / d (omega, omega_n, zeta)
    db = np.stack([2 * z * wn, 2 * z * w, 2 * wn * w], axis=1)
    D = a**2 + b**2
    A, phi = D**-0.5, np.arctan2(b, a)
    dA = -0.5 * D[:, None] ** -1.5 * (2 * a[:, None] * da + 2 * b[:, None] * db)
    dphi = (a[:, None] * db - b[:, None] * da) / D[:, None]
    return np.stack([A, phi], axis=1), np.stack([dA, dphi], axis=1)


def main() -> None:
    lo, hi = np.array([DOMAIN[n][0] for n in INPUTS]), np.array([DOMAIN[n][1] for n in INPUTS])
    x = qmc.scale(qmc.LatinHypercube(d=3, seed=SAMPLE_SEED).random(ROWS), lo, hi)
    y, J = steady_state(x)
    rng = np.random.default_rng(NOISE_SEED)
    y = y + rng.normal(size=y.shape) * VALUE_NOISE * y.std(axis=0)
    J = J + rng.normal(size=J.shape) * DERIV_NOISE * J.std(axis=0)
    cols = [*INPUTS, *OUTPUTS, *(f"d{o}_d{i}" for o in OUTPUTS for i in INPUTS)]
    table = np.concatenate([x, y, J.reshape(ROWS, -1)], axis=1)
    lines = [",".join(cols)] + [",".join(f"{v:.10g}" for v in row) for row in table]
    (HERE / "oscillator.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    meta = {
        "description": "Damped driven oscillator x'' + 2 zeta omega_n x' + omega_n^2 x = cos(omega t): steady-state "
        "amplitude A [m] and phase lag phi [rad] against forcing frequency omega, natural frequency omega_n "
        "[rad/s] and damping ratio zeta, with their partial derivatives (equations/examples/make_oscillator.py).",
        "inputs": list(INPUTS),
        "outputs": list(OUTPUTS),
        "domain": DOMAIN,
        "noise": {
            "values": f"Gaussian, std {VALUE_NOISE:.1%} of each output's standard deviation",
            "derivatives": f"Gaussian, std {DERIV_NOISE:.0%} of each derivative column's standard deviation",
        },
    }
    (HERE / "oscillator.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
