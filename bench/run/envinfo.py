"""The environment a run measured in (env.json): what a number needs beside it to be comparable."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch

from bench.run.machine import tf32_enabled

_REPO = Path(__file__).resolve().parent.parent


def git_commit(repo: str | Path = _REPO) -> str:
    """The jacbench commit (with ``-dirty`` if tracked files changed), or ``unknown`` outside a checkout."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo, capture_output=True, text=True,
            timeout=5, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def cpu_model() -> str:
    """The CPU's marketing name (Linux /proc/cpuinfo, else platform.processor())."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def device_name(device: str) -> str:
    """``NVIDIA H100 80GB HBM3`` for a CUDA device, the CPU model for ``cpu``."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return cpu_model()


def collect_env(device: str = "cpu", dtype: str = "float32", threads: int | None = None) -> dict:
    """env.json's content. ``threads`` is the torch thread count each worker uses (None: this process's)."""
    return {
        "jacbench_commit": git_commit(),
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "device": device,
        "device_name": device_name(device),
        "dtype": dtype,
        "tf32": tf32_enabled(),
        "torch_threads": threads if threads is not None else torch.get_num_threads(),
        "start_time": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
