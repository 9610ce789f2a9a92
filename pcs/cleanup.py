"""Ending runs whose process died: the ones a SIGKILL, a crash or a lost machine left RUNNING.

A RUNNING run is stale when its process is gone (same host: no process with
its pid and process start) or its heartbeat is older than three of its
intervals (other hosts; see :mod:`pcs._liveness`). :func:`cleanup_stale_runs` ends stale runs as KILLED,
with the time of their last heartbeat as end time and the reason in
``pcs.ended_by``; live runs are never touched.

Example::

    import pcs
    pcs.cleanup_stale_runs(dry_run=True)   # the ids it would end
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

from pcs import _config, _keys, _liveness
from pcs.cache import parse_duration
from pcs.errors import ArgumentError
from pcs.run import _terminate, search_mlflow_runs

__all__ = ["StaleRun", "find_stale_runs", "cleanup_stale_runs"]


@dataclass(frozen=True)
class StaleRun:
    """A RUNNING run that looks dead, and why."""

    run_id: str
    name: str | None
    experiment_id: str
    host: str | None
    pid: str | None
    last_sign_of_life: int | None  # epoch ms: last heartbeat, else start time
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def find_stale_runs(
    older_than: timedelta | str | None = None, experiment_ids: list[str] | None = None
) -> list[StaleRun]:
    """Every RUNNING run in the store that looks dead (one paged search).

    Args:
        older_than: also count runs of other hosts, and runs recorded without a
            heartbeat, whose last sign of life is older than this (a ``timedelta``,
            or a duration such as ``"2h"``, ``"30m"``, ``"1d"``).
        experiment_ids: where to look (default: every active experiment).
    """
    if isinstance(older_than, str):
        older_than = parse_duration(older_than)
    elif older_than is not None and not isinstance(older_than, timedelta):
        raise ArgumentError(
            f"older_than must be a timedelta or a duration such as '2h'; got {older_than!r}."
        )
    if older_than is not None and older_than.total_seconds() <= 0:
        raise ArgumentError(f"older_than must be a positive duration; got {older_than}.")
    client = _config.tracking_client()
    limit = int(older_than.total_seconds() * 1000) if older_than is not None else None
    now = _liveness.now_ms()
    out = []
    # a run being imported carries its original's host and pid; its importer owns it
    running = f"attributes.status = 'RUNNING' and tags.`{_keys.IMPORTING}` IS NULL"
    for run in search_mlflow_runs(client, running, experiment_ids):
        tags = run.data.tags
        reason = _liveness.staleness(run.info.status, tags, run.info.start_time, limit, now)
        if reason is None:
            continue
        beat = tags.get(_keys.HEARTBEAT)
        out.append(
            StaleRun(
                run_id=run.info.run_id,
                name=run.info.run_name,
                experiment_id=run.info.experiment_id,
                host=tags.get(_keys.HOST),
                pid=tags.get(_keys.PID),
                last_sign_of_life=int(beat) if beat and beat.isdigit() else run.info.start_time,
                reason=reason,
            )
        )
    return out


def cleanup_stale_runs(
    dry_run: bool = False,
    older_than: timedelta | str | None = None,
    experiment_ids: list[str] | None = None,
) -> list[str]:
    """End every stale RUNNING run as KILLED; return their ids.

    Args:
        dry_run: only return the ids that would be ended.
        older_than: see :func:`find_stale_runs`.
        experiment_ids: where to look (default: every active experiment).
    """
    return [s.run_id for s in end_stale_runs(dry_run, older_than, experiment_ids)]


def end_stale_runs(
    dry_run: bool = False,
    older_than: timedelta | str | None = None,
    experiment_ids: list[str] | None = None,
) -> list[StaleRun]:
    """Like :func:`cleanup_stale_runs`, returning what was found and why."""
    from mlflow.entities import RunTag

    stale = find_stale_runs(older_than, experiment_ids)
    if dry_run:
        return stale
    client = _config.tracking_client()
    for run in stale:
        client.log_batch(
            run.run_id, tags=[RunTag(_keys.ENDED_BY, f"{_liveness.CLEANUP_PREFIX}: {run.reason}")]
        )
        _terminate(client, run.run_id, "KILLED", run.last_sign_of_life)
    return stale
