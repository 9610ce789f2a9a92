"""Capture what an entry point prints, while still showing it live.

Two levels, both active while a component's entry point runs:

- **Python level.** ``sys.stdout`` and ``sys.stderr`` are replaced by a router
  (one per stream, for the life of the process) that shows every write at once
  and keeps a copy for the run of the writing thread: the innermost run that
  thread started, and the runs that run is nested in. A thread that started no
  run (a worker thread of the entry point) writes for the run of the only
  thread running runs; when runs are active in several threads at once, its
  text is shown and not kept. So concurrent runs in threads of one process each
  keep their own text.
- **File-descriptor level.** The run started while no other run is active (the
  outermost one) also redirects file descriptors 1 and 2 to a reader thread,
  through a pseudo-terminal where the descriptor was a terminal (so ``isatty``
  and progress bars behave as before) and a pipe otherwise. The reader copies
  every byte to the real descriptor at once and keeps it for that run. So
  ``os.write(1, ...)``, C extensions, ``subprocess.run([...])`` children and
  multiprocessing workers (spawn, forkserver, fork) are captured too.
  Python-level text reaches that run once: the router shows it on the real
  descriptor itself, and waits for the reader to catch up before keeping it,
  so text written by both levels is kept in the order it was written.

The rule for nesting and threads: the output written below Python (C code,
subprocesses) is kept by the outermost run only; an inner run (a pipeline's
component run, a run in another thread while the first still runs) keeps its
Python-level text. When the outermost run ends, the descriptors are restored
(on every exit path: return, exception, Ctrl-C, SIGTERM through
:mod:`pcs._signals`), after C's stdio buffers are flushed and the reader has
kept everything already written. A process that still holds the old
descriptor after the run (a pool worker, a forkserver) keeps printing to the
terminal through the reader, which then forwards without keeping.

Logging handlers follow the run: a ``logging.StreamHandler`` writing to the
real ``sys.stdout`` / ``sys.stderr`` (``logging.basicConfig(stream=sys.stdout)``
where a module loads) is pointed at the router while a run is active, and a
handler that writes to the router (made during a run) is pointed back at the
real stream when the run ends; so every run of a serial sweep keeps what its
handlers log.

Warnings: each run starts with Python's "already shown" memory of warnings
reset, so a run in a process that already ran shows the same warnings as a
run in a fresh process.

A stream the entry point wrote nothing to gets no file (for ``pcs diff`` a
missing file and an empty one both mean "nothing printed"), which keeps runs
that print nothing as cheap as before. Only the first :data:`LIMIT_BYTES` of
each stream are kept; when a run prints
more, the file ends with a line saying how much was cut, and the run is
tagged ``pcs.stdout_cut_bytes`` / ``pcs.stderr_cut_bytes`` with the number of
bytes not kept. Nothing is dropped silently.

Comparing output: :func:`drop_tool_lines` removes the lines MLflow and pcs
print on their own (MLflow's "View run ... at:" links and log lines,
progress bars), which say nothing about what the code computed, and
:func:`code_folder_as_placeholder` writes the folder the code ran from (the
original's, or the snapshot a rerun of recorded code runs) as one placeholder.
"""

from __future__ import annotations

import codecs
import contextlib
import io
import os
import re
import select
import sys
import threading
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from pcs import _keys
from pcs._redact import redact_text

__all__ = [
    "OutputCapture",
    "LIMIT_BYTES",
    "CUT_TAGS",
    "STREAM_FILES",
    "drop_tool_lines",
    "code_folder_as_placeholder",
]

LIMIT_BYTES = 8 * 1024 * 1024  # kept per stream
STREAM_FILES = {"stdout": "stdout.txt", "stderr": "stderr.txt"}
#: tag per stream: how many bytes the run printed beyond what was kept
CUT_TAGS = {"stdout": _keys.STDOUT_CUT, "stderr": _keys.STDERR_CUT}
_FD_OF = {"stdout": 1, "stderr": 2}


# -- comparing output -----------------------------------------------------------------------

# MLflow's own lines: the run/experiment links it prints when a run ends against a
# server, and its log lines (format "%Y/%m/%d %H:%M:%S LEVEL mlflow.module: message")
_MLFLOW_LINE = re.compile(
    r"^(?:🏃 View run .* at: |🧪 View experiment at: "
    r"|\d{4}/\d\d/\d\d \d\d:\d\d:\d\d (?:DEBUG|INFO|WARNING|ERROR|CRITICAL) mlflow[\w.]*: )"
)
# pcs's own warnings (its loggers' messages start with "pcs: ")
_PCS_LINE = re.compile(r"^pcs: ")
# a tqdm-style progress bar (MLflow's artifact bars, and any other): "NN%|...| a/b [time, rate]"
_PROGRESS = re.compile(r"\d+%\|.*\|\s*[\d.]+[kMG]?/[\d.?]+[kMG]?\s*\[[^\]]*\]")


def drop_tool_lines(text: str) -> str:
    """``text`` without the lines MLflow and pcs print on their own, for comparing output.

    Removed: MLflow's "🏃 View run ... at:" / "🧪 View experiment at:" lines
    and its log lines (``2026/01/02 10:00:00 INFO mlflow...: ...``); pcs's own
    warnings (``pcs: ...``); progress bars (``37%|███ | 3/8 [00:01<00:02, 2.5it/s]``),
    whose times and rates differ on every run. A line redrawn with ``\\r`` counts
    as a progress bar when any of its states is one.

    Args:
        text: captured stdout or stderr.

    Returns:
        The other lines, in order, each ending with ``\\n``.
    """
    kept = []
    for line in text.splitlines():
        if _MLFLOW_LINE.match(line) or _PCS_LINE.match(line):
            continue
        if "\r" in line or "%|" in line:
            states = [s for s in line.split("\r") if s.strip()]
            if any(_PROGRESS.search(s) for s in states):
                continue
        kept.append(line + "\n")
    return "".join(kept)


def code_folder_as_placeholder(text: str, files: Iterable[str]) -> str:
    """``text`` with the folder the run's code ran from written as ``<code folder>``, for comparing output.

    A rerun of recorded code runs the snapshot from pcs's cache, not from the
    original's folder, so warnings, tracebacks and printed ``__file__`` paths
    name another folder for the same file. The folder is found where ``text``
    names one of ``files`` by an absolute path (``/tmp/w/src/train.py:12:
    UserWarning``), and every mention of it is replaced.

    Args:
        text: captured stdout or stderr.
        files: the run's code files, relative to their repository (``train.py``,
            ``helpers/data.py``).
    """
    roots: set[str] = set()
    for name in files:
        name = name.replace("\\", "/").removeprefix("./")
        if not name or name.startswith("/"):
            continue
        pattern = r"(/[^\s'\"<>|]*?)/" + re.escape(name) + r"(?![\w.])"
        roots.update(m.group(1) for m in re.finditer(pattern, text))
    for root in sorted(roots, key=len, reverse=True):
        text = text.replace(root, "<code folder>")
    return text


# -- Python level ---------------------------------------------------------------------------


class _Keep:
    """A bounded copy of what a run printed to one stream."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._chunks: list[str] = []
        self._kept = 0
        self._cut = 0
        self._lock = threading.Lock()

    def add(self, text: str) -> None:
        data = text.encode("utf-8", "backslashreplace")
        with self._lock:
            room = self._limit - self._kept
            if len(data) <= room:
                self._chunks.append(text)
                self._kept += len(data)
                return
            if room > 0:
                head = data[:room].decode("utf-8", "ignore")  # cut on a character boundary
                self._chunks.append(head)
                kept = len(head.encode("utf-8", "backslashreplace"))
                self._kept += kept
                self._cut += len(data) - kept
            else:
                self._cut += len(data)

    def text(self) -> tuple[str, int, int]:
        """What was kept, its size in bytes, and how many bytes were cut."""
        with self._lock:
            return "".join(self._chunks), self._kept, self._cut


_STATE = threading.RLock()
_ACTIVE: tuple[OutputCapture, ...] = ()  # every entered capture, in the order entered (any thread)
_FD_OWNER: OutputCapture | None = None


def _chain_for_this_thread() -> list[OutputCapture]:
    """The captures a write from this thread goes to: its innermost run's, and its outer runs'."""
    active = _ACTIVE
    if not active:
        return []
    me = threading.get_ident()
    innermost = next((c for c in reversed(active) if c._thread == me), None)
    if innermost is None:
        if len({c._thread for c in active}) != 1:
            return []  # runs in several threads: whose this text is cannot be told
        innermost = active[-1]
    chain = []
    capture: OutputCapture | None = innermost
    while capture is not None:
        chain.append(capture)
        capture = capture._parent
    return chain


class _Router:
    """``sys.stdout`` / ``sys.stderr`` while runs are active: shows every write and keeps it for its run.

    One per stream for the life of the process, so an object that took hold of
    it during one run (a logging handler pcs did not see) still writes into
    the runs after it.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._original: Any = None  # the stream it replaced
        self._display: Any = None  # where text is shown while descriptors are redirected
        self._same_fd = False  # whether the stream it replaced writes to its own descriptor

    def _real(self) -> Any:
        """Where text is shown."""
        if self._original is not None:
            return self._original
        current = getattr(sys, self._name)
        return current if current is not self else getattr(sys, f"__{self._name}__")

    def write(self, text: str) -> int:
        stream = self._real()
        through_descriptor = False
        if text:
            chain = _chain_for_this_thread()
            owner = _FD_OWNER
            mine = owner is not None and owner in chain
            through_descriptor = mine and self._display is not None and self._same_fd
            if mine and not through_descriptor:
                # the real stream has no descriptor (pytest, Jupyter) or another: keep what the
                # descriptor carried before this text first, so the run keeps the order
                owner._drain(self._name)  # type: ignore[union-attr]
            for capture in chain:
                keep = capture._keeps.get(self._name)
                if keep is not None and not (through_descriptor and capture is owner):
                    keep.add(text)  # the owner's copy comes through the descriptor, in order
            if self._display is not None and not through_descriptor:
                stream = self._display  # not the owner's text: show it without the descriptor
        written = stream.write(text)
        if text and through_descriptor:
            # written now, not when a block-buffered stream (a pipe, a file) fills: the
            # record keeps the order the program wrote in, whatever the descriptor is
            stream.flush()
        return written if written is not None else len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self._real().flush()

    def isatty(self) -> bool:
        return bool(self._real().isatty())

    def fileno(self) -> int:
        # the descriptor (redirected to the reader during the outermost run), so code
        # that writes to sys.stdout.fileno() is captured
        real = self._original if self._original is not None else self._real()
        return int(real.fileno())

    def __getattr__(self, name: str) -> Any:
        real = self._original if self._original is not None else self._real()
        return getattr(real, name)


_ROUTERS = {name: _Router(name) for name in STREAM_FILES}


def _stream_handlers() -> list[Any]:
    import logging

    loggers: list[Any] = [logging.getLogger()]
    loggers += [lg for lg in list(logging.Logger.manager.loggerDict.values())
                if isinstance(lg, logging.Logger)]
    seen: set[int] = set()
    found = []
    for logger in loggers:
        for handler in list(getattr(logger, "handlers", ())):
            if id(handler) not in seen and isinstance(handler, logging.StreamHandler):
                seen.add(id(handler))
                found.append(handler)
    return found


def _point_handlers(old_to_new: dict[int, Any]) -> None:
    """Point every logging stream handler writing to a stream in ``old_to_new`` at its replacement.

    A handler made before the run (``logging.basicConfig(stream=sys.stdout)`` at
    the top of a component's module, which loads before its run starts) holds
    the stream object itself, so replacing ``sys.stdout`` alone would not see
    what it logs; a handler made during the run holds the router, and must write
    to the real stream once no run is active.
    """
    for handler in _stream_handlers():
        new = old_to_new.get(id(getattr(handler, "stream", None)))
        if new is not None:
            # a handler whose stream is a property (logging.lastResort reads sys.stderr
            # on every write) follows the replaced stream by itself
            with contextlib.suppress(AttributeError):
                handler.stream = new


def _reset_warning_memory() -> None:
    """Forget which warnings were shown, so a run shows the warnings a fresh process would."""
    import warnings

    mutated = getattr(warnings, "_filters_mutated", None)
    if callable(mutated):
        mutated()  # every module's __warningregistry__ is cleared on its next warning


# -- file-descriptor level ------------------------------------------------------------------


def _libc_flush() -> None:
    """Flush C's stdio buffers (a C extension's ``printf`` to a pipe is block-buffered)."""
    try:
        import ctypes

        ctypes.CDLL(None).fflush(None)
    except Exception:  # noqa: BLE001 - no libc to flush (not POSIX): nothing buffered there
        pass


def _pending(fd: int) -> int:
    """Bytes waiting to be read from ``fd`` (a pipe or a pseudo-terminal's master)."""
    import fcntl
    import struct
    import termios

    try:
        raw = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
    except OSError:
        return 0
    return int(struct.unpack("i", raw)[0])


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except InterruptedError:
            continue
        except OSError:
            return  # the terminal went away: the copy is still kept
        view = view[n:]


class _FdTee:
    """One descriptor (1 or 2) redirected to a reader that copies it to the real one and keeps it."""

    def __init__(self, fd: int, keep: _Keep) -> None:
        self.fd = fd
        self._keep: _Keep | None = keep
        self._decoder = codecs.getincrementaldecoder("utf-8")("backslashreplace")
        self._cond = threading.Condition()
        self._busy = False
        self._consumed = 0
        self._saved = os.dup(fd)  # the real descriptor
        self._restored = False
        self._marker: bytes | None = None
        self._marker_seen = False
        self._held = b""
        self._ended = False
        self.tty = os.isatty(fd)
        if self.tty:
            import fcntl
            import termios
            import tty

            self._read_fd, self._write_fd = os.openpty()
            with contextlib.suppress(OSError):  # the same size, so progress bars fit
                size = fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8)
                fcntl.ioctl(self._write_fd, termios.TIOCSWINSZ, size)
            with contextlib.suppress(OSError, termios.error):
                tty.setraw(self._write_fd)  # bytes pass unchanged ("\n" stays "\n")
        else:
            self._read_fd, self._write_fd = os.pipe()
        os.set_inheritable(self._read_fd, False)
        self._thread = threading.Thread(target=self._read, name=f"pcs-capture-fd{fd}", daemon=True)
        self._thread.start()
        os.dup2(self._write_fd, fd)  # from here on, fd writes into the reader

    def display(self, like: Any) -> TextIO:
        """A text stream on the real descriptor, encoded like ``like``."""
        return io.TextIOWrapper(
            io.FileIO(self._saved, "w", closefd=False),
            encoding=getattr(like, "encoding", None) or "utf-8",
            errors=getattr(like, "errors", None) or "strict",
            write_through=True,
        )

    def _read(self) -> None:
        while True:
            try:
                select.select([self._read_fd], [], [])
            except InterruptedError:
                continue
            except (OSError, ValueError):
                break
            with self._cond:
                self._busy = True
            try:
                data = os.read(self._read_fd, 65536)
            except InterruptedError:
                data = None
            except OSError:  # EIO: a pseudo-terminal with no writer left
                data = b""
            if data:
                self._take(data)
            with self._cond:
                if data:
                    self._consumed += len(data)
                self._busy = False
                self._cond.notify_all()
            if data == b"":
                break
        with self._cond:
            self._busy = False
            self._ended = True
            self._cond.notify_all()
        with contextlib.suppress(OSError):
            os.close(self._read_fd)
        with contextlib.suppress(OSError):
            os.close(self._saved)

    def _take(self, data: bytes) -> None:
        """Show ``data`` on the real descriptor and keep it, up to the end marker once one is sent."""
        marker = self._marker
        if marker is None or self._marker_seen:
            _write_all(self._saved, data)
            self._add(data)
            return
        data = self._held + data
        at = data.find(marker)
        if at < 0:
            # the marker may begin in the last bytes: hold them until the next read
            cut = max(0, len(data) - len(marker) + 1)
            data, self._held = data[:cut], data[cut:]
            _write_all(self._saved, data)
            self._add(data)
            return
        self._held = b""
        _write_all(self._saved, data[:at])
        self._add(data[:at])
        with self._cond:
            tail = self._decoder.decode(b"", final=True)
            if tail and self._keep is not None:
                self._keep.add(tail)
            self._keep = None
            self._marker_seen = True
            self._cond.notify_all()
        _write_all(self._saved, data[at + len(marker):])  # written after the run: shown only

    def _add(self, data: bytes) -> None:
        keep = self._keep
        if data and keep is not None:
            keep.add(self._decoder.decode(data))

    def drain(self) -> None:
        """Wait until the reader has kept every byte written to a pipe so far.

        Exact for a pipe; bytes written to a pseudo-terminal reach its reader a
        moment later, which :meth:`finish` waits for with a marker instead.
        """
        if threading.get_ident() == self._thread.ident:
            return
        with self._cond:
            target = self._consumed + _pending(self._read_fd)
            while not self._ended and (self._busy or self._consumed < target):
                self._cond.wait(0.5)

    def restore(self) -> None:
        """Point the descriptor at the real one again (idempotent)."""
        if not self._restored:
            os.dup2(self._saved, self.fd)
            self._restored = True

    def finish(self) -> None:
        """Keep everything written before :meth:`restore`; the reader only forwards from now on."""
        marker = b"\0pcs-capture-end-" + uuid.uuid4().hex.encode() + b"\0"
        with self._cond:
            self._marker = marker
        # everything written before the marker comes out of the descriptor before it
        _write_all(self._write_fd, marker)
        with self._cond:
            while not self._marker_seen and not self._ended:
                self._cond.wait(0.5)
            self._keep = None
        # the reader ends when no process holds the other end any more (now, unless a
        # child started during the run still runs: its output keeps reaching the terminal)
        os.close(self._write_fd)
        self._thread.join(timeout=0.2)


# -- the capture of one run -----------------------------------------------------------------


class OutputCapture:
    """Keep what a block prints to stdout and stderr, Python- and descriptor-level, while showing it.

    Example::

        capture = OutputCapture()
        with capture:
            print("hello")          # shown at once, and kept
        tags = capture.write_files(folder)   # stdout.txt, stderr.txt

    Args:
        limit_bytes: kept per stream (default :data:`LIMIT_BYTES`).
        descriptors: also redirect file descriptors 1 and 2 when no other capture
            is active (see the module's docstring for the rule).
    """

    def __init__(self, limit_bytes: int | None = None, descriptors: bool = True) -> None:
        self.limit_bytes = limit_bytes if limit_bytes is not None else LIMIT_BYTES
        self._descriptors = descriptors
        self._keeps: dict[str, _Keep] = {}
        self._thread = 0
        self._parent: OutputCapture | None = None
        self._fd_tees: dict[str, _FdTee] = {}

    def __enter__(self) -> OutputCapture:
        global _ACTIVE, _FD_OWNER
        limit = self.limit_bytes
        self._keeps = {name: _Keep(limit) for name in STREAM_FILES}
        self._thread = threading.get_ident()
        with _STATE:
            self._parent = next((c for c in reversed(_ACTIVE) if c._thread == self._thread), None)
            first = not _ACTIVE
            if first:
                self._install()
            _ACTIVE = (*_ACTIVE, self)
            if first and self._descriptors and os.name == "posix":
                try:
                    self._redirect_descriptors()
                    _FD_OWNER = self
                except OSError:
                    self._restore_descriptors()  # a descriptor that is not open: Python level only
        _reset_warning_memory()
        return self

    def __exit__(self, *exc: object) -> None:
        global _ACTIVE, _FD_OWNER
        with _STATE:
            try:
                if _FD_OWNER is self:
                    _FD_OWNER = None
                    self._restore_descriptors()
            finally:
                _ACTIVE = tuple(c for c in _ACTIVE if c is not self)
                if not _ACTIVE:
                    self._uninstall()

    @staticmethod
    def _install() -> None:
        for name, router in _ROUTERS.items():
            original = getattr(sys, name)
            if original is router:
                original = router._original or getattr(sys, f"__{name}__")
            router._original = original
            setattr(sys, name, router)
        _point_handlers({id(r._original): r for r in _ROUTERS.values() if r._original is not None})

    @staticmethod
    def _uninstall() -> None:
        _point_handlers({id(r): r._original for r in _ROUTERS.values() if r._original is not None})
        for name, router in _ROUTERS.items():
            if getattr(sys, name) is router:
                setattr(sys, name, router._original)
            # else someone replaced the stream meanwhile: the router stays in their chain,
            # writing through to the real stream without keeping anything
            router._original = None

    def _redirect_descriptors(self) -> None:
        by_fd: dict[int, _FdTee] = {}
        for name, router in _ROUTERS.items():
            fd = _FD_OF[name]
            os.fstat(fd)  # raises when the descriptor is not open
            with contextlib.suppress(Exception):
                router._original.flush()
            by_fd[fd] = self._fd_tees[name] = _FdTee(fd, self._keeps[name])
        for name, router in _ROUTERS.items():
            fd_tee = by_fd.get(_fileno(router._original) or -1)
            if fd_tee is not None:
                # the stream writes to a captured descriptor. Its own (stdout to 1): the
                # run's text goes through it, in order with C-level writes. The other one
                # (stdout sent to stderr, as `pcs run --json` does): it is shown on the
                # real descriptor, or stderr would keep stdout's text as well
                router._display = fd_tee.display(router._original)
                router._same_fd = fd_tee.fd == _FD_OF[name]

    def _restore_descriptors(self) -> None:
        # every step runs even when one raises (a Ctrl-C arriving now): the descriptors
        # must be the real ones again whatever happens
        steps: list[Any] = []
        for router in _ROUTERS.values():
            for stream in (router._display, router._original):
                if stream is not None:
                    steps.append(stream.flush)
        steps.append(self._stop_fd_tees)
        raised: BaseException | None = None
        for step in steps:
            try:
                step()
            except Exception:  # noqa: BLE001,S110 - a stream that cannot flush: nothing to keep
                pass
            except BaseException as exc:  # noqa: BLE001 - re-raised once everything is restored
                raised = raised or exc
                for fd_tee in self._fd_tees.values():
                    fd_tee.restore()
        if raised is not None:
            raise raised

    def _stop_fd_tees(self) -> None:
        for router in _ROUTERS.values():
            router._display, router._same_fd = None, False
        try:
            _libc_flush()  # what C code printed belongs to the run
        finally:
            for fd_tee in self._fd_tees.values():
                fd_tee.restore()
        for name in list(self._fd_tees):
            self._fd_tees.pop(name).finish()

    def _drain(self, name: str) -> None:
        fd_tee = self._fd_tees.get(name)
        if fd_tee is not None:
            fd_tee.drain()

    def write_files(self, folder: Path) -> dict[str, str]:
        """Write ``stdout.txt`` and ``stderr.txt`` (each when written to) into ``folder``.

        Args:
            folder: an existing folder.

        Returns:
            ``{CUT_TAGS[stream]: bytes cut}`` for each stream that printed more than kept.
        """
        tags: dict[str, str] = {}
        for name, file_name in STREAM_FILES.items():
            keep = self._keeps.get(name)
            text, kept, cut = keep.text() if keep is not None else ("", 0, 0)
            if not text and not cut:
                continue  # nothing printed: no file (verification reads that as empty)
            text = redact_text(text)  # a token the code printed is not kept
            if cut:
                text += (
                    f"\n[pcs: {name} cut here: the run printed {kept + cut} bytes, and only the "
                    f"first {kept} are kept]\n"
                )
                tags[CUT_TAGS[name]] = str(cut)
            (folder / file_name).write_text(text, encoding="utf-8", errors="backslashreplace")
        return tags


def _fileno(stream: Any) -> int | None:
    try:
        return int(stream.fileno())
    except Exception:  # noqa: BLE001 - a stream without a descriptor (pytest's capsys, StringIO)
        return None
