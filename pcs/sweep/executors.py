"""Where trials run: in this process, in a pool of worker processes, or as Ray tasks.

:func:`start_executor` gets an executor ready (worker processes start
importing and connecting to the store at once, while the sweep is being
recorded); its ``run`` takes the trials (:class:`~pcs.sweep._worker.Task`),
the shared context, and a callback told of every
:class:`~pcs.sweep._worker.Result` as it arrives, and returns when every
trial has ended. Trials are independent: a failing trial is a FAILED result,
never a reason to stop the others.

Ctrl-C and SIGTERM/SIGHUP (``KeyboardInterrupt`` / ``ProcessTerminated`` in the
sweep's main thread) stop an executor: workers are sent SIGTERM (Ray tasks are
cancelled), which ends their trials KILLED, and are killed if they do not stop
in time. The sweep then ends whatever is still RUNNING as KILLED.

The ``process`` executor's workers are forked by a zygote
(:mod:`pcs.sweep._zygote`): a fresh interpreter that imported MLflow and pcs
once. They are never forks of the caller, which would copy its open database
connections, threads and GPU state (and ``spawn`` would import the caller's
script again). A worker that dies in the middle of a trial (a crash,
``os._exit``) fails that trial (or, with retries, that attempt); another
worker takes over. Each worker gets its own GPUs (``CUDA_VISIBLE_DEVICES``)
when the machine has some.

Trials come from a :class:`TaskSource`: a list, or a search that suggests
each trial when a worker is free and hears running trials' metric values
(workers report them over their socket, Ray trials over a port the sweep opens
for them, :mod:`pcs.sweep._reports`; the sweep answers whether to prune).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from pcs import _config, _keys, _liveness
from pcs.errors import ArgumentError, PcsError
from pcs.run import _wrap, search_mlflow_runs
from pcs.sweep._reports import ReportServer
from pcs.sweep._worker import Result, Shared, Task, TrialContext, run_trial

__all__ = [
    "Executor",
    "TaskSource",
    "start_executor",
    "check_resources",
    "default_workers",
    "gpu_slots",
    "visible_gpus",
    "trial_runs_left",
    "STOP_TIMEOUT_S",
]

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 20.0  # how long stopped workers get to end their runs KILLED before SIGKILL

OnResult = Callable[[Result], None]


def default_workers() -> int:
    """The CPUs this process may use (its affinity, else the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


class TaskSource:
    """Where an executor takes its trials from: a fixed list, or a search that suggests them.

    ``take`` gives the next trial to start now (None: nothing to start until a
    running trial ends); ``again`` puts an attempt back (a retry, first in line);
    ``report`` is told a running trial's metric value at a step and says whether
    to stop (prune) it.
    """

    def __init__(self, tasks: list[Task] | None = None) -> None:
        self.queue: deque[Task] = deque(tasks or ())
        self.given: dict[int, Task] = {}  # the latest attempt handed out, by trial

    def take(self) -> Task | None:
        task = self.queue.popleft() if self.queue else self._next()
        if task is not None:
            self.given[task.index] = task
        return task

    def _next(self) -> Task | None:
        """A new trial once the queue is empty (a search asks for one here)."""
        return None

    def again(self, task: Task) -> None:
        self.queue.appendleft(task)

    def report(self, index: int, step: int, value: float) -> bool:
        return False

    @property
    def reports(self) -> bool:
        """Whether running trials report their metric to ``report`` (a search that prunes)."""
        return False

    def done(self, result: Result) -> None:
        """How a trial ended, for good (after its last attempt)."""

    def __len__(self) -> int:
        return len(self.queue)


def as_source(tasks: list[Task] | TaskSource) -> TaskSource:
    return tasks if isinstance(tasks, TaskSource) else TaskSource(list(tasks))


class Executor:
    """Runs trials; made by :func:`start_executor`, used once, then closed."""

    in_process = False  # whether trials run in the caller's process (the serial executor)

    def run(self, tasks: list[Task] | TaskSource, shared: Shared, on_result: OnResult,
            live_commands: dict[str, Any] | None = None) -> None:
        """Run every task; ``on_result`` hears of each one (in this thread) as it ends.

        Args:
            tasks: the trials, in the order to start them, or a source of them
                (``on_result`` may put a trial back into it, to retry it).
            shared: the context every trial needs.
            on_result: told each trial's result.
            live_commands: for ``serial`` only, commands to run as they are (a class
                captured from ``__main__`` cannot be rebuilt from the registry).
        """
        raise NotImplementedError

    def close(self) -> None:
        """Let go of the workers (and of a Ray this executor started)."""

    def abort(self) -> None:
        """Stop the workers now (the sweep failed or was interrupted before they ran)."""
        self.close()

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc is not None:
            self.abort()
        else:
            self.close()


def start_executor(
    executor: str,
    trials: int,
    max_workers: int | None = None,
    ray_address: str | None = None,
    tracking_uri: str | None = None,
    cwd: str | None = None,
    resources: Mapping[str, float] | None = None,
) -> Executor:
    """Get ``executor`` ready for ``trials`` trials.

    Args:
        executor: ``serial``, ``process`` or ``ray``.
        trials: how many trials will run (no more workers than that start).
        max_workers: worker processes (default: the CPU count), or Ray tasks in flight
            (default: as many as Ray schedules).
        ray_address: the Ray cluster to connect to when Ray is not initialised yet.
        tracking_uri: the store worker processes write to (default: this process's).
        cwd: the folder worker processes run in (default: this process's).
        resources: what one trial needs: ``cpus``, ``gpus`` (Ray schedules by them; the
            process executor gives each worker its own GPUs when there are any).

    Returns:
        The executor; close it (or use it as a context manager) when done.
    """
    resources = dict(resources or {})
    if executor == "serial":
        return _Serial()
    if executor == "process":
        size = max(1, min(max_workers or default_workers(), trials))
        gpus = gpu_slots(size, resources.get("gpus"))
        return _ProcessPool(len(gpus) if gpus else size, tracking_uri, cwd, gpus)
    if executor == "ray":
        return _Ray(max_workers, ray_address, resources)
    raise ArgumentError(f"Unknown sweep executor {executor!r}.")  # pragma: no cover


def check_resources(resources: Any) -> dict[str, float]:
    """Refuse resources that are not ``{"cpus": N, "gpus": N, ...}`` with numbers >= 0."""
    if resources is None:
        return {}
    if not isinstance(resources, Mapping):
        raise ArgumentError(
            f"resources maps a resource to what one trial needs, e.g. {{'cpus': 2, 'gpus': 1}}; "
            f"got {resources!r:.60}."
        )
    out: dict[str, float] = {}
    for key, value in resources.items():
        if not isinstance(key, str) or not key:
            raise ArgumentError(f"A resource is named by a string; got {key!r}.")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ArgumentError(f"resources[{key!r}] must be a number >= 0; got {value!r}.")
        out[key] = value
    return out


def visible_gpus() -> list[str]:
    """The GPUs this process may hand out: ``CUDA_VISIBLE_DEVICES`` when set, else NVML's count."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g.strip() for g in listed.split(",") if g.strip() and g.strip() != "-1"]
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
        try:
            return [str(i) for i in range(pynvml.nvmlDeviceGetCount())]
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - no driver, no GPUs
        return []


def gpu_slots(workers: int, per_trial: float | None) -> list[str]:
    """``CUDA_VISIBLE_DEVICES`` for each worker: its own GPUs, or [] when there are none.

    Each worker gets ``per_trial`` GPUs (default 1) of its own; there are no more
    workers than the GPUs allow (at least one, sharing them all when fewer GPUs
    exist than one trial asks for).
    """
    gpus = visible_gpus()
    if not gpus or per_trial == 0:
        return []
    each = max(1, int(per_trial or 1))
    count = max(1, min(workers, len(gpus) // each))
    if len(gpus) < each:
        return [",".join(gpus)]
    return [",".join(gpus[i * each:(i + 1) * each]) for i in range(count)]


# -- serial ------------------------------------------------------------------------------------


class _Serial(Executor):
    in_process = True

    def run(self, tasks: list[Task] | TaskSource, shared: Shared, on_result: OnResult,
            live_commands: dict[str, Any] | None = None) -> None:
        source = as_source(tasks)
        context = TrialContext(shared, source.report)
        if live_commands:
            plain_command = context.command

            def command(command_id: str, registry: dict[str, Any] | None = None) -> Any:
                live = live_commands.get(command_id)
                return live if live is not None else plain_command(command_id, registry)

            context.command = command  # type: ignore[method-assign]
        while (task := source.take()) is not None:
            on_result(run_trial(task, context))


# -- a pool of worker processes -----------------------------------------------------------------


class _Worker:
    def __init__(self, process: Any, conn: Any, gpus: str | None) -> None:
        self.process = process
        self.conn = conn
        self.gpus = gpus  # its CUDA_VISIBLE_DEVICES, when the machine has GPUs
        self.task: Task | None = None
        self.done = 0
        self.ready = False  # it has the sweep's context

    @property
    def pid(self) -> int:
        return int(self.process.pid)


class _ProcessPool(Executor):
    """Worker processes fed one trial at a time, over a socket each.

    Workers are forked by the zygote (:mod:`pcs.sweep._zygote`), a server that
    imported MLflow and pcs once; with ``PCS_SWEEP_FRESH_WORKERS=1`` each worker
    is a fresh interpreter instead (slower to start; for a platform or setup
    where forking is not wanted).
    """

    def __init__(self, size: int, tracking_uri: str | None, cwd: str | None,
                 gpus: list[str] | None = None) -> None:
        self.size = size
        self.tracking_uri = tracking_uri
        self.cwd = cwd
        self.gpus = list(gpus or [])
        self.workers: list[_Worker] = []
        self.started_ok = False  # some worker has finished a trial
        self.dead_at_start = 0
        self.shared: Shared | None = None
        self.on_result: OnResult | None = None
        self.source: TaskSource | None = None
        self.since_ms = _liveness.now_ms()
        # the store exists, schema and all, before any worker opens it: processes that
        # create a new SQLite store at once race in its migrations and can leave it half-made
        _open_store(tracking_uri)
        try:
            for i in range(size):
                self.workers.append(self._start(self.gpus[i] if self.gpus else None))
        except BaseException:
            self._stop_all()
            raise

    def run(self, tasks: list[Task] | TaskSource, shared: Shared, on_result: OnResult,
            live_commands: dict[str, Any] | None = None) -> None:
        from multiprocessing.connection import wait

        source = self.source = as_source(tasks)
        self.shared, self.on_result = shared, on_result
        self.since_ms = _liveness.now_ms()
        retried: set[int] = set()
        try:
            while True:
                for worker in self.workers:
                    if worker.task is None:
                        worker.task = source.take()
                        if worker.task is not None:
                            self._send(worker, ("trial", worker.task))
                busy = {w.conn: w for w in self.workers if w.task is not None}
                if not busy:
                    break
                for conn in wait(list(busy)):
                    worker = busy[conn]  # type: ignore[index]
                    try:
                        message = worker.conn.recv()
                    except (EOFError, OSError):
                        self._lost(worker, source, retried)
                        continue
                    if isinstance(message, tuple) and message[0] == "report":
                        index, step, value = message[1]
                        with contextlib.suppress(OSError):
                            worker.conn.send(source.report(index, step, value))
                        continue
                    worker.task = None
                    worker.done += 1
                    self.started_ok = True
                    on_result(message)
        except BaseException:
            with _signals_held():
                self._stop_all()
            raise
        for worker in self.workers:  # they exit while the sweep logs its results
            with contextlib.suppress(OSError):
                worker.conn.send(None)

    def close(self) -> None:
        for worker in self.workers:
            with contextlib.suppress(OSError):
                worker.conn.send(None)
        while self.workers:
            self._retire(self.workers.pop(0))

    def abort(self) -> None:
        with _signals_held():
            self._stop_all()

    def _send(self, worker: _Worker, message: Any) -> None:
        try:
            if not worker.ready:
                worker.conn.send(("init", self.shared))
                worker.ready = True
            worker.conn.send(message)
        except OSError:
            pass  # it died; waiting on it finds out

    def _start(self, gpus: str | None) -> _Worker:
        parent_end, child_end = socket.socketpair()
        env = dict(os.environ)
        if self.tracking_uri:
            env["MLFLOW_TRACKING_URI"] = self.tracking_uri
        if gpus is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpus
        try:
            if os.environ.get("PCS_SWEEP_FRESH_WORKERS") == "1" or not hasattr(os, "fork"):
                process: Any = _fresh_worker(child_end, env, self.cwd)
            else:
                from pcs.sweep._zygote import zygote

                stdout = _stdout_target()
                process = zygote().fork(child_end.fileno(), 1 if stdout is None else stdout,
                                        env, self.cwd or os.getcwd())
        except BaseException:
            parent_end.close()
            raise
        finally:
            child_end.close()
        from multiprocessing.connection import Connection

        return _Worker(process, Connection(parent_end.detach()), gpus)

    def _lost(self, worker: _Worker, source: TaskSource, retried: set[int]) -> None:
        """A worker died: fail (or, when it never recorded a run, retry once) its trial."""
        shared, on_result = self.shared, self.on_result
        if shared is None or on_result is None:  # pragma: no cover - run() sets both first
            return
        task = worker.task
        worker.task = None
        code = _reap(worker.process)
        self.workers.remove(worker)
        with contextlib.suppress(OSError):
            worker.conn.close()
        reason = f"the worker process running it died ({_exit_text(code)})"
        result = None
        if task is not None:
            result = _end_trial_of_dead_worker(shared, task, worker.pid, reason, self.since_ms)
        if result is not None:
            self.started_ok = True  # it got as far as recording a run: workers do start
        elif worker.done == 0 and not self.started_ok:
            self.dead_at_start += 1
            if self.dead_at_start >= max(2, self.size):
                raise PcsError(
                    f"The sweep's worker processes exit as soon as they start ({_exit_text(code)}); "
                    "their error is printed above. Check that pcs and MLflow import in a fresh "
                    f"interpreter ({sys.executable}), or run the sweep with executor='serial'."
                )
        if task is not None:
            if result is None and (task.index, task.attempt) not in retried:
                retried.add((task.index, task.attempt))  # type: ignore[arg-type]
                source.again(task)  # it never recorded a run: nothing is duplicated
            else:
                on_result(result or Result(
                    task.index, None, "FAILED", f"{reason} before its run was recorded, twice",
                    cause="start", attempt=task.attempt,
                ))
        if len(self.workers) < self.size:
            self.workers.append(self._start(worker.gpus))

    def _retire(self, worker: _Worker) -> None:
        """Wait for a worker that was told to stop (``None``) to exit."""
        try:
            worker.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            worker.process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.process.wait(timeout=STOP_TIMEOUT_S)
        with contextlib.suppress(OSError):
            worker.conn.close()

    def _stop_all(self) -> None:
        """SIGTERM every worker (their trials end KILLED), then SIGKILL what outlives the wait."""
        for worker in self.workers:
            if worker.task is None:  # nothing to end KILLED: it exits when its socket closes
                with contextlib.suppress(OSError):
                    worker.conn.close()
            elif worker.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for worker in self.workers:
            try:
                worker.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("pcs: sweep worker %s did not stop in %.0fs; killing it",
                            worker.pid, STOP_TIMEOUT_S)
                worker.process.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    worker.process.wait(timeout=STOP_TIMEOUT_S)
            with contextlib.suppress(OSError):
                worker.conn.close()
        self.workers.clear()


def _fresh_worker(child_end: socket.socket, env: dict[str, str], cwd: str | None) -> Any:
    """A worker as a fresh interpreter (``python -m pcs.sweep FD``)."""
    # the worker imports the very pcs this process runs (pcs/sweep/executors.py -> root)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return subprocess.Popen(
        [sys.executable, "-m", "pcs.sweep", str(child_end.fileno())],
        pass_fds=(child_end.fileno(),),
        env=env,
        cwd=cwd or None,
        stdin=subprocess.DEVNULL,
        stdout=_stdout_target(),
        # its own process group: Ctrl-C in a terminal reaches only the sweep, which
        # stops its workers itself (SIGTERM ends their trials KILLED)
        start_new_session=True,
    )


def _open_store(tracking_uri: str | None) -> None:
    """Open (and so create, for a new SQLite file) the store workers will write to."""
    if tracking_uri:
        from mlflow import MlflowClient

        MlflowClient(tracking_uri=tracking_uri)._tracking_client.store  # noqa: B018 - creates it
    else:
        _config.tracking_client()._tracking_client.store  # noqa: B018


def _stdout_target() -> int | None:
    """Where workers print: this process's current stdout (``--json`` sends it to stderr)."""
    try:
        return sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):
        return None  # replaced by something without a file (pytest's capsys): inherit fd 1


def _reap(process: subprocess.Popen) -> int | None:
    try:
        return process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def _exit_text(code: int | None) -> str:
    if code is None:
        return "exit status unknown"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _end_trial_of_dead_worker(
    shared: Shared, task: Task, pid: int | None, reason: str, since_ms: int
) -> Result | None:
    """The run a dead worker left for ``task``, ended FAILED if still RUNNING; None if it made none."""
    found = [r for r in trial_runs_left(shared.sweep_id, task.index, pid, since_ms)
             if r.tags.get(_keys.ATTEMPT, "1") == str(task.attempt)]
    if not found:
        return None
    run = found[-1]
    if run.status == "RUNNING":
        with contextlib.suppress(Exception):
            run.set_tag(_keys.ERROR, reason)
        run.set_terminated("FAILED")
        return Result(task.index, run.identifier, "FAILED", reason, cause="worker",
                      attempt=task.attempt)
    return Result(task.index, run.identifier, run.status, run.tags.get(_keys.ERROR),
                  pruned=int(run.tags[_keys.PRUNED]) if run.tags.get(_keys.PRUNED, "").isdigit()
                  else None, cause="code" if run.status == "FAILED" else None,
                  attempt=task.attempt)


def trial_runs_left(
    sweep_id: str, index: int, pid: int | None = None, since_ms: int | None = None
) -> list[Any]:
    """The runs of trial ``index`` of a sweep, oldest first.

    Args:
        sweep_id: the sweep.
        index: the trial.
        pid: only runs made by this process.
        since_ms: only runs started at or after this time (epoch milliseconds).
    """
    client = _config.tracking_client()
    clauses = [
        f"tags.`{_keys.PARENT_RUN_ID}` = '{sweep_id}'",
        f"tags.`{_keys.TRIAL}` = '{int(index)}'",
    ]
    if pid is not None:
        clauses.append(f"tags.`{_keys.PID}` = '{int(pid)}'")
    if since_ms is not None:
        clauses.append(f"attributes.start_time >= {int(since_ms)}")
    found = search_mlflow_runs(client, " and ".join(clauses), order_by=["attributes.start_time ASC"])
    return [_wrap(r, client) for r in found]


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM/SIGHUP back while workers are stopped, so stopping finishes.

    A signal that arrives meanwhile is delivered again afterwards, to the handler
    that was in place (pcs's, which ends the process as the signal says).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []

    def hold(signum: int, frame: Any) -> None:
        caught.append(signum)

    previous: dict[int, Any] = {}
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        signum = getattr(signal, name, None)
        if signum is None:
            continue
        current = signal.getsignal(signum)
        if current in (signal.SIG_IGN, None):
            continue
        with contextlib.suppress(ValueError, OSError):
            signal.signal(signum, hold)
            previous[signum] = current
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if caught:
            os.kill(os.getpid(), caught[0])


# -- Ray ---------------------------------------------------------------------------------------


def import_ray() -> Any:
    """The ``ray`` module, or an ArgumentError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ArgumentError(
            "executor='ray' needs Ray, which is not installed. Install it with "
            "pip install 'pcs[ray]' (or pip install ray), or use executor='process'."
        ) from None
    return ray


class _Ray(Executor):
    """Trials as Ray tasks, on the Ray this process has, or one it connects to."""

    def __init__(self, max_workers: int | None, address: str | None,
                 resources: Mapping[str, float] | None = None) -> None:
        self.ray = import_ray()
        self.max_workers = max_workers
        self.resources = dict(resources or {})
        self.started_here = False
        if not self.ray.is_initialized():
            self.ray.init(address=address, log_to_driver=True)
            self.started_here = True
        _keep_signal_exit()

    def options(self) -> dict[str, Any]:
        """``ray.remote`` options of one trial: its CPUs, GPUs and other resources, no retries
        (pcs retries a trial itself, so every attempt has its run)."""
        resources = dict(self.resources)
        options: dict[str, Any] = {
            "num_cpus": resources.pop("cpus", 1),
            "num_gpus": resources.pop("gpus", 0),
            "max_retries": 0,
        }
        if "memory" in resources:
            options["memory"] = resources.pop("memory")
        if resources:
            options["resources"] = resources
        return options

    def run(self, tasks: list[Task] | TaskSource, shared: Shared, on_result: OnResult,
            live_commands: dict[str, Any] | None = None) -> None:
        from pcs.sweep._worker import ray_entry

        ray = self.ray
        source = as_source(tasks)
        since_ms = _liveness.now_ms()
        remote = ray.remote(**self.options())(ray_entry)
        # trials tell a pruning search their metric over the network: Ray's workers may run
        # anywhere, so the sweep listens where Ray knows this node to be
        lock = threading.RLock()  # the search is changed by this thread and the report server's
        server = ReportServer(ray.util.get_node_ip_address(), source.report, lock) \
            if source.reports else None
        in_flight: dict[Any, Task] = {}
        try:
            if server is not None:
                shared = dataclasses.replace(shared, report_to=server.address)
            shared_ref = ray.put(shared)
            limit = self.max_workers or (len(source) if len(source) else 2**31)
            if not self.max_workers and type(source)._next is not TaskSource._next:
                # a search suggests from what has ended: no more in flight than the cluster runs
                cpus = float(ray.cluster_resources().get("CPU", 1))
                limit = max(1, int(cpus // max(float(self.options()["num_cpus"]), 1e-9)))
            while True:
                with lock:
                    while len(in_flight) < limit and (task := source.take()) is not None:
                        in_flight[remote.remote(shared_ref, task)] = task
                if not in_flight:
                    break
                # a short timeout: ray.wait blocks in C++, where SIGTERM's handler cannot run
                with _signal_from_ray():
                    done, _ = ray.wait(list(in_flight), num_returns=1, timeout=0.5)
                for ref in done:
                    task = in_flight.pop(ref)
                    try:
                        result = ray.get(ref)
                    except Exception as exc:  # noqa: BLE001 - its worker or node died, or it was cancelled
                        reason = _ray_reason(exc)
                        result = _end_trial_of_dead_worker(shared, task, None, reason, since_ms) or Result(
                            task.index, None, "FAILED", f"{reason} (before its run was recorded)",
                            cause="start", attempt=task.attempt,
                        )
                        if result.run_id is not None and result.cause == "worker":
                            result = Result(result.index, result.run_id, result.status, reason,
                                            cause="worker", attempt=task.attempt)
                    with lock:
                        on_result(result)
        except BaseException:
            with _signals_held():
                _cancel_ray(ray, list(in_flight))
            raise
        finally:
            if server is not None:
                server.close()

    def close(self) -> None:
        if self.started_here:
            self.ray.shutdown()
            self.started_here = False


@contextlib.contextmanager
def _signal_from_ray() -> Iterator[None]:
    """Ray runs signal handlers inside its C++ calls and reports what they raise as a
    SystemError; raise the Ctrl-C or SIGTERM itself, so the sweep stops as it should."""
    from pcs import _signals

    try:
        yield
    except SystemError as exc:
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, (KeyboardInterrupt, _signals.ProcessTerminated)):
            raise cause from None
        raise


def _keep_signal_exit() -> None:
    """Let SIGTERM end the sweep as pcs ends any run: KILLED, then death by the signal.

    ``ray.init`` installs a SIGTERM handler that calls ``sys.exit(15)``: the
    sweep would exit with status 15 instead of dying by the signal, and its runs
    would be ended by nobody. pcs's handler goes back on top, and Ray's exit is
    not chained (the process dies by the signal instead, as without Ray).
    """
    from pcs import _signals

    if threading.current_thread() is not threading.main_thread():
        return
    current = signal.getsignal(signal.SIGTERM)
    if getattr(current, "__module__", "").startswith("ray"):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _signals._PREVIOUS.pop(signal.SIGTERM, None)
        _signals.install()


# what Ray's NodeDiedError says of the node (Ray 2.x: "... Node IP: 10.0.0.5, node ID: 4a2f...")
_DEAD_NODE = re.compile(r"Node IP:\s*([^\s,]+),\s*node ID:\s*([0-9a-fA-F]+)")


def _ray_reason(exc: BaseException) -> str:
    """Why a trial's Ray task failed, in one line.

    A dead node is named by its address and id (``its Ray node 10.0.0.5 died (node
    id 4a2f..., NodeDiedError)``; the id is the one in the trials' ``pcs.ray_node``);
    any other failure is Ray's error kind and the first line that says what happened.
    """
    kind = type(exc).__name__
    node = _DEAD_NODE.search(str(exc))
    if node is not None:
        return f"its Ray node {node[1]} died (node id {node[2]}, {kind})"
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = next((line for line in lines if "died" in line.lower() or "node" in line.lower()),
                lines[0] if lines else "")
    text = text if len(text) <= 300 else text[:297] + "..."
    return f"its Ray task failed: {kind}: {text}" if text else f"its Ray task failed: {kind}"


def _cancel_ray(ray: Any, refs: list[Any]) -> None:
    """Interrupt running trials (their runs end KILLED), then force what does not stop."""
    if not refs:
        return
    for ref in refs:
        with contextlib.suppress(Exception):
            ray.cancel(ref, force=False)
    with contextlib.suppress(Exception):
        ray.wait(refs, num_returns=len(refs), timeout=STOP_TIMEOUT_S)
    for ref in refs:
        with contextlib.suppress(Exception):
            ray.cancel(ref, force=True)
