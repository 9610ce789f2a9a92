"""Moving runs between tracking stores: export to a registry/bundle, import from one.

Export writes each run's info, params, full metric histories (values, steps,
timestamps), tags, its run command with components and repos, and (on
request) its artifacts; linked runs (dependencies, inner and outer runs, the
run a rerun reproduces) come along so links survive.

Import validates the whole set first (specs well formed, artifacts present
with the recorded sha256, no path leaving its folder) and only then writes;
if a write fails midway, the runs it created are deleted again. An imported
run carries ``pcs.imported_from`` so its original id keeps resolving, and a
second import of the same run returns the first one.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping

from pcs import _config, _keys
from pcs.errors import BundleError, PcsError, RunNotFoundError
from pcs.registry import InMemoryRegistry, Registry
from pcs.specs import check_format_version

if TYPE_CHECKING:  # pragma: no cover
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
    "ExportResult",
]

_RUN_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_BATCH_METRICS = 1000
_BATCH_PARAMS = 100
_BATCH_TAGS = 100
_LINK_TAGS = (_keys.PARENT_RUN_ID, _keys.RERUN_OF)


@dataclass
class ExportResult:
    path: Path
    run_ids: list[str]


# -- reading a run's full record -----------------------------------------------------------


def metric_history(run: Run, key: str) -> list[Metric]:
    """Every logged value of a metric, in logging order (step, then timestamp)."""
    history = run.client.get_metric_history(run.identifier, key)
    return sorted(history, key=lambda m: (m.step, m.timestamp))


def list_artifact_paths(run: Run, path: str | None = None) -> list[str]:
    """Every artifact file of a run (recursive), as paths relative to the artifact root."""
    out: list[str] = []
    for item in run.client.list_artifacts(run.identifier, path):
        if item.is_dir:
            out.extend(list_artifact_paths(run, item.path))
        else:
            out.append(item.path)
    return sorted(out)


def _progress(enabled: bool, total: int, description: str) -> Any:
    from contextlib import nullcontext

    if not enabled or total < 2:
        return nullcontext(None)
    from rich.progress import Progress

    class _Bar:
        def __enter__(self):
            self.progress = Progress(transient=True)
            self.progress.__enter__()
            self.task = self.progress.add_task(description, total=total)
            return self

        def advance(self) -> None:
            self.progress.advance(self.task)

        def __exit__(self, *exc: Any) -> None:
            self.progress.__exit__(*exc)

    return _Bar()


def _linked_ids(run: Run) -> list[str]:
    ids = list(run.dependency_ids)
    for key in _LINK_TAGS:
        if run.tags.get(key):
            ids.append(run.tags[key])
    ids.extend(r.identifier for r in run.inner_runs)
    return ids


def _collect(runs: Iterable[Run], recurse: bool) -> list[Run]:
    from pcs.run import Run

    found: dict[str, Run] = {}
    todo = list(runs)
    while todo:
        run = todo.pop()
        if run.identifier in found:
            continue
        found[run.identifier] = run
        if recurse:
            for linked in _linked_ids(run):
                if linked not in found:
                    try:
                        todo.append(Run.from_existing_run_id(linked))
                    except RunNotFoundError:
                        continue  # a link to a run this store no longer has
    return list(found.values())


def run_spec(run: Run) -> dict[str, Any]:
    """The serializable record of one run (without artifacts)."""
    info = run.info
    metrics = {
        key: [[m.value, m.step, m.timestamp] for m in metric_history(run, key)]
        for key in sorted(run.data.metrics)
    }
    experiment = run.client.get_experiment(info.experiment_id)
    return {
        "identifier": run.identifier,
        "pcs_format": 1,
        "experiment_name": experiment.name if experiment else None,
        "run_name": info.run_name,
        "status": info.status,
        "start_time": info.start_time,
        "end_time": info.end_time,
        "lifecycle_stage": info.lifecycle_stage,
        "params": dict(sorted(run.data.params.items())),
        "tags": dict(sorted(run.data.tags.items())),
        "metrics": metrics,
        "run_command": run.tags.get(_keys.RUN_COMMAND_ID),
    }


# -- export -----------------------------------------------------------------------------------


def export_runs(
    runs: Iterable[Run],
    registry: Registry | None = None,
    recurse: bool = True,
    force: bool = False,
    include_artifacts: bool = False,
    progress: bool = False,
    artifacts_root: Path | None = None,
) -> Registry:
    """Add runs (and, with ``recurse``, every run they link to) to a registry."""
    from pcs.component_run import ComponentRun

    registry = registry if registry is not None else InMemoryRegistry()
    selected = _collect(runs, recurse)
    with _progress(progress, len(selected), "exporting runs") as bar:
        for run in selected:
            spec = run_spec(run)
            if isinstance(run, ComponentRun) and spec["run_command"]:
                run.run_command.to_registry(registry, force=force)
            if include_artifacts:
                folder = _download_all(run, artifacts_root)
                spec["artifacts"] = _hash_tree(folder)
                registry.add_run_artifacts(run.identifier, folder)
            registry.add_run_spec(spec, force=force)
            if bar is not None:
                bar.advance()
    return registry


def export_runs_by_id(
    run_ids: list[str],
    registry: Registry,
    include_artifacts: bool = True,
    recurse: bool = True,
    progress: bool = False,
) -> list[str]:
    from pcs.run import Run

    runs = [Run.from_existing_run_id(i) for i in run_ids]
    export_runs(runs, registry, recurse=recurse, include_artifacts=include_artifacts, progress=progress)
    return registry.identifiers("runs")


def export_bundle(
    run_ids: list[str],
    output: Path,
    include_artifacts: bool = True,
    recurse: bool = True,
    progress: bool = False,
) -> ExportResult:
    """Write runs into a bundle: a folder (``registry.yaml`` + ``artifacts/``) or a ``.tar.gz``."""
    from pcs.run import Run

    runs = [Run.from_existing_run_id(i) for i in run_ids]
    archive = output.name.endswith((".tar.gz", ".tgz"))
    staging = Path(tempfile.mkdtemp(prefix="pcs-export-"))
    try:
        folder = staging / "bundle"
        registry = InMemoryRegistry(base_dir=folder)
        export_runs(
            runs, registry, recurse=recurse, include_artifacts=include_artifacts,
            progress=progress, artifacts_root=folder / "artifacts",
        )
        registry.write_bundle(folder)
        if archive:
            from pcs._archive import make_tar_gz

            output.parent.mkdir(parents=True, exist_ok=True)
            tmp = output.with_name(f".{output.name}.tmp")
            tmp.write_bytes(make_tar_gz(folder))
            tmp.replace(output)
        else:
            if output.exists():
                if not (output / "registry.yaml").exists() and any(output.iterdir()):
                    raise BundleError(
                        f"{output} exists and is not an empty folder or a pcs bundle; choose "
                        "another output path."
                    )
                shutil.rmtree(output)
            output.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(folder), str(output))
        return ExportResult(output, registry.identifiers("runs"))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _download_all(run: Run, root: Path | None) -> Path:
    base = root if root is not None else _config.cache_dir("exports") / tempfile.mkdtemp(
        dir=_config.cache_dir("exports")
    )
    target = Path(base) / run.identifier
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    if list_artifact_paths(run):
        run._download_quietly("", target)
    return target


def _hash_tree(folder: Path) -> dict[str, str]:
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            out[PurePosixPath(path.relative_to(folder)).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


# -- import -----------------------------------------------------------------------------------


def import_bundle(bundle: Path, trust: bool = False, progress: bool = False) -> dict[str, str]:
    """Import every run of a bundle folder or ``.tar.gz``; return ``{original id: local id}``."""
    if bundle.is_file():
        from pcs._archive import safe_extract_tar

        staging = Path(tempfile.mkdtemp(prefix="pcs-import-"))
        try:
            safe_extract_tar(bundle, staging)
            folder = _bundle_root(staging)
            return _import_all(InMemoryRegistry.from_yaml(folder / "registry.yaml"), trust, progress)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    if not (bundle / "registry.yaml").is_file():
        raise BundleError(
            f"{bundle} is not a pcs bundle: it has no registry.yaml. Pass a folder or .tar.gz "
            "written by 'pcs export'."
        )
    return _import_all(InMemoryRegistry.from_yaml(bundle / "registry.yaml"), trust, progress)


def _bundle_root(staging: Path) -> Path:
    if (staging / "registry.yaml").is_file():
        return staging
    children = [p for p in staging.iterdir() if p.is_dir()]
    if len(children) == 1 and (children[0] / "registry.yaml").is_file():
        return children[0]
    raise BundleError("The archive holds no registry.yaml; it is not a pcs bundle.")


def _import_all(registry: Registry, trust: bool, progress: bool) -> dict[str, str]:
    ids = registry.identifiers("runs")
    if not ids:
        raise BundleError("The bundle holds no runs.")
    return {original: run.identifier for original, run in _import_many(registry, ids, trust, progress).items()}


def import_run(registry: Registry, run_id: str, trust: bool = False) -> Run:
    """The run ``run_id`` from the current store, importing it (and linked runs) if missing."""
    return _import_many(registry, [run_id], trust, False)[run_id]


def _existing(run_id: str) -> Run | None:
    from pcs.run import Run

    try:
        return Run.from_existing_run_id(run_id)
    except RunNotFoundError:
        return None


def _import_many(registry: Registry, run_ids: list[str], trust: bool, progress: bool) -> dict[str, Run]:
    from pcs.component_run import ComponentRun

    resolved: dict[str, Run] = {}
    plan: list[dict[str, Any]] = []
    for run_id in run_ids:
        _plan(registry, run_id, resolved, plan, set())
    # validation happened while planning; now write, all or nothing
    created: list[Run] = []
    try:
        with _progress(progress, len(plan), "importing runs") as bar:
            for spec in plan:
                run = _write_run(registry, spec, resolved)
                created.append(run)
                resolved[spec["identifier"]] = run
                if bar is not None:
                    bar.advance()
    except BaseException:
        for run in created:
            try:
                run.delete()
            except Exception:  # noqa: BLE001 - best effort cleanup, the original error matters
                pass
        raise
    for run in resolved.values():
        if isinstance(run, ComponentRun):
            run._trusted = trust
    return {rid: resolved[rid] for rid in run_ids}


def _plan(
    registry: Registry,
    run_id: str,
    resolved: dict[str, Run],
    plan: list[dict[str, Any]],
    visiting: set[str],
) -> None:
    """Order the runs to import so every link points at a run imported before it."""
    if run_id in resolved or any(p["identifier"] == run_id for p in plan) or run_id in visiting:
        return
    existing = _existing(run_id)
    if existing is not None:
        resolved[run_id] = existing
        return
    if not _RUN_ID_RE.match(run_id):
        raise BundleError(f"{run_id!r} is not a valid run id.")
    if not registry.has_run(run_id):
        raise RunNotFoundError(
            f"Run {run_id} is neither in the tracking store {_config.tracking_uri()} nor in the "
            "registry. Check the id, or export the run again with its linked runs."
        )
    spec = _validated_spec(registry, run_id)
    visiting.add(run_id)
    tags = spec["tags"]
    # a run linking in a cycle (an outer whose inner is also its dependency) is fine: only
    # links to runs imported earlier can be rewritten, the rest point at original ids
    for linked in [tags.get(k) for k in (_keys.PARENT_RUN_ID, _keys.RERUN_OF)] + _depends(tags):
        if linked and linked not in visiting and (registry.has_run(linked) or _existing(linked)):
            _plan(registry, linked, resolved, plan, visiting)
    visiting.discard(run_id)
    plan.append(spec)


def _depends(tags: Mapping[str, str]) -> list[str]:
    try:
        ids = json.loads(tags.get(_keys.DEPENDS_ON) or "[]")
    except json.JSONDecodeError:
        return []
    return [str(i) for i in ids] if isinstance(ids, list) else []


def _validated_spec(registry: Registry, run_id: str) -> dict[str, Any]:
    spec = registry.get_run_spec(run_id)
    check_format_version(spec, f"Run {run_id} in the registry")
    where = f"Run {run_id} in the registry"
    for key, kind in (("params", dict), ("tags", dict), ("metrics", dict)):
        if not isinstance(spec.get(key, {}), kind):
            raise BundleError(f"{where} has '{key}' of type {type(spec.get(key)).__name__}; expected a mapping.")
    spec.setdefault("params", {})
    spec.setdefault("tags", {})
    spec.setdefault("metrics", {})
    for key, history in spec["metrics"].items():
        if not isinstance(history, list) or not all(
            isinstance(p, list) and len(p) == 3 and all(isinstance(x, (int, float)) for x in p) for p in history
        ):
            raise BundleError(f"{where} has a malformed history for metric {key!r}; expected [[value, step, timestamp], ...].")
    for key in ("start_time", "end_time"):
        if spec.get(key) is not None and not isinstance(spec[key], int):
            raise BundleError(f"{where} has a non-integer {key}.")
    if spec.get("status") not in ("RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"):
        raise BundleError(f"{where} has status {spec.get('status')!r}, which MLflow does not know.")
    command_id = spec.get("run_command")
    if command_id:
        from pcs.run_command import RunCommand

        try:
            RunCommand.from_registry(registry, command_id)
        except PcsError as exc:
            raise BundleError(f"{where} refers to run command {command_id}, which cannot be loaded: {exc}") from None
    artifacts = spec.get("artifacts")
    if artifacts is not None:
        if not isinstance(artifacts, dict):
            raise BundleError(f"{where} has a malformed artifact list.")
        folder = registry.run_artifacts_dir(run_id)
        if folder is None:
            raise BundleError(
                f"{where} lists {len(artifacts)} artifact(s) but the bundle has no artifacts "
                f"folder for it (artifacts/{run_id}/). The bundle is incomplete; export it again."
            )
        for rel, digest in artifacts.items():
            path = _safe_join(folder, rel, where)
            if not path.is_file():
                raise BundleError(f"{where}: artifact {rel} is missing from the bundle; it is truncated.")
            if hashlib.sha256(path.read_bytes()).hexdigest() != digest:
                raise BundleError(f"{where}: artifact {rel} does not match its recorded sha256; the bundle is damaged.")
    return spec


def _safe_join(folder: Path, rel: str, where: str) -> Path:
    pure = PurePosixPath(rel)
    if not rel or pure.is_absolute() or ".." in pure.parts or "\\" in rel or re.match(r"^[A-Za-z]:", rel):
        raise BundleError(f"{where}: artifact path {rel!r} leaves its folder; refusing the bundle.")
    return folder.joinpath(*pure.parts)


def _chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _write_run(registry: Registry, spec: dict[str, Any], resolved: Mapping[str, Run]) -> Run:
    from mlflow.entities import Metric, Param, RunTag

    from pcs.run import _wrap

    original = spec["identifier"]
    tags = dict(spec["tags"])
    for key in _LINK_TAGS:
        if tags.get(key) in resolved:
            tags[key] = resolved[tags[key]].identifier
    deps = _depends(tags)
    if deps:
        tags[_keys.DEPENDS_ON] = json.dumps([resolved[d].identifier if d in resolved else d for d in deps])
    tags[_keys.IMPORTED_FROM] = original
    tags.pop(_keys.RUN_NAME, None)
    client = _config.tracking_client()
    experiment_id = _config.default_experiment_id(client)
    created = client.create_run(
        experiment_id,
        start_time=spec.get("start_time"),
        tags={k: str(v) for k, v in list(tags.items())[:_BATCH_TAGS]},
        run_name=spec.get("run_name"),
    )
    run_id = created.info.run_id
    try:
        rest = [RunTag(k, str(v)) for k, v in list(tags.items())[_BATCH_TAGS:]]
        for chunk in _chunks(rest, _BATCH_TAGS):
            client.log_batch(run_id, tags=chunk)
        params = [Param(k, str(v)) for k, v in spec["params"].items()]
        for chunk in _chunks(params, _BATCH_PARAMS):
            client.log_batch(run_id, params=chunk)
        metrics = [
            Metric(key, float(value), int(timestamp), int(step))
            for key, history in spec["metrics"].items()
            for value, step, timestamp in history
        ]
        for chunk in _chunks(metrics, _BATCH_METRICS):
            client.log_batch(run_id, metrics=chunk)
        folder = registry.run_artifacts_dir(original) if spec.get("artifacts") is not None else None
        with tempfile.TemporaryDirectory(prefix="pcs-import-") as tmp:
            staging = Path(tmp)
            if folder is not None:
                for rel in spec["artifacts"]:
                    target = staging.joinpath(*PurePosixPath(rel).parts)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(folder.joinpath(*PurePosixPath(rel).parts), target)
            command_id = spec.get("run_command")
            record = staging / _keys.RUN_COMMAND_ARTIFACT
            if command_id and not record.exists():
                # without artifacts, the command's registry still travels with the run
                from pcs.run_command import RunCommand

                record.parent.mkdir(parents=True, exist_ok=True)
                record.write_text(RunCommand.from_registry(registry, command_id).to_yaml_text(), encoding="utf-8")
            if any(staging.iterdir()):
                client.log_artifacts(run_id, str(staging))
        status = spec.get("status", "FINISHED")
        if status not in ("RUNNING", "SCHEDULED"):
            client.set_terminated(run_id, status=status, end_time=spec.get("end_time"))
        if spec.get("lifecycle_stage") == "deleted":
            client.delete_run(run_id)
    except BaseException:
        client.delete_run(run_id)
        raise
    return _wrap(client.get_run(run_id), client)

