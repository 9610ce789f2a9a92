"""Export: runs with everything needed to rerun them elsewhere, into a registry or a bundle.

Export writes each run's record (:func:`pcs.transfer.bundle.run_spec`), its
run command with components and repos, and (on request) its artifacts with
their sha256; linked runs (dependencies, inner and outer runs, the run a
rerun reproduces) come along so links survive. Credentials recorded by older
versions of pcs (git remotes with tokens) are removed from everything written,
before the files are hashed.

A bundle is staged in a pid-marked folder next to its output and moved into
place only when complete; the staging folder is removed however the export
ends (SIGTERM and SIGHUP included), and what a killed export left behind is
swept by the next one.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pcs import _config, _keys, _signals
from pcs._disk import disk_full_raised
from pcs._features import provides
from pcs.errors import BundleError, RegistryConflictError
from pcs.progress import CountingWriter, ProgressCallback, reporter
from pcs.registry import InMemoryRegistry, Registry, is_record_upgrade
from pcs.transfer import _temps
from pcs.transfer._histories import HISTORY_DIR
from pcs.transfer.bundle import (
    LINK_TAGS,
    accepts_progress,
    hash_tree,
    redact_artifacts,
    redact_specs,
    run_spec,
)

if TYPE_CHECKING:  # pragma: no cover
    from pcs.progress import Reporter
    from pcs.run import Run

__all__ = ["export_runs", "export_runs_by_id", "export_bundle", "ExportResult"]


@dataclass
class ExportResult:
    """Where a bundle was written and which runs it holds."""

    path: Path
    run_ids: list[str]


@provides("export_runs")
def export_runs(
    runs: Iterable[Run],
    registry: Registry | None = None,
    recurse: bool = True,
    force: bool = False,
    include_artifacts: bool = False,
    progress: ProgressCallback | None = None,
    artifacts_root: Path | None = None,
) -> Registry:
    """Add runs (and, with ``recurse``, every run they link to) to a registry.

    Args:
        runs: the runs to export.
        registry: where to add them (default: a new ``InMemoryRegistry``).
        recurse: also add dependency, outer, inner and rerun-of runs, recursively.
        force: overwrite different specs already in the registry.
        include_artifacts: also carry every run's artifacts, listed with their sha256.
        progress: called as ``progress(description, done_bytes, total_bytes)``
            as artifacts are downloaded.
        artifacts_root: where to download artifacts (default: an entry of the
            ``$PCS_HOME/exports`` cache that the in-memory registry keeps pointing at).

    Returns:
        The registry.
    """
    registry = registry if registry is not None else InMemoryRegistry()
    _temps.sweep(None, _config.pcs_home() / "exports")
    with _signals.guarded():
        _export(runs, registry, recurse, force, include_artifacts, _callback(progress), artifacts_root)
    return registry


def export_runs_by_id(
    run_ids: list[str],
    registry: Registry,
    include_artifacts: bool = True,
    recurse: bool = True,
    progress: ProgressCallback | None = None,
    force: bool = False,
) -> list[str]:
    """Export runs given by id (original ids of imported runs work too), e.g. to a registry server.

    Args:
        run_ids: the runs to export.
        registry: where to add them.
        include_artifacts: also carry every run's artifacts.
        recurse: also add the runs they link to, recursively.
        progress: called as ``progress(description, done_bytes, total_bytes)``
            as artifacts are downloaded (and uploaded, by a web registry).
        force: overwrite different specs already in the registry.

    Returns:
        The ids of every run exported: the given ones and, with ``recurse``, linked ones.
    """
    from pcs.run import Run

    _temps.sweep(None)
    with _signals.guarded():
        runs = [Run.from_existing_run_id(i) for i in run_ids]
        return _export(runs, registry, recurse, force, include_artifacts, _callback(progress), None)


def export_bundle(
    run_ids: list[str],
    output: Path,
    include_artifacts: bool = True,
    recurse: bool = True,
    progress: ProgressCallback | None = None,
) -> ExportResult:
    """Write runs into a bundle: a folder (``registry.yaml`` + ``artifacts/``) or a ``.tar.gz``.

    Args:
        run_ids: the runs to export (original ids of imported runs work too).
        output: a folder (new, empty, or an earlier bundle to replace) or a
            file name ending in ``.tar.gz`` / ``.tgz``.
        include_artifacts: also carry every run's artifacts.
        recurse: also add the runs they link to, recursively.
        progress: called as ``progress(description, done_bytes, total_bytes)``
            as artifacts are downloaded and the archive is written.

    Returns:
        Where the bundle is and which runs it holds.

    Raises:
        BundleError: ``output`` is something else than an empty folder or a bundle.
        DiskFullError: a disk filled up (naming which); nothing was left half-written.
    """
    from pcs.run import Run

    progress = _callback(progress)
    output = Path(output)
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
    _temps.sweep(output.parent, None)
    with _signals.guarded(), disk_full_raised():
        runs = [Run.from_existing_run_id(i) for i in run_ids]
        # staged next to the output, so the bundle is moved in by rename, never half copied
        with _temps.temporary_dir("export", output.parent, output.name) as staging:
            folder = staging / "bundle"
            registry = InMemoryRegistry(base_dir=folder)
            exported = _export(
                runs, registry, recurse, False, include_artifacts, progress, folder / "artifacts"
            )
            _check_readable(registry.write_bundle(folder))
            if archive:
                from pcs._archive import write_tar_gz

                packed = staging / "bundle.tar.gz"
                with (
                    reporter(progress, f"packing {output.name}") as rep,
                    open(packed, "wb") as fh,
                ):
                    write_tar_gz(folder, CountingWriter(fh, rep))  # type: ignore[arg-type]
                    rep.set_total(rep.done)
                packed.replace(output)
            else:
                if output.exists():
                    output.replace(staging / "previous")
                folder.replace(output)
        return ExportResult(output, exported)


def _check_readable(path: Path) -> None:
    """Refuse a ``registry.yaml`` larger than pcs reads back (what pcs writes, pcs reads)."""
    from pcs._limits import MAX_YAML_BYTES

    size = path.stat().st_size
    if size > MAX_YAML_BYTES:
        raise BundleError(
            f"The bundle's registry.yaml would be {size} bytes, more than the {MAX_YAML_BYTES} "
            "bytes pcs reads from one YAML document, so it could not be imported; nothing was "
            "written. Export fewer runs at a time (long metric histories already travel in "
            "files of their own)."
        )


def _callback(progress: Any) -> ProgressCallback | None:
    # ``progress=True/False`` was the flag of earlier versions; drawing is the CLI's job now
    return None if isinstance(progress, bool) else progress


# -- collecting the runs ------------------------------------------------------------------------


def _linked_ids(run: Run) -> list[str]:
    """Ids of the runs ``run`` points at: dependencies, outer run, the run it reruns."""
    ids = list(run.dependency_ids)
    for key in LINK_TAGS:
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


# -- writing them -------------------------------------------------------------------------------


def _export(
    runs: Iterable[Run],
    registry: Registry,
    recurse: bool,
    force: bool,
    include_artifacts: bool,
    progress: ProgressCallback | None,
    artifacts_root: Path | None,
) -> list[str]:
    """Export runs into ``registry``; return the ids of every run exported."""
    selected, inner = _collect(runs, recurse)
    names: dict[str, str | None] = {}
    sizes = {run.identifier: _artifact_sizes(run) for run in selected} if include_artifacts else {}
    total = sum(sum(s.values()) for s in sizes.values())
    # an in-memory registry keeps pointing at the downloaded folder, so by default it
    # becomes an entry of the exports cache, named only once it is complete; any other
    # registry copies (uploads) it, so a temporary folder per run will do
    cached = (
        include_artifacts and artifacts_root is None and isinstance(registry, InMemoryRegistry)
    )
    root = _temps.temp_dir("export", _config.cache_dir("exports")) if cached else artifacts_root
    try:
        with reporter(progress, f"exporting {len(selected)} run(s)", total) as rep:
            for run in selected:
                _export_one(
                    run, registry, inner[run.identifier], names, force,
                    sizes.get(run.identifier) if include_artifacts else None, root, rep, progress,
                )
        if cached and root is not None:
            entry = root.with_name(f"artifacts-{uuid.uuid4().hex[:12]}")
            root.replace(entry)
            for run in selected:
                registry.add_run_artifacts(run.identifier, entry / run.identifier)
            root = None
    finally:
        if cached and root is not None:
            shutil.rmtree(root, ignore_errors=True)
    return [run.identifier for run in selected]


def _export_one(
    run: Run,
    registry: Registry,
    inner_ids: list[str],
    names: dict[str, str | None],
    force: bool,
    sizes: dict[str, int] | None,
    root: Path | None,
    rep: Reporter,
    progress: ProgressCallback | None,
) -> None:
    """Add one run's record (and artifacts, when ``sizes`` lists them) to ``registry``.

    Metric histories longer than ``INLINE_POINTS`` travel as files in the run's
    carried folder (see :mod:`pcs.transfer._histories`) wherever the registry
    keeps files: bundles, the exports cache, a registry server.
    """
    streaming = root is not None or not isinstance(registry, InMemoryRegistry)
    if sizes is None and not streaming:
        spec = run_spec(run, inner_ids, names)
        _add_command(run, spec, registry, force)
        registry.add_run_spec(spec, force=force)
        return
    with _temps.temporary_dir("export") if root is None else nullcontext(root) as where:
        folder = _download_all(run, Path(where), bool(sizes))
        if sizes is not None:
            rep.advance(sum(sizes.values()))
            if (folder / HISTORY_DIR).exists():
                raise BundleError(
                    f"Run {run.identifier} has an artifact folder named {HISTORY_DIR}, which "
                    "pcs keeps for metric histories in bundles; rename that artifact folder "
                    "to export the run."
                )
            redact_artifacts(folder)
            hashes = hash_tree(folder)  # before the histories join the folder: not artifacts
        spec = run_spec(run, inner_ids, names, histories=folder if streaming else None)
        _add_command(run, spec, registry, force)
        if sizes is not None:
            spec["artifacts"] = hashes
        if sizes is not None or (folder / HISTORY_DIR).exists():
            _refuse_conflict(registry, spec, force)  # before replacing its artifacts
            if accepts_progress(registry.add_run_artifacts) and progress is not None:
                registry.add_run_artifacts(run.identifier, folder, progress=progress)  # type: ignore[call-arg]
            else:
                registry.add_run_artifacts(run.identifier, folder)
        if sizes is None and not any(folder.iterdir()):
            folder.rmdir()  # nothing to carry for this run
    # the spec goes last: a reader who sees it finds its artifacts too
    registry.add_run_spec(spec, force=force)


def _add_command(run: Run, spec: dict[str, Any], registry: Registry, force: bool) -> None:
    """Add the run command of a component run (with its components and repos) to ``registry``."""
    from pcs.component_run import ComponentRun

    if isinstance(run, ComponentRun) and spec["run_command"]:
        command = InMemoryRegistry()
        run.run_command.to_registry(command)
        redact_specs(command)
        registry.update(command, force=force)


def _artifact_sizes(run: Run) -> dict[str, int]:
    """``{path: bytes}`` of every artifact file of a run (one listing per folder)."""
    sizes: dict[str, int] = {}
    todo: list[str | None] = [None]
    while todo:
        for item in run.list_artifacts(todo.pop()):
            if item.is_dir:
                todo.append(item.path)
            else:
                sizes[item.path] = int(item.file_size or 0)
    return sizes


def _download_all(run: Run, root: Path, any_files: bool) -> Path:
    target = root / run.identifier
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    if any_files:
        run._download_quietly("", target)
    return target


def _refuse_conflict(registry: Registry, spec: dict[str, Any], force: bool) -> None:
    if force or not registry.has_run(spec["identifier"]):
        return
    held = registry.get_run_record(spec["identifier"])
    if held != spec and not is_record_upgrade(held, spec):
        raise RegistryConflictError(
            f"The registry already holds run {spec['identifier']} in another form (it changed "
            "since it was exported: new metrics, a new status or new links). Pass force=True "
            "(CLI: --force) to replace it."
        )
