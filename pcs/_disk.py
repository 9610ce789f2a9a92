"""A full disk, wherever pcs meets it, as one line naming the path and what was written there.

An ``OSError`` with ``ENOSPC`` (or a quota's ``EDQUOT``) may surface directly,
wrapped by MLflow or SQLAlchemy (SQLite says "database or disk is full"), or
as the cause of another error. :func:`disk_full_error` finds it anywhere in
an exception's chain and names the place: the temporary folder (``TMPDIR``),
pcs's home (``PCS_HOME``), the tracking store, or the path itself.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pcs.errors import DiskFullError

__all__ = ["disk_full_error", "quiet_disk_full_logs", "disk_full_raised"]

_CODES = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
# how an OSError names its file once it is only text inside another error
_QUOTED_PATH = re.compile(r"No space left on device: '([^']+)'(?: -> '([^']+)')?")
_WORDS = ("no space left on device", "database or disk is full", "disk quota exceeded",
          "[errno 28]")


def disk_full_error(exc: BaseException) -> DiskFullError | None:
    """The :class:`DiskFullError` behind ``exc``, or None when no disk was full."""
    seen: set[int] = set()
    current: BaseException | None = exc
    found_text = sqlite_full = False
    path: str | None = None
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DiskFullError):
            return current
        if isinstance(current, OSError) and current.errno in _CODES:
            # a copy names its source, then the destination that did not fit
            target = current.filename2 if isinstance(current.filename2, str) else current.filename
            path = target if isinstance(target, str) else None
            return DiskFullError(_message(path))
        text = str(current)
        if any(word in text.lower() for word in _WORDS):
            found_text = True
            named = _QUOTED_PATH.search(text)
            if named and path is None:
                path = named.group(2) or named.group(1)  # a copy names source -> destination
            elif "database or disk is full" in text.lower():
                sqlite_full = True
        current = current.__cause__ or current.__context__
    if found_text:
        return DiskFullError(_message(path, store=sqlite_full))
    return None


@contextlib.contextmanager
def disk_full_raised() -> Iterator[None]:
    """Turn a full disk met inside the block, however it surfaced, into :class:`DiskFullError`
    (naming the place), so library callers get pcs's one clear error, not ``OSError`` or the
    store's wrapped one."""
    try:
        yield
    except Exception as exc:
        full = disk_full_error(exc)
        if full is None or full is exc:
            raise
        raise full from exc


class _DropDiskFull(logging.Filter):
    """Drop a log record whose exception is a full disk: the CLI says it in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return exc is None or disk_full_error(exc) is None


#: MLflow's loggers that print a store error with its whole traceback before raising it
_STORE_LOGGERS = ("mlflow.store.db.utils", "mlflow.store.tracking.sqlalchemy_store")


def quiet_disk_full_logs() -> None:
    """Keep MLflow from logging a full disk's traceback chain (about 120 lines) before the
    error reaches the CLI, which reports it in one line. Other errors are logged as before."""
    for name in _STORE_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropDiskFull) for f in logger.filters):
            logger.addFilter(_DropDiskFull())


def _message(path: str | None, store: bool = False) -> str:
    what, advice = _place(path, store)
    where = f" writing {path}" if path else ""
    return (
        f"No space left on the disk of {what}{where}. Nothing was left half-written. "
        f"{advice}"
    )


def _place(path: str | None, store: bool = False) -> tuple[str, str]:
    """What is full (a named place, or the disk of a path) and how to get room."""
    candidates = _candidates()
    if path is not None:
        resolved = Path(os.path.abspath(path))
        mount = _mount_of(resolved)
        owners = [(len(str(root)), what, advice) for what, root, advice in candidates
                  if _inside(resolved, root) and _mount_of(root) == mount]
        if owners:
            _, what, advice = max(owners)
            return what, advice
        return (f"{mount}", "Free space on that disk, or write somewhere with room.")
    if store:
        for what, _root, advice in candidates:
            if what.startswith("the tracking store"):
                return what, advice
    for what, root, advice in candidates:  # no path given: the place that has no room left
        try:
            if shutil.disk_usage(root).free < _NEARLY_FULL:
                return f"{what} at {root}", advice
        except OSError:
            continue
    return ("a folder pcs writes to",
            "Free space on the disks of TMPDIR, PCS_HOME, the output and the tracking "
            "store, or point them at a disk with room.")


_NEARLY_FULL = 1024 * 1024


def _candidates() -> list[tuple[str, Path, str]]:
    from pcs import _config

    out = [
        ("the temporary folder (TMPDIR)", Path(tempfile.gettempdir()),
         "Free space there, or set TMPDIR to a folder on a disk with room."),
        ("pcs's home (PCS_HOME)", Path(_config.pcs_home()),
         "Free space there (pcs cache prune), or set PCS_HOME to a folder on a disk with room."),
    ]
    uri = _safe_uri()
    if uri.startswith("sqlite:///"):
        out.append((f"the tracking store ({uri})", Path(uri[len("sqlite:///"):]).parent,
                    "Free space on that disk, or point MLFLOW_TRACKING_URI at a store with room."))
    return out


def _mount_of(path: Path) -> Path:
    current = path
    while not current.exists() and current != current.parent:
        current = current.parent
    try:
        current = current.resolve()
        while not os.path.ismount(current) and current != current.parent:
            current = current.parent
    except OSError:
        pass
    return current


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root.resolve())
        return True
    except (ValueError, OSError):
        return False


def _safe_uri() -> str:
    from pcs import _config
    from pcs._redact import redact_url

    try:
        return redact_url(_config.tracking_uri())
    except Exception:  # noqa: BLE001 - only for the message
        return ""
