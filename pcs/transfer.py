"""Moving runs between tracking stores: export to a registry/bundle, import from one.

Export writes each run's info, params, full metric histories (values, steps,
timestamps), tags, the ids of its inner runs, its run command with components
and repos, and (on request) its artifacts with their sha256; linked runs
(dependencies, inner and outer runs, the run a rerun reproduces) come along so
links survive.

Import validates the whole set first (specs well formed, names MLflow accepts,
artifacts present with the recorded sha256, no path leaving its folder) and
only then writes; if a write fails midway, the runs it created are removed
again. An imported run carries ``pcs.imported_from`` so its original id keeps
resolving, and a second import of the same run returns the first one. Link
tags (outer run, dependencies, rerun-of) are rewritten to the ids of the
imported runs.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from pcs import _config, _keys
from pcs._features import provides
from pcs.errors import (
    BundleError,
    FormatVersionError,
    PcsError,
    RegistryConflictError,
    RegistryError,
    RunNotFoundError,
)
from pcs.registry import InMemoryRegistry, Registry
from pcs.specs import check_format_version

if TYPE_CHECKING:  # pragma: no cover
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    from pcs.run import Run

__all__ = [
    "export_runs",
    "export_runs_by_id",
    "export_bundle",
    "import_run",
    "import_bundle",
    "metric_history",
    "list_artifact_paths",
    "run_spec",
    "ExportResult",
]

_RUN_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_BATCH_METRICS = 1000
_BATCH_PARAMS = 100
_BATCH_TAGS = 100
# tags holding one run id each; pcs.depends_on holds a JSON list of them
_LINK_TAGS = (_keys.PARENT_RUN_ID, _keys.RERUN_OF)
_STATUSES = ("RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED")
_CHUNK = 1 << 20


@dataclass
class ExportResult:
    """Where a bundle was written and which runs it holds."""

    path: Path
    run_ids: list[str]


# -- reading a run's full record -----------------------------------------------------------


def metric_history(run: Run, key: str) -> list[Metric]:
    """Every logged value of a metric, in logging order (step, then timestamp)."""
    return run.metric_history(key)


def list_artifact_paths(run: Run, path: str | None = None) -> list[str]:
    """Every artifact file of a run (recursive), as paths relative to the artifact root."""
    return run.artifact_paths(path)


class _Bar:
    """A transient rich progress bar with one task."""

    def __init__(self, total: int, description: str) -> None:
        self.total = total
        self.description = description

    def __enter__(self) -> _Bar:
        from rich.progress import Progress

        self.progress = Progress(transient=True)
        self.progress.__enter__()
        self.task = self.progress.add_task(self.description, total=self.total)
        return self

    def advance(self) -> None:
        self.progress.advance(self.task)

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)


def _progress(enabled: bool, total: int, description: str) -> Any:
    if not enabled or total < 2:
        return nullcontext(None)
    return _Bar(total, description)


def _linked_ids(run: Run) -> list[str]:
    """Ids of the runs ``run`` points at: dependencies, outer run, the run it reruns."""
    ids = list(run.dependency_ids)
    for key in _LINK_TAGS:
        if run.tags.get(key):
            ids.append(run.tags[key])
    return ids


def _collect(runs: Iterable[Run], recurse: bool) -> tuple[list[Run], dict[str, list[str]]]:
    """The runs to export (with ``recurse``, every run linked to them) and their inner runs.

    Walks the links level by level: one search for each run's inner runs, and one
    search for all the runs a level links to (not one fetch per linked run).
    """
    from pcs.run import _wrap, all_experiment_ids, runs_by_ids, search_mlflow_runs

    found: dict[str, Run] = {}
    inner: dict[str, list[str]] = {}
    frontier = list(runs)
    if not frontier:
        return [], {}
    client = frontier[0].client
    experiment_ids = all_experiment_ids(client)
    while frontier:
        linked: list[str] = []
        next_frontier: list[Run] = []
        for run in frontier:
            if run.identifier in found:
                continue
            found[run.identifier] = run
            inner_runs = [
                _wrap(r, client)
                for r in search_mlflow_runs(
                    client,
                    f"tags.`{_keys.PARENT_RUN_ID}` = '{run.identifier}'",
                    experiment_ids,
                    order_by=["attributes.start_time ASC"],
                )
            ]
            inner[run.identifier] = [r.identifier for r in inner_runs]
            if recurse:
                next_frontier.extend(r for r in inner_runs if r.identifier not in found)
                linked.extend(i for i in _linked_ids(run) if i not in found)
        if linked:
            # links to runs this store no longer has are left out
            next_frontier.extend(runs_by_ids(client, linked, experiment_ids).values())
        frontier = next_frontier
    return list(found.values()), inner


def run_spec(
    run: Run,
    inner_run_ids: list[str] | None = None,
    experiment_names: dict[str, str | None] | None = None,
) -> dict[str, Any]:
    """The serializable record of one run (without artifacts).

    Args:
        run: the run.
        inner_run_ids: its inner runs' ids, when already known (else searched).
        experiment_names: a cache of experiment names by id, filled as needed.
    """
    info = run.info
    metrics = {
        key: [[_encode_value(m.value), m.step, m.timestamp] for m in metric_history(run, key)]
        for key in sorted(run.data.metrics)
    }
    names = experiment_names if experiment_names is not None else {}
    if info.experiment_id not in names:
        experiment = run.client.get_experiment(info.experiment_id)
        names[info.experiment_id] = experiment.name if experiment else None
    if inner_run_ids is None:
        inner_run_ids = [r.identifier for r in run.inner_runs]
    return {
        "identifier": run.identifier,
        "pcs_format": _keys.FORMAT_VERSION,
        "experiment_name": names[info.experiment_id],
        "run_name": info.run_name,
        "status": info.status,
        "start_time": info.start_time,
        "end_time": info.end_time,
        "lifecycle_stage": info.lifecycle_stage,
        "params": dict(sorted(run.data.params.items())),
        "tags": dict(sorted(run.data.tags.items())),
        "metrics": metrics,
        "inner_runs": sorted(inner_run_ids),
        "run_command": run.tags.get(_keys.RUN_COMMAND_ID),
    }


# NaN and infinities are written as strings: strict JSON (the registry server) has no
# numbers for them
_NON_FINITE = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


def _encode_value(value: float) -> float | str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def _decode_value(value: float | str) -> float:
    return _NON_FINITE[value] if isinstance(value, str) else float(value)


# -- export -----------------------------------------------------------------------------------


@provides("export_runs")
def export_runs(
    runs: Iterable[Run],
    registry: Registry | None = None,
    recurse: bool = True,
    force: bool = False,
    include_artifacts: bool = False,
    progress: bool = False,
    artifacts_root: Path | None = None,
) -> Registry:
    """Add runs (and, with ``recurse``, every run they link to) to a registry.

    Args:
        runs: the runs to export.
        registry: where to add them (default: a new ``InMemoryRegistry``).
        recurse: also add dependency, outer, inner and rerun-of runs, recursively.
        force: overwrite different specs already in the registry.
        include_artifacts: also carry every run's artifacts, listed with their sha256.
        progress: show a progress bar.
        artifacts_root: where to download artifacts (default: a folder under
            ``$PCS_HOME/exports`` that the in-memory registry keeps pointing at).

    Returns:
        The registry.
    """

    registry = registry if registry is not None else InMemoryRegistry()
    _export(runs, registry, recurse, force, include_artifacts, progress, artifacts_root)
    return registry


def _export(
    runs: Iterable[Run],
    registry: Registry,
    recurse: bool,
    force: bool,
    include_artifacts: bool,
    progress: bool,
    artifacts_root: Path | None,
) -> list[str]:
    """Export runs into ``registry``; return the ids of every run exported."""
    from pcs.component_run import ComponentRun

    selected, inner = _collect(runs, recurse)
    names: dict[str, str | None] = {}
    # an in-memory registry keeps a reference to the downloaded folder; any
    # other registry copies it (uploads it), so a temporary folder will do
    if include_artifacts and artifacts_root is None and isinstance(registry, InMemoryRegistry):
        exports = _config.cache_dir("exports")
        artifacts_root = Path(tempfile.mkdtemp(prefix="artifacts-", dir=exports))
    with _progress(progress, len(selected), "exporting runs") as bar:
        for run in selected:
            spec = run_spec(run, inner[run.identifier], names)
            if isinstance(run, ComponentRun) and spec["run_command"]:
                run.run_command.to_registry(registry, force=force)
            if include_artifacts:
                with (
                    nullcontext(str(artifacts_root)) if artifacts_root is not None
                    else tempfile.TemporaryDirectory(prefix="pcs-export-")
                ) as root:
                    folder = _download_all(run, Path(root))
                    spec["artifacts"] = _hash_tree(folder)
                    _refuse_conflict(registry, spec, force)  # before replacing its artifacts
                    registry.add_run_artifacts(run.identifier, folder)
            # the spec goes last: a reader who sees it finds its artifacts too
            registry.add_run_spec(spec, force=force)
            if bar is not None:
                bar.advance()
    return [run.identifier for run in selected]


def _refuse_conflict(registry: Registry, spec: dict[str, Any], force: bool) -> None:
    if force or not registry.has_run(spec["identifier"]):
        return
    if registry.get_run_spec(spec["identifier"]) != spec:
        raise RegistryConflictError(
            f"The registry already holds run {spec['identifier']} in another form (it changed "
            "since it was exported: new metrics, a new status or new links). Pass force=True "
            "(CLI: --force) to replace it."
        )


def export_runs_by_id(
    run_ids: list[str],
    registry: Registry,
    include_artifacts: bool = True,
    recurse: bool = True,
    progress: bool = False,
    force: bool = False,
) -> list[str]:
    """Export runs given by id (original ids of imported runs work too).

    Returns:
        The ids of every run exported: the given ones and, with ``recurse``, linked ones.
    """
    from pcs.run import Run

    runs = [Run.from_existing_run_id(i) for i in run_ids]
    return _export(runs, registry, recurse, force, include_artifacts, progress, None)


def export_bundle(
    run_ids: list[str],
    output: Path,
    include_artifacts: bool = True,
    recurse: bool = True,
    progress: bool = False,
) -> ExportResult:
    """Write runs into a bundle: a folder (``registry.yaml`` + ``artifacts/``) or a ``.tar.gz``."""
    from pcs.run import Run

    output = Path(output)
    runs = [Run.from_existing_run_id(i) for i in run_ids]
    archive = output.name.endswith((".tar.gz", ".tgz"))
    if not archive and output.exists():
        if not output.is_dir() or (
            not (output / "registry.yaml").exists() and any(output.iterdir())
        ):
            raise BundleError(
                f"{output} exists and is not an empty folder or a pcs bundle; choose "
                "another output path."
            )
    output.parent.mkdir(parents=True, exist_ok=True)
    # staged next to the output, so the folder is swapped in by rename, never half copied
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        folder = staging / "bundle"
        registry = InMemoryRegistry(base_dir=folder)
        exported = _export(
            runs, registry, recurse, False, include_artifacts, progress, folder / "artifacts"
        )
        registry.write_bundle(folder)
        if archive:
            from pcs._archive import write_tar_gz

            tmp = output.with_name(f".{output.name}.tmp")
            try:
                with open(tmp, "wb") as fh:
                    write_tar_gz(folder, fh)
                tmp.replace(output)
            finally:
                tmp.unlink(missing_ok=True)
        else:
            old = staging / "previous"
            if output.exists():
                output.replace(old)
            folder.replace(output)
        return ExportResult(output, exported)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _download_all(run: Run, root: Path) -> Path:
    target = Path(root) / run.identifier
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    if list_artifact_paths(run):
        run._download_quietly("", target)
    return target


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _hash_tree(folder: Path) -> dict[str, str]:
    return {
        PurePosixPath(path.relative_to(folder)).as_posix(): _sha256_file(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


# -- import -----------------------------------------------------------------------------------


def import_bundle(bundle: Path, trust: bool = False, progress: bool = False) -> dict[str, str]:
    """Import every run of a bundle (folder, ``.tar.gz`` or its ``registry.yaml``).

    Returns:
        ``{original id: id in the current store}`` for every run of the bundle.

    Raises:
        BundleError: the bundle is malformed, truncated or unsafe; nothing was written.
        FormatVersionError: the bundle was written by a newer pcs.
    """
    bundle = Path(bundle)
    if bundle.is_file() and bundle.name.endswith((".yaml", ".yml")):
        return _import_all(_load_bundle_registry(bundle), trust, progress)
    if bundle.is_file():
        from pcs._archive import safe_extract_tar

        staging = Path(tempfile.mkdtemp(prefix="pcs-import-"))
        try:
            safe_extract_tar(bundle, staging / "bundle", max_size=_unpacked_limit(bundle))
            folder = _bundle_root(staging / "bundle")
            return _import_all(_load_bundle_registry(folder / "registry.yaml"), trust, progress)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    if not (bundle / "registry.yaml").is_file():
        raise BundleError(
            f"{bundle} is not a pcs bundle: it has no registry.yaml. Pass a folder or .tar.gz "
            "written by 'pcs export'."
        )
    return _import_all(_load_bundle_registry(bundle / "registry.yaml"), trust, progress)


def _load_bundle_registry(path: Path) -> InMemoryRegistry:
    try:
        return InMemoryRegistry.from_yaml(path)
    except (BundleError, FormatVersionError):
        raise
    except RegistryError as exc:
        raise BundleError(f"The bundle's {path.name} cannot be read: {exc}") from None


# Real bundles (YAML, source, model files) unpack to a few times their size; an
# archive that unpacks to hundreds of times its size is a decompression bomb.
_MAX_EXPANSION = 200
_MIN_UNPACKED_LIMIT = 256 * 1024**2


def _unpacked_limit(archive: Path) -> int:
    return max(_MIN_UNPACKED_LIMIT, archive.stat().st_size * _MAX_EXPANSION)


def _bundle_root(folder: Path) -> Path:
    if (folder / "registry.yaml").is_file():
        return folder
    children = [p for p in folder.iterdir() if p.is_dir()]
    if len(children) == 1 and (children[0] / "registry.yaml").is_file():
        return children[0]
    raise BundleError("The archive holds no registry.yaml; it is not a pcs bundle.")


def _import_all(registry: Registry, trust: bool, progress: bool) -> dict[str, str]:
    ids = registry.identifiers("runs")
    if not ids:
        raise BundleError("The bundle holds no runs; export runs with 'pcs export RUN_ID -o ...'.")
    imported = _import_many(registry, ids, trust, progress)
    return {original: run.identifier for original, run in imported.items()}


@provides("import_run")
def import_run(registry: Registry, run_id: str, trust: bool = False) -> Run:
    """The run ``run_id`` from the current store, importing it (and linked runs) if missing.

    Args:
        registry: where to find the run when the store does not hold it.
        run_id: the run's id (in the store, or its original id in the registry).
        trust: allow unpickling its pickled return value.

    Raises:
        RunNotFoundError: neither the store nor the registry holds the run.
        BundleError: the registry's record of it is malformed, truncated or unsafe.
    """
    return _import_many(registry, [run_id], trust, False)[run_id]


def _existing(run_id: str) -> Run | None:
    from pcs.run import Run

    try:
        return Run.from_existing_run_id(run_id)
    except RunNotFoundError:
        return None


@dataclass
class _Planned:
    """A validated run spec, the registry it came from, and its verified artifacts' folder."""

    spec: dict[str, Any]
    registry: Registry
    artifacts: Path | None


def _import_many(registry: Registry, run_ids: list[str], trust: bool, progress: bool) -> dict[str, Run]:
    from pcs.component_run import ComponentRun

    resolved, planned = _plan(registry, run_ids)
    # everything is validated; now write, all or nothing
    order = _write_order(planned)
    client = _config.tracking_client()
    created: list[str] = []
    try:
        with _progress(progress, len(order), "importing runs") as bar:
            for original in order:
                run = _write_run(client, planned[original], resolved, created)
                resolved[original] = run
                if bar is not None:
                    bar.advance()
        _fix_links(client, planned, resolved)
    except BaseException:
        for run_id in reversed(created):
            _discard(client, run_id)
        raise
    for run in resolved.values():
        if isinstance(run, ComponentRun):
            run._trusted = trust
    return {rid: resolved[rid] for rid in run_ids}


def _plan(registry: Registry, run_ids: list[str]) -> tuple[dict[str, Run], dict[str, _Planned]]:
    """Which runs the store already holds, and the validated specs of the ones to import.

    Follows the links of each run to import (outer run, rerun-of, dependencies,
    inner runs) to runs the registry holds.
    """
    resolved: dict[str, Run] = {}
    planned: dict[str, _Planned] = {}
    requested = set(run_ids)
    todo = list(reversed(run_ids))
    while todo:
        run_id = todo.pop()
        if run_id in resolved or run_id in planned:
            continue
        existing = _existing(run_id)
        if existing is not None:
            resolved[run_id] = existing
            continue
        if not isinstance(run_id, str) or not _RUN_ID_RE.fullmatch(run_id):
            if run_id in requested:
                raise BundleError(
                    f"{run_id!r} is not a valid run id (1-64 letters, digits, '_' or '-')."
                )
            continue  # a link tag holding something else: it stays as it is
        if not registry.has_run(run_id):
            if run_id in requested:
                raise RunNotFoundError(
                    f"Run {run_id} is neither in the tracking store {_config.tracking_uri()} "
                    "nor in the registry. Check the id, or export the run again with its "
                    "linked runs."
                )
            continue  # a link to a run that was not exported: it keeps the original id
        plan = _validated(registry, run_id)
        origin = plan.spec["tags"].get(_keys.IMPORTED_FROM)
        if origin and origin != run_id:
            # a copy of a run this store holds (exported back after an import)
            home = _existing(origin)
            if home is not None:
                resolved[run_id] = home
                continue
        planned[run_id] = plan
        todo.extend(reversed(_upward_links(plan.spec["tags"]) + plan.spec["inner_runs"]))
    return resolved, planned


def _upward_links(tags: Mapping[str, str]) -> list[str]:
    """The runs a run points at, which should exist before it: outer, rerun-of, dependencies."""
    return [tags[k] for k in _LINK_TAGS if tags.get(k)] + _depends(tags)


def _depends(tags: Mapping[str, str]) -> list[str]:
    try:
        ids = json.loads(tags.get(_keys.DEPENDS_ON) or "[]")
    except json.JSONDecodeError:
        return []
    return [str(i) for i in ids] if isinstance(ids, list) else []


def _write_order(planned: Mapping[str, _Planned]) -> list[str]:
    """Runs ordered so that a run's outer run, original and dependencies come first.

    A cycle (an outer run that depends on its own inner run) is broken
    anywhere; ``_fix_links`` rewrites the links that pointed forward.
    """
    order: list[str] = []
    state: dict[str, bool] = {}  # False: being visited, True: placed
    for root in planned:
        if root in state:
            continue
        state[root] = False
        stack = [(root, iter(_upward_links(planned[root].spec["tags"])))]
        while stack:
            node, links = stack[-1]
            for linked in links:
                if linked in planned and linked not in state:
                    state[linked] = False
                    stack.append((linked, iter(_upward_links(planned[linked].spec["tags"]))))
                    break
            else:
                stack.pop()
                state[node] = True
                order.append(node)
    return order


# -- validation -------------------------------------------------------------------------------


def _validated(registry: Registry, run_id: str) -> _Planned:
    """The run's spec, checked so that writing it cannot fail on its content."""
    where = f"Run {run_id} in the registry"
    spec = registry.get_run_spec(run_id)
    check_format_version(spec, where)
    for key in ("params", "tags", "metrics"):
        value = spec.setdefault(key, {})
        if not isinstance(value, dict):
            raise BundleError(
                f"{where} has '{key}' of type {type(value).__name__}; expected a mapping."
            )
    for key in ("params", "tags"):
        for name, value in spec[key].items():
            if not isinstance(name, str) or not isinstance(value, (str, int, float, bool)):
                raise BundleError(
                    f"{where} has {key[:-1]} {name!r} = {value!r}; {key} map names to strings."
                )
        spec[key] = {name: str(value) for name, value in spec[key].items()}
    for name, history in spec["metrics"].items():
        if not isinstance(name, str) or not isinstance(history, list) or not all(
            isinstance(p, list) and len(p) == 3 and _is_value(p[0])
            and _is_int(p[1]) and _is_int(p[2]) and p[2] >= 0
            for p in history
        ):
            raise BundleError(
                f"{where} has a malformed history for metric {name!r}; expected a list of "
                "[value, step, timestamp] with a number (or NaN, Infinity, -Infinity), an "
                "integer step and a non-negative integer timestamp (milliseconds)."
            )
    inner = spec.setdefault("inner_runs", [])
    if not isinstance(inner, list) or not all(isinstance(i, str) for i in inner):
        raise BundleError(f"{where} has a malformed 'inner_runs'; expected a list of run ids.")
    for key in ("start_time", "end_time"):
        if spec.get(key) is not None and not (_is_int(spec[key]) and spec[key] >= 0):
            raise BundleError(f"{where} has {key} {spec[key]!r}; expected milliseconds since 1970.")
    if spec.get("status", "FINISHED") not in _STATUSES:
        raise BundleError(
            f"{where} has status {spec.get('status')!r}; MLflow knows {', '.join(_STATUSES)}."
        )
    if spec.get("lifecycle_stage", "active") not in ("active", "deleted"):
        raise BundleError(f"{where} has lifecycle_stage {spec.get('lifecycle_stage')!r}.")
    for key in ("run_name", "run_command", "experiment_name"):
        if spec.get(key) is not None and not isinstance(spec[key], str):
            raise BundleError(f"{where} has a non-string {key} ({spec[key]!r}).")
    _check_mlflow_limits(spec, where)
    command_id = spec.get("run_command")
    if command_id:
        tagged = spec["tags"].get(_keys.RUN_COMMAND_ID)
        if tagged and tagged != command_id:
            raise BundleError(
                f"{where} names run command {command_id} but is tagged with {tagged}; the "
                "record was edited or damaged."
            )
        _check_run_command(registry, command_id, where)
    artifacts = spec.get("artifacts")
    if artifacts is None:
        return _Planned(spec, registry, None)
    if not isinstance(artifacts, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in artifacts.items()
    ):
        raise BundleError(f"{where} has a malformed artifact list; expected path: sha256.")
    if not artifacts:
        return _Planned(spec, registry, None)  # a run without artifacts needs no folder
    folder = registry.run_artifacts_dir(run_id)
    if folder is None:
        raise BundleError(
            f"{where} lists {len(artifacts)} artifact(s) but the bundle has no artifacts "
            f"folder for it (artifacts/{run_id}/). The bundle is incomplete; export it again."
        )
    for rel, digest in artifacts.items():
        path = _safe_join(folder, rel, where)
        if not path.is_file():
            raise BundleError(
                f"{where}: artifact {rel} is missing from the bundle; it is truncated. "
                "Export it again."
            )
        if _sha256_file(path) != digest:
            raise BundleError(
                f"{where}: artifact {rel} does not match its recorded sha256; the bundle is "
                "damaged. Export it again."
            )
    if command_id and _keys.RUN_COMMAND_ARTIFACT in artifacts:
        _check_run_command_artifact(folder / _keys.RUN_COMMAND_ARTIFACT, command_id, where)
    return _Planned(spec, registry, folder)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_value(value: Any) -> bool:
    """A metric value as a spec holds it: a number, or NaN/Infinity/-Infinity as a string."""
    if isinstance(value, str):
        return value in _NON_FINITE
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_mlflow_limits(spec: Mapping[str, Any], where: str) -> None:
    """Refuse names and values MLflow would refuse, before anything is written."""
    try:
        from mlflow.exceptions import MlflowException
        from mlflow.utils.validation import _validate_metric, _validate_param, _validate_tag
    except ImportError:  # pragma: no cover - private helpers; the write still checks them
        return
    try:
        for key, value in spec["params"].items():
            _validate_param(key, value)
        for key, value in spec["tags"].items():
            _validate_tag(key, value)
        for key, history in spec["metrics"].items():
            for value, step, timestamp in history[:1]:
                _validate_metric(key, _decode_value(value), timestamp, step)
    except MlflowException as exc:
        raise BundleError(f"{where} holds something MLflow refuses: {exc.message}") from None


def _check_run_command(registry: Registry, command_id: str, where: str) -> None:
    from pcs.run_command import RunCommand

    try:
        RunCommand.from_registry(registry, command_id)
    except FormatVersionError:
        raise
    except PcsError as exc:
        raise BundleError(
            f"{where} refers to run command {command_id}, which cannot be loaded: {exc}"
        ) from None


def _check_run_command_artifact(path: Path, command_id: str, where: str) -> None:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        _check_run_command(InMemoryRegistry(data), command_id, f"{where} ({_keys.RUN_COMMAND_ARTIFACT})")
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise BundleError(f"{where}: {_keys.RUN_COMMAND_ARTIFACT} is not YAML ({exc}).") from None
    except (BundleError, FormatVersionError):
        raise
    except RegistryError as exc:
        raise BundleError(f"{where}: {_keys.RUN_COMMAND_ARTIFACT} is damaged: {exc}") from None


def _safe_join(folder: Path, rel: str, where: str) -> Path:
    """``folder/rel``, refusing paths (or symlinks) that lead out of ``folder``."""
    pure = PurePosixPath(rel)
    if (
        not rel
        or pure.is_absolute()
        or ".." in pure.parts
        or "\\" in rel
        or "\x00" in rel
        or re.match(r"^[A-Za-z]:", rel)
    ):
        raise BundleError(f"{where}: artifact path {rel!r} leaves its folder; refusing the bundle.")
    path = folder.joinpath(*pure.parts)
    root = folder.resolve()
    try:
        path.resolve().relative_to(root)
    except ValueError:
        raise BundleError(
            f"{where}: artifact {rel!r} is a link that leads out of its folder; refusing the "
            "bundle."
        ) from None
    return path


# -- writing ----------------------------------------------------------------------------------


def _chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _link_tags(tags: Mapping[str, str], resolved: Mapping[str, Run]) -> dict[str, str]:
    """The run's link tags, pointing at the imported runs where they exist."""
    out: dict[str, str] = {}
    for key in _LINK_TAGS:
        if tags.get(key):
            out[key] = resolved[tags[key]].identifier if tags[key] in resolved else tags[key]
    deps = _depends(tags)
    if deps:
        out[_keys.DEPENDS_ON] = json.dumps(
            [resolved[d].identifier if d in resolved else d for d in deps]
        )
    return out


def _write_run(
    client: MlflowClient, plan: _Planned, resolved: Mapping[str, Run], created: list[str]
) -> Run:
    from mlflow.entities import Metric, Param, RunTag

    from pcs.run import _wrap

    spec = plan.spec
    original = spec["identifier"]
    tags = dict(spec["tags"])
    tags.update(_link_tags(tags, resolved))
    tags[_keys.ORIGIN_RUN_ID] = (
        tags.get(_keys.ORIGIN_RUN_ID) or tags.get(_keys.IMPORTED_FROM) or original
    )
    tags[_keys.IMPORTED_FROM] = original
    tags.pop(_keys.RUN_NAME, None)  # create_run sets it from run_name
    items = list(tags.items())
    # the experiment the user chose, else the one the run was in (by name), else the default
    name = spec.get("experiment_name")
    experiment_id = (
        _config.experiment_by_name(client, name)
        if isinstance(name, str) and name and not _config.experiment_chosen()
        else _config.default_experiment_id(client)
    )
    made = client.create_run(
        experiment_id,
        start_time=spec.get("start_time"),
        tags=dict(items[:_BATCH_TAGS]),
        run_name=spec.get("run_name"),
    )
    run_id = made.info.run_id
    created.append(run_id)
    for chunk in _chunks([RunTag(k, v) for k, v in items[_BATCH_TAGS:]], _BATCH_TAGS):
        client.log_batch(run_id, tags=chunk)
    for chunk in _chunks([Param(k, v) for k, v in spec["params"].items()], _BATCH_PARAMS):
        client.log_batch(run_id, params=chunk)
    metrics = [
        Metric(key, _decode_value(value), int(timestamp), int(step))
        for key, history in spec["metrics"].items()
        for value, step, timestamp in history
    ]
    for chunk in _chunks(metrics, _BATCH_METRICS):
        client.log_batch(run_id, metrics=chunk)
    _write_artifacts(client, run_id, plan)
    status = spec.get("status", "FINISHED")
    if status not in ("RUNNING", "SCHEDULED"):
        client.set_terminated(run_id, status=status, end_time=spec.get("end_time"))
    elif status == "SCHEDULED":
        client.update_run(run_id, status="SCHEDULED")
    if spec.get("lifecycle_stage") == "deleted":
        client.delete_run(run_id)
    return _wrap(client.get_run(run_id), client)


def _write_artifacts(client: MlflowClient, run_id: str, plan: _Planned) -> None:
    spec = plan.spec
    with tempfile.TemporaryDirectory(prefix="pcs-import-") as tmp:
        staging = Path(tmp)
        if plan.artifacts is not None:
            for rel, digest in spec["artifacts"].items():
                parts = PurePosixPath(rel).parts
                target = staging.joinpath(*parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(plan.artifacts.joinpath(*parts), target)
                # checked again on the copy that is uploaded: the bundle may have
                # changed since it was validated
                if _sha256_file(target) != digest:
                    raise BundleError(
                        f"Run {spec['identifier']}: artifact {rel} changed while it was being "
                        "imported; the import was undone. Try again."
                    )
        command_id = spec.get("run_command")
        record = staging / _keys.RUN_COMMAND_ARTIFACT
        if command_id and not record.exists():
            # without artifacts, the command's registry still travels with the run
            from pcs.run_command import RunCommand

            record.parent.mkdir(parents=True, exist_ok=True)
            text = RunCommand.from_registry(plan.registry, command_id).to_yaml_text()
            record.write_text(text, encoding="utf-8")
        if any(staging.iterdir()):
            client.log_artifacts(run_id, str(staging))


def _fix_links(client: MlflowClient, planned: Mapping[str, _Planned], resolved: Mapping[str, Run]) -> None:
    """Point links that were written before their target existed at the imported target."""
    from mlflow.entities import RunTag

    for original, plan in planned.items():
        run = resolved[original]
        wanted = _link_tags(plan.spec["tags"], resolved)
        stale = {k: v for k, v in wanted.items() if run.tags.get(k) != v}
        if stale:
            client.log_batch(run.identifier, tags=[RunTag(k, v) for k, v in stale.items()])
            run._changed()


def _discard(client: MlflowClient, run_id: str) -> None:
    """Remove a run written by an import that failed: artifacts, then the run itself.

    Stores that allow it (SQL, file) lose the run entirely; others (a tracking
    server) keep it as a deleted run.
    """
    tracking = getattr(client, "_tracking_client", None)
    try:
        # a soft-deleted leftover must not pass for the imported run on the next try
        client.delete_tag(run_id, _keys.IMPORTED_FROM)
    except Exception:  # noqa: BLE001 - best effort
        pass
    try:
        tracking._get_artifact_repo(run_id).delete_artifacts()  # type: ignore[union-attr]
    except Exception:  # noqa: BLE001 - best effort: the original error matters
        pass
    hard_delete = getattr(getattr(tracking, "store", None), "_hard_delete_run", None)
    try:
        if hard_delete is not None:
            hard_delete(run_id)
            return
    except Exception:  # noqa: BLE001 - fall back to MLflow's soft delete
        pass
    try:
        client.delete_run(run_id)
    except Exception:  # noqa: BLE001 - best effort
        pass
