"""Capture what an entry point prints, while still showing it live.

While a component's entry point runs, ``sys.stdout`` and ``sys.stderr`` are
replaced by tees: everything written to them goes to the original stream at
once and into a bounded buffer. At the end of the run (also when it fails)
the buffers become the run's ``pcs/stdout.txt`` and ``pcs/stderr.txt``.

What is captured: every write through ``sys.stdout`` / ``sys.stderr`` while the
entry point runs (``print``, ``warnings``, logging handlers made during the
run), from any thread of the process.

Logging handlers that write to ``sys.stdout`` / ``sys.stderr``, made before
the run (``logging.basicConfig(stream=sys.stdout)`` where a module loads),
are pointed at the tees for the run too.

What is not captured: output written to the file descriptors themselves
(C extensions, ``os.write(1, ...)``, subprocesses that inherit the
descriptors), writes to ``sys.stdout.buffer``, and other objects that took
hold of the original stream before the run started.

A stream the entry point wrote nothing to gets no file (for ``pcs diff`` a
missing file and an empty one both mean "nothing printed"), which keeps runs
that print nothing as cheap as before. Only the first :data:`LIMIT_BYTES` of
each stream are kept; when a run prints
more, the file ends with a line saying how much was cut, and the run is
tagged ``pcs.stdout_cut_bytes`` / ``pcs.stderr_cut_bytes`` with the number of
bytes not kept. Nothing is dropped silently.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any, TextIO

from pcs import _keys
from pcs._redact import redact_text

__all__ = ["OutputCapture", "LIMIT_BYTES", "CUT_TAGS", "STREAM_FILES"]

LIMIT_BYTES = 8 * 1024 * 1024  # kept per stream
STREAM_FILES = {"stdout": "stdout.txt", "stderr": "stderr.txt"}
#: tag per stream: how many bytes the run printed beyond what was kept
CUT_TAGS = {"stdout": _keys.STDOUT_CUT, "stderr": _keys.STDERR_CUT}


class _Tee:
    """A text stream that writes to ``stream`` and keeps a bounded copy."""

    def __init__(self, stream: TextIO, limit: int) -> None:
        self._stream = stream
        self._limit = limit
        self._chunks: list[str] = []
        self._kept = 0
        self._cut = 0
        self._lock = threading.Lock()
        self.closed_capture = False

    def write(self, text: str) -> int:
        written = self._stream.write(text)
        if not self.closed_capture and text:
            self._keep(text)
        return written if written is not None else len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def _keep(self, text: str) -> None:
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

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return bool(self._stream.isatty())

    def fileno(self) -> int:
        return self._stream.fileno()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def text(self) -> tuple[str, int, int]:
        """What was kept, its size in bytes, and how many bytes were cut."""
        with self._lock:
            return "".join(self._chunks), self._kept, self._cut


def _redirect_log_handlers(tees: dict[int, _Tee]) -> list[tuple[Any, _Tee, Any]]:
    """Point logging handlers that write to the streams being replaced at their tees.

    A handler made before the run (``logging.basicConfig(stream=sys.stdout)`` at
    the top of a component's module, which loads before its run starts) holds
    the stream object itself, so replacing ``sys.stdout`` alone would not see
    what it logs.

    Returns:
        ``(handler, tee, original stream)`` for each handler redirected, to undo it.
    """
    import logging

    loggers: list[Any] = [logging.getLogger()]
    loggers += [lg for lg in list(logging.Logger.manager.loggerDict.values())
                if isinstance(lg, logging.Logger)]
    changed: list[tuple[Any, _Tee, Any]] = []
    seen: set[int] = set()
    for logger in loggers:
        for handler in list(getattr(logger, "handlers", ())):
            stream = getattr(handler, "stream", None)
            if id(handler) in seen or not isinstance(handler, logging.StreamHandler):
                continue
            seen.add(id(handler))
            tee = tees.get(id(stream))
            if tee is not None:
                handler.stream = tee
                changed.append((handler, tee, stream))
    return changed


class OutputCapture:
    """Tee ``sys.stdout`` and ``sys.stderr`` into bounded buffers while a block runs.

    Example::

        capture = OutputCapture()
        with capture:
            print("hello")          # shown at once, and kept
        tags = capture.write_files(folder)   # stdout.txt, stderr.txt
    """

    def __init__(self, limit_bytes: int | None = None) -> None:
        self.limit_bytes = limit_bytes if limit_bytes is not None else LIMIT_BYTES
        self._tees: dict[str, _Tee] = {}
        self._originals: dict[str, Any] = {}
        self._handlers: list[tuple[Any, _Tee, Any]] = []

    def __enter__(self) -> OutputCapture:
        for name in STREAM_FILES:
            original = getattr(sys, name)
            self._originals[name] = original
            tee = _Tee(original, self.limit_bytes)
            self._tees[name] = tee
            setattr(sys, name, tee)
        self._handlers = _redirect_log_handlers(
            {id(self._originals[n]): t for n, t in self._tees.items()}
        )
        return self

    def __exit__(self, *exc: object) -> None:
        for handler, tee, original in self._handlers:
            if handler.stream is tee:
                handler.stream = original
        self._handlers = []
        for name, tee in self._tees.items():
            tee.closed_capture = True
            if getattr(sys, name) is tee:
                setattr(sys, name, self._originals[name])
            # else someone replaced the stream meanwhile: the tee stays in their chain,
            # writing through without keeping anything

    def write_files(self, folder: Path) -> dict[str, str]:
        """Write ``stdout.txt`` and ``stderr.txt`` (each when written to) into ``folder``.

        Args:
            folder: an existing folder.

        Returns:
            ``{CUT_TAGS[stream]: bytes cut}`` for each stream that printed more than kept.
        """
        tags: dict[str, str] = {}
        for name, file_name in STREAM_FILES.items():
            tee = self._tees.get(name)
            text, kept, cut = tee.text() if tee is not None else ("", 0, 0)
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
