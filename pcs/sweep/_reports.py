"""A running trial's metric values reaching its sweep over the network (pruning on Ray).

A search prunes from the sweep's process, where its Optuna study lives. A
worker process reports over its own socket (:mod:`pcs.sweep._worker`); a Ray
task may run on another machine, so the sweep listens on a TCP port that Ray's
workers can reach (:class:`ReportServer`, on the address Ray knows the
driver's node by) and each trial connects to it (:class:`ReportClient`).

Both ends prove they hold a random key before anything else is read
(``multiprocessing.connection``'s challenge, the same that guards its
``Listener``), and exchange the same messages as a worker's socket: a trial
sends ``("report", (trial, step, value))`` and the sweep answers whether to
stop it.

A trial that cannot reach its sweep (gone, or not answering within
:data:`REPORT_TIMEOUT_S`) says so once in its log and stops reporting: it runs
to its end as if nothing pruned it, rather than wait forever.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection, answer_challenge, deliver_challenge

__all__ = ["ReportServer", "ReportClient", "REPORT_TIMEOUT_S"]

log = logging.getLogger(__name__)

REPORT_TIMEOUT_S = 60.0  # how long a trial waits for its sweep before it stops reporting

Address = tuple[str, int, bytes]  # host, port, key


class ReportServer:
    """The sweep's end: answers each report with ``answer(trial, step, value)`` under ``lock``.

    Args:
        host: the address to listen on (one that the trials' machines reach).
        answer: told each report; returns whether to stop the trial.
        lock: held while ``answer`` runs (the caller holds it while it changes the search).
    """

    def __init__(self, host: str, answer: Callable[[int, int, float], bool],
                 lock: threading.Lock | threading.RLock) -> None:
        self.answer = answer
        self.lock = lock
        self.key = secrets.token_bytes(32)
        self.server = socket.create_server((host, 0))
        self.server.settimeout(0.5)  # accept() wakes up to see that the sweep has closed it
        self.address: Address = (host, self.server.getsockname()[1], self.key)
        self.closed = threading.Event()
        self.peers: set[socket.socket] = set()
        self.peers_lock = threading.Lock()
        self.thread = threading.Thread(target=self._accept, name="pcs-sweep-reports",
                                       daemon=True)
        self.thread.start()

    def close(self) -> None:
        """Stop listening and hang up on every trial (they stop reporting)."""
        self.closed.set()
        with contextlib.suppress(OSError):
            self.server.shutdown(socket.SHUT_RDWR)  # wakes accept() now (Linux)
        with contextlib.suppress(OSError):
            self.server.close()
        if self.thread is not threading.current_thread():
            self.thread.join(timeout=5.0)  # the port is free when the sweep goes on
        with self.peers_lock:
            peers, self.peers = list(self.peers), set()
        for peer in peers:
            with contextlib.suppress(OSError):
                peer.shutdown(socket.SHUT_RDWR)  # wakes the thread reading it
            with contextlib.suppress(OSError):
                peer.close()

    def __enter__(self) -> ReportServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                peer, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            peer.setblocking(True)
            with self.peers_lock:
                if self.closed.is_set():
                    peer.close()
                    return
                self.peers.add(peer)
            threading.Thread(target=self._serve, args=(peer,), name="pcs-sweep-report",
                             daemon=True).start()

    def _serve(self, peer: socket.socket) -> None:
        conn = Connection(os.dup(peer.fileno()))
        try:
            # the challenge first: nothing from a peer without the key is ever unpickled (a
            # peer that stalls here holds only this thread, until the sweep closes)
            deliver_challenge(conn, self.key)
            answer_challenge(conn, self.key)
            while True:
                kind, (index, step, value) = conn.recv()
                if kind != "report":
                    return
                with self.lock:
                    stop = bool(self.answer(int(index), int(step), float(value)))
                conn.send(stop)
        except (EOFError, OSError, ValueError, TypeError) as exc:
            log.debug("pcs: a trial's report connection ended: %s", exc)
        except Exception as exc:  # noqa: BLE001 - an authentication failure, or a bad message
            log.warning("pcs: refused a connection to the sweep's report port: %s", exc)
        finally:
            with contextlib.suppress(OSError):
                conn.close()
            with self.peers_lock:
                self.peers.discard(peer)
            with contextlib.suppress(OSError):
                peer.close()


class ReportClient:
    """A trial's end: one connection to its sweep, opened at the first report, reused after.

    Called as ``client(trial, step, value)``; returns whether the sweep says to
    stop the trial (False once the sweep cannot be reached).
    """

    def __init__(self, address: Address, timeout: float = REPORT_TIMEOUT_S) -> None:
        self.host, self.port, self.key = address
        self.timeout = timeout
        self.conn: Connection | None = None
        self.broken = False

    def __call__(self, index: int, step: int, value: float) -> bool:
        if self.broken:
            return False
        try:
            conn = self.conn or self._connect()
            conn.send(("report", (index, step, value)))
            if not conn.poll(self.timeout):
                raise TimeoutError(f"no answer in {self.timeout:.0f}s")
            return bool(conn.recv())
        except Exception as exc:  # noqa: BLE001 - a lost sweep must not fail the trial
            self.broken = True
            self.close()
            log.warning(
                "pcs: trial %s cannot reach its sweep at %s:%s to report its metric (%s); it "
                "runs on unpruned. The sweep may have ended, or its port is not reachable "
                "from this Ray node.", index, self.host, self.port, exc)
            return False

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(OSError):
                self.conn.close()
            self.conn = None

    def _connect(self) -> Connection:
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        sock.setblocking(True)  # Connection reads the descriptor itself; poll() times it out
        conn = Connection(sock.detach())
        try:
            # the sweep speaks first; a sweep that accepts but never answers is timed out here
            if not conn.poll(self.timeout):
                raise TimeoutError(f"the sweep did not answer in {self.timeout:.0f}s")
            answer_challenge(conn, self.key)
            deliver_challenge(conn, self.key)
        except BaseException:
            conn.close()
            raise
        self.conn = conn
        return conn
