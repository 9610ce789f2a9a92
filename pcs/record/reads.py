"""Data reads: the files a run opens for reading next to its code.

A component that reads a data file next to its code (``Path(__file__).parent
/ "layout.txt"``) depends on a file its source snapshot does not hold.
:class:`FileReads` finds such reads while the entry point runs, so the run's
grade can say so (see :mod:`pcs.record.grade`).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["FileReads"]

_WATCHES: list[FileReads] = []
_WATCH_LOCK = threading.Lock()
_HOOK_INSTALLED = False


class FileReads:
    """The files opened for reading under some folders while a block runs (from any thread).

    A component that reads a data file next to its code (``Path(__file__).parent
    / "layout.txt"``) depends on a file its source snapshot does not hold; this
    finds such reads so the run's grade can say so. Python's audit hook sees
    every ``open`` (``open()``, ``os.open``, ``pathlib``); reads made by C code
    with its own ``fopen`` are not seen. Module files (``.py``, ``.pyc``) are
    left out: the snapshot holds those.

    The hook is installed on first use and stays (Python cannot remove one);
    with no block active it returns at once.
    """

    def __init__(self, roots: list[Path]) -> None:
        self.roots = [os.path.join(os.path.realpath(r), "") for r in roots]
        self._paths: set[str] = set()
        self._started = time.time()

    def __enter__(self) -> FileReads:
        if self.roots:
            _install_hook()
            with _WATCH_LOCK:
                _WATCHES.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        with _WATCH_LOCK:
            if self in _WATCHES:
                _WATCHES.remove(self)

    def _saw(self, path: str) -> None:
        for root in self.roots:
            if path.startswith(root):
                self._paths.add(path[len(root):])
                return

    def files(self) -> list[str]:
        """The files read, relative to their folder (sorted).

        Only files that existed before the block began count: a file the run
        wrote and read back is its own output, not an input next to its code.
        Files of MLflow's and pcs's stores (``mlruns``, ``.git``, PCS_HOME) are
        left out.
        """
        found = set()
        for rel in self._paths:
            parts = set(rel.split(os.sep))
            if parts & _NOT_INPUTS:
                continue
            for root in self.roots:
                try:
                    if os.path.getmtime(os.path.join(root, rel)) < self._started:
                        found.add(rel.replace(os.sep, "/"))
                        break
                except OSError:
                    continue  # not there (any more)
        return sorted(found)


_NOT_INPUTS = {"mlruns", ".git", "__pycache__", ".pcs_home", "mlartifacts"}


def _install_hook() -> None:
    global _HOOK_INSTALLED
    with _WATCH_LOCK:
        if not _HOOK_INSTALLED:
            sys.addaudithook(_audit)
            _HOOK_INSTALLED = True


_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event != "open" or not _WATCHES:
        return
    try:  # an exception here would fail the user's open(): never raise
        path, mode, flags = (tuple(args) + (None, None))[:3]
        if isinstance(path, int) or path is None:
            return  # a file descriptor
        if isinstance(mode, str) and any(c in mode for c in "wax+"):
            return
        if mode is None and isinstance(flags, int) and flags & _WRITE_FLAGS:
            return
        text = os.path.realpath(os.fsdecode(path))
        if text.endswith((".py", ".pyc", ".pyd", ".so")) or "__pycache__" in text:
            return
        for watch in list(_WATCHES):
            watch._saw(text)
    except Exception:  # noqa: BLE001, S110 - see above
        pass
