"""The buffered metric writer: a run's metrics reach the store in order, through outages.

``Run.log_metric`` hands its points to the run's :class:`MetricWriter` and
returns; a background thread writes them in batches (one ``log_batch`` of up
to 1000 points) at least every ``PCS_METRIC_FLUSH_S`` seconds (default 1),
and everything still buffered is written when the run ends, when pcs reads
the store in this process, and at interpreter exit. A SIGKILLed process loses
at most the points of the last flush window.

When the store does not answer (a tracking server restarting, the database
behind it restarting), the writer keeps the points in order and tries again
with growing waits for up to ``PCS_STORE_RETRY_S`` seconds (default 120) from
the first failure. The store coming back ends the outage and every point is
written, in the order it was logged. An outage longer than that makes the
next ``log_metric`` (or the end of the run) raise :class:`StoreOutageError`,
so the run ends FAILED with the outage named; what was written stays.

Where a sweep's pruner follows a trial's metric (it reads every value as it
is written), :func:`synchronous` makes ``log_metric`` write before it returns.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from pcs.errors import ArgumentError, PcsError, StoreOutageError, TrackingStoreError

if TYPE_CHECKING:  # pragma: no cover
    from mlflow import MlflowClient
    from mlflow.entities import Metric

__all__ = [
    "FLUSH_ENV",
    "RETRY_ENV",
    "DEFAULT_FLUSH_S",
    "DEFAULT_RETRY_S",
    "MetricWriter",
    "flush_interval",
    "retry_window",
    "synchronous",
    "flush_all",
    "is_transient",
    "riding_out",
]

log = logging.getLogger(__name__)

FLUSH_ENV = "PCS_METRIC_FLUSH_S"
RETRY_ENV = "PCS_STORE_RETRY_S"
DEFAULT_FLUSH_S = 1.0
DEFAULT_RETRY_S = 120.0
BATCH = 1000  # MLflow's most metrics per log_batch
MAX_PENDING = 200_000  # points buffered before log_metric waits for the store (bounded memory)
_FIRST_WAIT_S = 0.25
_MAX_WAIT_S = 5.0

# MLflow's error codes for a store that is (for now) unable to answer; MLflow wraps a refused
# connection, a timeout and a database error of the server alike as INTERNAL_ERROR
_TRANSIENT_CODES = frozenset(
    {"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "RESOURCE_EXHAUSTED",
     "DEADLINE_EXCEEDED", "ABORTED"}
)


def _seconds(name: str, default: float, minimum: float) -> float:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not (value >= minimum) or value == float("inf"):
        raise ArgumentError(
            f"{name}={raw!r} is not a number of seconds (at least {minimum:g}). Set it to "
            f"seconds, e.g. {name}={default:g}, or unset it for the default ({default:g} s)."
        )
    return value


def flush_interval() -> float:
    """Seconds a logged metric may wait in the buffer (``PCS_METRIC_FLUSH_S``, default 1)."""
    return _seconds(FLUSH_ENV, DEFAULT_FLUSH_S, 0.0)


def retry_window() -> float:
    """Seconds pcs retries a store that does not answer (``PCS_STORE_RETRY_S``, default 120)."""
    return _seconds(RETRY_ENV, DEFAULT_RETRY_S, 0.0)


_SYNC = threading.local()


@contextlib.contextmanager
def synchronous() -> Iterator[None]:
    """In this thread, ``log_metric`` writes before it returns (a pruner reads every value)."""
    _SYNC.depth = getattr(_SYNC, "depth", 0) + 1
    try:
        yield
    finally:
        _SYNC.depth -= 1


def _is_synchronous() -> bool:
    return getattr(_SYNC, "depth", 0) > 0


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` says the store is away for now (worth retrying), not that it refused."""
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    code = getattr(exc, "error_code", None)
    if code is not None:
        return code in _TRANSIENT_CODES
    text = str(exc).lower()
    return any(word in text for word in ("database is locked", "connection", "timed out"))


def _outage_message(what: str, uri: str, waited: float, exc: BaseException) -> str:
    from pcs._redact import redact_text, redact_url

    cause = redact_text(" ".join(str(exc).split()))[:300]
    return (
        f"The tracking store {redact_url(uri)} did not answer for {waited:.0f} s while pcs "
        f"was writing {what} (a store outage; {RETRY_ENV} allows {retry_window():g} s): "
        f"{cause}. What was written before stays; start the store again, or raise "
        f"{RETRY_ENV} to ride out longer outages."
    )


def riding_out(fn: Any, what: str, uri: str, window: float | None = None) -> Any:
    """``fn()``, called again with growing waits while the store is away (up to the window).

    Raises:
        StoreOutageError: the store stayed away for the whole window.
    """
    window = retry_window() if window is None else window
    started: float | None = None
    wait = _FIRST_WAIT_S
    while True:
        try:
            return fn()
        except Exception as exc:
            if not is_transient(exc):
                raise
            now = time.monotonic()
            if started is None:
                started = now
                log.warning("pcs: the tracking store did not answer while writing %s; "
                            "retrying for up to %g s", what, window)
            if now - started >= window:
                raise StoreOutageError(_outage_message(what, uri, now - started, exc)) from exc
            time.sleep(min(wait, max(0.0, window - (now - started)) + 0.01))
            wait = min(wait * 2, _MAX_WAIT_S)


class MetricWriter:
    """The buffer between one run's ``log_metric`` calls and the store.

    Points are written in the order they were logged, in batches, by one
    background thread (or by the caller, in :func:`synchronous` mode and on
    :meth:`flush`). A write the store refuses for good (not an outage) is
    raised to the next ``add`` or ``flush``.

    Args:
        client: the run's MlflowClient.
        run_id: the run the points belong to.
    """

    def __init__(self, client: MlflowClient, run_id: str) -> None:
        self.client = client
        self.run_id = run_id
        self._pending: deque[Metric] = deque()
        self._lock = threading.Condition()  # guards _pending, _error, _closed; wakes the thread
        self._io = threading.Lock()  # one write at a time: points stay in order
        self._error: PcsError | None = None
        self._closed = False
        self._thread: threading.Thread | None = None
        self._oldest: float | None = None  # when the oldest pending point was logged
        self.written = 0
        _WRITERS.add(self)

    # -- what Run calls --------------------------------------------------------------------

    def add(self, metrics: Sequence[Metric]) -> None:
        """Buffer points (write them now in synchronous mode).

        Raises:
            StoreOutageError: an earlier write gave up on a store outage.
            TrackingStoreError: the store refused an earlier write.
        """
        with self._lock:
            if self._error is not None:
                raise self._error
            self._pending.extend(metrics)
            if self._oldest is None:
                self._oldest = time.monotonic()
            full = len(self._pending) >= MAX_PENDING
            self._lock.notify()
        if _is_synchronous():
            self.flush()
            return
        self._start()
        if full:
            self._wait_for_room()

    def _wait_for_room(self) -> None:
        """Wait until the buffer is below ``MAX_PENDING`` again (bounded memory).

        The writer thread frees a batch at a time, so logging faster than the
        store takes points is paced by the store, a batch's write at a time,
        never stalled until the whole buffer is written.
        """
        write_here = False
        with self._lock:
            while len(self._pending) >= MAX_PENDING and self._error is None:
                if self._thread is None or not self._thread.is_alive():
                    write_here = True  # no thread (the run is ending): write here
                    break
                self._lock.wait(1.0)
        if write_here:
            self._drain(below=MAX_PENDING)
        with self._lock:
            if self._error is not None:
                raise self._error

    def flush(self, wait: bool = True) -> None:
        """Write every buffered point now, in this thread (riding out an outage).

        Args:
            wait: wait for a write in progress in another thread (else leave the
                points to it: a signal handler must not wait on the thread it interrupted).

        Raises:
            StoreOutageError: the store stayed away longer than ``PCS_STORE_RETRY_S``.
            TrackingStoreError: the store refused the points.
        """
        with self._lock:
            if self._error is not None:
                raise self._error
        self._drain(wait)
        with self._lock:
            if self._error is not None:
                raise self._error

    def close(self) -> None:
        """Write what is buffered and stop the thread; a failed writer tries once more.

        The points an outage held back are tried again (for another window),
        so a store that came back in the meantime still gets them.

        Raises:
            StoreOutageError: the store stayed away (the points are lost; the count is in the message).
            TrackingStoreError: the store refused the points.
        """
        with self._lock:
            self._closed = True
            error, self._error = self._error, None
            self._lock.notify_all()
        try:
            self._drain()
        finally:
            _WRITERS.discard(self)
        with self._lock:
            failed = self._error or (error if not isinstance(error, StoreOutageError) else None)
            lost = len(self._pending)
            self._pending.clear()
        if failed is not None:
            if lost:
                log.warning("pcs: %d metric point(s) of run %s were not written: %s",
                            lost, self.run_id, failed)
            raise failed

    @property
    def pending(self) -> int:
        return len(self._pending)

    # -- writing -----------------------------------------------------------------------------

    def _start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is not None and self._thread.is_alive() or self._closed:
                return
            self._thread = threading.Thread(
                target=self._loop, name=f"pcs-metrics-{self.run_id[:8]}", daemon=True
            )
            self._thread.start()

    def _loop(self) -> None:
        period = flush_interval()
        while True:
            with self._lock:
                while not self._pending and not self._closed:
                    self._lock.wait()
                if self._closed:
                    return
                due = (self._oldest or time.monotonic()) + period
                while not self._closed and len(self._pending) < BATCH and (
                    time.monotonic() < due
                ):
                    self._lock.wait(max(0.0, due - time.monotonic()))
                if self._closed:
                    return
            self._drain()
            with self._lock:
                if self._error is not None:
                    return

    def _drain(self, wait: bool = True, below: int | None = None) -> None:
        """Write buffered points in batches: all of them, or until fewer than ``below`` are left."""
        if not self._io.acquire(blocking=wait):
            return
        try:
            while True:
                with self._lock:
                    if self._error is not None or not self._pending:
                        self._oldest = None if not self._pending else self._oldest
                        return
                    if below is not None and len(self._pending) < below:
                        return
                    batch = [self._pending[i] for i in range(min(BATCH, len(self._pending)))]
                try:
                    riding_out(lambda b=batch: self._write(b),  # type: ignore[misc]
                               f"{len(batch)} metric point(s) of run {self.run_id}", self._uri())
                except StoreOutageError as exc:
                    with self._lock:
                        self._error = exc
                    return
                except Exception as exc:  # noqa: BLE001 - the store refused: the run must hear it
                    from pcs._redact import redact_text

                    with self._lock:
                        self._error = TrackingStoreError(
                            f"The tracking store refused metric points of run {self.run_id}: "
                            f"{redact_text(' '.join(str(exc).split()))[:500]}"
                        )
                    return
                with self._lock:
                    for _ in batch:
                        self._pending.popleft()
                    self.written += len(batch)
                    self._oldest = time.monotonic() if self._pending else None
                    self._lock.notify_all()  # a caller may wait for room
        finally:
            self._io.release()

    def _uri(self) -> str:
        try:
            return str(self.client._tracking_client.tracking_uri)
        except AttributeError:
            return "(unknown)"

    def _write(self, batch: list[Metric]) -> None:
        store = getattr(getattr(self.client, "_tracking_client", None), "store", None)
        # on a tracking server, one attempt per call (MLflow would retry for minutes on its
        # own): the outage window is pcs's to keep. A store a sweep watches is called as is,
        # so its pruner sees every point.
        if store is not None and not getattr(store, "_pcs_watched", False):
            try:
                if _rest_log_batch(store, self.run_id, batch):
                    return
            except ImportError:  # pragma: no cover - MLflow moved its REST helpers
                pass
        self.client.log_batch(self.run_id, metrics=batch)


def _rest_log_batch(store: Any, run_id: str, batch: list[Metric]) -> bool:
    """``log_batch`` on a REST store with one HTTP attempt; False for other stores."""
    from mlflow.store.tracking.rest_store import RestStore

    if not isinstance(store, RestStore):
        return False
    import json

    from mlflow.protos.service_pb2 import LogBatch
    from mlflow.utils.proto_json_utils import message_to_json
    from mlflow.utils.rest_utils import http_request, verify_rest_response

    endpoint, method = store._METHOD_TO_INFO[LogBatch]
    body = json.loads(message_to_json(LogBatch(metrics=[m.to_proto() for m in batch], run_id=run_id)))
    response = http_request(
        store.get_host_creds(), endpoint, method, max_retries=0, backoff_factor=0,
        timeout=max(5, int(min(60.0, retry_window()))), json=body,
    )
    verify_rest_response(response, endpoint)
    return True


# every writer with points to write, so reads and the end of the process flush them
_WRITERS: weakref.WeakSet[MetricWriter] = weakref.WeakSet()


def flush_all(wait: bool = True) -> None:
    """Write what every writer of this process buffered (pcs reads see its own writes).

    A writer that fails keeps its error for its run; reads are not failed by it.

    Args:
        wait: wait for writes in progress in other threads (see :meth:`MetricWriter.flush`).
    """
    for writer in list(_WRITERS):
        if writer.pending:
            try:
                writer.flush(wait)
            except PcsError as exc:
                log.debug("pcs: buffered metrics of run %s not written yet: %s", writer.run_id, exc)


def _at_exit() -> None:
    for writer in list(_WRITERS):
        try:
            writer.close()
        except PcsError as exc:
            log.warning("pcs: %s", exc)


atexit.register(_at_exit)
