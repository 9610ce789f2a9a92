"""SIGTERM and SIGHUP end pcs's runs KILLED, then the process dies as the signal says.

pcs work that must not be cut off half-way runs inside :func:`guarded` (a run's
``with`` block, a component run, an export or import). When SIGTERM or SIGHUP
arrives in the main thread while such work runs, the handler raises
:class:`ProcessTerminated`, so the work unwinds like it does for Ctrl-C: runs
end KILLED with their end time and temporary files are removed by their
``finally`` blocks. When the outermost guarded block has unwound, the signal is
delivered again with the handler that was there before pcs's, so the process
ends exactly as the signal would have ended it (exit status -15, -1 ...).

A signal that arrives outside guarded work ends the runs this process still
runs (from a helper thread, with a time limit) before it is delivered again.

A signal the process ignores (``nohup`` ignores SIGHUP) stays ignored: pcs
only installs its handler over the default action or a Python handler, which
it calls afterwards.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

from pcs import _liveness

__all__ = ["ProcessTerminated", "guarded", "enter", "leave", "install", "on_termination"]

log = logging.getLogger(__name__)

_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)
)
_PREVIOUS: dict[int, Any] = {}
_DEPTH = 0  # guarded blocks open in the main thread
_CALLBACKS: list[Callable[[], None]] = []


class ProcessTerminated(BaseException):  # noqa: N818 - it is a signal, like KeyboardInterrupt
    """Raised in the main thread by SIGTERM or SIGHUP while pcs work runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"terminated by {signal.Signals(signum).name}")
        self.signum = signum

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name


def install() -> None:
    """Install pcs's handlers (main thread only; a no-op elsewhere or when already in place)."""
    if threading.current_thread() is not threading.main_thread():
        return
    _catch_swallowed_signals()
    for signum in _SIGNALS:
        if signum in _PREVIOUS:
            continue
        try:
            current = signal.getsignal(signum)
        except (ValueError, OSError):
            continue
        if current is signal.SIG_IGN or current is None:
            continue  # ignored on purpose (nohup), or set outside Python: leave it alone
        try:
            signal.signal(signum, _handle)
        except (ValueError, OSError):
            continue
        _PREVIOUS[signum] = current


def enter() -> bool:
    """Open a guarded block; returns whether it counts (only the main thread's do)."""
    global _DEPTH
    if threading.current_thread() is not threading.main_thread():
        return False
    install()
    _DEPTH += 1
    return True


def leave(counted: bool, exc: BaseException | None) -> None:
    """Close a guarded block; the outermost one lets a pending signal end the process."""
    global _DEPTH
    if not counted:
        return
    _DEPTH -= 1
    if _DEPTH == 0 and isinstance(exc, ProcessTerminated):
        _deliver(exc.signum)


@contextlib.contextmanager
def guarded() -> Iterator[None]:
    """Run pcs work that a SIGTERM/SIGHUP should unwind, not cut off."""
    counted = enter()
    try:
        yield
    except BaseException as exc:
        leave(counted, exc)
        raise
    leave(counted, None)


def on_termination(callback: Callable[[], None]) -> Callable[[], None]:
    """Call ``callback`` before the process dies by a signal; returns a function that unregisters it."""
    _CALLBACKS.append(callback)

    def remove() -> None:
        with contextlib.suppress(ValueError):
            _CALLBACKS.remove(callback)

    return remove


_HOOKED = False


def _catch_swallowed_signals() -> None:
    """Deliver again a signal whose exception Python swallowed inside a finalizer.

    A signal handler runs between any two bytecodes of the main thread, also
    inside a finalizer or weakref callback run by the garbage collector; an
    exception raised there (``ProcessTerminated``, ``KeyboardInterrupt``) is
    printed as "Exception ignored" and dropped, so the work it should stop goes
    on. While guarded work runs, such a signal is sent again a moment later
    from a helper thread, so its handler runs outside the callback.
    """
    global _HOOKED
    if _HOOKED:
        return
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        exc = unraisable.exc_value
        if _DEPTH > 0 and isinstance(exc, (ProcessTerminated, KeyboardInterrupt)):
            signum = exc.signum if isinstance(exc, ProcessTerminated) else signal.SIGINT
            timer = threading.Timer(0.01, os.kill, (os.getpid(), signum))
            timer.daemon = True
            timer.start()
            return
        previous(unraisable)

    sys.unraisablehook = hook
    _HOOKED = True


def _handle(signum: int, frame: FrameType | None) -> None:
    if _DEPTH > 0:
        raise ProcessTerminated(signum)
    _deliver(signum)


def _deliver(signum: int) -> None:
    """End what is left, then let the signal do what it would have done without pcs."""
    name = signal.Signals(signum).name
    _liveness.end_live_runs("KILLED", name)
    for callback in list(reversed(_CALLBACKS)):
        try:
            callback()
        except Exception as exc:  # noqa: BLE001 - the process is dying; clean what can be cleaned
            log.debug("pcs: cleanup on %s failed: %s", name, exc)
    previous = _PREVIOUS.get(signum, signal.SIG_DFL)
    if callable(previous):
        previous(signum, None)
        return
    if previous is signal.SIG_IGN:
        return
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
