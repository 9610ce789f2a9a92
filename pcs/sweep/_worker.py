"""Running one trial, wherever it runs: in the sweep's process, a worker process, or a Ray task.

Every executor hands a worker the same two things: the sweep's shared
context (:class:`Shared`: the registry of every trial's run command, the
source snapshot, where to record) once, and one :class:`Task` per trial. The
worker rebuilds the trial's command from the registry (fresh component
objects, never shared with the caller), runs it as a normal component run
nested in the sweep, and answers with a :class:`Result`.

A trial runs the files as they are when they still hash to what the sweep
recorded (so their git state is recorded as for any run), and the recorded
snapshot otherwise, so an edit made while a sweep runs never changes what its
trials compute. A rerun of recorded code always runs the snapshot.

SQLite under several writer processes: MLflow's SQLite store can refuse a
write with "database is locked" while another process writes. A failed write
is rolled back whole, so a worker retries it (:func:`install_lock_retries`);
a run is never lost, and never written twice.

Run as ``python -m pcs.sweep FD`` (``pcs/sweep/__main__.py``), this module is the worker process
of the ``process`` executor: it reads messages from the socket ``FD``
(``multiprocessing.connection`` framing) until the sweep sends ``None`` or
closes it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pcs import _config, _keys, _signals, _writer

__all__ = [
    "signals_not_swallowed",
    "Shared",
    "Task",
    "Result",
    "TrialContext",
    "TrialPruned",
    "run_trial",
    "install_lock_retries",
    "is_lock_error",
    "retrying",
    "main",
]

log = logging.getLogger(__name__)

LOCK_RETRY_SECONDS = 120.0  # how long a write waits out other writers before it gives up


@dataclass(frozen=True)
class Shared:
    """What every trial of one executor call shares (sent to each worker once)."""

    sweep_id: str
    experiment_id: str
    tracking_uri: str
    registry: dict[str, Any]  # a registry (as plain data) holding every trial's run command
    sources: dict[str, str]  # source text by sha256: the snapshot the trials run
    registry_id: str = ""  # sha256 of the registry's YAML, to know it again
    requirements: dict[str, str] = field(default_factory=dict)  # recorded requirements by component
    pin_sources: bool = False  # always run the snapshot (a rerun of recorded code)
    env: dict[str, str] | None = None  # MLFLOW_*/PCS_* variables, for workers that do not inherit them
    cwd: str | None = None
    report_to: tuple[str, int, bytes] | None = None  # where Ray trials report (host, port, key)


@dataclass(frozen=True)
class Task:
    """One trial to run (one attempt at it)."""

    index: int
    command_id: str
    run_name: str
    rerun_of: str | None = None
    return_value_format: str = "auto"
    registry: dict[str, Any] | None = None  # holds this trial's command when the shared one does not
    watch: str | None = None  # the metric to follow: its final value is the trial's result
    report: bool = False  # tell the sweep every value of ``watch``; it may prune the trial
    prune_at: int | None = None  # a replay: stop when ``watch`` is logged at this step
    attempt: int = 1


@dataclass(frozen=True)
class Result:
    """How one trial ended: its run (None when it failed before its run existed) and status."""

    index: int
    run_id: str | None
    status: str  # FINISHED, FAILED or KILLED
    error: str | None = None
    value: float | None = None  # the final value of the task's ``watch`` metric
    pruned: int | None = None  # the step at which the trial was pruned
    cause: str | None = None  # for FAILED: "code" (its code raised), "worker", or "start"
    attempt: int = 1


class TrialPruned(KeyboardInterrupt):
    """Raised in a trial's code (from its metric logging) when the search stops it early.

    A KeyboardInterrupt, so ``except Exception`` in user code does not swallow
    it and the run ends KILLED, not FAILED.
    """

    def __init__(self, step: int) -> None:
        super().__init__(f"pruned at step {step}")
        self.step = step


class TrialContext:
    """The shared context, parsed once per worker; builds each trial's command afresh."""

    def __init__(self, shared: Shared,
                 reporter: Callable[[int, int, float], bool] | None = None) -> None:
        from pcs.registry import InMemoryRegistry

        self.shared = shared
        self.registry = InMemoryRegistry(shared.registry)
        self.reporter = reporter  # (trial, step, value) -> whether to prune

    def command(self, command_id: str, registry: dict[str, Any] | None = None) -> Any:
        """The trial's RunCommand, on fresh component objects."""
        from pcs.registry import InMemoryRegistry
        from pcs.run_command import RunCommand

        if registry:
            self.registry.update(InMemoryRegistry(registry), force=True)
        command = RunCommand.from_registry(self.registry, command_id)
        for component in command.component.dependency_list():
            text = self.shared.requirements.get(component.identifier)
            if text is not None:
                component._requirements_override = text
        if self.shared.pin_sources or not _files_match(command):
            command.use_sources(self.shared.sources)
        else:
            command.sources.update(self.shared.sources)
        return command


def _files_match(command: Any) -> bool:
    """Whether every component's file still hashes to what the command recorded."""
    from pcs.errors import PcsError
    from pcs.specs import sha256_bytes

    for component in command.component.dependency_list():
        digest = command.code.get(component.identifier, {}).get("sha256")
        if not digest:
            return False
        try:
            text = component.source()
        except PcsError:
            return False
        if sha256_bytes(text.encode("utf-8")) != digest:
            return False
    return True


def run_trial(task: Task, context: TrialContext, tags: dict[str, str] | None = None) -> Result:
    """Run one trial as a component run nested in the sweep; a failure is a FAILED result.

    Ctrl-C and SIGTERM/SIGHUP are not failures of the trial: they end its run
    KILLED and propagate, so the executor stops. A pruned trial ends KILLED
    with ``pcs.pruned`` (the step) and ``pcs.ended_by=pruned``.

    Args:
        task: the trial.
        context: the sweep's context in this process.
        tags: more tags for the trial's run (where it ran).
    """
    from pcs.component_run import ComponentRun, _one_line
    from pcs.run import Run

    shared = context.shared
    all_tags = {_keys.SWEEP_ID: shared.sweep_id, _keys.TRIAL: str(task.index),
                _keys.ATTEMPT: str(task.attempt), **(tags or {})}
    watch = _Watch(task, context.reporter) if task.watch else None
    try:
        command = context.command(task.command_id, task.registry)
        with _watching(watch, shared.tracking_uri):
            run = ComponentRun.execute(
                command,
                outer_run=Run.lazy(shared.sweep_id),
                rerun_of=Run.lazy(task.rerun_of) if task.rerun_of else None,
                run_name=task.run_name,
                experiment_id=shared.experiment_id,
                return_value_format=task.return_value_format,
                tags=all_tags,
            )
    except TrialPruned as exc:
        run_id = getattr(exc, "pcs_run_id", None) or (watch.run_id if watch else None)
        if run_id:
            Run.lazy(run_id).set_tags({_keys.PRUNED: str(exc.step), _keys.ENDED_BY: "pruned"})
        return Result(task.index, run_id, "KILLED", f"pruned at step {exc.step}",
                      value=watch.value if watch else None, pruned=exc.step,
                      attempt=task.attempt)
    except (KeyboardInterrupt, _signals.ProcessTerminated):
        raise
    except BaseException as exc:  # noqa: BLE001 - a trial's failure (even SystemExit) ends only it
        return Result(task.index, getattr(exc, "pcs_run_id", None), "FAILED", _one_line(exc),
                      value=watch.value if watch else None, cause="code", attempt=task.attempt)
    return Result(task.index, run.identifier, "FINISHED", value=watch.value if watch else None,
                  attempt=task.attempt)


# -- following a trial's metric (its result, and reports to a pruner) ----------------------------


class _Watch:
    """A trial's ``watch`` metric as the trial logs it: its final value, and pruning."""

    def __init__(self, task: Task, reporter: Callable[[int, int, float], bool] | None) -> None:
        self.task = task
        self.reporter = reporter if task.report else None
        self.run_id: str | None = None
        self.latest: tuple[int, int, float] | None = None  # (step, timestamp, value)
        self.pruned: int | None = None

    @property
    def value(self) -> float | None:
        return self.latest[2] if self.latest is not None else None

    def created(self, tags: Any, run_id: str) -> None:
        if self.run_id is None and _tag_value(tags, _keys.TRIAL) == str(self.task.index) and (
            _tag_value(tags, _keys.ATTEMPT) == str(self.task.attempt)
        ):
            self.run_id = run_id

    def logged(self, run_id: str, metrics: Any) -> None:
        if run_id != self.run_id or self.pruned is not None:
            return
        for metric in metrics or ():
            if metric.key != self.task.watch:
                continue
            step, value = int(metric.step or 0), float(metric.value)
            key = (step, int(metric.timestamp or 0), value)
            if self.latest is None or key[:2] >= self.latest[:2]:
                self.latest = key
            stop = False
            if self.task.prune_at is not None:
                stop = step >= self.task.prune_at
            elif self.reporter is not None:
                stop = self.reporter(self.task.index, step, value)
            if stop:
                self.pruned = step
                raise TrialPruned(step)


def _tag_value(tags: Any, key: str) -> str | None:
    for tag in tags or ():
        if getattr(tag, "key", None) == key:
            return str(tag.value)
    return None


_CURRENT_WATCH: _Watch | None = None


@contextlib.contextmanager
def _watching(watch: _Watch | None, tracking_uri: str) -> Iterator[None]:
    """Follow ``watch``'s metric in every write to the store while the trial runs."""
    global _CURRENT_WATCH
    if watch is None:
        yield
        return
    _install_watch_hooks(tracking_uri)
    _CURRENT_WATCH = watch
    try:
        # pcs's buffered metrics are written as they are logged, so the watch sees each one
        with _writer.synchronous():
            yield
    finally:
        _CURRENT_WATCH = None


def _install_watch_hooks(tracking_uri: str) -> None:
    """Wrap the store's ``create_run``, ``log_metric`` and ``log_batch`` (once per store)."""
    from mlflow import MlflowClient

    store = MlflowClient(tracking_uri=tracking_uri)._tracking_client.store
    if getattr(store, "_pcs_watched", False):
        return
    create_run, log_metric, log_batch = store.create_run, store.log_metric, store.log_batch

    @functools.wraps(create_run)
    def watched_create_run(*args: Any, **kwargs: Any) -> Any:
        run = create_run(*args, **kwargs)
        watch = _CURRENT_WATCH
        if watch is not None:
            tags = kwargs.get("tags") if "tags" in kwargs else (args[3] if len(args) > 3 else None)
            watch.created(tags, run.info.run_id)
        return run

    @functools.wraps(log_metric)
    def watched_log_metric(run_id: str, metric: Any) -> Any:
        out = log_metric(run_id, metric)
        watch = _CURRENT_WATCH
        if watch is not None:
            watch.logged(run_id, [metric])
        return out

    @functools.wraps(log_batch)
    def watched_log_batch(run_id: str, metrics: Any = (), *args: Any, **kwargs: Any) -> Any:
        out = log_batch(run_id, metrics, *args, **kwargs)
        watch = _CURRENT_WATCH
        if watch is not None:
            watch.logged(run_id, metrics)
        return out

    for name, fn in (("create_run", watched_create_run), ("log_metric", watched_log_metric),
                     ("log_batch", watched_log_batch)):
        fn.pcs_retrying = True  # type: ignore[attr-defined]
        setattr(store, name, fn)
    store._pcs_watched = True


# -- signals raised where Python swallows exceptions --------------------------------------------


@contextlib.contextmanager
def signals_not_swallowed() -> Iterator[None]:
    """Signals swallowed in finalizers are delivered again (pcs._signals does it for guarded work)."""
    counted = _signals.enter()
    try:
        yield
    except BaseException as exc:
        _signals.leave(counted, exc)
        raise
    _signals.leave(counted, None)


# -- SQLite: retry writes refused because another process holds the lock -------------------


def is_lock_error(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite refusing an operation because another connection holds its lock."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = str(current).lower()
        if "database is locked" in text or "database table is locked" in text or (
            "sqlite_busy" in text
        ):
            return True
        current = current.__cause__ or current.__context__
    return False


def retrying(
    fn: Callable[..., Any], limit_s: float = LOCK_RETRY_SECONDS, first_wait_s: float = 0.02
) -> Callable[..., Any]:
    """``fn``, called again (with growing waits) while SQLite says the database is locked.

    Safe only for operations that a lock error leaves undone, as MLflow's SQL
    store does: it rolls the whole transaction back before raising.
    """

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        deadline = time.monotonic() + limit_s
        wait = first_wait_s
        while True:
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                if not is_lock_error(exc) or time.monotonic() + wait > deadline:
                    raise
                log.debug("pcs: %s hit a locked SQLite database; retrying in %.2fs",
                          getattr(fn, "__name__", "a store call"), wait)
                time.sleep(wait)
                wait = min(wait * 2, 1.0)

    call.pcs_retrying = True  # type: ignore[attr-defined]
    return call


class _WriterLock:
    """One writer at a time, across the processes of a sweep (``flock`` on a file in PCS_HOME).

    SQLite admits one writer anyway; a writer that finds the database locked
    sleeps in growing steps before it tries again, so writers that contend
    waste most of their time asleep. Queueing on a file lock hands the
    database over the moment it is free. Reentrant, and shared by the threads
    of a process (``flock`` alone would let them all in).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        self.lock = threading.RLock()
        self.depth = 0

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        import fcntl

        with self.lock:
            if self.depth == 0:
                fcntl.flock(self.fd, fcntl.LOCK_EX)
            self.depth += 1
            try:
                yield
            finally:
                self.depth -= 1
                if self.depth == 0:
                    fcntl.flock(self.fd, fcntl.LOCK_UN)


def sqlite_path(tracking_uri: str) -> str | None:
    """The database file of a ``sqlite:`` tracking URI (None for memory or other stores)."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    path = tracking_uri[len("sqlite:///"):].partition("?")[0]
    return None if not path or path == ":memory:" else os.path.realpath(path)


def _writer_lock(tracking_uri: str) -> _WriterLock | None:
    path = sqlite_path(tracking_uri)
    if path is None:
        return None
    try:
        import hashlib

        folder = _config.pcs_home() / "locks"
        folder.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256(path.encode("utf-8")).hexdigest()[:24]
        return _WriterLock(folder / f"sqlite-{digest}.lock")
    except OSError as exc:  # no lock: writers fall back on SQLite's own waiting
        log.debug("pcs: no writer lock for %s: %s", path, exc)
        return None


# store methods that write (MLflow's names); reads need no turn
_WRITES = ("create_", "log_", "set_", "delete_", "update_", "restore_", "record_", "rename_",
           "finalize_", "link_", "unlink_", "start_trace", "end_trace", "upsert_")


def install_lock_retries(tracking_uri: str) -> bool:
    """Make this process's MLflow store for a SQLite ``tracking_uri`` write in turn, and retry.

    Writes take turns with the other processes of the sweep (see
    :class:`_WriterLock`), and a write refused with "database is locked" (by
    a writer outside the sweep) is retried. MLflow keeps one store object per
    URI in a process, so every client of that URI (pcs's and the trial's own
    ``mlflow.log_*``) gets both. Only worker processes and Ray tasks of a
    sweep call this.

    Returns:
        Whether the store is a SQLite store (now taking turns and retrying).
    """
    if sqlite_path(tracking_uri) is None:
        return False
    from mlflow import MlflowClient

    store = MlflowClient(tracking_uri=tracking_uri)._tracking_client.store
    if getattr(store, "_pcs_retrying", False):
        return True
    turn = _writer_lock(tracking_uri)
    for name in dir(type(store)):
        if name.startswith("_"):
            continue
        member = getattr(type(store), name, None)
        if not callable(member) or isinstance(member, type):
            continue
        bound = getattr(store, name)
        if getattr(bound, "pcs_retrying", False):
            continue
        call = retrying(bound)
        if turn is not None and name.startswith(_WRITES):
            call = _in_turn(call, turn)
        setattr(store, name, call)
    store._pcs_retrying = True
    return True


def _in_turn(fn: Callable[..., Any], turn: _WriterLock) -> Callable[..., Any]:
    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        with turn.held():
            return fn(*args, **kwargs)

    call.pcs_retrying = True  # type: ignore[attr-defined]
    return call


# -- where the worker runs ------------------------------------------------------------------


def apply_environment(shared: Shared) -> None:
    """Point this (reused) worker process at the sweep's store, variables and folder."""
    if shared.env is not None:
        for key in [k for k in os.environ if k.startswith(("MLFLOW_", "PCS_"))]:
            if key not in shared.env:
                del os.environ[key]
        os.environ.update(shared.env)
    os.environ["MLFLOW_TRACKING_URI"] = shared.tracking_uri
    import mlflow

    mlflow.set_tracking_uri(shared.tracking_uri)
    if shared.cwd and os.path.isdir(shared.cwd):
        os.chdir(shared.cwd)
    install_lock_retries(shared.tracking_uri)


_RAY_CONTEXTS: dict[tuple[str, str], TrialContext] = {}


def ray_entry(shared: Shared, task: Task) -> Result:
    """A trial as a Ray task (the Ray executor wraps this function with ``ray.remote``).

    A trial that reports to a pruner connects to the sweep's report port
    (``shared.report_to``, see :mod:`pcs.sweep._reports`) at its first report,
    and hangs up when it ends.
    """
    from pcs.sweep._reports import ReportClient

    apply_environment(shared)
    key = (shared.sweep_id, shared.registry_id)
    context = _RAY_CONTEXTS.get(key)
    if context is None:
        _RAY_CONTEXTS.clear()  # a Ray worker serves one sweep after another
        context = _RAY_CONTEXTS[key] = TrialContext(shared)
    if not (task.report and shared.report_to):
        return run_trial(task, context, ray_tags())
    context.reporter = client = ReportClient(shared.report_to)
    try:
        return run_trial(task, context, ray_tags())
    finally:
        context.reporter = None
        client.close()


def ray_tags() -> dict[str, str]:
    """Where this Ray task runs: ``pcs.ray_node`` (the node's id and address)."""
    try:
        import ray

        node = ray.get_runtime_context().get_node_id()
        address = ray.util.get_node_ip_address()
    except Exception:  # noqa: BLE001 - where it ran is worth recording, not worth failing for
        return {}
    return {_keys.RAY_NODE: f"{address} {node}"}


def main(argv: list[str] | None = None) -> int:
    """The ``process`` executor's worker: trials from the socket, results back, until told to stop."""
    from multiprocessing.connection import Connection

    argv = sys.argv if argv is None else argv
    # only the sweep decides what stops: it sends SIGTERM, which pcs turns into KILLED runs
    # (a worker has its own process group, so a terminal's Ctrl-C does not reach it anyway)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn = Connection(int(argv[1]))
    # the imports and the store a trial needs, while the sweep is being recorded: importing
    # this module ran pcs/__init__.py, which imports every feature a run reaches by name

    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        with contextlib.suppress(Exception):  # a store that fails here fails the trial, said there
            install_lock_retries(uri)

    with signals_not_swallowed():
        code = _serve(conn)
    _leave(code)
    return code  # pragma: no cover - _leave does not return


def _leave(code: int) -> None:
    """Exit at once once every trial has ended: flush what MLflow still buffers, skip teardown.

    Every run the worker made has ended and every write is committed, so
    nothing is lost; a full interpreter teardown (with MLflow and SQLAlchemy
    loaded) only makes the sweep wait the better part of a second per worker.
    """
    import mlflow

    for name in ("flush_async_logging", "flush_trace_async_logging"):
        flush = getattr(mlflow, name, None)
        if callable(flush):
            with contextlib.suppress(Exception):
                flush()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _ask_sweep(conn: Any, index: int, step: int, value: float) -> bool:
    """Report a value of the trial's metric to the sweep; whether it says to prune the trial."""
    conn.send(("report", (index, step, value)))
    return bool(conn.recv())


def _serve(conn: Any) -> int:
    context: TrialContext | None = None
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return 0  # the sweep is gone: nothing more to do
        if message is None:
            return 0
        kind, payload = message
        if kind == "init":
            apply_environment(payload)
            context = TrialContext(payload, functools.partial(_ask_sweep, conn))
            continue
        if context is None:  # pragma: no cover - the sweep always sends init first
            raise RuntimeError("pcs sweep worker: a trial arrived before the sweep's context")
        conn.send(run_trial(payload, context))

