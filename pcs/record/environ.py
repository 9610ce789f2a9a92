"""Environment variables a run reads, and running a rerun with the recorded values.

``lr = float(os.environ["LR"])`` makes a run's result depend on a variable no
argument shows. :class:`EnvReads` records, while the entry point runs, every
name the run's own code looks up through ``os.environ[...]``,
``os.environ.get``, ``os.getenv`` or ``name in os.environ`` (in any thread):
the value it saw, ``None`` when the variable was not set. Lookups made by the
standard library, installed distributions, MLflow and pcs are not the run's
inputs and are left out; so are names the run set itself before reading them.

Values of names that look secret (``*TOKEN*``, ``*SECRET*``, ``*PASSWORD*``,
``*KEY*``), and values carrying credentials (a URL with a password), are
recorded as ``{"sha256": ...}`` only: a changed secret is named, its value
never stored.

What is not a lookup: a copy of the whole environment (``dict(os.environ)``,
``os.environ.copy()``, ``{**os.environ}``, iteration); what is not seen:
lookups made by C code (``getenv(3)``) or by child processes.

:func:`recorded_environ` sets recorded values for the time a rerun runs.
"""

from __future__ import annotations

import dis
import hashlib
import os
import re
import sys
import sysconfig
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from pcs._redact import redact_text

__all__ = ["EnvReads", "is_secret", "recorded_environ", "shown_value"]

_SECRET = re.compile(r"TOKEN|SECRET|PASSWORD|KEY", re.IGNORECASE)

_WATCHES: list[EnvReads] = []
_LOCK = threading.Lock()
_INSTALLED = False


def is_secret(name: str) -> bool:
    """Whether a variable's value is recorded as a hash only."""
    return bool(_SECRET.search(name))


def _entry(name: str, value: str | None) -> Any:
    if value is None:
        return None
    if not is_secret(name) and redact_text(value) == value:
        return value
    # a secret by its name, or a value carrying credentials (a URL with a password)
    return {"sha256": hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()}


def shown_value(value: Any) -> str:
    """A recorded value as a cause line shows it (a secret by the start of its hash)."""
    if value is None:
        return "<unset>"
    if isinstance(value, dict):
        return f"<secret sha {str(value.get('sha256', ''))[:4]}>"
    return str(value)


class EnvReads:
    """The environment variables the run's code reads while a block runs.

    After the block, :attr:`values` maps each name read to the value first
    seen (``None``: not set; ``{"sha256": ...}``: a secret).
    """

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self._set_by_run: set[str] = set()

    def __enter__(self) -> EnvReads:
        _install()
        with _LOCK:
            _WATCHES.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        with _LOCK:
            if self in _WATCHES:
                _WATCHES.remove(self)

    def recorded(self) -> dict[str, Any]:
        """:attr:`values` as recorded: a value the redactor has since learned is a credential
        (the run quoted it in a URL query or a ``password=`` pair) keeps only its hash."""
        return {
            name: _entry(name, value) if isinstance(value, str) else value
            for name, value in self.values.items()
        }

    def _read(self, name: str, value: str | None) -> None:
        if name not in self.values and name not in self._set_by_run:
            self.values[name] = _entry(name, value)

    def _wrote(self, name: str) -> None:
        if name not in self.values:
            self._set_by_run.add(name)


def _not_the_runs_own() -> tuple[str, ...]:
    """Folders whose code is not the run's: the standard library, installed packages, pcs."""
    places = {sysconfig.get_paths().get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    places.add(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the pcs package
    return tuple(os.path.join(p, "") for p in places if p)


# the frames a lookup passes through on its way from the caller (frozen or not)
_SKIPPED_FILES = {os.path.abspath(os.__file__), "<frozen os>", "<frozen _collections_abc>"}
_PASSING = ("_collections_abc.py", "/os.py")
_ELSEWHERE: tuple[str, ...] = ()


# the methods of os / collections.abc through which one name is looked up; any other
# (copy, __iter__ of items(), ...) copies the whole environment, which is not a lookup
_LOOKUPS = {"get", "getenv", "__contains__", "setdefault", "pop"}
_SUBSCRIPT_OPS = {dis.opmap[name] for name in ("BINARY_SUBSCR", "BINARY_OP") if name in dis.opmap}


def _from_run_code(depth: int = 3) -> bool:
    """Whether a lookup of one name came from the run's own code.

    ``depth`` is the frame that called ``__getitem__``: either the run's code
    subscripting ``os.environ`` (a subscript instruction; ``dict(os.environ)`` and
    ``{**os.environ}`` call it from C and are not lookups), or ``get`` /
    ``getenv`` / ``in``, whose caller is then the one that counts.
    """
    try:
        frame: Any = sys._getframe(depth)
    except ValueError:
        return False
    passing = False
    while frame is not None:
        code = frame.f_code
        filename = code.co_filename
        if filename in _SKIPPED_FILES or filename.endswith(_PASSING):
            if not passing and code.co_name not in _LOOKUPS:
                return False  # a copy of the whole environment
            passing = True
            frame = frame.f_back
            continue
        if filename.startswith("<frozen"):
            return False
        if not passing and not _subscripting(frame):
            return False  # called from C: dict(os.environ), {**os.environ}
        return not os.path.abspath(filename).startswith(_ELSEWHERE)
    return False


def _subscripting(frame: Any) -> bool:
    try:
        return frame.f_code.co_code[frame.f_lasti] in _SUBSCRIPT_OPS
    except (IndexError, AttributeError):
        return True  # cannot tell: count it


def _install() -> None:
    """Give ``os.environ`` a class that tells the active watches of lookups (once per process)."""
    global _INSTALLED, _ELSEWHERE
    with _LOCK:
        if _INSTALLED:
            return
        _ELSEWHERE = _not_the_runs_own()
        base = type(os.environ)

        class _WatchedEnviron(base):  # type: ignore[valid-type, misc]
            def __getitem__(self, key: str) -> str:
                if not _WATCHES:
                    return super().__getitem__(key)  # type: ignore[no-any-return]
                try:
                    value = super().__getitem__(key)
                except KeyError:
                    _tell(key, None)
                    raise
                _tell(key, value)
                return value  # type: ignore[no-any-return]

            def __setitem__(self, key: str, value: str) -> None:
                if _WATCHES and isinstance(key, str):
                    for watch in list(_WATCHES):
                        watch._wrote(key)
                super().__setitem__(key, value)

        _WatchedEnviron.__name__ = base.__name__
        _WatchedEnviron.__qualname__ = base.__qualname__
        _WatchedEnviron.__module__ = base.__module__
        try:
            os.environ.__class__ = _WatchedEnviron
        except TypeError:
            return  # an environ pcs cannot watch: nothing is recorded
        _INSTALLED = True


def _tell(key: Any, value: str | None) -> None:
    try:  # an exception here would break the user's lookup: never raise
        if not isinstance(key, str) or not _from_run_code():
            return
        for watch in list(_WATCHES):
            watch._read(key, value)
    except Exception:  # noqa: BLE001, S110 - see above
        pass


@contextmanager
def recorded_environ(values: Mapping[str, Any]) -> Iterator[list[str]]:
    """Set the recorded values of environment variables while the block runs, then restore.

    Names recorded as unset are removed; secrets (recorded as a hash) keep
    their current value. Yields the names whose value it changed.
    """
    saved: dict[str, str | None] = {}
    changed: list[str] = []
    for name, value in values.items():
        if isinstance(value, dict) or not isinstance(name, str):
            continue
        if value is not None and not isinstance(value, str):
            value = str(value)
        current = os.environ.get(name)
        if current == value:
            continue
        saved[name] = current
        changed.append(name)
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    try:
        yield changed
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old
