"""The PINN study's settings (torch-free, so that the CLI can show its defaults without importing torch)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

LOWER, UPPER = 0.0, 2.0 * math.pi
PACK = 8  # collocation points per packed input vector (the post's n_nodes)
BETAS = (1.0, 1e-1, 1e-2, 1e-3, 1e-5, 1e-7)


@dataclass(frozen=True)
class StudyConfig:
    betas: tuple[float, ...] = BETAS
    seeds: tuple[int, ...] = (0, 1, 2)
    points: int = 128  # collocation points on [0, 2 pi], a multiple of PACK
    steps: int = 4000  # Adam steps, full batch
    lr: float = 3e-3
    width: int = PACK  # hidden width of both networks (the post's n_nodes)

    def __post_init__(self):
        if self.points < 2 * PACK or self.points % PACK:
            raise ValueError(f"points = {self.points}: a multiple of {PACK} (the packing) and at least {2 * PACK}")
        if not self.betas or any(not (0.0 <= b <= 1.0) for b in self.betas):
            raise ValueError(f"betas = {list(self.betas)}: value-loss weights in [0, 1] (1 = values only)")
        if self.steps < 1 or self.lr <= 0 or self.width < 1 or not self.seeds:
            raise ValueError("steps, lr and width must be positive and seeds non-empty")


def parse_betas(text: str | Sequence[float]) -> tuple[float, ...]:
    if not isinstance(text, str):
        return tuple(float(b) for b in text)
    try:
        return tuple(float(b) for b in text.split(",") if b.strip())
    except ValueError:
        raise ValueError(f"--betas {text!r}: comma-separated numbers in [0, 1], e.g. 1,1e-3,1e-7") from None
