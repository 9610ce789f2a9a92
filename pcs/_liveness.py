"""Telling a live run from a dead one: host, pid and a heartbeat.

Every run pcs creates records where it runs (tags ``pcs.host``, ``pcs.pid``)
and a heartbeat (``pcs.heartbeat``, epoch milliseconds) with the interval it
promises (``pcs.heartbeat_s``). While a run is RUNNING in this process, one
background thread refreshes its heartbeat once per interval (not per metric).

A RUNNING run is *stale* when its process is gone (same host, pid not alive)
or when its heartbeat is older than three of its intervals.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pcs import _keys
from pcs.errors import ArgumentError

__all__ = [
    "HEARTBEAT_ENV",
    "DEFAULT_HEARTBEAT_S",
    "STALE_INTERVALS",
    "this_host",
    "pid_alive",
    "now_ms",
    "heartbeat_interval",
    "liveness_tags",
    "staleness",
    "LiveRun",
    "register",
    "unregister",
    "live_runs",
]

log = logging.getLogger(__name__)

HEARTBEAT_ENV = "PCS_HEARTBEAT_S"
DEFAULT_HEARTBEAT_S = 60.0
STALE_INTERVALS = 3

_HOST: str | None = None


def this_host() -> str:
    """The name of this machine, as recorded in ``pcs.host``."""
    global _HOST
    if _HOST is None:
        _HOST = socket.gethostname() or "unknown"
    return _HOST


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, it belongs to someone else
    except (OSError, OverflowError, ValueError):
        return False
    return True


def now_ms() -> int:
    return int(time.time() * 1000)


def heartbeat_interval() -> float:
    """Seconds between heartbeats: ``$PCS_HEARTBEAT_S``, default 60."""
    raw = os.environ.get(HEARTBEAT_ENV)
    if not raw:
        return DEFAULT_HEARTBEAT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0 or value != value or value == float("inf"):
        raise ArgumentError(
            f"{HEARTBEAT_ENV}={raw!r} is not a positive number of seconds. Set it to e.g. 60, "
            "or unset it."
        )
    return value


def liveness_tags() -> dict[str, str]:
    """The tags a new run carries: host, pid, heartbeat now, and the interval promised."""
    return {
        _keys.HOST: this_host(),
        _keys.PID: str(os.getpid()),
        _keys.HEARTBEAT: str(now_ms()),
        _keys.HEARTBEAT_INTERVAL: _format_seconds(heartbeat_interval()),
    }


def _format_seconds(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)


def staleness(
    status: str,
    tags: Mapping[str, str],
    start_time_ms: int | None = None,
    older_than_ms: int | None = None,
    now: int | None = None,
) -> str | None:
    """Why a RUNNING run looks dead, or None when it may be alive.

    Args:
        status: the run's status; only RUNNING runs can be stale.
        tags: the run's tags (host, pid, heartbeat, interval).
        start_time_ms: the run's start, used when it records no heartbeat.
        older_than_ms: also count runs of other hosts (and runs without a
            heartbeat) whose last sign of life is older than this; a run whose
            heartbeat is younger than its own interval is never counted.
        now: the current time in epoch milliseconds (default: now).
    """
    if status != "RUNNING":
        return None
    now = now_ms() if now is None else now
    host = tags.get(_keys.HOST)
    pid = _int(tags.get(_keys.PID))
    beat = _int(tags.get(_keys.HEARTBEAT))
    interval = _float(tags.get(_keys.HEARTBEAT_INTERVAL)) or DEFAULT_HEARTBEAT_S
    if host == this_host() and pid is not None:
        if pid == os.getpid():
            return None  # this very process
        if not pid_alive(pid):
            return f"its process {pid} on {host} is gone"
    if beat is not None:
        age = now - beat
        if age > STALE_INTERVALS * interval * 1000:
            return f"no heartbeat for {_age(age)} (interval {_format_seconds(interval)}s)"
        if older_than_ms is not None and host != this_host() and age > max(
            older_than_ms, interval * 1000
        ):
            return f"no heartbeat for {_age(age)}, older than the limit"
        return None
    # recorded before pcs tracked liveness, or not by pcs at all
    if older_than_ms is not None and start_time_ms is not None and now - start_time_ms > older_than_ms:
        return f"RUNNING for {_age(now - start_time_ms)} with no heartbeat recorded"
    return None


def _age(ms: int) -> str:
    seconds = ms / 1000
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


# -- the runs this process keeps alive ---------------------------------------------------


@dataclass
class LiveRun:
    """A run RUNNING in this process, and how to write to its store."""

    run_id: str
    client: Any  # MlflowClient
    interval: float


_LIVE: dict[str, LiveRun] = {}
_LOCK = threading.Lock()
_THREAD: threading.Thread | None = None


def _forget_after_fork() -> None:
    # a forked child does not own its parent's runs, nor its heartbeat thread
    global _LOCK, _THREAD
    _LIVE.clear()
    _LOCK = threading.Lock()
    _THREAD = None


os.register_at_fork(after_in_child=_forget_after_fork)


def register(run_id: str, client: Any) -> None:
    """Keep ``run_id``'s heartbeat fresh until :func:`unregister`."""
    interval = heartbeat_interval()
    with _LOCK:
        _LIVE[run_id] = LiveRun(run_id, client, interval)
        _ensure_thread()


def unregister(run_id: str) -> None:
    with _LOCK:
        _LIVE.pop(run_id, None)


def live_runs() -> list[LiveRun]:
    """The runs this process is running now."""
    with _LOCK:
        return list(_LIVE.values())


def _ensure_thread() -> None:
    global _THREAD
    if _THREAD is not None and _THREAD.is_alive():
        return
    _THREAD = threading.Thread(target=_beat_forever, name="pcs-heartbeat", daemon=True)
    _THREAD.start()


def _beat_forever() -> None:
    last: dict[str, float] = {}
    while True:
        with _LOCK:
            runs = list(_LIVE.values())
        if not runs:
            last.clear()
            time.sleep(1.0)
            continue
        now = time.monotonic()
        for live in runs:
            due = last.get(live.run_id)
            if due is None:
                last[live.run_id] = now  # the creation tags hold the first beat
                continue
            if now - due >= live.interval:
                last[live.run_id] = now
                _beat(live)
        for gone in set(last) - {r.run_id for r in runs}:
            last.pop(gone, None)
        wait = min(r.interval for r in runs)
        time.sleep(min(max(wait / 4, 0.05), 5.0))


def _beat(live: LiveRun) -> None:
    try:
        live.client.set_tag(live.run_id, _keys.HEARTBEAT, str(now_ms()))
    except Exception as exc:  # noqa: BLE001 - a missed beat is not fatal; the next one retries
        log.debug("pcs: heartbeat of run %s failed: %s", live.run_id, exc)


def end_live_runs(status: str, reason: str, timeout: float = 10.0,
                  terminate: Callable[[LiveRun, str, str], None] | None = None) -> list[str]:
    """End every run this process still runs (from a helper thread, with a time limit).

    Used when the process is about to die by a signal: the writes happen in a
    fresh thread, so a store call interrupted in the main thread cannot block
    them forever.
    """
    runs = live_runs()
    if not runs:
        return []
    ended: list[str] = []

    def work() -> None:
        from pcs import _writer

        _writer.flush_all(wait=False)  # the metrics the runs buffered go in before they end
        for live in runs:
            try:
                if terminate is not None:
                    terminate(live, status, reason)
                else:
                    from mlflow.entities import RunTag

                    live.client.log_batch(live.run_id, tags=[RunTag(_keys.ENDED_BY, reason)])
                    live.client.set_terminated(live.run_id, status=status)
                ended.append(live.run_id)
                unregister(live.run_id)
            except Exception as exc:  # noqa: BLE001 - best effort while dying
                log.debug("pcs: could not end run %s: %s", live.run_id, exc)

    thread = threading.Thread(target=work, name="pcs-end-runs", daemon=True)
    thread.start()
    thread.join(timeout)
    return ended
