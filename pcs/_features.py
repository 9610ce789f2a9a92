"""How the run core reaches the features above it without importing them.

Dependencies in pcs point one way: ``cli`` -> features (export and import,
verification, rendering, sweeps, rebuilt environments, freezing) -> the run
core (``run``, ``component_run``, ``run_command``, ``component``) -> the
record of a run's inputs (``pcs.record``) -> the foundations. A few
methods of the core classes are conveniences over a feature, kept because
users (and AgentOS code) call them on the object: ``run.to_registry()``,
``Run.from_registry()``, ``run.print_status()``, ``rerun(verify=True)``,
``component.to_frozen_registry()``. Those methods look the feature up here by
name; each feature module registers its function with :func:`provides` when it
is imported, and ``import pcs`` imports every feature.

Example::

    @provides("compare_runs")
    def compare_runs(original, candidate, ...): ...
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from pcs.errors import PcsError

__all__ = ["provides", "feature"]

F = TypeVar("F", bound=Callable[..., Any])

_PROVIDERS: dict[str, Callable[..., Any]] = {}


def provides(name: str) -> Callable[[F], F]:
    """Register the decorated function as the implementation of feature ``name``."""

    def register(fn: F) -> F:
        _PROVIDERS[name] = fn
        return fn

    return register


def feature(name: str) -> Callable[..., Any]:
    """The function registered for ``name``.

    Raises:
        PcsError: when no feature module registered it (pcs was only partly imported).
    """
    try:
        return _PROVIDERS[name]
    except KeyError:
        raise PcsError(
            f"The pcs feature {name!r} is not loaded: part of pcs failed to import. "
            "Reinstall pcs (pip install -e .) and check that 'import pcs' works."
        ) from None
