"""Third-party models without editing jacbench: a plugin file, or an installed package's entry points.

A plugin is ordinary Python that imports ``models.register_model`` and decorates factories with it.
- ``load_plugin("path/to/file.py")`` (the CLI's ``--plugin``) imports the file once.
- A package declares, in its pyproject.toml::

      [project.entry-points."jacbench.models"]
      mymodels = "mypackage.jacbench_models"          # a module: importing it registers its factories
      my_net = "mypackage.nets:my_net"                # or one factory, registered under the entry's name

  and ``load_entry_points()`` (called lazily by ``list_models`` / ``create_model``) loads them.
If a plugin fails (an import error, a name that is already taken) nothing it registered is kept.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import sys
from contextlib import contextmanager
from pathlib import Path

from models import registry

ENTRY_POINT_GROUP = "jacbench.models"
_loaded_files: dict[Path, str] = {}  # resolved path -> module name
_loaded_entry_points: set[str] = set()


@contextmanager
def _rollback_on_error(source: str):
    """If the body raises, unregister what it registered and re-raise as a ValueError naming ``source``."""
    before = set(registry._MODELS)
    try:
        yield
    except Exception as err:
        for name in set(registry._MODELS) - before:
            del registry._MODELS[name]
        raise ValueError(f"model plugin {source} failed to load: {err}") from err


def load_plugin(path: str | Path) -> list[str]:
    """Import a plugin file so its ``@register_model`` factories register; returns the names it added.

    Loading the same file again is a no-op (returns []).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model plugin {str(path)!r} not found")
    resolved = path.resolve()
    if resolved in _loaded_files:
        return []
    digest = hashlib.sha1(str(resolved).encode()).hexdigest()[:10]
    mod_name = f"jacbench_plugin_{resolved.stem}_{digest}"
    before = set(registry._MODELS)
    with _rollback_on_error(repr(str(path))):
        spec = importlib.util.spec_from_file_location(mod_name, resolved)
        if spec is None or spec.loader is None:
            raise ValueError("not an importable Python file")
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[mod_name]
            raise
    _loaded_files[resolved] = mod_name
    return sorted(set(registry._MODELS) - before)


def load_entry_points() -> list[str]:
    """Load every ``jacbench.models`` entry point not loaded yet; returns the names they added."""
    before = set(registry._MODELS)
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        key = f"{ep.name}={ep.value}"
        if key in _loaded_entry_points:
            continue
        _loaded_entry_points.add(key)  # a failing entry point is reported once, not on every lookup
        with _rollback_on_error(f"entry point {ep.name!r} ({ep.value}) in group {ENTRY_POINT_GROUP!r}"):
            obj = ep.load()
            if callable(obj) and not isinstance(obj, type) and registry._MODELS.get(ep.name) is not obj:
                registry.register_model(obj, name=ep.name)
    return sorted(set(registry._MODELS) - before)
