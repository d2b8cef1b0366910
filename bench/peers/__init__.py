"""Peers: surrogates from other projects, trained by their own code on the grid's splits and scored by ours.

A peer is named in ``grid.models`` like a zoo model (``jenn``), but it is not a torch module: its cell hands it
the training split in physical units and gets back a fitted predictor with its own values and Jacobians,
    fit(x, y, J or None, beta, seed, **options) -> Fitted
    Fitted.predict(x (B, n_in)) -> y (B, n_out), J (B, n_out, n_in)        (numpy, float64, physical units)
so the metrics are exactly the zoo's (``bench.fidelity.metrics``), applied at the boundary, never bent.
"""

from __future__ import annotations

import fnmatch
from typing import Any

from bench.peers import jenn, smt

PEERS = {"jenn": jenn.PEER, **smt.PEERS}  # name -> peer; a peer module imports its package only when it trains


def is_peer(name: str) -> bool:
    return name in PEERS


def list_peers(pattern: str = "*") -> list[str]:
    pats = [p.strip() for p in pattern.split(",") if p.strip()] or ["*"]
    return [n for n in PEERS if any(fnmatch.fnmatchcase(n, p) for p in pats)]


def get(name: str) -> Any:
    """The peer object registered as ``name`` (KeyError naming the peers if there is none)."""
    if name not in PEERS:
        raise KeyError(f"unknown peer {name!r}; peers: {', '.join(PEERS)}")
    return PEERS[name]
