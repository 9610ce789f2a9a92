"""Progress of long operations: a callback for libraries, a rich bar for the CLI.

Export, import, publish, pull and environment builds take an optional
``progress`` callback (:data:`ProgressCallback`), called as
``progress(description, done, total)`` while work advances: ``done`` grows
monotonically, ``total`` is None while unknown. Code that does the work wraps
the callback in a :class:`Reporter` (from :func:`reporter`), which keeps the
count monotonic, limits how often the callback runs and is a no-op when no
callback was given. :class:`CountingReader`, :class:`CountingWriter`,
:func:`iter_counted` and :func:`copy_file` count bytes as they pass.

The CLI turns the callback into rich progress bars on stderr with
:func:`rich_progress`, never on stdout (stdout carries JSON for scripts)::

    with rich_progress(enabled=args.progress) as progress:
        result = export_runs(..., progress=progress)

    # inside export_runs
    with reporter(progress, "exporting 3 runs", total=tree_bytes(folder)) as rep:
        with open(path, "rb") as fh:
            tar.addfile(info, CountingReader(fh, rep))
"""

from __future__ import annotations

import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = [
    "ProgressCallback",
    "Reporter",
    "reporter",
    "rich_progress",
    "CountingReader",
    "CountingWriter",
    "iter_counted",
    "copy_file",
    "tree_bytes",
]

ProgressCallback = Callable[[str, int, "int | None"], None]
"""``progress(description, done, total)``: ``done`` grows monotonically; ``total`` None if unknown."""

_CHUNK = 1 << 20
# callbacks run at most this often (seconds), plus once at the start and end
_MIN_INTERVAL = 0.05


class Reporter:
    """Counts the progress of one operation and forwards it to a callback.

    ``done`` never goes back; when it passes a known ``total``, the total grows
    with it. Calls are forwarded at most every ``min_interval`` seconds, and
    always on the first call, on reaching the total and on :meth:`finish`.
    Thread-safe; a Reporter without a callback does nothing.
    """

    def __init__(
        self,
        progress: ProgressCallback | None,
        description: str,
        total: int | None = None,
        min_interval: float = _MIN_INTERVAL,
    ) -> None:
        self.progress = progress
        self.description = description
        self.total = None if total is None else max(0, int(total))
        self.done = 0
        self._min_interval = min_interval
        self._lock = threading.Lock()
        self._last_sent: tuple[int, int | None] | None = None
        self._last_time = 0.0

    def advance(self, n: int) -> None:
        """Count ``n`` more units (bytes or steps) as done.

        Args:
            n: how many units were just done; negative values count as 0.
        """
        if n > 0:
            with self._lock:
                self._set(self.done + n)

    def update(self, done: int) -> None:
        """Set the units done so far (a smaller value than before is ignored).

        Args:
            done: the units done since the start of the operation.
        """
        with self._lock:
            if done > self.done:
                self._set(done)

    def set_total(self, total: int | None) -> None:
        """Set the total once it is known (never below what is already done).

        Args:
            total: the units the whole operation takes, or None if unknown.
        """
        with self._lock:
            self.total = None if total is None else max(int(total), self.done)
            self._send(force=True)

    def finish(self) -> None:
        """Forward the last count, if the throttle held it back."""
        with self._lock:
            self._send(force=True)

    def __enter__(self) -> Reporter:
        with self._lock:
            self._send(force=True)  # the bar appears at 0, before the first chunk
        return self

    def __exit__(self, *exc: object) -> None:
        self.finish()

    def _set(self, done: int) -> None:
        self.done = done
        if self.total is not None and done > self.total:
            self.total = done
        self._send(force=self.total is not None and done == self.total)

    def _send(self, force: bool) -> None:
        if self.progress is None:
            return
        state = (self.done, self.total)
        if state == self._last_sent:
            return
        now = time.monotonic()
        if not force and self._last_sent is not None and now - self._last_time < self._min_interval:
            return
        self._last_sent = state
        self._last_time = now
        self.progress(self.description, self.done, self.total)


def reporter(
    progress: ProgressCallback | None,
    description: str,
    total: int | None = None,
    unit: str = "bytes",
) -> Reporter:
    """A :class:`Reporter` for one operation, forwarding to ``progress`` (or to nothing).

    Args:
        progress: the caller's callback, or None to report nothing.
        description: what is being done, e.g. ``"pulling run 3f2a…"``; one
            description per concurrent operation (a rich bar is keyed by it).
        total: the units the operation takes, or None while unknown.
        unit: ``"bytes"`` (the default), or a count such as ``"steps"``; a
            callback that has a ``set_unit(description, unit)`` method (the
            :func:`rich_progress` one does) is told, so it shows counts, not sizes.

    Returns:
        A Reporter; use it as a context manager so the last count is sent.
    """
    if progress is not None and unit != "bytes":
        set_unit = getattr(progress, "set_unit", None)
        if callable(set_unit):
            set_unit(description, unit)
    return Reporter(progress, description, total)


# -- counting bytes --------------------------------------------------------------------


class CountingReader:
    """A binary file object that reports every byte read through it.

    Everything but reading is passed to the wrapped file (``fileno``, ``mode``,
    ``tell``, ``seek``...), so ``requests`` still learns the upload's length and
    sends a ``Content-Length``. Bytes are counted with ``advance``, so one
    reporter can sum several files; seeking back does not uncount them.
    """

    def __init__(self, raw: IO[bytes], rep: Reporter) -> None:
        self._raw = raw
        self._rep = rep

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._rep.advance(len(data))
        return data

    def read1(self, size: int = -1) -> bytes:
        data = self._raw.read1(size)  # type: ignore[attr-defined]
        self._rep.advance(len(data))
        return data

    def readinto(self, buffer: Any) -> int:
        n = self._raw.readinto(buffer)  # type: ignore[attr-defined]
        self._rep.advance(n or 0)
        return int(n or 0)

    def readline(self, size: int = -1) -> bytes:
        data = self._raw.readline(size)
        self._rep.advance(len(data))
        return data

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.readline, b"")

    def __enter__(self) -> CountingReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self._raw.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


class CountingWriter:
    """A binary file object that reports every byte written through it."""

    def __init__(self, raw: IO[bytes], rep: Reporter) -> None:
        self._raw = raw
        self._rep = rep

    def write(self, data: Any) -> int:
        n = self._raw.write(data)
        self._rep.advance(len(data) if n is None else n)
        return len(data) if n is None else n

    def __enter__(self) -> CountingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self._raw.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


def iter_counted(chunks: Iterable[bytes], rep: Reporter) -> Iterator[bytes]:
    """Yield ``chunks`` unchanged, counting their bytes (e.g. ``response.iter_content()``).

    Args:
        chunks: byte strings, e.g. a streamed HTTP body.
        rep: the reporter that counts them.

    Returns:
        An iterator over the same chunks.
    """
    for chunk in chunks:
        rep.advance(len(chunk))
        yield chunk


def copy_file(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    rep: Reporter | None = None,
    chunk_size: int = _CHUNK,
) -> int:
    """Copy the file ``src`` to ``dst`` whole or not at all, reporting bytes to ``rep``.

    The copy is written to ``.<name>.pcs-<pid>-copy-<random>`` next to ``dst``
    and renamed into place, so ``dst`` is never half-written. File mode is
    copied too.

    Args:
        src: the file to read.
        dst: the file to (re)place; its folder must exist.
        rep: counts the bytes copied; its total is set to ``src``'s size when unset.
        chunk_size: bytes read at a time.

    Returns:
        The number of bytes copied.
    """
    src, dst = Path(src), Path(dst)
    size = src.stat().st_size
    if rep is not None and rep.total is None:
        rep.set_total(size)
    tmp = dst.parent / f".{dst.name}.pcs-{os.getpid()}-copy-{uuid.uuid4().hex[:8]}"
    copied = 0
    try:
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            while True:
                data = fin.read(chunk_size)
                if not data:
                    break
                fout.write(data)
                copied += len(data)
                if rep is not None:
                    rep.advance(len(data))
        os.chmod(tmp, src.stat().st_mode & 0o7777)
        tmp.replace(dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if rep is not None:
        rep.finish()
    return copied


def tree_bytes(path: str | os.PathLike[str]) -> int:
    """The bytes of every regular file under ``path`` (a hard-linked file counts once).

    Links are not followed; files that vanish during the walk are skipped.

    Args:
        path: a folder or a file; a missing path has 0 bytes.

    Returns:
        The sum of the file sizes.
    """
    total = 0
    seen: set[tuple[int, int]] = set()
    stack = [os.fspath(path)]
    while stack:
        current = stack.pop()
        try:
            st = os.lstat(current)
        except OSError:
            continue
        if os.path.isdir(current) and not os.path.islink(current):
            try:
                with os.scandir(current) as it:
                    for item in it:
                        try:
                            if item.is_dir(follow_symlinks=False):
                                stack.append(item.path)
                            elif item.is_file(follow_symlinks=False):
                                ist = item.stat(follow_symlinks=False)
                                key = (ist.st_dev, ist.st_ino)
                                if ist.st_nlink > 1:
                                    if key in seen:
                                        continue
                                    seen.add(key)
                                total += ist.st_size
                        except OSError:
                            continue
            except OSError:
                continue
        elif os.path.isfile(current) and not os.path.islink(current):
            total += st.st_size
    return total


# -- the CLI's rich bars -----------------------------------------------------------------


class _RichCallback:
    """The callback :func:`rich_progress` yields: one rich task per description."""

    # finished bars kept on screen; older finished ones are removed
    _KEEP_FINISHED = 3
    _REDRAW_S = 0.1  # at most ten redraws a second, and always the last step of a bar

    def __init__(self, progress: Any) -> None:
        self._progress = progress
        self._tasks: dict[str, Any] = {}
        self._units: dict[str, str] = {}
        self._finished: list[Any] = []
        self._lock = threading.Lock()
        self._drawn = 0.0  # when the bars were last drawn (time.monotonic)

    def set_unit(self, description: str, unit: str) -> None:
        with self._lock:
            self._units[description] = unit

    def __call__(self, description: str, done: int, total: int | None) -> None:
        with self._lock:
            task = self._tasks.get(description)
            if task is not None:
                current = self._progress.tasks[self._index(task)]
                if done < current.completed:  # a new operation under the same description
                    self._progress.remove_task(task)
                    if task in self._finished:
                        self._finished.remove(task)
                    task = None
            if task is None:
                task = self._progress.add_task(
                    description, total=total, unit=self._units.get(description, "bytes")
                )
                self._tasks[description] = task
            self._progress.update(task, completed=done, total=total)
            now = time.monotonic()
            if now - self._drawn >= self._REDRAW_S or (total is not None and done >= total):
                self._drawn = now
                self._progress.refresh()
            if total is not None and done >= total and task not in self._finished:
                self._finished.append(task)
                while len(self._finished) > self._KEEP_FINISHED:
                    old = self._finished.pop(0)
                    self._progress.remove_task(old)
                    self._tasks = {k: v for k, v in self._tasks.items() if v != old}

    def _index(self, task_id: Any) -> int:
        for i, task in enumerate(self._progress.tasks):
            if task.id == task_id:
                return i
        raise KeyError(task_id)  # pragma: no cover - tasks are only removed under the lock


def _noop(description: str, done: int, total: int | None) -> None:
    """The callback when progress is not shown."""


def _columns() -> list[Any]:
    """Rich columns: description, bar, amount (bytes or counts), speed, time left."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        ProgressColumn,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )
    from rich.text import Text

    class AmountColumn(ProgressColumn):
        def __init__(self) -> None:
            super().__init__()
            self._bytes = DownloadColumn()

        def render(self, task: Any) -> Any:
            unit = task.fields.get("unit", "bytes")
            if unit == "bytes":
                return self._bytes.render(task)
            total = "?" if task.total is None else str(int(task.total))
            return Text(f"{int(task.completed)}/{total} {unit}", style="progress.download")

    class SpeedColumn(ProgressColumn):
        def __init__(self) -> None:
            super().__init__()
            self._speed = TransferSpeedColumn()

        def render(self, task: Any) -> Any:
            if task.fields.get("unit", "bytes") == "bytes":
                return self._speed.render(task)
            return Text("")

    return [
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        AmountColumn(),
        SpeedColumn(),
        TimeRemainingColumn(),
    ]


@contextmanager
def rich_progress(enabled: bool | None = None) -> Iterator[ProgressCallback]:
    """A progress callback that draws rich bars by bytes on stderr.

    Each description gets its own bar (several may run at once, from several
    threads), showing bytes done and total, transfer speed and time left.
    Nothing is ever written to stdout, and ``print`` to stdout during the bars
    stays on stdout.

    Args:
        enabled: None (the default) draws only when stderr is a terminal; True
            draws even when it is not (``--progress``: the bars stay in the
            log); False never draws.

    Returns:
        A context manager yielding the callback to pass as ``progress=``; when
        nothing is drawn, the callback does nothing.
    """
    stream = sys.stderr
    is_tty = _isatty(stream)
    if enabled is None:
        enabled = is_tty
    if not enabled:
        yield _noop
        return
    from rich.console import Console
    from rich.progress import Progress

    console = Console(file=stream, force_terminal=True if not is_tty else None)
    bars = Progress(
        *_columns(),
        console=console,
        transient=is_tty,  # in a terminal the bars vanish when done; in a log they stay
        redirect_stdout=False,  # rich would send stdout's text to stderr
        redirect_stderr=True,
        # drawn when the callback is told something, never from a timer thread: a thread
        # that runs no run writes for the run being captured (a serial sweep's trial), so
        # a redraw there would become the trial's stderr and a rerun's false difference
        auto_refresh=False,
    )
    with bars:
        yield _RichCallback(bars)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # replaced or closed stream
        return False
