"""The modules a run's code imports while it runs, also those already loaded before it.

Python runs an ``import`` statement of a module that is already in
``sys.modules`` without loading anything, so "what was first loaded during
the run" misses the distributions a notebook (or an earlier run in the same
process) imported before: an in-process rerun then recorded fewer used
distributions than its original, and verification named them as removed.
:class:`ImportWatch` sees every ``import`` statement executed while a run runs
(through ``builtins.__import__``) and every ``importlib.import_module`` call,
loaded before or not, and keeps their top-level names. Relative imports
(files next to the code) are left out: no distribution provides them, and
so are the imports pcs and MLflow make on their own during the run.

The hook is installed when the first watch starts and removed when the last
one ends (when nothing replaced it meanwhile); with no watch active it only
passes the call on.
"""

from __future__ import annotations

import builtins
import importlib
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["ImportWatch"]

_WATCHES: list[ImportWatch] = []
_LOCK = threading.Lock()
_ORIGINALS: dict[str, Callable[..., Any]] = {}


class ImportWatch:
    """Top-level names of the modules imported while a block runs (:attr:`names`)."""

    def __init__(self) -> None:
        self.names: set[str] = set()

    def __enter__(self) -> ImportWatch:
        with _LOCK:
            if not _WATCHES:
                _install()
            _WATCHES.append(self)
            _TOLD.clear()  # the new watch has been told nothing yet
        return self

    def __exit__(self, *exc: object) -> None:
        with _LOCK:
            if self in _WATCHES:
                _WATCHES.remove(self)
            if not _WATCHES:
                _uninstall()


# names every active watch already holds: the hook's fast path (cleared when watches change)
_TOLD: set[str] = set()


def _saw(name: Any) -> None:
    if not isinstance(name, str) or not name or name.startswith("."):
        return
    top = name.partition(".")[0]
    for watch in list(_WATCHES):
        watch.names.add(top)
    _TOLD.add(name)


# importers whose imports are pcs's and MLflow's own work during a run, not the code's
_TOOLING = ("pcs", "mlflow", "importlib", "_pytest", "pytest")


def _tooling(globals: Any) -> bool:  # noqa: A002 - the parameter of __import__
    name = globals.get("__name__") if isinstance(globals, dict) else None
    return isinstance(name, str) and name.partition(".")[0] in _TOOLING


def _install() -> None:
    original_import = builtins.__import__
    original_import_module = importlib.import_module

    def __import__(name: str, globals: Any = None, locals: Any = None,  # noqa: A002, N807
                   fromlist: Any = (), level: int = 0) -> Any:
        if level == 0 and name not in _TOLD and _WATCHES and not _tooling(globals):
            _saw(name)
        return original_import(name, globals, locals, fromlist, level)

    def import_module(name: str, package: str | None = None) -> Any:
        if _WATCHES and not name.startswith("."):
            _saw(name)
        return original_import_module(name, package)

    _ORIGINALS["__import__"], _ORIGINALS["import_module"] = original_import, original_import_module
    _ORIGINALS["__import__ wrapper"], _ORIGINALS["import_module wrapper"] = __import__, import_module
    builtins.__import__ = __import__
    importlib.import_module = import_module


def _uninstall() -> None:
    # put the originals back only where ours is still in place: a hook installed after ours
    # keeps working (ours then passes calls on with no watch to tell)
    if builtins.__import__ is _ORIGINALS.get("__import__ wrapper"):
        builtins.__import__ = _ORIGINALS["__import__"]
    if importlib.import_module is _ORIGINALS.get("import_module wrapper"):
        importlib.import_module = _ORIGINALS["import_module"]  # type: ignore[assignment]
