"""Sizing registered models for tests from the options each factory accepts (plugins included)."""

from __future__ import annotations


# The contract the registry-as-test-matrix imposes on a model (a plugin's too): a factory n_in=..., n_out=...
# with the ZooModule attributes, batched forward (..., n_in) -> (..., n_out) with no op across the leading axes,
# trainable parameters reached by gradients, and param_count() equal to the trainable parameters. Size options
# are the factory's own: tests pass `width` (or `hidden`/`depth`) only where the factory accepts them.
def small_overrides(name: str, width: int = 8) -> dict:
    """Overrides that make a registered model test-sized, from the options its factory accepts (none if unknown)."""
    import models

    accepted = models.accepted_overrides(name)
    return {"width": width} if accepted is None or "width" in accepted else {}


def shape_variants(name: str) -> list[dict]:
    """A few differently shaped configurations the factory accepts: defaults, explicit hidden widths, depth x width."""
    import models

    accepted = models.accepted_overrides(name)
    takes = (lambda k: True) if accepted is None else (lambda k: k in accepted)
    out = [{}]
    out += [{"hidden": [5, 7]}] if takes("hidden") else []
    out += [{"depth": 1, "width": 3}] if takes("depth") and takes("width") else []
    return out
