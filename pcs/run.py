"""Run: a handle on one MLflow run, with links to other runs.

A ``Run`` talks to the tracking store through ``MlflowClient``, resolved when
the run is made (so ``mlflow.set_tracking_uri`` and ``MLFLOW_TRACKING_URI`` are
honoured). It caches the MLflow run it read and batches what it writes.

The active run is MLflow's own: ``with run:`` pushes the run onto MLflow's
fluent active-run stack (thread-local, as MLflow documents), so
``mlflow.active_run()`` inside it is this run, ``mlflow.log_*`` lands in it,
and pcs runs, component runs and ``mlflow.start_run(nested=True)`` nest in any
order.

Links between runs:

- inner-outer: a run created while another is active is its inner run, stored
  as MLflow's ``mlflow.parentRunId`` so the MLflow UI nests it;
- dependency-depender: ``run.add_dependency(other)``, stored as the JSON list
  tag ``pcs.depends_on``; downloading another run's artifacts while a run is
  active records the link by itself;
- rerun-of: a rerun's ``pcs.rerun_of`` tag.

Every run records where it runs (``pcs.host``, ``pcs.pid``) and a heartbeat
refreshed while it runs, so a run whose process died can be told from a live
one (see :mod:`pcs._liveness`); SIGTERM and SIGHUP end it KILLED (see
:mod:`pcs._signals`).
"""

from __future__ import annotations

import contextlib
import functools
import getpass
import inspect
import json
import os
import shutil
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pcs import _config, _keys, _liveness, _signals, _writer
from pcs._features import feature
from pcs.errors import (
    AmbiguousRunIdError,
    ArgumentError,
    NotReproducibleError,
    PcsError,
    ReproducibilityError,
    RunNotFoundError,
    StoreOutageError,
    TrackingStoreError,
    UnverifiableError,
)
from pcs.record.inputs import saw_artifact

if TYPE_CHECKING:  # pragma: no cover
    from mlflow import MlflowClient
    from mlflow.entities import Metric
    from mlflow.entities import Run as MlflowRun

    from pcs.registry import Registry

__all__ = ["Run", "active_run", "active_runs", "run_class", "PAGE_SIZE"]

PAGE_SIZE = 5000  # runs per search page; listing pages through all of them
MIN_ID_PREFIX = 8  # the shortest run id prefix accepted in place of a full id

_RUN_TYPES: dict[str, type[Run]] = {}


def run_class(run_type: str | None) -> type[Run]:
    """The Run class for runs tagged ``pcs.run_type = run_type`` (plain ``Run`` otherwise).

    Subclasses of Run register themselves by their ``_run_type`` when defined.
    """
    return _RUN_TYPES.get(run_type or "", Run)


def active_run() -> Run | None:
    """The innermost active run in this thread (MLflow's active run), as a pcs Run."""
    stack = active_runs()
    return stack[-1] if stack else None


def active_runs() -> list[Run]:
    """MLflow's active-run stack of this thread, outermost first, as pcs Runs."""
    fluent = sys.modules.get("mlflow.tracking.fluent")
    if fluent is None:
        return []  # MLflow was never imported, so no run can be active
    out: list[Run] = []
    for entry in _mlflow_stack():
        run = getattr(entry, "pcs_run", None)
        if run is None:
            run = run_class(entry.data.tags.get(_keys.RUN_TYPE)).lazy(entry.info.run_id)
        out.append(run)
    return out


class Run:
    """A handle on one MLflow run.

    Args:
        experiment_id: experiment for a new run (default: MLflow's current one).
        existing_run_id: load this run instead of creating one (a unique prefix
            of 8+ characters, or the original id of an imported run, works too).
        run_name: MLflow run name for a new run.
        tags: extra tags for a new run (written with it, in one call).
        description: the run's note, shown by the MLflow UI.
        outer_run: make the new run an inner run of this one (default: the
            active run, if any: a pcs run or one from ``mlflow.start_run``).
        log_system_metrics: record CPU/memory while the run is active
            (needs ``psutil``).

    Example::

        with Run(run_name="train") as run:
            run.log_params({"lr": 0.1})
            run.log_metric("loss", 0.3, step=1)
            run.log_figure(fig, "loss.png")   # any MlflowClient.log_* method
    """

    _run_type: ClassVar[str] = _keys.RUN_TYPE_RUN

    #: the tag every pcs run carries (AgentOS's name for it)
    PCS_RUN_TAG: ClassVar[str] = _keys.PCS_RUN
    DEFAULT_EXPERIMENT_ID: ClassVar[str] = "0"
    #: MlflowClient methods starting with these are callable on a Run, with its run id filled in
    PASS_THROUGH_FN_PREFIXES: ClassVar[tuple[str, ...]] = (
        "log",
        "set_tag",
        "list_artifacts",
        "search_runs",
        "set_terminated",
        "download_artifacts",
    )

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _RUN_TYPES[cls._run_type] = cls

    def __init__(
        self,
        experiment_id: str | None = None,
        existing_run_id: str | None = None,
        *,
        run_name: str | None = None,
        tags: Mapping[str, Any] | None = None,
        description: str | None = None,
        outer_run: Run | str | None = None,
        log_system_metrics: bool = False,
        start_time: int | None = None,
        _client: MlflowClient | None = None,
        _mlflow_run: MlflowRun | None = None,
        _run_id: str | None = None,
    ) -> None:
        self._client = _client if _client is not None else _config.tracking_client()
        self._cached: MlflowRun | None = None
        self._links: dict[str, Any] = {}
        self._system_monitor: Any = None
        self._artifact_repository: Any = None
        self._artifact_uri: str | None = None  # never changes: kept when the cache is dropped
        self._last_read: MlflowRun | None = None  # the last record read, even if stale now
        self._guards: list[bool] = []
        self._ended = False
        self._writer: _writer.MetricWriter | None = None  # buffered metrics (see pcs._writer)
        if _mlflow_run is not None:
            self._cached = _mlflow_run
            self._run_id = _mlflow_run.info.run_id
            return
        if _run_id is not None:
            self._run_id = _run_id  # a lazy handle: read on first use
            return
        if existing_run_id is not None:
            self._cached = _resolve(self._client, existing_run_id)
            self._run_id = self._cached.info.run_id
            return
        if log_system_metrics:
            _require_psutil()  # refuse before the run exists
        all_tags = self._creation_tags(run_name, description, outer_run)
        all_tags.update(_user_tags(tags))
        experiment = experiment_id or _config.default_experiment_id(self._client)
        created = _create_live_run(self._client, experiment, start_time, all_tags, run_name)
        self._run_id = created.info.run_id
        self._cached = created
        self._artifact_uri = created.info.artifact_uri
        if log_system_metrics:
            self._start_system_metrics()

    @classmethod
    def lazy(cls, run_id: str, client: MlflowClient | None = None) -> Run:
        """A handle on ``run_id`` that reads the store only when first used."""
        return cls(_client=client, _run_id=run_id)

    def _creation_tags(
        self, run_name: str | None, description: str | None, outer_run: Run | str | None
    ) -> dict[str, str]:
        if outer_run is None:
            outer_id = _active_run_id()
        else:
            outer_id = outer_run.identifier if isinstance(outer_run, Run) else str(outer_run)
        tags = {
            _keys.RUN_TYPE: self._run_type,
            _keys.PCS_RUN: "True",
            _keys.USER: _user(),
            _keys.SOURCE_NAME: _source_name(),
            _keys.SOURCE_TYPE: "LOCAL",
            **_liveness.liveness_tags(),
        }
        if outer_id:
            tags[_keys.PARENT_RUN_ID] = outer_id
        if description:
            tags[_keys.NOTE] = description
        return tags

    # -- loading -------------------------------------------------------------

    @classmethod
    def from_existing_run_id(cls, run_id: str) -> Run:
        """Load a run; a run made by a RunCommand comes back as a ComponentRun.

        Also finds a run by a unique prefix of its id (8+ characters), and a run
        imported from another store by its original id.

        Raises:
            RunNotFoundError: when no run has this id.
            AmbiguousRunIdError: when several runs start with this prefix.
        """
        client = _config.tracking_client()
        return _wrap(_resolve(client, run_id), client)

    @classmethod
    def from_run_command(cls, command: Any, **kwargs: Any) -> Run:
        """Execute a RunCommand and return its (finished) ComponentRun."""
        return run_class(_keys.RUN_TYPE_COMPONENT).execute(command, **kwargs)  # type: ignore[attr-defined]

    @classmethod
    def run_exists(cls, run_id: str) -> bool:
        """Whether the current tracking store holds a run with this id."""
        try:
            _get_mlflow_run(_config.tracking_client(), run_id)
            return True
        except RunNotFoundError:
            return False

    @classmethod
    def get_all_runs(
        cls,
        experiment_ids: Iterable[str] | None = None,
        filter_string: str = "",
        include_deleted: bool = False,
        pcs_only: bool = True,
    ) -> list[Run]:
        """Every run (pcs runs only by default), newest first, by paged search.

        Args:
            experiment_ids: where to look (default: every active experiment).
            filter_string: an extra MLflow search filter, ANDed with pcs's.
            include_deleted: also list deleted runs.
            pcs_only: only runs made by pcs (runs, component runs, sweeps).
        """
        client = _config.tracking_client()
        clauses = [f"tags.`{_keys.RUN_TYPE}` IS NOT NULL"] if pcs_only else []
        if filter_string:
            clauses.append(filter_string)
        found = search_mlflow_runs(
            client,
            " and ".join(clauses),
            experiment_ids=list(experiment_ids) if experiment_ids is not None else None,
            include_deleted=include_deleted,
        )
        return [_wrap(r, client) for r in found]

    @classmethod
    def print_all_status(cls, experiment_ids: Iterable[str] | None = None) -> None:
        """Print a table of every pcs run, newest first."""
        feature("print_runs_table")(cls.get_all_runs(experiment_ids))

    def refresh(self) -> Run:
        """Re-read the run from the store (after another process changed it)."""
        self._cached = _get_mlflow_run(self._client, self._run_id)
        self._links.clear()
        return self

    @property
    def _mlflow_run(self) -> MlflowRun:
        """The MLflow run, read once and cached (a property, as in AgentOS)."""
        if self._cached is None:
            self._cached = _get_mlflow_run(self._client, self._run_id)
        return self._cached

    def _changed(self) -> None:
        """Forget the cached record after a write; the next read fetches once."""
        if self._cached is not None:
            self._last_read = self._cached
        self._cached = None

    # -- properties -----------------------------------------------------------

    @property
    def identifier(self) -> str:
        return self._run_id

    @property
    def client(self) -> MlflowClient:
        return self._client

    @property
    def info(self):  # -> mlflow.entities.RunInfo
        return self._mlflow_run.info

    @property
    def data(self):  # -> mlflow.entities.RunData
        return self._mlflow_run.data

    @property
    def status(self) -> str:
        return self.info.status

    @property
    def experiment_id(self) -> str:
        return self.info.experiment_id

    @property
    def name(self) -> str:
        return self.info.run_name

    @property
    def tags(self) -> dict[str, str]:
        return dict(self.data.tags)

    @property
    def params(self) -> dict[str, str]:
        return dict(self.data.params)

    @property
    def metrics(self) -> dict[str, float]:
        return dict(self.data.metrics)

    @property
    def lifecycle_stage(self) -> str:
        return self.info.lifecycle_stage

    @property
    def is_component_run(self) -> bool:
        return self.tags.get(_keys.RUN_TYPE) == _keys.RUN_TYPE_COMPONENT

    @property
    def stale_reason(self) -> str | None:
        """Why this RUNNING run looks dead (its process is gone, or no heartbeat), or None."""
        info = self.info
        return _liveness.staleness(info.status, self.tags, info.start_time)

    # -- logging ---------------------------------------------------------------

    def log_param(self, key: str, value: Any) -> None:
        self.log_params({key: value})

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log several params in one call."""
        from mlflow.entities import Param

        from pcs import _limits

        checked = [Param(str(k), _limits.check_param(str(k), v)) for k, v in params.items()]
        self._client.log_batch(self._run_id, params=checked)
        self._changed()

    def log_metric(
        self, key: str, value: float, step: int | None = None, timestamp: int | None = None
    ) -> None:
        self.log_metrics({key: value}, step=step, timestamp=timestamp)

    def log_metrics(
        self, metrics: Mapping[str, float], step: int | None = None, timestamp: int | None = None
    ) -> None:
        """Log several metrics at one step.

        The points are buffered and written in order by the run's writer (see
        :mod:`pcs._writer`): within ``PCS_METRIC_FLUSH_S`` seconds, when pcs reads
        the store, and when the run ends; a store outage is ridden out for up to
        ``PCS_STORE_RETRY_S`` seconds. Nothing is read back from the store.

        Raises:
            StoreOutageError: the store has been away longer than ``PCS_STORE_RETRY_S``.
        """
        from mlflow.entities import Metric

        from pcs import _limits

        ts = timestamp if timestamp is not None else _liveness.now_ms()
        names = ", ".join(repr(str(k)) for k in list(metrics)[:3])
        at = _limits.check_step(step or 0, f"metric {names}")
        entries = [
            Metric(str(key), _limits.check_metric(str(key), value, at, ts), ts, at)
            for key, value in metrics.items()
        ]
        if self._writer is None:
            self._writer = _writer.MetricWriter(self._client, self._run_id)
        self._writer.add(entries)
        self._changed()

    def flush_metrics(self) -> None:
        """Write the metrics this handle buffered now (pcs does it within ``PCS_METRIC_FLUSH_S``)."""
        if self._writer is not None:
            self._writer.flush()

    def set_tag(self, key: str, value: Any) -> None:
        self.set_tags({key: value})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set several tags in one call."""
        from mlflow.entities import RunTag

        checked = _user_tags(tags)
        self._refuse_self_links(checked)
        self._client.log_batch(self._run_id, tags=[RunTag(k, v) for k, v in checked.items()])
        self._changed()

    def _refuse_self_links(self, tags: Mapping[str, str]) -> None:
        for key in (_keys.PARENT_RUN_ID, _keys.RERUN_OF):
            if tags.get(key) == self._run_id:
                raise ArgumentError(
                    f"Run {self._run_id} cannot link to itself with {key}: an outer run or the "
                    "run a rerun reproduces is always another run."
                )
        if _keys.DEPENDS_ON in tags and self._run_id in tags[_keys.DEPENDS_ON]:
            raise ArgumentError(
                f"Run {self._run_id} cannot depend on itself: a dependency is another run whose "
                "output this one consumes."
            )

    def log_artifact(self, local_path: str | Path, artifact_path: str | None = None) -> None:
        repo = self._artifacts()
        if repo is None:
            self._client.log_artifact(self._run_id, str(local_path), artifact_path)
        else:
            repo.log_artifact(str(local_path), artifact_path)

    def log_artifacts(self, local_dir: str | Path, artifact_path: str | None = None) -> None:
        repo = self._artifacts()
        if repo is None:
            self._client.log_artifacts(self._run_id, str(local_dir), artifact_path)
        else:
            repo.log_artifacts(str(local_dir), artifact_path)

    def _log_staged(self, local_dir: Path, artifact_path: str | None = None) -> None:
        """Upload a folder pcs staged and throws away afterwards, as :meth:`log_artifacts` does.

        On an ``mlflow server``'s proxied artifact store (``mlflow-artifacts:/``, or
        an ``http(s)`` artifact URI) each file is one HTTP request; MLflow sends them
        one after another (about 13 ms each, one per helper module of the code
        snapshot), pcs sends up to :data:`_UPLOAD_THREADS` at once.

        On a local artifact store (``mlruns`` of a SQLite or file store) each file is
        hard-linked instead of copied: a copy made a file (a millisecond on a busy
        disk) for each file of the code snapshot, one per helper module. Linking is
        safe because nothing writes a staged file after its upload, and a file
        already there is replaced, never written into. Where links are not possible
        (another file system), the file is copied.
        """
        from mlflow.store.artifact.http_artifact_repo import HttpArtifactRepository
        from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

        repo = self._artifacts()
        if isinstance(repo, HttpArtifactRepository):
            _upload_concurrently(repo, _staged_files(local_dir, artifact_path))
            return
        root = getattr(repo, "artifact_dir", None)
        if not isinstance(repo, LocalArtifactRepository) or not isinstance(root, str):
            self.log_artifacts(local_dir, artifact_path)
            return
        dest = os.path.join(root, os.path.normpath(artifact_path)) if artifact_path else root
        for folder, _, files in os.walk(local_dir):
            rel = os.path.relpath(folder, local_dir)
            target = dest if rel == os.curdir else os.path.join(dest, rel)
            os.makedirs(target, exist_ok=True)
            for name in files:
                _link_or_copy(os.path.join(folder, name), os.path.join(target, name))

    def _artifacts(self) -> Any:
        """The run's artifact repository, built from the artifact URI already read.

        MlflowClient would fetch the run again to find it on the first upload.
        """
        if self._artifact_repository is None:
            try:
                from mlflow.store.artifact.artifact_repository_registry import (
                    get_artifact_repository,
                )

                if self._artifact_uri is None:
                    self._artifact_uri = self._mlflow_run.info.artifact_uri
                self._artifact_repository = get_artifact_repository(
                    self._artifact_uri, tracking_uri=_safe_uri(self._client)
                )
            except Exception:  # noqa: BLE001 - fall back to the client's own lookup
                return None
        return self._artifact_repository

    def log_dict(self, dictionary: Any, artifact_file: str) -> None:
        self._client.log_dict(self._run_id, dictionary, artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        self._client.log_text(self._run_id, text, artifact_file)

    def list_artifacts(self, path: str | None = None) -> list:
        repo = self._artifacts()
        if repo is None:
            return self._client.list_artifacts(self._run_id, path)
        return repo.list_artifacts(path)

    def artifact_paths(self, path: str | None = None) -> list[str]:
        """Every artifact file of the run (recursive), relative to its artifact root."""
        out: list[str] = []
        for item in self.list_artifacts(path):
            if item.is_dir:
                out.extend(self.artifact_paths(item.path))
            else:
                out.append(item.path)
        return sorted(out)

    def metric_history(self, key: str) -> list[Metric]:
        """Every logged value of a metric, in logging order (step, then timestamp)."""
        _writer.flush_all()
        history = self._client.get_metric_history(self._run_id, key)
        return sorted(history, key=lambda m: (m.step, m.timestamp))

    def download_artifacts(self, path: str = "", dst_path: str | Path | None = None) -> Path:
        """Download artifacts to a local folder and return its path.

        When another run is active, that run is recorded as depending on this one,
        and a component run records the sha256 of what it loaded (``pcs/inputs.yaml``).
        """
        self._record_use_by_active_run()
        local = self._download_quietly(path, Path(dst_path) if dst_path is not None else None)
        saw_artifact(self.identifier, path, local)
        return local

    def load_text(self, artifact_file: str) -> str:
        """The text of one artifact (records a dependency link like ``download_artifacts``)."""
        return self.download_artifacts(artifact_file).read_text(encoding="utf-8")

    def load_dict(self, artifact_file: str) -> Any:
        """A JSON or YAML artifact, parsed (records a dependency link)."""
        text = self.load_text(artifact_file)
        from pcs._yaml import load_json, load_yaml

        where = f"artifact {artifact_file} of run {self._run_id}"
        if artifact_file.endswith((".yaml", ".yml")):
            return load_yaml(text, where)
        return load_json(text, where)

    def _record_use_by_active_run(self) -> None:
        current = active_run()
        if current is not None and current.identifier != self.identifier:
            current.add_dependency(self)

    def _download_quietly(self, path: str, dst: Path | None = None) -> Path:
        """Download without recording a link (pcs's own reads of its records)."""
        repo = self._artifacts()
        if dst is not None:
            dst.mkdir(parents=True, exist_ok=True)
        if repo is None:
            from mlflow.artifacts import download_artifacts

            local = download_artifacts(
                run_id=self._run_id,
                artifact_path=path,
                dst_path=str(dst) if dst is not None else None,
                tracking_uri=_safe_uri(self._client),
            )
        else:
            local = repo.download_artifacts(path, dst_path=str(dst) if dst is not None else None)
        return Path(local)

    def __getattr__(self, name: str) -> Any:
        # MlflowClient's own log_*/set_tag*/... methods, with this run's id filled in
        if name.startswith("_") or not name.startswith(type(self).PASS_THROUGH_FN_PREFIXES):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        method = getattr(self._client, name, None)
        if method is None or not callable(method):
            raise AttributeError(
                f"{type(self).__name__!r} object has no attribute {name!r}, and MlflowClient "
                f"has no method {name!r} to pass it to."
            )
        try:
            first = next(iter(inspect.signature(method).parameters), None)
        except (TypeError, ValueError):
            first = None
        if first != "run_id":
            return method

        @functools.wraps(method)
        def bound(*args: Any, **kwargs: Any) -> Any:
            result = method(self._run_id, *args, **kwargs)
            self._changed()
            return result

        return bound

    # -- lifecycle ---------------------------------------------------------------

    def set_terminated(self, status: str = "FINISHED", end_time: int | None = None) -> None:
        """Set the run's status and end time (MLflow's terminate, without extra reads).

        Data logged asynchronously (``MLFLOW_ENABLE_ASYNC_LOGGING=true``,
        ``synchronous=False``) and buffered metrics are written first, so a run
        read as ended is complete; a store outage is ridden out for up to
        ``PCS_STORE_RETRY_S`` seconds.
        """
        failure = self._close_writer()
        if failure is not None and status == "FINISHED":
            status = "FAILED"
            self._record_failure(failure)
        _flush_async_logging(self._client)
        if _liveness.cleanup_may_have_ended(self._run_id):  # ours: did cleanup end it meanwhile?
            _liveness.revive_quietly(self._client, self._run_id)
        _writer.riding_out(
            lambda: _terminate(self._client, self._run_id, status, end_time),
            f"the end of run {self._run_id}", _safe_uri(self._client),
        )
        _liveness.unregister(self._run_id)
        self._changed()

    def end(self, status: str = "FINISHED") -> None:
        """End the run with ``status`` (FINISHED, FAILED or KILLED)."""
        if status not in ("FINISHED", "FAILED", "KILLED"):
            raise ArgumentError(
                f"Cannot end run {self._run_id} with status {status!r}; use FINISHED, "
                "FAILED or KILLED."
            )
        self._stop_system_metrics()
        _pop_active(self)
        failure = self._close_writer()
        ending_well = status == "FINISHED"
        if failure is not None and ending_well:
            status = "FAILED"
            self._record_failure(failure)
        self.set_terminated(status)
        self._ended = True
        if failure is not None and ending_well:
            raise failure  # a run that was ending well lost metrics: the caller must hear it

    def _close_writer(self) -> TrackingStoreError | None:
        """Write the buffered metrics and stop the writer; the failure, if any."""
        writer, self._writer = self._writer, None
        if writer is None:
            return None
        try:
            writer.close()
        except TrackingStoreError as exc:
            return exc
        return None

    def _record_failure(self, exc: BaseException) -> None:
        """Tag why a run that was ending well ends FAILED (best effort: the store may be away)."""
        try:
            from pcs._redact import redact_text

            text = redact_text(" ".join(f"{type(exc).__name__}: {exc}".split()))
            _writer.riding_out(
                lambda: self._client.set_tag(self._run_id, _keys.ERROR, text[:4000]),
                f"the error of run {self._run_id}", _safe_uri(self._client),
            )
        except Exception:  # noqa: BLE001 - the status matters more than the reason
            pass

    def resume(self) -> Run:
        """Set an ended run back to RUNNING, to append late results; ``end()`` it again."""
        if self.lifecycle_stage == "deleted":
            raise PcsError(
                f"Run {self._run_id} is deleted; restore it with run.restore() before "
                "resuming it."
            )
        from mlflow.entities import RunStatus, RunTag

        info = self.info
        liveness = _liveness.liveness_tags()
        self._client.log_batch(self._run_id, tags=[RunTag(k, v) for k, v in liveness.items()])
        _store(self._client).update_run_info(
            self._run_id, run_status=RunStatus.RUNNING, end_time=info.end_time, run_name=None
        )
        _liveness.register(self._run_id, self._client, _beat_of(liveness))
        self._ended = False
        self._changed()
        return self

    def delete(self) -> None:
        """Mark the run deleted (MLflow's soft delete; ``restore()`` undoes it)."""
        self._client.delete_run(self._run_id)
        self._changed()

    def restore(self) -> None:
        self._client.restore_run(self._run_id)
        self._changed()

    def __enter__(self) -> Run:
        self._guards.append(_signals.enter())
        try:
            if self.status != "RUNNING":
                self.resume()
            else:
                _liveness.register(self._run_id, self._client)
            _push_active(self)
        except BaseException as exc:
            _signals.leave(self._guards.pop(), exc)
            raise
        self._ended = False
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if not self._ended:
                self._end_for(exc)
            else:
                _pop_active(self)
        finally:
            if self._guards:
                _signals.leave(self._guards.pop(), exc)

    def _end_for(self, exc: BaseException | None) -> None:
        """End the run as an exception (or none) leaving its block says."""
        if exc is None:
            self.end("FINISHED")
        elif isinstance(exc, _signals.ProcessTerminated):
            self._record_end_reason(exc.signal_name)
            self.end("KILLED")
        elif isinstance(exc, KeyboardInterrupt):
            self._record_end_reason("SIGINT")
            self.end("KILLED")
        else:
            if isinstance(exc, StoreOutageError):
                self._record_failure(exc)
            self.end("FAILED")

    def _record_end_reason(self, reason: str) -> None:
        try:
            self._client.set_tag(self._run_id, _keys.ENDED_BY, reason)
        except Exception:  # noqa: BLE001 - the status matters more than the reason
            pass

    def _start_system_metrics(self) -> None:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        self._system_monitor = SystemMetricsMonitor(self._run_id, tracking_uri=_safe_uri(self._client))
        self._system_monitor.start()

    def _stop_system_metrics(self) -> None:
        if self._system_monitor is not None:
            self._system_monitor.finish()
            self._system_monitor = None

    # -- links --------------------------------------------------------------------

    @property
    def outer_run(self) -> Run | None:
        """The run this one is nested in, or None."""
        parent = self.tags.get(_keys.PARENT_RUN_ID)
        return self._linked_run("outer", parent)

    @property
    def inner_runs(self) -> list[Run]:
        """Runs nested in this one, oldest first."""
        return self._search_links(f"tags.`{_keys.PARENT_RUN_ID}` = '{self._run_id}'")

    @property
    def dependency_ids(self) -> list[str]:
        raw = self.tags.get(_keys.DEPENDS_ON)
        if not raw:
            return []
        try:
            ids = json.loads(raw)
        except (ValueError, RecursionError):
            return []
        return [str(i) for i in ids] if isinstance(ids, list) else []

    @property
    def dependency_runs(self) -> list[Run]:
        """Runs whose output this run consumed (one search, not one fetch per run)."""
        ids = self.dependency_ids
        found = runs_by_ids(self._client, ids)
        # a dependency imported from another store is found by its original id
        return [found[i] if i in found else Run.from_existing_run_id(i) for i in ids]

    @property
    def depender_runs(self) -> list[Run]:
        """Runs that consumed this run's output."""
        found = self._search_links(f"tags.`{_keys.DEPENDS_ON}` LIKE '%\"{self._run_id}\"%'")
        return [r for r in found if self._run_id in r.dependency_ids]

    @property
    def rerun_of(self) -> Run | None:
        """The run this one reproduces, or None."""
        return self._linked_run("rerun_of", self.tags.get(_keys.RERUN_OF))

    @property
    def reruns(self) -> list[Run]:
        """Reruns of this run, oldest first."""
        return self._search_links(f"tags.`{_keys.RERUN_OF}` = '{self._run_id}'")

    def add_dependency(self, run: Run | str) -> None:
        """Record that this run consumes ``run``'s output."""
        run_id = run.identifier if isinstance(run, Run) else str(run)
        if not isinstance(run, Run):
            run_id = _resolve(self._client, run_id).info.run_id
        if run_id == self._run_id:
            raise ArgumentError(
                f"Run {run_id} cannot depend on itself: a dependency is another run whose "
                "output this one consumes."
            )
        ids = self.dependency_ids
        if run_id not in ids:
            self.set_tag(_keys.DEPENDS_ON, json.dumps(ids + [run_id]))

    def _linked_run(self, key: str, run_id: str | None) -> Run | None:
        if not run_id:
            return None
        if key not in self._links:
            self._links[key] = Run.from_existing_run_id(run_id)
        return self._links[key]

    def _search_links(self, filter_string: str) -> list[Run]:
        found = search_mlflow_runs(
            self._client, filter_string, order_by=["attributes.start_time ASC"]
        )
        return [_wrap(r, self._client) for r in found]

    # -- reproduction and export ---------------------------------------------------

    def rerun(self, *args: Any, **kwargs: Any) -> Run:
        """Execute the run's RunCommand again (only runs made by a Component have one)."""
        tags = self.tags
        if _keys.RUN_TYPE not in tags:
            how = (
                "it is a plain MLflow run (made by mlflow.start_run or MlflowClient, not by "
                "pcs), so nothing recorded how to compute it"
            )
        else:
            how = "it was created with Run(), not by running a Component"
        raise NotReproducibleError(
            f"Run {self._run_id} has no RunCommand, so it cannot be rerun: {how}. Use "
            "Component.run_with_arg_set(...) (or 'pcs run') to make reproducible runs."
        )

    def to_registry(
        self,
        registry: Registry | None = None,
        recurse: bool = True,
        force: bool = False,
        include_artifacts: bool = False,
    ) -> Registry:
        """Add this run (and its run command, components, repos, linked runs) to a registry.

        Args:
            registry: where to add (default: a new InMemoryRegistry).
            recurse: also add the runs it links to: dependencies, inner and outer
                runs, and the run a rerun reproduces (recursively).
            force: overwrite conflicting specs instead of refusing.
            include_artifacts: also carry every run's artifacts.
        """
        return feature("export_runs")(
            [self], registry, recurse=recurse, force=force, include_artifacts=include_artifacts
        )

    @classmethod
    def from_registry(cls, registry: Registry, run_id: str, trust: bool = False) -> Run:
        """The run from the current store, importing it from ``registry`` when missing."""
        return feature("import_run")(registry, run_id, trust=trust)

    def to_spec(self, flatten: bool = False) -> dict[str, Any]:
        """A dict spec of the run: ``identifier``, ``info``, ``data`` (params, metrics, tags).

        Args:
            flatten: one level of dotted keys (``info.status``, ``data.params.lr``)
                instead of nested dicts.
        """
        info = self.info
        data = self.data
        spec: dict[str, Any] = {
            "identifier": self._run_id,
            "info": {
                "run_id": info.run_id,
                "run_name": info.run_name,
                "experiment_id": info.experiment_id,
                "user_id": info.user_id,
                "status": info.status,
                "start_time": info.start_time,
                "end_time": info.end_time,
                "lifecycle_stage": info.lifecycle_stage,
                "artifact_uri": info.artifact_uri,
            },
            "data": {
                "params": dict(data.params),
                "metrics": dict(data.metrics),
                "tags": dict(data.tags),
            },
        }
        return _flatten(spec) if flatten else spec

    # -- inspection -------------------------------------------------------------------

    def print_status(self, detailed: bool = False) -> None:
        """Print a one-line summary, or (``detailed``) everything pcs knows of the run."""
        feature("print_run_status")(self, detailed)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Run) and other.identifier == self.identifier

    def __hash__(self) -> int:
        return hash(self._run_id)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._run_id!r})"


# -- MLflow's active-run stack ---------------------------------------------------------------

_ENTRY_CLASS: Any = None


def _mlflow_stack() -> list:
    from mlflow.tracking import fluent

    return fluent._active_run_stack.get()


def _active_run_id() -> str | None:
    fluent = sys.modules.get("mlflow.tracking.fluent")
    if fluent is None:
        return None
    top = fluent.active_run()
    return top.info.run_id if top is not None else None


def _push_active(run: Run) -> None:
    """Make ``run`` MLflow's active run in this thread (``mlflow.active_run()`` returns it)."""
    global _ENTRY_CLASS
    if _ENTRY_CLASS is None:
        from mlflow.tracking.fluent import ActiveRun

        class PcsActiveRun(ActiveRun):
            """MLflow's active-run entry for a pcs run; ``pcs_run`` is the pcs handle."""

            pcs_run: Run

        _ENTRY_CLASS = PcsActiveRun
    # MLflow's active-run entry is a snapshot (MLflow documents that its data goes stale), so a
    # record read before the latest write will do and saves a read
    snapshot = run._cached if run._cached is not None else run._last_read
    entry = _ENTRY_CLASS(snapshot if snapshot is not None else run._mlflow_run)
    entry.pcs_run = run
    _mlflow_stack().append(entry)


def _pop_active(run: Run) -> None:
    """Take ``run`` off MLflow's active-run stack of this thread, wherever it is."""
    fluent = sys.modules.get("mlflow.tracking.fluent")
    if fluent is None:
        return
    stack = fluent._active_run_stack.get()
    for i in range(len(stack) - 1, -1, -1):
        if getattr(stack[i], "pcs_run", None) is run or stack[i].info.run_id == run.identifier:
            del stack[i]
            fluent._last_active_run_id.set(run.identifier)
            return


# -- helpers shared with the other run modules ----------------------------------------------


def keep_verification(rerun: Run, report: Any, strict: bool) -> None:
    """Keep ``report`` on ``rerun`` (``rerun.verification``) and tag its verdict on the run.

    With ``strict``, a report that is not a reproduction raises:
    ``UnverifiableError`` when nothing could be compared, ``ReproducibilityError``
    when something differed.
    """
    rerun.verification = report  # type: ignore[attr-defined]
    rerun.set_tag(_keys.VERIFICATION, report.verdict)
    if strict and report.verdict == "unverifiable":
        raise UnverifiableError(str(report), report)
    if strict and not report.reproduced:
        raise ReproducibilityError(str(report), report)


def _wrap(mlflow_run: MlflowRun, client: MlflowClient) -> Run:
    """A Run of the right class around an MLflow run already fetched (no extra call)."""
    cls = run_class(mlflow_run.data.tags.get(_keys.RUN_TYPE))
    return cls(_client=client, _mlflow_run=mlflow_run)


@_signals.not_interrupted
def _create_live_run(client: MlflowClient, experiment_id: str, start_time: int | None,
                     tags: dict[str, str], run_name: str | None) -> MlflowRun:
    """Create a run and keep its heartbeat, as one step a signal does not cut in two.

    A SIGTERM between the two would leave a RUNNING run that nothing in this
    process ends KILLED (only runs it knows to be live are).
    """
    _signals.watch_uncaught()
    created = client.create_run(experiment_id, start_time=start_time, tags=tags, run_name=run_name)
    _liveness.register(created.info.run_id, client, _beat_of(tags))
    return created


def _beat_of(tags: Mapping[str, str]) -> int | None:
    """The heartbeat (epoch ms) written with these tags, if they hold one."""
    try:
        return int(tags[_keys.HEARTBEAT])
    except (KeyError, ValueError):
        return None


def _store(client: MlflowClient) -> Any:
    return client._tracking_client.store


def _flush_async_logging(client: MlflowClient) -> None:
    """Write what MLflow still queues for asynchronous logging (a no-op when nothing is queued).

    MLflow's own ``set_terminated`` does this; :func:`_terminate` bypasses it. The
    store is MLflow's cached one for the tracking URI, the one the code's
    ``mlflow.log_*`` calls queue into.
    """
    try:
        flush = _store(client).flush_async_logging
    except AttributeError:
        return  # a store without asynchronous logging
    try:
        flush()
    except Exception as exc:  # noqa: BLE001 - the run must still end; say what may be missing
        import logging

        logging.getLogger(__name__).warning(
            "pcs: MLflow could not write the data it logged asynchronously: %s", exc
        )


def _terminate(client: MlflowClient, run_id: str, status: str, end_time: int | None) -> None:
    """MLflow's set_terminated without its extra read (and printed link) on a tracking server."""
    from mlflow.entities import RunStatus

    end = end_time if end_time is not None else _liveness.now_ms()
    try:
        store = _store(client)
    except AttributeError:
        client.set_terminated(run_id, status=status, end_time=end)
        return
    store.update_run_info(run_id, run_status=RunStatus.from_string(status), end_time=end, run_name=None)


def _get_mlflow_run(client: MlflowClient, run_id: str) -> MlflowRun:
    from mlflow.exceptions import MlflowException

    if not isinstance(run_id, str) or not run_id.strip():
        raise RunNotFoundError(f"{run_id!r} is not a run id.")
    _writer.flush_all()  # this process's buffered metrics are in what it reads
    if not _is_id_like(run_id):
        raise RunNotFoundError(
            f"{run_id[:80]!r} is not a run id: run ids are letters, digits, '-' and '_' "
            "(MLflow's are 32 hex digits). 'pcs status' lists runs."
        )
    try:
        return client.get_run(run_id)
    except MlflowException as exc:
        code = getattr(exc, "error_code", "")
        if code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            raise RunNotFoundError(
                f"No run with id {run_id!r} in the tracking store {_safe_uri(client)}. "
                "Check the id ('pcs status' lists runs), or point MLFLOW_TRACKING_URI at "
                "the store that holds it."
            ) from None
        raise


def _is_id_like(text: str) -> bool:
    return 0 < len(text) <= 64 and all(c.isascii() and (c.isalnum() or c in "-_") for c in text)


def _resolve(client: MlflowClient, run_id: str) -> MlflowRun:
    """The MLflow run ``run_id`` names: its id, a unique prefix, an imported run's original id,
    or MLflow's run URI ``runs:/<id>`` (a path after the id is ignored)."""
    run_id = _strip_run_uri(run_id)
    try:
        return _get_mlflow_run(client, run_id)
    except RunNotFoundError:
        if not isinstance(run_id, str) or not _is_id_like(run_id):
            raise
    imported = _find_imported(client, run_id)
    if imported is not None:
        return imported
    if len(run_id) < MIN_ID_PREFIX:
        raise RunNotFoundError(
            f"No run with id {run_id!r} in the tracking store {_safe_uri(client)}, and "
            f"{run_id!r} is too short to be an id prefix (give at least {MIN_ID_PREFIX} "
            "characters). 'pcs status' lists runs."
        )
    matches = _by_prefix(client, run_id)
    if len(matches) == 1:
        return next(iter(matches.values()))
    if matches:
        shown = ", ".join(sorted(matches)[:10])
        raise AmbiguousRunIdError(
            f"{run_id!r} is the start of {len(matches)} run ids ({shown}"
            f"{', ...' if len(matches) > 10 else ''}). Give more characters of the id."
        )
    raise RunNotFoundError(
        f"No run with id {run_id!r} (or an id starting with it) in the tracking store "
        f"{_safe_uri(client)}. Check the id ('pcs status' lists runs), or point "
        "MLFLOW_TRACKING_URI at the store that holds it."
    )


def _strip_run_uri(run_id: str) -> str:
    """The id in MLflow's run URI ``runs:/<id>[/path]``; anything else unchanged."""
    if not isinstance(run_id, str) or not run_id.startswith("runs:"):
        return run_id
    rest = run_id[len("runs:"):].lstrip("/")
    found = rest.split("/", 1)[0]
    if not found:
        raise RunNotFoundError(
            f"{run_id!r} names no run: an MLflow run URI is runs:/<run id>[/artifact path]."
        )
    return found


def _by_prefix(client: MlflowClient, prefix: str) -> dict[str, MlflowRun]:
    """Runs whose id (or original id, when imported) starts with ``prefix``, by id."""
    found: dict[str, MlflowRun] = {}
    clauses = [f"attributes.run_id LIKE '{prefix}%'"] + [
        f"tags.`{key}` LIKE '{prefix}%'" for key in (_keys.IMPORTED_FROM, _keys.ORIGIN_RUN_ID)
    ]
    for clause in clauses:
        for run in search_mlflow_runs(client, clause, include_deleted=True, max_runs=11):
            found.setdefault(run.info.run_id, run)
    return found


def _find_imported(client: MlflowClient, original_id: str) -> MlflowRun | None:
    if not _is_id_like(original_id):
        return None
    # the run it was imported from, else the first run of a chain of imports (A -> B -> C)
    for key in (_keys.IMPORTED_FROM, _keys.ORIGIN_RUN_ID):
        found = search_mlflow_runs(
            client, f"tags.`{key}` = '{original_id}'", max_runs=1, include_deleted=True
        )
        if found:
            return found[0]
    return None


def runs_by_ids(
    client: MlflowClient, run_ids: Iterable[str], experiment_ids: list[str] | None = None
) -> dict[str, Run]:
    """The runs with these ids that the store holds, read by one paged search."""
    ids = sorted({i for i in run_ids if i and _is_id_like(i)})
    if not ids:
        return {}
    quoted = ", ".join(f"'{i}'" for i in ids)
    found = search_mlflow_runs(
        client, f"attributes.run_id IN ({quoted})", experiment_ids, include_deleted=True
    )
    return {r.info.run_id: _wrap(r, client) for r in found}


def all_experiment_ids(client: MlflowClient) -> list[str]:
    """Every active experiment's id, by paged search."""
    ids: list[str] = []
    token = None
    while True:
        page = client.search_experiments(max_results=1000, page_token=token)
        ids.extend(e.experiment_id for e in page)
        token = page.token
        if not token:
            return ids


def search_mlflow_runs(
    client: MlflowClient,
    filter_string: str = "",
    experiment_ids: list[str] | None = None,
    order_by: list[str] | None = None,
    include_deleted: bool = False,
    max_runs: int | None = None,
) -> list[MlflowRun]:
    """Page through ``search_runs`` until every matching run is read."""
    from mlflow.entities import ViewType

    ids = experiment_ids if experiment_ids is not None else all_experiment_ids(client)
    if not ids:
        return []
    _writer.flush_all()
    out: list[MlflowRun] = []
    token = None
    while True:
        page_size = PAGE_SIZE if max_runs is None else min(PAGE_SIZE, max_runs - len(out))
        page = client.search_runs(
            ids,
            filter_string=filter_string,
            run_view_type=ViewType.ALL if include_deleted else ViewType.ACTIVE_ONLY,
            max_results=page_size,
            order_by=order_by or ["attributes.start_time DESC"],
            page_token=token,
        )
        out.extend(page)
        token = page.token
        if not token or (max_runs is not None and len(out) >= max_runs):
            return out


def _user_tags(tags: Mapping[str, Any] | None) -> dict[str, str]:
    """Tags given by the caller, checked against MLflow's limits (never truncated)."""
    from pcs import _limits

    out: dict[str, str] = {}
    for key, value in (tags or {}).items():
        out[str(key)] = _limits.check_tag(str(key), value)
    return out


def _flatten(spec: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in spec.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            # an empty section (no metrics yet) leaves no key: a flat spec holds no dicts
            out.update(_flatten(value, f"{path}."))
        else:
            out[path] = value
    return out


def _require_psutil() -> None:
    try:
        import psutil  # noqa: F401
    except ImportError:
        raise ArgumentError(
            "log_system_metrics=True needs the psutil package, which is not "
            "installed. Install it with 'pip install psutil'."
        ) from None


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user database in some containers
        return "unknown"


def _source_name() -> str:
    return sys.argv[0] if sys.argv and sys.argv[0] else "<interactive>"


_UPLOAD_THREADS = 8
"""Files of one staged folder uploaded at once to a server's artifact store."""


def _staged_files(local_dir: Path, artifact_path: str | None) -> list[tuple[str, str | None]]:
    """Each file under ``local_dir`` with the artifact folder it goes to, as ``log_artifacts`` puts it."""
    out: list[tuple[str, str | None]] = []
    local = os.path.abspath(local_dir)
    for folder, _, files in os.walk(local):
        rel = os.path.relpath(folder, local)
        if rel == os.curdir:
            target = artifact_path
        else:
            rel = rel.replace(os.sep, "/")
            target = f"{artifact_path.rstrip('/')}/{rel}" if artifact_path else rel
        out.extend((os.path.join(folder, name), target) for name in sorted(files))
    return out


def _upload_concurrently(repo: Any, uploads: list[tuple[str, str | None]]) -> None:
    """Upload files with ``repo.log_artifact``, up to :data:`_UPLOAD_THREADS` at once.

    Every upload is waited for; then the first failure (in file order) is raised,
    as MLflow's ``log_artifacts`` raises it, after a warning for each other file
    that failed. An interrupt (Ctrl-C, a terminating signal) cancels the uploads
    not yet started and waits for those under way before it goes on.
    """
    if len(uploads) <= 1:
        for local_file, target in uploads:
            repo.log_artifact(local_file, target)
        return
    from concurrent.futures import ThreadPoolExecutor, wait

    with ThreadPoolExecutor(min(_UPLOAD_THREADS, len(uploads)), "pcs-upload") as pool:
        futures = [pool.submit(repo.log_artifact, f, target) for f, target in uploads]
        try:
            wait(futures)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    failed: list[tuple[str, BaseException]] = [
        (f, error) for (f, _), future in zip(uploads, futures, strict=True)
        if (error := future.exception()) is not None
    ]
    for local_file, error in failed[1:]:  # the first is raised below; none goes unsaid
        import logging

        logging.getLogger(__name__).warning("pcs: could not upload %s either: %s", local_file, error)
    if failed:
        raise failed[0][1]


def _link_or_copy(source: str, copy: str) -> None:
    """Hard-link ``source`` as ``copy`` (see :func:`~pcs.record.code.link_anew`), else copy it anew."""
    from pcs.record.code import link_anew

    if not link_anew(source, copy):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(copy)  # replaced, never written into: it may share its text with other runs
        shutil.copyfile(source, copy)


def _safe_uri(client: MlflowClient) -> str:
    try:
        return client._tracking_client.tracking_uri
    except AttributeError:
        return "(unknown)"
