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

A signal that lands while the main thread is inside a tracking-store call
(MLflow's store code or SQLAlchemy) is held back until the call is over: an
exception raised there can leave a SQLite connection holding the database's
write lock (SQLAlchemy invalidates the connection on a non-``Exception`` but
keeps its cursor in the traceback, so SQLite cannot close it), and the run's
own KILLED end writes would then wait for the lock until the store retry window
ran out. The handler sees where the main thread stopped; while it is in store
code the signal is sent again when the outermost store frame returns (a trace
on that one frame, only while the signal waits; under a debugger or coverage,
whose trace function stays, every few milliseconds from a helper thread), and
handled then, or after :data:`HOLD_LIMIT_S` seconds whatever the thread is
doing. Ctrl-C that ends guarded work also ends KILLED the runs that work
created and left running (a ``KeyboardInterrupt`` between ``Run()`` and its
``with``), and so does a ``KeyboardInterrupt`` that ends the program. Ctrl-C gets the same treatment while guarded work
runs (pcs's SIGINT handler stands in for Python's default one, then raises
``KeyboardInterrupt`` as it does). pcs's own steps that must not be cut in two
(a run created but not yet known to be live) are held back the same way
(:func:`not_interrupted`).

A signal the process ignores (``nohup`` ignores SIGHUP) stays ignored: pcs
only installs its handler over the default action or a Python handler, which
it calls afterwards.

Processes pcs starts for a run (the rerun in a rebuilt environment) get the
signals too (:func:`run_child` forwards SIGTERM, SIGHUP and SIGINT, then the
parent ends as the signal says), and die with pcs: a child started with
:func:`child_env` asks the kernel for SIGTERM when its parent dies, also by
SIGKILL, so no orphan keeps writing to a run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import CodeType, FrameType
from typing import Any, TypeVar

from pcs import _liveness

__all__ = [
    "ProcessTerminated", "guarded", "enter", "leave", "install", "on_termination",
    "not_interrupted", "watch_uncaught", "HOLD_LIMIT_S", "child_env", "die_with_parent", "run_child",
]

log = logging.getLogger(__name__)

_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)
)
_PREVIOUS: dict[int, Any] = {}
_DEPTH = 0  # guarded blocks open in the main thread
_CALLBACKS: list[Callable[[], None]] = []
_F = TypeVar("_F", bound=Callable[..., Any])

#: seconds a signal waits for a store call to return before it is handled anyway: more than
#: MLflow's SQLite busy timeout (20 s), so a call waiting for another process's lock returns
HOLD_LIMIT_S = 25.0
_RESEND_S = 0.005
# code that holds a store transaction open: a signal is not raised inside it
_STORE_MODULES = ("sqlalchemy.", "mlflow.store.")
_HELD_CODE: set[CodeType] = set()  # pcs functions marked with not_interrupted
_HELD_SINCE: dict[int, float] = {}  # signal number -> when it was first held back
_INT_INSTALLED = False  # pcs's SIGINT handler stands in for Python's while guarded work runs
_LIVE_BEFORE: set[str] = set()  # runs live when the outermost guarded block opened


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
    if _DEPTH == 0:
        _install_interrupt()
        _LIVE_BEFORE.clear()
        _LIVE_BEFORE.update(_liveness.live_run_ids())
    _DEPTH += 1
    return True


def leave(counted: bool, exc: BaseException | None) -> None:
    """Close a guarded block; the outermost one lets a pending signal end the process."""
    global _DEPTH
    if not counted:
        return
    _DEPTH -= 1
    if _DEPTH == 0:
        _remove_interrupt()
    if _DEPTH == 0 and isinstance(exc, KeyboardInterrupt):
        _end_left_behind()
    if _DEPTH == 0 and isinstance(exc, ProcessTerminated):
        _deliver(exc.signum)


def _end_left_behind() -> None:
    """Ctrl-C ended guarded work: end KILLED the runs it created and left running.

    A run created in the block whose ``with`` had not begun yet when the
    ``KeyboardInterrupt`` came (or one never entered) ends as its enclosing run
    did, not RUNNING with a live heartbeat. Runs live before the block are the
    caller's and go on.
    """
    left = _liveness.live_run_ids() - _LIVE_BEFORE
    if left:
        _liveness.end_live_runs("KILLED", "SIGINT", run_ids=left)


def watch_uncaught() -> None:
    """End this process's live runs KILLED when a ``KeyboardInterrupt`` ends the program.

    Ctrl-C outside guarded work (after ``Run()`` returned, before its ``with``)
    unwinds past every run's end; SIGTERM ends such runs before the process
    dies, and this does the same for an uncaught ``KeyboardInterrupt`` (chained
    on :data:`sys.excepthook`, so whatever was there still prints it).
    """
    global _EXCEPTHOOKED
    if _EXCEPTHOOKED:
        return
    previous = sys.excepthook

    def hook(exc_type: Any, exc: Any, tb: Any) -> None:
        if isinstance(exc_type, type) and issubclass(exc_type, KeyboardInterrupt):
            _liveness.end_live_runs("KILLED", "SIGINT")
        previous(exc_type, exc, tb)

    sys.excepthook = hook
    _EXCEPTHOOKED = True


_EXCEPTHOOKED = False


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


def not_interrupted(fn: _F) -> _F:
    """Mark ``fn`` as one step: a signal that lands in it (main thread) is handled after it.

    Costs nothing per call (the handler looks for ``fn``'s code among the
    frames it interrupted); the wait is bounded by :data:`HOLD_LIMIT_S`.
    """
    _HELD_CODE.add(fn.__code__)
    return fn


def _outermost_held(frame: FrameType | None) -> FrameType | None:
    """The outermost store-call or ``not_interrupted`` frame the main thread is in, if any."""
    held = None
    while frame is not None:
        if frame.f_code in _HELD_CODE:
            held = frame
        else:
            name = frame.f_globals.get("__name__")
            if isinstance(name, str) and name.startswith(_STORE_MODULES):
                held = frame
        frame = frame.f_back
    return held


def _held_back(signum: int, frame: FrameType | None) -> bool:
    """Whether to handle ``signum`` later (it is sent again when the store call returns)."""
    outer = _outermost_held(frame)
    if outer is None:
        _HELD_SINCE.pop(signum, None)
        _stop_tracing()
        return False
    now = time.monotonic()
    since = _HELD_SINCE.setdefault(signum, now)
    if now - since >= HOLD_LIMIT_S:
        _HELD_SINCE.pop(signum, None)
        _stop_tracing()
        log.warning("pcs: a store call did not return within %g s of %s; handling the signal "
                    "inside it", HOLD_LIMIT_S, signal.Signals(signum).name)
        return False
    if _send_on_return(outer, signum):
        # the call may never return: the limit still holds
        delay = max(HOLD_LIMIT_S - (now - since), 0.0) + _RESEND_S
    else:
        delay = _RESEND_S
    timer = threading.Timer(delay, _send_again, (signum,))
    timer.daemon = True
    timer.start()
    return True


def _no_new_frames(frame: FrameType, event: str, arg: Any) -> None:
    """Global trace function while a held signal waits: only the marked frame is traced."""
    return None


def _stop_tracing() -> None:
    """Drop the trace :func:`_send_on_return` set (the signal is handled now)."""
    if sys.gettrace() is _no_new_frames:
        sys.settrace(None)


def _send_on_return(outer: FrameType, signum: int) -> bool:
    """Handle ``signum`` the moment ``outer`` returns; whether that could be arranged.

    Sending it again on a timer alone is not enough: the timer thread runs when
    the main thread lets go of the GIL, which it mostly does inside SQLite, so
    the signal lands in store code again and again. A trace on the one frame
    (only while the signal waits, a few milliseconds) sees the call end. A
    debugger's or coverage's trace function is left alone (the timer does it).
    """
    current = sys.gettrace()
    if current is not None and current is not _no_new_frames:
        return False

    def on_return(frame: FrameType, event: str, arg: Any) -> Any:
        if event != "return":
            return on_return
        frame.f_trace = None
        sys.settrace(None)
        if _HELD_SINCE.pop(signum, None) is None:
            return None  # handled meanwhile (the time limit)
        # handled right here, not sent again: the handler would run inside this function,
        # whose caller is still the store frame. An exception raised here leaves the store
        # frame as if raised in its caller, outside the store call.
        (_handle_interrupt if signum == signal.SIGINT else _handle)(signum, None)
        return None

    outer.f_trace_lines = False
    outer.f_trace = on_return
    sys.settrace(_no_new_frames)
    return True


def _send_again(signum: int) -> None:
    if signum in _HELD_SINCE:
        with contextlib.suppress(OSError):
            os.kill(os.getpid(), signum)


def _handle_interrupt(signum: int, frame: FrameType | None) -> None:
    """Ctrl-C: Python's KeyboardInterrupt, once the main thread is out of a store call."""
    if _held_back(signum, frame):
        return
    signal.default_int_handler(signum, frame)


def _install_interrupt() -> None:
    """Stand in for Python's SIGINT handler (only it: a program's own handler is left alone)."""
    global _INT_INSTALLED
    try:
        if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
            return
        signal.signal(signal.SIGINT, _handle_interrupt)
    except (ValueError, OSError):
        return
    _INT_INSTALLED = True


def _remove_interrupt() -> None:
    global _INT_INSTALLED
    if not _INT_INSTALLED:
        return
    _INT_INSTALLED = False
    with contextlib.suppress(ValueError, OSError):
        if signal.getsignal(signal.SIGINT) is _handle_interrupt:
            signal.signal(signal.SIGINT, signal.default_int_handler)


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
    if _held_back(signum, frame):
        return
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


# -- processes pcs starts: signals go to them too, and they die with pcs --------------------

#: set in a child pcs process's environment to the parent's pid: the child ends when it dies
DIE_WITH_PARENT_ENV = "PCS_DIE_WITH_PARENT"
_FORWARDED = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGHUP", "SIGINT") if hasattr(signal, name)
)
_PR_SET_PDEATHSIG = 1


def child_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` for a pcs child process that must not outlive this one (see :func:`die_with_parent`)."""
    return {**env, DIE_WITH_PARENT_ENV: str(os.getpid())}


def die_with_parent() -> None:
    """In a child started with :func:`child_env`: get SIGTERM when the parent dies.

    On Linux the kernel sends it (``prctl(PR_SET_PDEATHSIG)``), also when the
    parent is SIGKILLed; elsewhere a thread watches the parent pid. SIGTERM
    ends the child's runs KILLED like any SIGTERM. The variable is removed, so
    the child's own children are not tied to the wrong parent.
    """
    raw = os.environ.pop(DIE_WITH_PARENT_ENV, None)
    if not raw or not raw.isdigit():
        return
    parent = int(raw)
    if not _set_parent_death_signal(signal.SIGTERM):
        watcher = threading.Thread(target=_watch_parent, args=(parent,), name="pcs-parent-watch",
                                   daemon=True)
        watcher.start()
    if os.getppid() != parent:  # it died before the kernel was told
        os.kill(os.getpid(), signal.SIGTERM)


def _set_parent_death_signal(signum: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent: int) -> None:
    import time

    while os.getppid() == parent:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)


def run_child(args: list[str], env: dict[str, str], **kwargs: Any) -> Any:
    """Run a pcs child process to its end, passing on SIGTERM, SIGHUP and SIGINT.

    A signal this process gets while the child runs is sent to the child (its
    runs end KILLED); when the child has ended, this process gets the signal
    again as if it had arrived then (pcs's handler ends its own runs, Ctrl-C is
    a KeyboardInterrupt). A second one of the same signal kills the child. The
    child dies with this process (:func:`child_env`).

    Returns:
        The ``subprocess.CompletedProcess`` (text output captured). When a signal
        ends it, the child's output is written to this process's stderr and stdout
        first, so what the child said when it stopped (its run id) is not lost.
    """
    import subprocess

    # its own session: a Ctrl-C at the terminal reaches it once, through this process
    child = subprocess.Popen(args, env=child_env(env), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True, **kwargs)
    received: list[int] = []
    previous: dict[int, Any] = {}

    def forward(signum: int, frame: FrameType | None) -> None:
        with contextlib.suppress(OSError):
            if signum in received:
                child.kill()
            else:
                child.send_signal(signum)
        received.append(signum)

    if threading.current_thread() is threading.main_thread():
        for signum in _FORWARDED:
            with contextlib.suppress(ValueError, OSError):
                current = signal.getsignal(signum)
                if current is signal.SIG_IGN or current is None:
                    continue
                signal.signal(signum, forward)
                previous[signum] = current
    try:
        stdout, stderr = child.communicate()
    except BaseException:
        child.kill()
        child.wait()
        raise
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if received:
        # what the stopped child said (the run it ended and how to see it) is all the user
        # gets: this process dies by the signal now, before any caller reads the output
        for stream, text in ((sys.stderr, stderr), (sys.stdout, stdout)):
            with contextlib.suppress(OSError, ValueError):
                stream.write(text)
                stream.flush()
        if received[0] == getattr(signal, "SIGINT", None):
            raise KeyboardInterrupt
        signal.raise_signal(received[0])
    return subprocess.CompletedProcess(args, child.returncode, stdout, stderr)
