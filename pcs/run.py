"""Run: a handle on one MLflow run, with links to other runs.

A ``Run`` talks to the tracking store through ``MlflowClient``, resolved when
the run is made (so ``mlflow.set_tracking_uri`` and ``MLFLOW_TRACKING_URI`` are
honoured). It caches the MLflow run it read and batches what it writes.

Links between runs:

- inner-outer: a run created while another is active (``with run:``) is its
  inner run, stored as MLflow's ``mlflow.parentRunId`` so the MLflow UI nests it;
- dependency-depender: ``run.add_dependency(other)``, stored as the JSON list
  tag ``pcs.depends_on``; downloading another run's artifacts while a run is
  active records the link by itself;
- rerun-of: a rerun's ``pcs.rerun_of`` tag.
"""

from __future__ import annotations

import contextvars
import getpass
import json
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pcs import _config, _keys
from pcs.errors import ArgumentError, NotReproducibleError, PcsError, RunNotFoundError

if TYPE_CHECKING:  # pragma: no cover
    from mlflow import MlflowClient
    from mlflow.entities import Run as MlflowRun

    from pcs.component_run import ComponentRun
    from pcs.registry import Registry

__all__ = ["Run", "active_run", "PAGE_SIZE"]

PAGE_SIZE = 1000  # runs per search page; listing pages through all of them

_ACTIVE_RUNS: contextvars.ContextVar[tuple[Run, ...]] = contextvars.ContextVar(
    "pcs_active_runs", default=()
)


def active_run() -> Run | None:
    """The innermost run active in this context (thread / asyncio task), or None."""
    stack = _ACTIVE_RUNS.get()
    return stack[-1] if stack else None


def _push(run: Run) -> contextvars.Token:
    return _ACTIVE_RUNS.set(_ACTIVE_RUNS.get() + (run,))


class Run:
    """A handle on one MLflow run.

    Args:
        experiment_id: experiment for a new run (default: MLflow's current one).
        existing_run_id: load this run instead of creating one.
        run_name: MLflow run name for a new run.
        tags: extra tags for a new run (written with it, in one call).
        description: the run's note, shown by the MLflow UI.
        outer_run: make the new run an inner run of this one (default: the
            active run, if any).
        log_system_metrics: record CPU/memory while the run is active
            (needs ``psutil``).

    Example::

        with Run(run_name="train") as run:
            run.log_params({"lr": 0.1})
            run.log_metric("loss", 0.3, step=1)
    """

    _run_type = _keys.RUN_TYPE_RUN

    def __init__(
        self,
        experiment_id: str | None = None,
        existing_run_id: str | None = None,
        *,
        run_name: str | None = None,
        tags: Mapping[str, Any] | None = None,
        description: str | None = None,
        outer_run: Run | None = None,
        log_system_metrics: bool = False,
        start_time: int | None = None,
        _client: MlflowClient | None = None,
        _mlflow_run: MlflowRun | None = None,
    ) -> None:
        self._client = _client if _client is not None else _config.tracking_client()
        self._cached: MlflowRun | None = None
        self._tokens: list[contextvars.Token] = []
        self._links: dict[str, Any] = {}
        self._system_monitor: Any = None
        self._artifact_repository: Any = None
        if _mlflow_run is not None:
            self._cached = _mlflow_run
            self._run_id = _mlflow_run.info.run_id
            return
        if existing_run_id is not None:
            self._run_id = existing_run_id
            self._cached = _get_mlflow_run(self._client, existing_run_id)
            self._run_id = self._cached.info.run_id
            return
        if log_system_metrics:
            _require_psutil()  # refuse before the run exists
        all_tags = self._creation_tags(run_name, description, outer_run)
        all_tags.update({str(k): str(v) for k, v in (tags or {}).items()})
        experiment = experiment_id or _config.default_experiment_id(self._client)
        created = self._client.create_run(
            experiment, start_time=start_time, tags=all_tags, run_name=run_name
        )
        self._run_id = created.info.run_id
        self._cached = created
        if log_system_metrics:
            self._start_system_metrics()

    def _creation_tags(
        self, run_name: str | None, description: str | None, outer_run: Run | None
    ) -> dict[str, str]:
        outer = outer_run if outer_run is not None else active_run()
        tags = {
            _keys.RUN_TYPE: self._run_type,
            _keys.USER: _user(),
            _keys.SOURCE_NAME: _source_name(),
            _keys.SOURCE_TYPE: "LOCAL",
        }
        if outer is not None:
            tags[_keys.PARENT_RUN_ID] = outer.identifier
        if description:
            tags[_keys.NOTE] = description
        return tags

    # -- loading -------------------------------------------------------------

    @classmethod
    def from_existing_run_id(cls, run_id: str) -> Run:
        """Load a run; a run made by a RunCommand comes back as a ComponentRun.

        Also finds a run imported from another store by its original id.

        Raises:
            RunNotFoundError: when no run has this id.
        """
        client = _config.tracking_client()
        try:
            mlflow_run = _get_mlflow_run(client, run_id)
        except RunNotFoundError:
            imported = _find_imported(client, run_id)
            if imported is None:
                raise
            mlflow_run = imported
        return _wrap(mlflow_run, client)

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
            pcs_only: only runs made by pcs (``Run`` or ``ComponentRun``).
        """
        client = _config.tracking_client()
        clauses = [f"tags.`{_keys.RUN_TYPE}` LIKE '%run'"] if pcs_only else []
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
        from pcs import _render

        _render.print_runs_table(cls.get_all_runs(experiment_ids))

    def refresh(self) -> Run:
        """Re-read the run from the store (after another process changed it)."""
        self._cached = _get_mlflow_run(self._client, self._run_id)
        self._links.clear()
        return self

    def _mlflow_run(self) -> MlflowRun:
        if self._cached is None:
            self._cached = _get_mlflow_run(self._client, self._run_id)
        return self._cached

    def _changed(self) -> None:
        """Forget the cached record after a write; the next read fetches once."""
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
        return self._mlflow_run().info

    @property
    def data(self):  # -> mlflow.entities.RunData
        return self._mlflow_run().data

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

    # -- logging ---------------------------------------------------------------

    def log_param(self, key: str, value: Any) -> None:
        self.log_params({key: value})

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log several params in one call."""
        from mlflow.entities import Param

        self._client.log_batch(
            self._run_id, params=[Param(str(k), str(v)) for k, v in params.items()]
        )
        self._changed()

    def log_metric(
        self, key: str, value: float, step: int | None = None, timestamp: int | None = None
    ) -> None:
        self.log_metrics({key: value}, step=step, timestamp=timestamp)

    def log_metrics(
        self, metrics: Mapping[str, float], step: int | None = None, timestamp: int | None = None
    ) -> None:
        """Log several metrics at one step in one call."""
        from mlflow.entities import Metric

        ts = timestamp if timestamp is not None else _now_ms()
        self._client.log_batch(
            self._run_id,
            metrics=[Metric(str(k), float(v), ts, step or 0) for k, v in metrics.items()],
        )
        self._changed()

    def set_tag(self, key: str, value: Any) -> None:
        self.set_tags({key: value})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set several tags in one call."""
        from mlflow.entities import RunTag

        self._client.log_batch(
            self._run_id, tags=[RunTag(str(k), str(v)) for k, v in tags.items()]
        )
        self._changed()

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

    def _artifacts(self) -> Any:
        """The run's artifact repository, built from the artifact URI already read.

        MlflowClient would fetch the run again to find it on the first upload.
        """
        if self._artifact_repository is None:
            try:
                from mlflow.store.artifact.artifact_repository_registry import (
                    get_artifact_repository,
                )

                self._artifact_repository = get_artifact_repository(
                    self._mlflow_run().info.artifact_uri, tracking_uri=_safe_uri(self._client)
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

    def download_artifacts(self, path: str = "", dst_path: str | Path | None = None) -> Path:
        """Download artifacts to a local folder and return its path.

        When another run is active, that run is recorded as depending on this one.
        """
        self._record_use_by_active_run()
        return self._download_quietly(path, Path(dst_path) if dst_path is not None else None)

    def load_text(self, artifact_file: str) -> str:
        """The text of one artifact (records a dependency link like ``download_artifacts``)."""
        return self.download_artifacts(artifact_file).read_text(encoding="utf-8")

    def load_dict(self, artifact_file: str) -> Any:
        """A JSON or YAML artifact, parsed (records a dependency link)."""
        text = self.load_text(artifact_file)
        if artifact_file.endswith((".yaml", ".yml")):
            import yaml

            return yaml.safe_load(text)
        return json.loads(text)

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

    # -- lifecycle ---------------------------------------------------------------

    def set_terminated(self, status: str = "FINISHED", end_time: int | None = None) -> None:
        self._client.set_terminated(self._run_id, status=status, end_time=end_time)
        self._changed()

    def end(self, status: str = "FINISHED") -> None:
        """End the run with ``status`` (FINISHED, FAILED or KILLED)."""
        if status not in ("FINISHED", "FAILED", "KILLED"):
            raise ArgumentError(
                f"Cannot end run {self._run_id} with status {status!r}; use FINISHED, "
                "FAILED or KILLED."
            )
        self._stop_system_metrics()
        self.set_terminated(status)

    def resume(self) -> Run:
        """Set an ended run back to RUNNING, to append late results; ``end()`` it again."""
        if self.lifecycle_stage == "deleted":
            raise PcsError(
                f"Run {self._run_id} is deleted; restore it with run.restore() before "
                "resuming it."
            )
        self._client.update_run(self._run_id, status="RUNNING")
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
        if self.status != "RUNNING":
            self.resume()
        self._tokens.append(_push(self))
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._tokens:
            _ACTIVE_RUNS.reset(self._tokens.pop())
        if exc_type is None:
            self.end("FINISHED")
        elif issubclass(exc_type, KeyboardInterrupt):
            self.end("KILLED")
        else:
            self.end("FAILED")

    def _start_system_metrics(self) -> None:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        self._system_monitor = SystemMetricsMonitor(
            self._run_id, tracking_uri=self._client._tracking_client.tracking_uri
        )
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
        except json.JSONDecodeError:
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
        if run_id == self._run_id:
            raise ArgumentError(f"Run {run_id} cannot depend on itself.")
        if isinstance(run, str) and not Run.run_exists(run_id):
            raise RunNotFoundError(
                f"Cannot add dependency {run_id}: no such run in {_config.tracking_uri()}."
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

    def rerun(self, *args: Any, **kwargs: Any) -> ComponentRun:
        """Execute the run's RunCommand again (only runs made by a Component have one)."""
        raise NotReproducibleError(
            f"Run {self._run_id} has no RunCommand, so it cannot be rerun: it was created "
            "with Run(), not by running a Component. Use Component.run_with_arg_set(...) "
            "(or 'pcs run') to make reproducible runs."
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
        from pcs import transfer

        return transfer.export_runs([self], registry, recurse, force, include_artifacts)

    @classmethod
    def from_registry(cls, registry: Registry, run_id: str, trust: bool = False) -> Run:
        """The run from the current store, importing it from ``registry`` when missing."""
        from pcs import transfer

        return transfer.import_run(registry, run_id, trust=trust)

    # -- inspection -------------------------------------------------------------------

    def print_status(self, detailed: bool = False) -> None:
        """Print a one-line summary, or (``detailed``) everything pcs knows of the run."""
        from pcs import _render

        _render.print_run_status(self, detailed)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Run) and other.identifier == self.identifier

    def __hash__(self) -> int:
        return hash(self._run_id)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._run_id!r})"


# -- helpers shared with the other run modules ----------------------------------------------


def _wrap(mlflow_run: MlflowRun, client: MlflowClient) -> Run:
    """A Run or ComponentRun around an MLflow run already fetched (no extra call)."""
    if mlflow_run.data.tags.get(_keys.RUN_TYPE) == _keys.RUN_TYPE_COMPONENT:
        from pcs.component_run import ComponentRun

        return ComponentRun(_client=client, _mlflow_run=mlflow_run)
    return Run(_client=client, _mlflow_run=mlflow_run)


def _get_mlflow_run(client: MlflowClient, run_id: str) -> MlflowRun:
    from mlflow.exceptions import MlflowException

    if not isinstance(run_id, str) or not run_id.strip():
        raise RunNotFoundError(f"{run_id!r} is not a run id.")
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


def _find_imported(client: MlflowClient, original_id: str) -> MlflowRun | None:
    if not all(c.isalnum() or c in "-_" for c in original_id):
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
    ids = sorted({i for i in run_ids if i and all(c.isalnum() or c in "-_" for c in i)})
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


def _require_psutil() -> None:
    try:
        import psutil  # noqa: F401
    except ImportError:
        raise ArgumentError(
            "log_system_metrics=True needs the psutil package, which is not "
            "installed. Install it with 'pip install psutil'."
        ) from None


def _now_ms() -> int:
    return int(time.time() * 1000)


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user database in some containers
        return "unknown"


def _source_name() -> str:
    return sys.argv[0] if sys.argv and sys.argv[0] else "<interactive>"


def _safe_uri(client: MlflowClient) -> str:
    try:
        return client._tracking_client.tracking_uri
    except AttributeError:
        return "(unknown)"
