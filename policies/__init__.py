"""prodstack's CrossGuard policy pack, one module per domain (keys, network, tls, iam, data,
edge, ecs, logs, alarms, recovery). A module registers its policies with the decorators of
``policies._shared``; :func:`all_policies` finds them, so a new module needs no list.
``__main__`` serves the pack to the Pulumi CLI; tests and ``prodstack.policy_check``
import the modules, which need no server.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from policies._shared import Policy


def all_policies() -> list[Policy]:
    """Every policy of the pack: the package's modules imported in name order (those named
    ``_*`` hold no policies), each module's policies in the order it defines them."""
    from policies._shared import REGISTERED

    found: list[Policy] = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            module = importlib.import_module(f"{__name__}.{info.name}")
            found += REGISTERED.get(module.__name__, [])
    names = [p.name for p in found]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"policies: more than one policy named {', '.join(twice)}")
    return found
