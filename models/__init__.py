"""The model zoo: MLPs, FastKAN, efficient-KAN and ChebyKAN behind one registry.

>>> import models
>>> models.list_models("fastkan*")
['fastkan', 'fastkan_noln']
>>> net = models.create_model("efficient_kan", n_in=4, n_out=2, grid_size=8)
"""

from models import chebykan, efficient_kan, fastkan, mlp  # noqa: F401  (registers the built-in families)
from models.base import ZooModule
from models.plugins import ENTRY_POINT_GROUP, load_entry_points, load_plugin
from models.registry import (
    accepted_overrides,
    create_model,
    describe_table,
    get_factory,
    list_models,
    register_model,
    register_variant,
)
from models.sizing import match_params

__all__ = [
    "ENTRY_POINT_GROUP",
    "ZooModule",
    "accepted_overrides",
    "create_model",
    "describe_table",
    "get_factory",
    "list_models",
    "load_entry_points",
    "load_plugin",
    "match_params",
    "register_model",
    "register_variant",
]
