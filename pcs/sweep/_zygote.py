"""A preloaded server that forks the ``process`` executor's workers.

A fresh worker interpreter spends seconds importing MLflow, SQLAlchemy and
the store before its first trial. The zygote pays that once: it is started as
a fresh interpreter (``python -m pcs.sweep --zygote FD``, its own session), so
it inherits none of the caller's open connections, threads or GPU state,
imports what a trial needs (never a store connection, never a framework that
touches a GPU), and then forks a worker per request. A forked worker starts in
milliseconds, single-threaded, with nothing open but the socket it was handed.

One zygote serves every sweep of the process that started it; it exits when
that process closes its end of the control socket (also when it dies).

Protocol (``SOCK_SEQPACKET``, one pickled message per packet):

- caller -> zygote: ``("fork", env, cwd)`` with two descriptors attached: the
  worker's end of its socket and the stdout it prints to.
- zygote -> caller: ``("forked", pid)``; later ``("exited", pid, status)``
  (status as ``subprocess`` gives it: negative for a signal).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["Zygote", "zygote", "serve", "Forked"]

_PACKET = 1 << 16


# -- the zygote process ---------------------------------------------------------------------------


def _preload() -> None:
    """Import what a trial needs, and nothing that opens a connection or touches a GPU."""
    import mlflow  # noqa: F401
    import mlflow.store.artifact.local_artifact_repo  # noqa: F401
    import mlflow.store.tracking.rest_store  # noqa: F401
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
    import mlflow.tracking.fluent  # noqa: F401
    import sqlalchemy  # noqa: F401

    import pcs.component_run  # noqa: F401  (importing a pcs module runs pcs/__init__ too)
    import pcs.sweep._worker  # noqa: F401


def serve(fd: int) -> int:
    """The zygote's loop: fork a worker per request, report their exits, until the caller leaves."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # only the sweep decides what stops
    control = socket.socket(fileno=fd)
    with contextlib.suppress(Exception):  # a failed import fails the trials, said there
        _preload()
    if threading.active_count() > 1:  # forking with threads alive could copy a held lock
        print("pcs: the sweep's worker server has threads after loading; forking anyway",
              file=sys.stderr)
    children: set[int] = set()
    while True:
        _reap(control, children)
        try:
            ready, _, _ = select.select([control], [], [], 0.1 if children else 1.0)
        except InterruptedError:  # pragma: no cover - PEP 475 retries select
            continue
        if not ready:
            continue
        try:
            data, fds, _, _ = socket.recv_fds(control, _PACKET, 4)
        except OSError:
            break
        if not data:
            break  # the caller is gone
        request = pickle.loads(data)
        if request[0] != "fork" or len(fds) != 2:
            for extra in fds:
                os.close(extra)
            continue
        _, env, cwd = request
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the worker
            control.close()
            _become_worker(fds[0], fds[1], env, cwd)
        for descriptor in fds:
            os.close(descriptor)
        children.add(pid)
        _send(control, ("forked", pid))
    # the caller left: its workers end when their sockets close; wait for them, then go
    deadline = time.monotonic() + 30
    while children and time.monotonic() < deadline:
        _reap(None, children)
        time.sleep(0.05)
    return 0


def _reap(control: socket.socket | None, children: set[int]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            children.clear()
            return
        if pid == 0:
            return
        children.discard(pid)
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        if control is not None:
            with contextlib.suppress(OSError):
                _send(control, ("exited", pid, code))


def _send(control: socket.socket, message: Any) -> None:
    control.send(pickle.dumps(message))


def _become_worker(conn_fd: int, stdout_fd: int, env: dict[str, str], cwd: str | None) -> None:
    """In the forked child: take the sweep's environment, folder and stdout, then serve trials."""
    code = 1
    try:
        os.setsid()  # its own group: the sweep signals each worker itself
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.dup2(stdout_fd, 1)
        os.close(stdout_fd)
        os.environ.clear()
        os.environ.update(env)
        if cwd and os.path.isdir(cwd):
            os.chdir(cwd)
        from pcs.sweep._worker import main

        code = main(["pcs-sweep-worker", str(conn_fd)])
    except BaseException:  # noqa: BLE001 - a worker never returns into the zygote's loop
        import traceback

        traceback.print_exc()
    os._exit(code)


# -- the caller's side ------------------------------------------------------------------------------


class Forked:
    """A worker forked by the zygote: the parts of ``subprocess.Popen`` a pool uses.

    Its pid is known once the zygote has forked it (it may still be loading when
    the request is sent; the socket holds what is sent to the worker meanwhile).
    """

    def __init__(self, server: Zygote) -> None:
        self.server = server
        self._pid: int | None = None
        self.returncode: int | None = None

    @property
    def pid(self) -> int:
        if self._pid is None:
            self.server.wait_forked(self)
        if self._pid is None:  # pragma: no cover - the zygote died before forking it
            raise OSError("the sweep's worker server exited before starting this worker")
        return self._pid

    def poll(self) -> int | None:
        if self.returncode is None:
            if self._pid is None and not self.server.alive():
                self.returncode = -signal.SIGKILL
            elif self._pid is not None or self.server.try_forked(self):
                self.returncode = self.server.exit_status(self.pid, 0.0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.returncode = self.server.exit_status(self.pid, timeout)
        if self.returncode is None:
            raise subprocess.TimeoutExpired(f"pcs sweep worker {self.pid}", timeout or 0.0)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        """Signal the worker; one not forked yet has no trial (closing its socket stops it)."""
        if self._pid is None and not self.server.try_forked(self):
            return
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError, OSError):
                os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class Zygote:
    """The caller's handle on a zygote process (see the module docstring)."""

    def __init__(self) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])  # the very pcs this process runs
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pcs.sweep", "--zygote", str(child.fileno())],
                pass_fds=(child.fileno(),), env=env, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        self.control = parent
        self.lock = threading.Lock()
        self.exited: dict[int, int] = {}
        self.pending: list[Forked] = []  # asked for, pid not known yet (answered in order)
        self.pid_env = _env_key()

    def alive(self) -> bool:
        return self.process.poll() is None

    def fork(self, conn_fd: int, stdout_fd: int, env: dict[str, str], cwd: str | None) -> Forked:
        """Ask for a worker serving on ``conn_fd``; returns at once (the zygote may still load)."""
        worker = Forked(self)
        with self.lock:
            socket.send_fds(self.control, [pickle.dumps(("fork", env, cwd))],
                            [conn_fd, stdout_fd])
            self.pending.append(worker)
        return worker

    def wait_forked(self, worker: Forked) -> None:
        """Read the zygote's answers until ``worker`` has its pid (or the zygote is gone)."""
        with self.lock:
            while worker._pid is None and worker in self.pending:
                if self._receive(0.5) is None and not self.alive():
                    return

    def try_forked(self, worker: Forked) -> bool:
        """Whether ``worker`` has its pid, reading what the zygote already said."""
        with self.lock:
            while worker._pid is None and self._receive(0.0) is not None:
                pass
        return worker._pid is not None

    def exit_status(self, pid: int, timeout: float | None) -> int | None:
        """The exit status of worker ``pid`` once it has exited (waiting up to ``timeout``)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.lock:
            while pid not in self.exited:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                if not self.alive():
                    return -signal.SIGKILL if _gone(pid) else None
                message = self._receive(min(left, 0.5) if left is not None else 0.5)
                if message is None and deadline is not None and time.monotonic() >= deadline:
                    return None
            return self.exited.pop(pid)

    def _receive(self, timeout: float | None) -> Any:
        ready, _, _ = select.select([self.control], [], [], timeout)
        if not ready:
            return None
        try:
            data = self.control.recv(_PACKET)
        except OSError:
            return None
        if not data:
            return None
        message = pickle.loads(data)
        if message[0] == "exited":
            self.exited[int(message[1])] = int(message[2])
        elif message[0] == "forked" and self.pending:
            self.pending.pop(0)._pid = int(message[1])  # the zygote answers in order
        return message

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.control.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


_ZYGOTE: Zygote | None = None
_ZYGOTE_LOCK = threading.Lock()


def zygote() -> Zygote:
    """This process's zygote, started on first use (and again if it died)."""
    global _ZYGOTE
    with _ZYGOTE_LOCK:
        if _ZYGOTE is None or not _ZYGOTE.alive() or _ZYGOTE.pid_env != _env_key():
            if _ZYGOTE is not None and _ZYGOTE.pid_env == _env_key():
                _ZYGOTE.close()
            _ZYGOTE = Zygote()
            import atexit

            atexit.unregister(_close_zygote)
            atexit.register(_close_zygote)
        return _ZYGOTE


def _env_key() -> tuple[int, str]:
    # a forked copy of this process must not share its parent's zygote
    return os.getpid(), sys.executable


def _close_zygote() -> None:
    global _ZYGOTE
    if _ZYGOTE is not None:
        _ZYGOTE.close()
        _ZYGOTE = None
