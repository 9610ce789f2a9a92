"""Telling a live run from a dead one: host, pid and a heartbeat.

Every run pcs creates records where it runs (tags ``pcs.host``, ``pcs.pid``)
and a heartbeat (``pcs.heartbeat``, epoch milliseconds) with the interval it
promises (``pcs.heartbeat_s``). While a run is RUNNING in this process, one
background thread refreshes its heartbeat once per interval (not per metric).

A RUNNING run is *stale* when its process is gone (same host, pid not alive)
or when its heartbeat is older than three of its intervals.

On the same host the process decides, not the heartbeat: a run also records
its process's start (``pcs.process_start``: the boot id and field 22 of
``/proc/PID/stat``), so a process that exists *and* started at that moment is
the run's own and the run is live whatever its heartbeat (a process stopped
with SIGSTOP, a machine under load). A pid that exists but started at another
moment, or on another boot, is another process: the run is stale, also when
that pid is the current process's own (a restarted container reuses pids).

A run that cleanup ended while its process was in fact alive (another host
judged it by its heartbeat) notices it at its next heartbeat or at its end
(the end looks only when the last beat is half an interval old: a younger
beat cannot have looked stale):
it records what cleanup had said in ``pcs.revived``, drops ``pcs.ended_by``,
and is RUNNING again (then ends with its real status).
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
    "process_start",
    "revive_if_ended_by_cleanup",
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


_BOOT_ID: str | None = None


def process_start(pid: int) -> str | None:
    """``"<boot id>/<start ticks>"`` of process ``pid`` on this machine, or None (gone, not Linux)."""
    global _BOOT_ID
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
        if _BOOT_ID is None:
            with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
                _BOOT_ID = f.read().strip()
    except (OSError, ValueError):
        return None
    # the command name (field 2) may hold spaces and ')': fields 3.. follow the last ')'
    fields = stat[stat.rfind(")") + 2:].split()
    if len(fields) < 20 or not fields[19].isdigit():
        return None
    return f"{_BOOT_ID}/{fields[19]}"


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
    tags = {
        _keys.HOST: this_host(),
        _keys.PID: str(os.getpid()),
        _keys.HEARTBEAT: str(now_ms()),
        _keys.HEARTBEAT_INTERVAL: _format_seconds(heartbeat_interval()),
    }
    start = _own_start()
    if start is not None:
        tags[_keys.PROCESS_START] = start
    return tags


_OWN_START: tuple[int, str | None] | None = None


def _own_start() -> str | None:
    """:func:`process_start` of this process, read once per process (a forked child reads its own)."""
    global _OWN_START
    pid = os.getpid()
    if _OWN_START is None or _OWN_START[0] != pid:
        _OWN_START = (pid, process_start(pid))
    return _OWN_START[1]


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
        recorded_start = tags.get(_keys.PROCESS_START)
        if recorded_start:
            current_start = process_start(pid)
            if current_start == recorded_start:
                return None  # its own process exists: live, whatever its heartbeat
            if current_start is not None or pid_alive(pid):
                return (f"its process {pid} on {host} is gone (pid {pid} is now another "
                        "process, started at another time)")
            return f"its process {pid} on {host} is gone"
        if pid == os.getpid():
            return None  # this very process (recorded before pcs kept process starts)
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
    # the last heartbeat this process wrote and then checked cleanup's verdict after (epoch ms,
    # the clock cleanup judges by); 0 when unknown (a run this process took over)
    beat_ms: int = 0


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


def register(run_id: str, client: Any, beat_ms: int | None = None) -> None:
    """Keep ``run_id``'s heartbeat fresh until :func:`unregister`.

    Args:
        beat_ms: the heartbeat just written with the run (its creation tags);
            None keeps what this process knew of the run's last beat.
    """
    interval = heartbeat_interval()
    with _LOCK:
        live = _LIVE.get(run_id)
        if live is None:
            live = _LIVE[run_id] = LiveRun(run_id, client, interval)
        else:
            live.client, live.interval = client, interval
        if beat_ms is not None:
            live.beat_ms = beat_ms
        _ensure_thread()


def unregister(run_id: str) -> None:
    with _LOCK:
        _LIVE.pop(run_id, None)


def live_runs() -> list[LiveRun]:
    """The runs this process is running now."""
    with _LOCK:
        return list(_LIVE.values())


def live_run_ids() -> set[str]:
    with _LOCK:
        return set(_LIVE)


def cleanup_may_have_ended(run_id: str) -> bool:
    """Whether another process's cleanup could have ended this live run by now.

    Cleanup judges a run of this process dead by its heartbeat only once the
    beat is older than the run's interval (three intervals by default). A run
    whose last beat (checked against cleanup's verdict after it was written)
    is younger than half its interval by the wall clock cannot look that old,
    unless a clock is more than half an interval off, so its end skips reading
    the run back. A machine that slept counts its sleep: the wall clock moved on.
    """
    with _LOCK:
        live = _LIVE.get(run_id)
    return live is not None and now_ms() - live.beat_ms >= live.interval * 500


def revive_quietly(client: Any, run_id: str) -> None:
    """:func:`revive_if_ended_by_cleanup`, never raising (a run's end must go on)."""
    try:
        revive_if_ended_by_cleanup(client, run_id)
    except Exception as exc:  # noqa: BLE001 - the end matters more than this note
        log.debug("pcs: could not check whether run %s was ended by cleanup: %s", run_id, exc)


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
        beat = now_ms()
        live.client.set_tag(live.run_id, _keys.HEARTBEAT, str(beat))
        revive_if_ended_by_cleanup(live.client, live.run_id)
        live.beat_ms = beat
    except Exception as exc:  # noqa: BLE001 - a missed beat is not fatal; the next one retries
        log.debug("pcs: heartbeat of run %s failed: %s", live.run_id, exc)


CLEANUP_PREFIX = "pcs cleanup"  # how pcs.ended_by starts when cleanup ended the run


def revive_if_ended_by_cleanup(client: Any, run_id: str) -> bool:
    """Undo cleanup's verdict on a run this process is still running; whether it did.

    The run is set RUNNING again, ``pcs.ended_by`` goes, and ``pcs.revived``
    keeps what cleanup had said (with when it ended the run), so the record
    never shows a run that ended by cleanup and then by itself.
    """
    from mlflow.entities import RunStatus, RunTag

    run = client.get_run(run_id)
    ended_by = run.data.tags.get(_keys.ENDED_BY, "")
    if run.info.status == "RUNNING" or not ended_by.startswith(CLEANUP_PREFIX):
        return False
    note = f"{ended_by} (ended {run.info.status} at {run.info.end_time}); its process went on"
    client.log_batch(run_id, tags=[RunTag(_keys.REVIVED, note[:5000])])
    client.delete_tag(run_id, _keys.ENDED_BY)
    client._tracking_client.store.update_run_info(
        run_id, run_status=RunStatus.RUNNING, end_time=None, run_name=None
    )
    log.warning("pcs: run %s was ended by cleanup while its process was alive; it runs on "
                "(recorded in %s).", run_id, _keys.REVIVED)
    return True


def end_live_runs(status: str, reason: str, timeout: float = 10.0,
                  terminate: Callable[[LiveRun, str, str], None] | None = None,
                  run_ids: set[str] | None = None) -> list[str]:
    """End every run this process still runs, or those of ``run_ids`` (from a helper thread,
    with a time limit).

    Used when the process is about to die by a signal: the writes happen in a
    fresh thread, so a store call interrupted in the main thread cannot block
    them forever.
    """
    runs = [r for r in live_runs() if run_ids is None or r.run_id in run_ids]
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
