"""Browsing runs and annotating them: what ``pcs runs``, ``logs``, ``code``, ``tag``,
``note``, ``delete`` and ``restore`` call.

A listing is one paged search (no read per run): the rows, the experiments
they come from, and the columns to show (``params.X``, ``metrics.X``,
``tags.X``). Without chosen columns, the params whose values differ among the
listed runs and every metric they logged are shown.

Experiments are named as ``pcs run --experiment NAME`` names them; with no
name, ``MLFLOW_EXPERIMENT_NAME`` / ``MLFLOW_EXPERIMENT_ID`` choose one as MLflow
does, else every active experiment is listed. Browsing never creates an
experiment: an unknown one is an :class:`~pcs.errors.ExperimentNotFoundError`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pcs import _config, _keys
from pcs.errors import ArgumentError, ExperimentNotFoundError, RunNotFoundError
from pcs.run import Run, _wrap, all_experiment_ids, search_mlflow_runs

if TYPE_CHECKING:  # pragma: no cover
    from mlflow import MlflowClient

__all__ = [
    "CodeFile",
    "RunListing",
    "list_runs",
    "resolve_experiments",
    "parse_columns",
    "run_output",
    "run_code",
    "code_text",
    "set_note",
    "tag_run",
    "delete_runs",
    "restore_runs",
]

_PREFIXES = ("params", "metrics", "tags")
_SORT_FIELDS = ("params", "metrics", "tags", "attributes")
_SORT = re.compile(r"^(-)?\s*([A-Za-z_]+)\.(`[^`]+`|\S+?)(?:\s+(ASC|DESC))?$", re.IGNORECASE)
_STREAMS = {"stdout": _keys.STDOUT_ARTIFACT, "stderr": _keys.STDERR_ARTIFACT}


@dataclass
class RunListing:
    """What a listing shows: rows (a sweep folded into one row), columns, experiment names.

    Attributes:
        rows: ``(run, trial counts)`` per row, as ``pcs._render.fold_sweeps`` gives
            them (counts only for sweeps).
        columns: ``params.X`` / ``metrics.X`` / ``tags.X`` to show, in order.
        experiments: experiment names by id, for every listed experiment.
        narrowed: whether an experiment or a filter narrowed the search.
    """

    rows: list[tuple[Run, dict[str, int] | None]]
    columns: list[str]
    experiments: dict[str, str] = field(default_factory=dict)
    narrowed: bool = False

    @property
    def several_experiments(self) -> bool:
        """Whether the rows come from more than one experiment (worth a column)."""
        return len({run.info.experiment_id for run, _ in self.rows}) > 1

    def value(self, run: Run, column: str) -> Any:
        """The value of one column for one run (None when the run has none)."""
        prefix, _, key = column.partition(".")
        data = run.data
        source = {"params": data.params, "metrics": data.metrics, "tags": data.tags}[prefix]
        return source.get(key)


def parse_columns(text: str | None) -> list[str] | None:
    """``params.lr,metrics.val_loss`` as a list; None for no choice.

    Raises:
        ArgumentError: a column without one of the prefixes params., metrics., tags.
    """
    if text is None:
        return None
    columns = [c.strip() for c in text.split(",") if c.strip()]
    for column in columns:
        prefix, dot, key = column.partition(".")
        if not dot or prefix not in _PREFIXES or not key:
            raise ArgumentError(
                f"Cannot show column {column!r}: name it params.NAME, metrics.NAME or tags.NAME, "
                "e.g. --columns params.lr,metrics.val_loss."
            )
    return columns


def resolve_experiments(
    client: MlflowClient, name: str | None = None, experiment_ids: Sequence[str] = ()
) -> list[str] | None:
    """The ids of the experiments to list; None for every active one.

    Args:
        client: the tracking client.
        name: an experiment name (``--experiment``); wins over the environment.
        experiment_ids: ids given explicitly (``--experiment-id``).

    Raises:
        ExperimentNotFoundError: the name or an id is not an active experiment.
    """
    if name is not None:
        return [_by_name(client, name, "--experiment")]
    if experiment_ids:
        return [_by_id(client, i, "--experiment-id") for i in experiment_ids]
    if os.environ.get("MLFLOW_EXPERIMENT_ID"):
        return [_by_id(client, os.environ["MLFLOW_EXPERIMENT_ID"], "MLFLOW_EXPERIMENT_ID")]
    if os.environ.get("MLFLOW_EXPERIMENT_NAME"):
        return [_by_name(client, os.environ["MLFLOW_EXPERIMENT_NAME"], "MLFLOW_EXPERIMENT_NAME")]
    return None


def list_runs(
    experiment: str | None = None,
    filter_string: str = "",
    sort: str | None = None,
    limit: int | None = None,
    columns: Sequence[str] | None = None,
    include_all: bool = False,
    experiment_ids: Sequence[str] = (),
) -> RunListing:
    """The runs of a listing, by paged search, with the columns to show.

    Args:
        experiment: an experiment name (default: the environment's, else all).
        filter_string: an MLflow search filter (``metrics.loss < 0.1``).
        sort: ``metrics.loss``, ``metrics.loss DESC`` or ``-metrics.loss``
            (default: newest first).
        limit: show at most this many rows (a sweep is one row).
        columns: ``params.X`` / ``metrics.X`` / ``tags.X``; default: the params that
            differ among the listed runs, then every metric they logged.
        include_all: also list plain MLflow runs, not only pcs runs.
        experiment_ids: experiment ids, when no name is given.

    Raises:
        ExperimentNotFoundError: an unknown experiment.
        ArgumentError: a bad filter, sort or limit.
    """
    from pcs._render import fold_sweeps

    if limit is not None and limit < 1:
        raise ArgumentError(f"--limit must be at least 1; got {limit}.")
    client = _config.tracking_client()
    ids = resolve_experiments(client, experiment, experiment_ids)
    narrowed = ids is not None or bool(filter_string.strip())
    if ids is None:
        ids = all_experiment_ids(client)
    clauses = [f"tags.`{_keys.RUN_TYPE}` IS NOT NULL"] if not include_all else []
    if filter_string.strip():
        clauses.append(filter_string)  # MLflow's syntax has AND only, so appending is safe
    order_by = [_order_by(sort)] if sort else None
    found = _search(client, " and ".join(clauses), ids, order_by, filter_string, sort)
    runs = [_wrap(r, client) for r in found]
    rows = fold_sweeps(runs)
    if limit is not None:
        rows = rows[:limit]
    chosen = list(columns) if columns is not None else _default_columns(run for run, _ in rows)
    names = _experiment_names(client, {run.info.experiment_id for run, _ in rows})
    return RunListing(rows=rows, columns=chosen, experiments=names, narrowed=narrowed)


def run_output(run_id: str, stream: str = "stdout") -> str:
    """What a run's entry point printed on ``stream`` (``stdout`` or ``stderr``), as recorded.

    Raises:
        RunNotFoundError: no such run, or it recorded no output on that stream.
        ArgumentError: an unknown stream.
    """
    if stream not in _STREAMS:
        raise ArgumentError(f"Unknown stream {stream!r}; pcs records stdout and stderr.")
    run = Run.from_existing_run_id(run_id)
    path = _STREAMS[stream]
    folder, _, name = path.rpartition("/")
    if name not in {a.rsplit("/", 1)[-1] for a in run.artifact_paths(folder)}:
        raise RunNotFoundError(
            f"Run {run.identifier} recorded nothing on {stream}: its code printed nothing there, "
            "or it was not run by pcs (a plain MLflow run, or a pcs Run() block, whose output "
            "pcs does not capture)."
        )
    return run.load_text(path)


@dataclass(frozen=True)
class CodeFile:
    """One file of a run's recorded code.

    Attributes:
        path: its path under the run's ``pcs/code`` artifacts (its path in its repo).
        part: the component it is, or ``component:module`` for a module of its closure.
        sha256: the sha256 of its text, as the run command records it.
    """

    path: str
    part: str
    sha256: str

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "part": self.part, "sha256": self.sha256}


def run_code(run_id: str) -> list[CodeFile]:
    """The files of a run's recorded code (components and their closures), by path.

    Read from the run command, so runs recorded before ``pcs/code`` existed
    (their snapshot is ``pcs/source/<sha256>.py``) list the same paths.

    Raises:
        RunNotFoundError: no such run.
        ArgumentError: the run is not a component or script run (nothing recorded).
    """
    return _code_files(_code_run(run_id))


def _code_files(run: Any) -> list[CodeFile]:
    from pcs.record.code import code_file_paths

    code = run.run_command.code
    paths = code_file_paths(code)
    return sorted((CodeFile(path, key, str(code[key]["sha256"])) for key, path in paths.items()),
                  key=lambda f: f.path)


def code_text(run_id: str, path: str) -> str:
    """The recorded text of one file of a run's code (``path`` as :func:`run_code` lists it).

    Raises:
        ArgumentError: the run recorded no file at ``path`` (the message lists those it did).
        NotReproducibleError: the run names the file but its text was not recorded.
    """
    from pcs.errors import NotReproducibleError

    run = _code_run(run_id)
    files = _code_files(run)
    wanted = path.strip()
    if wanted.startswith("./"):
        wanted = wanted[2:]
    found = next((f for f in files if f.path == wanted), None)
    if found is None:
        known = ", ".join(f.path for f in files[:20]) or "none"
        raise ArgumentError(
            f"Run {run.identifier} recorded no file {path[:200]!r}. Its files: {known}. "
            f"List them with: pcs code {run.identifier}"
        )
    text = run.recorded_sources().get(found.sha256)
    if text is None:
        raise NotReproducibleError(
            f"Run {run.identifier} names {found.path} (sha256 {found.sha256[:12]}) but holds no copy of "
            "its text: the snapshot was not recorded, or the run's artifacts were left out when "
            "it was exported."
        )
    return text


def _code_run(run_id: str) -> Any:
    from pcs.component_run import ComponentRun

    run = Run.from_existing_run_id(run_id)
    if not isinstance(run, ComponentRun) or type(run) is not ComponentRun:
        kind = (
            "a sweep: its code is its trials' (pcs status ID lists them)"
            if run.tags.get(_keys.RUN_TYPE) == _keys.RUN_TYPE_SWEEP
            else "not a script or component run, so pcs recorded no code"
        )
        raise ArgumentError(f"Run {run.identifier} is {kind}.")
    return run


def set_note(run_id: str, text: str) -> Run:
    """Set the run's description (MLflow's ``mlflow.note.content``, shown in its UI)."""
    run = Run.from_existing_run_id(run_id)
    run.set_tag(_keys.NOTE, text)
    return run


def tag_run(run_id: str, tags: dict[str, str]) -> Run:
    """Set tags on a run; a tag pcs itself writes (``pcs.*``) is refused.

    Raises:
        ArgumentError: no tags, or a ``pcs.`` tag, whose meaning pcs relies on.
    """
    if not tags:
        raise ArgumentError("Give at least one tag as KEY=VALUE.")
    reserved = sorted(k for k in tags if k.startswith("pcs."))
    if reserved:
        raise ArgumentError(
            f"Tag {reserved[0]!r} is pcs's own: pcs reads it to rerun and verify the run, so it "
            "cannot be set by hand. Choose a key without the 'pcs.' prefix."
        )
    run = Run.from_existing_run_id(run_id)
    run.set_tags(tags)
    return run


def delete_runs(run_ids: Iterable[str]) -> list[Run]:
    """Mark runs deleted (MLflow's soft delete; ``restore_runs`` undoes it).

    Every id is resolved before anything is deleted, so a typo deletes nothing.
    """
    runs = [Run.from_existing_run_id(r) for r in run_ids]
    for run in runs:
        if run.lifecycle_stage != "deleted":
            run.delete()
    return runs


def restore_runs(run_ids: Iterable[str]) -> list[Run]:
    """Restore deleted runs. Every id is resolved before anything is restored."""
    runs = [Run.from_existing_run_id(r) for r in run_ids]
    for run in runs:
        if run.lifecycle_stage == "deleted":
            run.restore()
    return runs


# -- helpers ------------------------------------------------------------------------------


def _by_name(client: MlflowClient, name: str, where: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is None or experiment.lifecycle_stage != "active":
        state = "is deleted" if experiment is not None else "does not exist"
        raise ExperimentNotFoundError(
            f"Experiment {name!r} (from {where}) {state} in the tracking store "
            f"{_uri(client)}. Known experiments: {_known(client)}. Check the name, or the store "
            "(MLFLOW_TRACKING_URI / --tracking-uri)."
        )
    return str(experiment.experiment_id)


def _by_id(client: MlflowClient, experiment_id: str, where: str) -> str:
    try:
        experiment = client.get_experiment(experiment_id)
    except Exception:  # noqa: BLE001 - MLflow raises its own error for an unknown id
        experiment = None
    if experiment is None or experiment.lifecycle_stage != "active":
        raise ExperimentNotFoundError(
            f"Experiment id {experiment_id!r} (from {where}) is not an active experiment in the "
            f"tracking store {_uri(client)}. Known experiments: {_known(client)}."
        )
    return str(experiment.experiment_id)


def _known(client: MlflowClient) -> str:
    page = client.search_experiments(max_results=11)
    names = [f"{e.name} (id {e.experiment_id})" for e in page[:10]]
    return ", ".join(names) + (", ..." if len(page) > 10 else "") if names else "none"


def _uri(client: MlflowClient) -> str:
    from pcs._redact import redact_url

    try:
        return redact_url(client._tracking_client.tracking_uri)
    except AttributeError:
        return "(unknown)"


def _order_by(sort: str) -> str:
    match = _SORT.match(sort.strip())
    if not match or match.group(2).lower() not in _SORT_FIELDS:
        raise ArgumentError(
            f"Cannot sort by {sort!r}: write FIELD[ ASC|DESC] or -FIELD (descending), where FIELD "
            "is metrics.NAME, params.NAME, tags.NAME or attributes.start_time, e.g. "
            "--sort 'metrics.val_loss' or --sort -metrics.accuracy."
        )
    minus, prefix, key, direction = match.groups()
    key = key if key.startswith("`") else f"`{key}`"
    if prefix.lower() == "attributes":
        key = key.strip("`")
    direction = "DESC" if minus else (direction or "ASC").upper()
    return f"{prefix.lower()}.{key} {direction}"


def _search(client: MlflowClient, clause: str, ids: list[str], order_by: list[str] | None,
            filter_string: str, sort: str | None) -> list:
    from mlflow.exceptions import MlflowException

    try:
        return search_mlflow_runs(client, clause, experiment_ids=ids, order_by=order_by)
    except MlflowException as exc:
        if getattr(exc, "error_code", "") != "INVALID_PARAMETER_VALUE":
            raise
        what = f"--filter {filter_string!r}" if filter_string else f"--sort {sort!r}"
        message = " ".join(str(exc.message).split())[:300]
        raise ArgumentError(
            f"MLflow cannot search with {what}: {message} Write it in MLflow's search syntax, "
            "e.g. \"metrics.val_loss < 0.1 and params.lr = '0.01'\"."
        ) from None


def _default_columns(runs: Iterable[Run]) -> list[str]:
    """The params whose values differ among ``runs``, then every metric they logged.

    pcs's own params (``pcs.seed``, ``pcs.argv``) are left out: a seed drawn per run
    differs every time and a script's argv repeats its parsed params, so they would
    be columns in every listing (``--columns params.pcs.seed`` still shows them).
    """
    listed = list(runs)
    values: dict[str, set[str | None]] = {}
    metrics: set[str] = set()
    for run in listed:
        data = run.data
        for key in data.params:
            if not key.startswith("pcs."):
                values.setdefault(key, set())
        metrics.update(data.metrics)
    for run in listed:
        params = run.data.params
        for key, seen in values.items():
            seen.add(params.get(key))
    differing = sorted(k for k, seen in values.items() if len(seen) > 1)
    return [f"params.{k}" for k in differing] + [f"metrics.{k}" for k in sorted(metrics)]


def _experiment_names(client: MlflowClient, ids: set[str]) -> dict[str, str]:
    names: dict[str, str] = {}
    for experiment_id in sorted(ids):
        try:
            names[experiment_id] = client.get_experiment(experiment_id).name
        except Exception:  # noqa: BLE001 - a name is only a label here
            names[experiment_id] = experiment_id
    return names
