"""Names users type: close-name hints and the error for a name that does not exist.

The one copy for the whole project: equations, models and the harness (bench) all import it, so every "did you
mean" reads the same and uses the same cutoff.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

CUTOFF = 0.6  # difflib similarity: "fastkn" finds "fastkan", "mlp" does not drag in every "mlp_*" name


class UnknownName(KeyError, ValueError):
    """A name that is not registered (model, equation set, engine): a user mistake.

    A KeyError for dict-like lookups and a ValueError for the CLI's user-error handler; str() is the message.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def suggest(name: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x', 'y'?)`` for up to three close names, else ``""``."""
    close = difflib.get_close_matches(name, list(known), n=3, cutoff=CUTOFF)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
