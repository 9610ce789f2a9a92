"""Temporary folders of export and import: pid-marked, removed on the way out, swept when orphaned.

Every temporary folder export or import makes is named
``pcs-<pid>-<purpose>-<random>`` (or ``.<target>.pcs-<pid>-<purpose>-<random>``
next to the file or folder it becomes), and removed by a ``finally`` block,
which also runs when SIGTERM or SIGHUP unwinds the work (see
:mod:`pcs._signals`). What a SIGKILL leaves behind is swept by the next export
or import: :func:`sweep` removes such folders whose process is gone.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["temp_dir", "temporary_dir", "sweep"]


def temp_dir(purpose: str, parent: Path | None = None, target: str | None = None) -> Path:
    """Make a pid-marked temporary folder; the caller removes it.

    Args:
        purpose: what it is for, one lowercase word (``export``, ``import``).
        parent: where to make it (default: the system's temp folder).
        target: the name of what it will become, to make it next to that.

    Returns:
        The new, empty folder.
    """
    marker = f"pcs-{os.getpid()}-{purpose}-"
    prefix = f".{target}.{marker}" if target else marker
    return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))


@contextmanager
def temporary_dir(
    purpose: str, parent: Path | None = None, target: str | None = None
) -> Iterator[Path]:
    """A pid-marked temporary folder, removed when the block ends however it ends.

    Args:
        purpose: what it is for, one lowercase word.
        parent: where to make it (default: the system's temp folder).
        target: the name of what it will become, to make it next to that.

    Returns:
        A context manager yielding the folder.
    """
    folder = temp_dir(purpose, parent, target)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def sweep(*folders: Path | None) -> list[Path]:
    """Remove what dead pcs processes left in ``folders`` (the system's temp folder for None).

    Args:
        folders: the folders to look in (not recursively).

    Returns:
        The paths removed.
    """
    from pcs.cache import sweep_leftovers

    removed: list[Path] = []
    for folder in folders:
        try:
            removed += sweep_leftovers(folder if folder is not None else tempfile.gettempdir())
        except OSError:  # an unreadable folder holds nothing we can sweep
            continue
    return removed
