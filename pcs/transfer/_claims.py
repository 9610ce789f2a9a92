"""Claims: one importer at a time writes a given run into a tracking store.

MLflow has no unique constraint pcs could put on a run, but every store
(SQLite, PostgreSQL and the others behind SQLAlchemy, a tracking server in
front of them) refuses a second experiment of the same name, deleted ones
included. That refusal is the one atomic compare-and-set pcs relies on:

- A **holder** is an import in progress: an experiment named
  ``.pcs-importer/<host>/<pid>/<token>`` whose tags say where it runs
  (``pcs.host``, ``pcs.pid``, a random ``pcs.claim.token``) and a heartbeat
  (``pcs.heartbeat``, refreshed by a thread every ``pcs.heartbeat_s``
  seconds, ``$PCS_HEARTBEAT_S``). One heartbeat write per interval, whatever
  the number of runs claimed.
- A **claim** on the run with original id ``O`` is the experiment
  ``.pcs-import/O#<generation>``; creating it is acquiring it. Its tags name
  the holder (experiment id, host, pid, token). Releasing it soft-deletes
  it: the name stays taken, the experiment is hidden from the MLflow UI.
- Claims are taken in sorted order of original id and held until the whole
  import is written or undone, so importers of overlapping bundles never wait
  for each other in a circle.

An importer that finds ``O#g`` taken reads it:

- **deleted** (released): the run was imported, or its import failed and was
  undone. The caller looks for a complete copy; none means generation
  ``g + 1`` is tried.
- **held by a dead holder**: same host and the pid is gone (or the pid is this
  process's, but the token is none of its own: an earlier process had the
  pid), the holder record is deleted, or its heartbeat is older than three of
  its intervals (:data:`pcs._liveness.STALE_INTERVALS`). The importer takes it
  over by creating ``O#(g + 1)``, which only one process can do, then deletes
  the dead holder's record and claim. The caller removes the dead importer's
  half-written run before writing its own.
- **held by a live holder**: the importer polls until that changes.

Before it marks its runs complete, a holder checks that its own record still
exists (:meth:`Holder.check_held`): a holder that stalled so long that another
importer took its claims over gives up instead of writing a second copy.

This works wherever experiment creation is atomic: every database store. The
file store (``./mlruns``, deprecated by MLflow) checks names without a lock;
there claim creation is serialised with an ``flock`` on the store's folder,
which covers importers on one machine.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pcs import _keys, _liveness
from pcs.errors import TrackingStoreError

if TYPE_CHECKING:  # pragma: no cover
    from mlflow import MlflowClient
    from mlflow.entities import Experiment

__all__ = [
    "CLAIM_PREFIX",
    "HOLDER_PREFIX",
    "TOKEN",
    "HOLDER_ID",
    "Claim",
    "Holder",
    "claim_name",
]

log = logging.getLogger(__name__)

CLAIM_PREFIX = ".pcs-import/"
HOLDER_PREFIX = ".pcs-importer/"
TOKEN = "pcs.claim.token"  # a random token per holder: tells a reused pid from its owner
HOLDER_ID = "pcs.claim.holder"  # on a claim: the experiment id of its holder's record
ORIGINAL = "pcs.claim.original"  # on a claim: the original id of the run it is for

_ALREADY_EXISTS = "RESOURCE_ALREADY_EXISTS"
_NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND")
# waiting for a live holder: first poll, growth, and the longest pause
_POLL_START = 0.05
_POLL_MAX = 1.0

_TOKENS: set[str] = set()  # tokens of the holders open in this process
_TOKENS_LOCK = threading.Lock()


def claim_name(original: str, generation: int) -> str:
    """The experiment name of generation ``generation`` of the claim on run ``original``."""
    return f"{CLAIM_PREFIX}{original}#{generation}"


@dataclass(frozen=True)
class Claim:
    """A claim this process holds: which run, which generation, which experiment."""

    original: str
    generation: int
    experiment_id: str


@dataclass(frozen=True)
class _Taken:
    """What stands in a claim's place: its experiment, and why its holder looks dead."""

    experiment: Experiment
    dead: str | None  # None while the holder looks alive


class Holder:
    """An import in progress: its record in the store, its heartbeat, the claims it holds.

    Use it as a context manager; leaving the block releases every claim and
    removes the record, whether the import succeeded or not.

    Args:
        client: the tracking store's client.
        on_wait: called once per claim this holder starts waiting for, with
            the run's original id and a description of the holder it waits for.
    """

    def __init__(
        self,
        client: MlflowClient,
        on_wait: Callable[[str, str], None] | None = None,
    ) -> None:
        self.client = client
        self.token = uuid.uuid4().hex
        self.interval = _liveness.heartbeat_interval()
        self.record_id: str | None = None
        self.claims: dict[str, Claim] = {}
        self.took_over: dict[str, str] = {}  # original id -> why the previous holder was dead
        self._on_wait = on_wait
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._file_lock = _file_store_lock(client)

    # -- lifecycle -----------------------------------------------------------------------

    def __enter__(self) -> Holder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self) -> None:
        """Create this holder's record and start its heartbeat (before the first claim)."""
        from mlflow.exceptions import MlflowException

        if self.record_id is not None:
            return
        host, pid = _liveness.this_host(), os.getpid()
        tags = {
            _keys.HOST: host,
            _keys.PID: str(pid),
            TOKEN: self.token,
            _keys.HEARTBEAT: str(_liveness.now_ms()),
            _keys.HEARTBEAT_INTERVAL: _seconds(self.interval),
        }
        with _TOKENS_LOCK:
            _TOKENS.add(self.token)
        name = f"{HOLDER_PREFIX}{host}/{pid}/{self.token}"
        try:
            self.record_id = str(self.client.create_experiment(name, tags=tags))
        except MlflowException as exc:
            raise _refused(name, exc) from None
        self._thread = threading.Thread(
            target=self._beat, name="pcs-import-heartbeat", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Release every claim, stop the heartbeat and remove the record (best effort)."""
        self._stop.set()
        for claim in list(self.claims.values()):
            _quietly(self.client.delete_experiment, claim.experiment_id)
        self.claims.clear()
        if self.record_id is not None:
            _quietly(self.client.delete_experiment, self.record_id)
        with _TOKENS_LOCK:
            _TOKENS.discard(self.token)

    def _beat(self) -> None:
        record_id = str(self.record_id)
        while not self._stop.wait(self.interval):
            try:
                self.client.set_experiment_tag(record_id, _keys.HEARTBEAT, str(_liveness.now_ms()))
            except Exception as exc:  # noqa: BLE001 - a missed beat is retried next interval
                log.debug("pcs: heartbeat of import holder %s failed: %s", self.record_id, exc)

    # -- claiming --------------------------------------------------------------------------

    def acquire(
        self,
        originals: list[str],
        completed: Callable[[list[str]], Mapping[str, Any]],
    ) -> dict[str, Any]:
        """Claim every run of ``originals`` that no other importer completes meanwhile.

        Claims are taken in sorted order. The first claim found released (by
        an importer that finished or gave up) makes this call ask ``completed``
        which runs still to claim have a complete copy now, in one call; those
        are not claimed. A copy completed after that question is found by the
        caller's own check once everything is claimed.

        Args:
            originals: the original ids of the runs to write.
            completed: given original ids, returns ``{original id: its complete copy}``
                for those the store holds complete.

        Returns:
            ``{original id: copy}`` for the runs another importer completed;
            every other run of ``originals`` is claimed by this holder.
        """
        done: dict[str, Any] = {}
        pending = sorted(set(originals) - set(self.claims))
        if not pending:
            return done
        self._open()
        generation = dict.fromkeys(pending, 0)
        asked: set[str] = set()  # runs ``completed`` was asked about
        stale: dict[str, _Taken] = {}  # the dead claim a takeover replaces
        waiting: _Taken | None = None  # the live claim being waited for
        pause = _POLL_START
        while pending:
            original = pending[0]
            taken: _Taken | None
            if waiting is not None:
                taken = self._reread(waiting)
            else:
                taken = self._try(original, generation[original])
            if taken is None:  # claimed
                pending.pop(0)
                if original in stale:
                    self._bury(original, stale.pop(original))
                continue
            if taken.experiment.lifecycle_stage == "deleted":
                waiting, pause = None, _POLL_START
                if original not in asked:
                    ask = [o for o in pending if o not in asked]
                    asked.update(ask)
                    found = completed(ask)
                    done.update(found)
                    pending = [o for o in pending if o not in found]
                    if original in found:
                        continue
                generation[original] += 1
                continue
            if taken.dead is not None:
                waiting, pause = None, _POLL_START
                stale[original] = taken
                generation[original] += 1
                continue
            if waiting is None:
                waiting = taken
                if self._on_wait is not None:
                    self._on_wait(original, _describe(taken.experiment.tags))
            time.sleep(pause)
            pause = min(pause * 1.5, _POLL_MAX, max(self.interval / 2, _POLL_START))
        return done

    def release(self, originals: list[str]) -> None:
        """Give up the claims on ``originals`` now (the rest stay held)."""
        for original in originals:
            claim = self.claims.pop(original, None)
            if claim is not None:
                _quietly(self.client.delete_experiment, claim.experiment_id)

    def _try(self, original: str, generation: int) -> _Taken | None:
        """Create claim ``generation`` on ``original``; None when created, else what holds it."""
        from mlflow.exceptions import MlflowException

        name = claim_name(original, generation)
        tags = {
            ORIGINAL: original,
            HOLDER_ID: str(self.record_id),
            _keys.HOST: _liveness.this_host(),
            _keys.PID: str(os.getpid()),
            TOKEN: self.token,
        }
        while True:
            try:
                with self._file_lock():
                    experiment_id = self.client.create_experiment(name, tags=tags)
            except MlflowException as exc:
                if exc.error_code != _ALREADY_EXISTS:
                    raise _refused(name, exc) from None
            else:
                self.claims[original] = Claim(original, generation, str(experiment_id))
                return None
            experiment = self.client.get_experiment_by_name(name)
            if experiment is not None:
                return self._judge(experiment)
            # purged (mlflow gc) between the two calls: try again

    def _reread(self, taken: _Taken) -> _Taken:
        """A claim being waited for, read again."""
        from mlflow.exceptions import MlflowException

        try:
            experiment = self.client.get_experiment(taken.experiment.experiment_id)
        except MlflowException as exc:
            if exc.error_code not in _NOT_FOUND:
                raise
            return _Taken(taken.experiment, "its claim is gone")
        return self._judge(experiment)

    def _judge(self, experiment: Experiment) -> _Taken:
        if experiment.lifecycle_stage == "deleted":
            return _Taken(experiment, None)
        return _Taken(experiment, self._dead(experiment.tags))

    def _dead(self, tags: Mapping[str, str]) -> str | None:
        """Why the holder of a claim with these tags looks dead, or None."""
        from mlflow.exceptions import MlflowException

        host, pid = tags.get(_keys.HOST), tags.get(_keys.PID)
        if host == _liveness.this_host() and pid is not None:
            if pid == str(os.getpid()):
                with _TOKENS_LOCK:
                    mine = tags.get(TOKEN) in _TOKENS
                # a holder of this very process (another thread) is alive; any other
                # token was left by an earlier process that had this pid
                return None if mine else f"it was left by an earlier process {pid} on {host}"
            if pid.isdigit() and not _liveness.pid_alive(int(pid)):
                return f"its importer, process {pid} on {host}, is gone"
        record_id = tags.get(HOLDER_ID)
        if not record_id:
            return "it names no importer"
        try:
            record = self.client.get_experiment(record_id)
        except MlflowException as exc:
            if exc.error_code in _NOT_FOUND:
                return "its importer's record is gone"
            raise
        if record.lifecycle_stage == "deleted":
            return "its importer ended or was taken over"
        merged = {**record.tags, _keys.HOST: host or "", _keys.PID: pid or ""}
        reason = _liveness.staleness("RUNNING", merged)
        return f"its importer looks dead: {reason}" if reason else None

    def _bury(self, original: str, taken: _Taken) -> None:
        """After a takeover: hide the dead claim, and end the dead holder's record."""
        self.took_over[original] = taken.dead or "its importer looks dead"
        log.info("pcs: took over the import of run %s: %s.", original, self.took_over[original])
        _quietly(self.client.delete_experiment, taken.experiment.experiment_id)
        record_id = taken.experiment.tags.get(HOLDER_ID)
        if record_id:
            # a holder that only stalled finds its record deleted and gives up (check_held)
            _quietly(self.client.delete_experiment, record_id)

    def check_held(self) -> None:
        """Raise unless this holder still owns its claims (nobody took them over).

        Raises:
            TrackingStoreError: another importer judged this one dead and took over.
        """
        from mlflow.exceptions import MlflowException

        if self.record_id is None:
            return
        try:
            record = self.client.get_experiment(self.record_id)
            alive = record.lifecycle_stage == "active"
        except MlflowException as exc:
            if exc.error_code not in _NOT_FOUND:
                raise
            alive = False
        if not alive:
            raise TrackingStoreError(
                "Another 'pcs import' took over the runs this import was writing: this "
                f"process sent no heartbeat for more than {_liveness.STALE_INTERVALS} "
                f"intervals of {_seconds(self.interval)}s (was it suspended?), so it looked "
                "dead. What it wrote was removed; import the bundle again to get the other "
                "importer's runs."
            )


def _refused(name: str, exc: Exception) -> TrackingStoreError:
    message = getattr(exc, "message", None) or str(exc)
    return TrackingStoreError(
        f"The tracking store refused to create the experiment {name!r}, which pcs uses to "
        f"make sure one import at a time writes a run ({message}). Check that you may create "
        "experiments in this store; nothing was imported."
    )


def _describe(tags: Mapping[str, str]) -> str:
    return f"pid {tags.get(_keys.PID, '?')} on {tags.get(_keys.HOST, '?')}"


def _seconds(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)


def _quietly(fn: Callable[..., Any], *args: Any) -> None:
    try:
        fn(*args)
    except Exception as exc:  # noqa: BLE001 - cleanup; a leftover is harmless and swept later
        log.debug("pcs: %s%s failed: %s", getattr(fn, "__name__", fn), args, exc)


def _file_store_lock(client: MlflowClient) -> Callable[[], contextlib.AbstractContextManager[None]]:
    """A lock around experiment creation where the store itself has none (the file store)."""
    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    root = getattr(store, "root_directory", None)
    if not isinstance(root, str) or not os.path.isdir(root):
        return contextlib.nullcontext

    @contextlib.contextmanager
    def locked() -> Iterator[None]:
        fd = os.open(os.path.join(root, ".pcs-claims.lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    return locked
