"""Import: write runs of a bundle or registry into the current tracking store, once.

Import checks every record first (see :func:`pcs.transfer.bundle.validate_run`)
and only then writes. A run counts as imported once everything of it is
written: it is created with ``pcs.importing`` (its original id) and gets
``pcs.imported_from`` and ``pcs.origin_run_id`` as its last write, after its
params, metric histories, artifacts, status and links. A run without
``pcs.imported_from`` is never taken for an imported one.

Importers coordinate through claims (:mod:`pcs.transfer._claims`): each run
to write is claimed first, so concurrent imports of one bundle into one store
write each run once, and a run half-written by an importer that died is
removed and written again by the next import. When a write fails, or SIGTERM
or SIGHUP interrupts the import, every run this import had not completed is
removed again before the error goes on.

Links (outer run, dependencies, rerun-of) are rewritten to the ids of the
imported runs; a run's original id keeps resolving through
``Run.from_existing_run_id``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from pcs import _config, _keys, _signals
from pcs._disk import disk_full_raised
from pcs._features import provides
from pcs.errors import BundleError, RunNotFoundError
from pcs.progress import CountingReader, ProgressCallback, reporter
from pcs.registry import Registry
from pcs.transfer import _claims, _temps
from pcs.transfer._histories import log_file_histories
from pcs.transfer._lookup import Store, origin_of
from pcs.transfer.bundle import (
    REWRITTEN_TAGS,
    RUN_ID_RE,
    Planned,
    bundle_root,
    decode_value,
    depends,
    load_registry,
    sha256_file,
    unpacked_limit,
    upward_links,
    validate_run,
)

if TYPE_CHECKING:  # pragma: no cover
    from mlflow import MlflowClient

    from pcs.progress import Reporter
    from pcs.run import Run

__all__ = ["import_bundle", "import_run"]

log = logging.getLogger(__name__)

_BATCH_METRICS = 1000
_BATCH_PARAMS = 100
_BATCH_TAGS = 100
_BATCH_ENTITIES = 1000  # metrics, params and tags of one log_batch call together


# -- entry points -----------------------------------------------------------------------------


def import_bundle(
    bundle: Path, trust: bool = False, progress: ProgressCallback | None = None
) -> dict[str, str]:
    """Import every run of a bundle (folder, ``.tar.gz`` or its ``registry.yaml``).

    Runs the store already holds (imported before, or the very runs the bundle
    was exported from) are not written again. Safe to run concurrently with
    other imports of the same runs, and again after an import that was killed.

    Args:
        bundle: the bundle written by ``pcs export`` / :func:`export_bundle`.
        trust: allow unpickling the runs' pickled return values.
        progress: called as ``progress(description, done_bytes, total_bytes)``
            while the archive is unpacked, artifacts are checked and uploaded.

    Returns:
        ``{original id: id in the current store}`` for every run of the bundle.

    Raises:
        BundleError: the bundle is malformed, truncated or unsafe; nothing was written.
        FormatVersionError: the bundle was written by a newer pcs.
        DiskFullError: a disk filled up (naming which); nothing was left half-written.
    """
    progress = _callback(progress)
    bundle = Path(bundle)
    _temps.sweep(None)
    with _signals.guarded(), disk_full_raised(), _named_after(bundle):
        if bundle.is_file() and bundle.name.endswith((".yaml", ".yml")):
            return _import_all(load_registry(bundle), trust, progress)
        if bundle.is_file():
            from pcs._archive import safe_extract_tar

            with _temps.temporary_dir("import") as staging, _named_after(bundle, staging):
                size = bundle.stat().st_size
                with (
                    reporter(progress, f"unpacking {bundle.name}", size) as rep,
                    open(bundle, "rb") as fh,
                ):
                    safe_extract_tar(
                        CountingReader(fh, rep), staging / "bundle", max_size=unpacked_limit(bundle)
                    )
                folder = bundle_root(staging / "bundle")
                return _import_all(load_registry(folder / "registry.yaml"), trust, progress)
        if not (bundle / "registry.yaml").is_file():
            raise BundleError(
                f"{bundle} is not a pcs bundle: it has no registry.yaml. Pass a folder or "
                ".tar.gz written by 'pcs export'."
            )
        return _import_all(load_registry(bundle / "registry.yaml"), trust, progress)


@provides("import_run")
def import_run(
    registry: Registry,
    run_id: str,
    trust: bool = False,
    progress: ProgressCallback | None = None,
) -> Run:
    """The run ``run_id`` from the current store, importing it (and linked runs) if missing.

    Args:
        registry: where to find the run when the store does not hold it.
        run_id: the run's id (in the store, or its original id in the registry).
        trust: allow unpickling its pickled return value.
        progress: called as ``progress(description, done_bytes, total_bytes)``
            while artifacts are fetched, checked and uploaded.

    Returns:
        The run in the current store.

    Raises:
        RunNotFoundError: neither the store nor the registry holds the run.
        BundleError: the registry's record of it is malformed, truncated or unsafe.
    """
    progress = _callback(progress)
    _temps.sweep(None)
    with _signals.guarded():
        return _import_many(registry, [run_id], trust, progress)[run_id]


def _callback(progress: Any) -> ProgressCallback | None:
    # ``progress=True/False`` was the flag of earlier versions; drawing is the CLI's job now
    return None if isinstance(progress, bool) else progress


def _import_all(registry: Registry, trust: bool, progress: ProgressCallback | None) -> dict[str, str]:
    ids = registry.identifiers("runs")
    if not ids:
        raise BundleError("The bundle holds no runs; export runs with 'pcs export RUN_ID -o ...'.")
    imported = _import_many(registry, ids, trust, progress)
    return {original: run.identifier for original, run in imported.items()}


def _import_many(
    registry: Registry, run_ids: list[str], trust: bool, progress: ProgressCallback | None
) -> dict[str, Run]:
    from pcs.component_run import ComponentRun

    store = Store(_config.tracking_client())
    plan = _plan(registry, run_ids, store, progress)
    if plan.planned:
        _write_all(store, plan, progress)
    for original, run in plan.resolved.items():
        _restore_if_deleted(original, run)
    for run in plan.resolved.values():
        if isinstance(run, ComponentRun):
            run._trusted = trust
    return {rid: plan.resolved[rid] for rid in run_ids}


# -- planning -----------------------------------------------------------------------------------


@dataclass
class _Plan:
    resolved: dict[str, Run] = field(default_factory=dict)  # runs the store holds already
    planned: dict[str, Planned] = field(default_factory=dict)  # runs to write
    unfinished: dict[str, list[str]] = field(default_factory=dict)  # older pcs's leftovers


def _plan(
    registry: Registry, run_ids: list[str], store: Store, progress: ProgressCallback | None
) -> _Plan:
    """Which runs the store already holds, and the validated specs of the ones to write.

    Follows the links of each run to write (outer run, rerun-of, dependencies,
    inner runs) to runs the registry holds, one level at a time, with one
    batch of store lookups per level.
    """
    plan = _Plan()
    requested = list(dict.fromkeys(run_ids))
    wanted = set(requested)
    for run_id in requested:
        if not isinstance(run_id, str) or not RUN_ID_RE.fullmatch(run_id):
            raise BundleError(f"{run_id!r} is not a valid run id (1-64 letters, digits, '_' or '-').")
    seen: set[str] = set()
    level = requested
    with reporter(progress, "checking runs", 0) as rep:
        while level:
            # a link tag holding something other than a run id stays as it is
            ids = [
                i for i in dict.fromkeys(level)
                if isinstance(i, str) and i not in seen and RUN_ID_RE.fullmatch(i)
            ]
            seen.update(ids)
            if not ids:
                break
            held = store.by_ids(ids)
            plan.resolved.update(held)
            specs: dict[str, dict[str, Any]] = {}
            for run_id in ids:
                if run_id in held:
                    continue
                if registry.has_run(run_id):
                    specs[run_id] = registry.get_run_record(run_id)
                elif run_id in wanted:
                    plan.resolved[run_id] = _existing_or_missing(run_id)
                # else: a link to a run that was not exported keeps the original id
            copies = store.copies(specs)
            level = []
            for run_id, spec in specs.items():
                if run_id in copies.complete:
                    plan.resolved[run_id] = copies.complete[run_id]
                    continue
                origin = origin_of(spec)
                if origin and origin in copies.homes:
                    plan.resolved[run_id] = copies.homes[origin]
                    continue
                checked = validate_run(registry, run_id, spec, rep, progress)
                _check_store_limits(run_id, checked.spec)
                plan.planned[run_id] = checked
                if copies.unfinished.get(run_id):
                    plan.unfinished[run_id] = copies.unfinished[run_id]
                level += upward_links(checked.spec["tags"]) + checked.spec["inner_runs"]
    return plan


def _restore_if_deleted(original: str, run: Run) -> None:
    """A copy imported before and deleted since is restored: importing again means "I want it"."""
    try:
        deleted = run.lifecycle_stage == "deleted"
    except Exception:  # noqa: BLE001 - a run the store cannot describe is left as it is
        return
    if deleted:
        run.restore()
        log.warning(
            "pcs: run %s had been imported before as %s and deleted since; it is restored.",
            original, run.identifier,
        )


def _check_store_limits(run_id: str, spec: Mapping[str, Any]) -> None:
    """Refuse, before anything is written, a value the tracking store cannot keep as it is.

    Raises:
        BundleError: naming the run and the param, tag or metric (exit 7, a bundle
            problem, not a tracking store error half-way through the writes).
    """
    from pcs import _limits
    from pcs.errors import InputLimitError

    try:
        for name, value in spec["params"].items():
            _limits.check_param(name, value)
        for name, value in spec["tags"].items():
            _limits.check_tag(name, value)
        for name, history in spec["metrics"].items():
            _limits.check_key(name, "Metric")
            if not isinstance(history, list) or not history:
                continue  # a history in a file is checked point by point as it is read
            where = f"Metric {name!r}"
            steps = [point[1] for point in history]
            for step in (min(steps), max(steps)):
                _limits.check_step(step, where)
            stamps = [point[2] for point in history]
            _limits.check_step(max(stamps), f"{where} (timestamp)")
            for point in history:
                if isinstance(point[0], int) and not isinstance(point[0], bool):
                    _limits.check_metric(name, point[0], point[1])
    except InputLimitError as exc:
        raise BundleError(
            f"Run {run_id} in the bundle cannot be imported as it is: {exc} Nothing was written."
        ) from None


@contextlib.contextmanager
def _named_after(bundle: Path, staging: Path | None = None) -> Iterator[None]:
    """Errors name the bundle the user gave, never the temporary folder it was unpacked into."""
    from pcs.errors import PcsError

    try:
        yield
    except PcsError as exc:
        message = str(exc)
        if staging is not None and str(staging) in message:
            # the unpacked folder sits at staging/bundle[/<one folder>]; name files inside the archive
            message = re.sub(
                re.escape(str(staging)) + r"/bundle(?:/[^/\s:'\"]+(?=/registry\.yaml))?/?",
                f"{bundle}:", message,
            )
        elif str(bundle) not in message and bundle.name not in message:
            message = f"Bundle {bundle}: {message}"
        if message != str(exc):
            exc.args = (message,)
        raise


def _existing_or_missing(run_id: str) -> Run:
    """A requested run that the registry lacks: the store's, by prefix or original id."""
    from pcs.run import Run

    try:
        return Run.from_existing_run_id(run_id)
    except RunNotFoundError:
        raise RunNotFoundError(
            f"Run {run_id} is neither in the tracking store {_config.tracking_uri()} nor in "
            "the registry. Check the id, or export the run again with its linked runs."
        ) from None


def _write_order(planned: Mapping[str, Planned]) -> list[str]:
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
        stack = [(root, iter(upward_links(planned[root].spec["tags"])))]
        while stack:
            node, links = stack[-1]
            for linked in links:
                if linked in planned and linked not in state:
                    state[linked] = False
                    stack.append((linked, iter(upward_links(planned[linked].spec["tags"]))))
                    break
            else:
                stack.pop()
                state[node] = True
                order.append(node)
    return order


# -- writing ------------------------------------------------------------------------------------


def _write_all(store: Store, plan: _Plan, progress: ProgressCallback | None) -> None:
    """Claim, write, link and complete the planned runs; undo what is unfinished on failure."""
    client = store.client
    planned = plan.planned

    def waiting(original: str, holder: str) -> None:
        log.info("pcs: run %s is being imported by %s; waiting for it.", original, holder)

    def complete_copies(ids: list[str]) -> dict[str, Run]:
        return store.copies({i: planned[i].spec for i in ids}, fresh=True).complete

    with _claims.Holder(client, on_wait=waiting) as holder:
        done = holder.acquire(list(planned), complete_copies)
        if planned.keys() - done.keys():
            # a copy completed between the question acquire asked and the claim
            done.update(complete_copies(sorted(planned.keys() - done.keys())))
        holder.release(list(done))
        for original, run in done.items():
            plan.resolved[original] = run
            del planned[original]
        if not planned:
            return
        leftovers = [run_id for o in planned for run_id in plan.unfinished.get(o, [])]
        if any(claim.generation > 0 for claim in holder.claims.values()):
            # an earlier importer of these runs died or failed: remove what it left
            leftovers += store.partial({o: planned[o].spec for o in planned})
        for run_id in dict.fromkeys(leftovers):
            _discard(client, run_id)
        order = _write_order(planned)
        total = sum(p.artifact_bytes for p in planned.values())
        created: list[str] = []
        completed: set[str] = set()
        experiments: dict[str | None, str] = {}
        with reporter(progress, f"importing {len(order)} run(s)", total) as rep:
            try:
                written: dict[str, dict[str, str]] = {}
                for original in order:
                    run, written[original] = _write_run(
                        client, planned[original], plan.resolved, created, experiments, rep
                    )
                    plan.resolved[original] = run
                _fix_links(client, planned, plan.resolved, written)
                holder.check_held()
                for original in order:
                    run_id = plan.resolved[original].identifier
                    _complete(client, planned[original].spec, run_id)
                    completed.add(run_id)
            except BaseException:
                _undo(store, created, completed, planned)
                raise


def _undo(store: Store, created: list[str], completed: set[str], planned: Mapping[str, Planned]) -> None:
    """Remove every run this import wrote but did not complete (it still holds their claims)."""
    runs = list(reversed(created))
    try:
        # also a run whose creation was interrupted before its id came back
        runs += store.partial({o: p.spec for o, p in planned.items()})
    except Exception as exc:  # noqa: BLE001 - the store may be what failed; remove what is known
        log.debug("pcs: could not look for half-written runs: %s", exc)
    for run_id in dict.fromkeys(runs):
        if run_id not in completed:
            _discard(store.client, run_id)


def _batches(tags: list, params: list, metrics: list) -> Iterator[tuple[list, list, list]]:
    """Tags, params and metrics packed into as few ``log_batch`` calls as MLflow's limits allow."""
    while tags or params or metrics:
        batch_tags, tags = tags[:_BATCH_TAGS], tags[_BATCH_TAGS:]
        batch_params, params = params[:_BATCH_PARAMS], params[_BATCH_PARAMS:]
        room = _BATCH_ENTITIES - len(batch_tags) - len(batch_params)
        batch_metrics, metrics = metrics[: min(room, _BATCH_METRICS)], metrics[min(room, _BATCH_METRICS) :]
        yield batch_tags, batch_params, batch_metrics


def _link_tags(tags: Mapping[str, str], resolved: Mapping[str, Run]) -> dict[str, str]:
    """The run's link tags, pointing at the imported runs where they exist."""
    out: dict[str, str] = {}
    for key in REWRITTEN_TAGS:
        if tags.get(key):
            out[key] = resolved[tags[key]].identifier if tags[key] in resolved else tags[key]
    deps = depends(tags)
    if deps:
        out[_keys.DEPENDS_ON] = json.dumps(
            [resolved[d].identifier if d in resolved else d for d in deps]
        )
    return out


def _write_run(
    client: MlflowClient,
    plan: Planned,
    resolved: Mapping[str, Run],
    created: list[str],
    experiments: dict[str | None, str],
    rep: Reporter,
) -> tuple[Run, dict[str, str]]:
    """Write one run, marked ``pcs.importing``; returns it and the link tags it got."""
    from mlflow.entities import Metric, Param, RunTag

    from pcs.run import _terminate, run_class

    spec = plan.spec
    original = spec["identifier"]
    tags = dict(spec["tags"])
    links = _link_tags(tags, resolved)
    tags.update(links)
    # the marks of a complete import come last (see _complete); create_run sets the name
    for key in (_keys.IMPORTED_FROM, _keys.ORIGIN_RUN_ID, _keys.IMPORTING, _keys.RUN_NAME):
        tags.pop(key, None)
    items = [(_keys.IMPORTING, original), *tags.items()]
    made = client.create_run(
        _experiment_for(client, spec.get("experiment_name"), experiments),
        start_time=spec.get("start_time"),
        tags=dict(items[:_BATCH_TAGS]),
        run_name=spec.get("run_name"),
    )
    run_id = made.info.run_id
    created.append(run_id)
    metrics = [
        Metric(key, decode_value(value), int(timestamp), int(step))
        for key, history in spec["metrics"].items()
        if isinstance(history, list)  # histories in files are streamed below
        for value, step, timestamp in history
    ]
    for tags_, params, metrics_ in _batches(
        [RunTag(k, v) for k, v in items[_BATCH_TAGS:]],
        [Param(k, v) for k, v in spec["params"].items()],
        metrics,
    ):
        client.log_batch(run_id, metrics=metrics_, params=params, tags=tags_)
    log_file_histories(client, run_id, spec, plan.artifacts)
    _write_artifacts(client, made.info.artifact_uri, run_id, plan, rep)
    status = spec.get("status", "FINISHED")
    if status not in ("RUNNING", "SCHEDULED"):
        _terminate(client, run_id, status, spec.get("end_time"))
    elif status == "SCHEDULED":
        client.update_run(run_id, status="SCHEDULED")
    run = run_class(spec["tags"].get(_keys.RUN_TYPE)).lazy(run_id, client)
    return run, links


def _experiment_for(client: MlflowClient, name: Any, cache: dict[str | None, str]) -> str:
    """The experiment the user chose, else the one the run was in (by name), else the default."""
    from mlflow.exceptions import MlflowException

    key = name if isinstance(name, str) and name and not _config.experiment_chosen() else None
    if key in cache:
        return cache[key]
    if key is None:
        cache[key] = _config.default_experiment_id(client)
        return cache[key]
    experiment = client.get_experiment_by_name(key)
    if experiment is None:
        try:
            cache[key] = str(client.create_experiment(key, tags=_config.experiment_tags()))
            return cache[key]
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            experiment = client.get_experiment_by_name(key)  # another importer made it
    if experiment is not None and experiment.lifecycle_stage == "active":
        cache[key] = str(experiment.experiment_id)
    else:
        cache[key] = _config.default_experiment_id(client)  # a deleted one cannot take runs
    return cache[key]


def _write_artifacts(
    client: MlflowClient, artifact_uri: str, run_id: str, plan: Planned, rep: Reporter
) -> None:
    """Upload a private copy of the run's verified artifacts (and its run command record)."""
    spec = plan.spec
    with _temps.temporary_dir("import") as staging:
        if plan.artifacts is not None:
            for rel, digest in (spec.get("artifacts") or {}).items():
                parts = PurePosixPath(rel).parts
                target = staging.joinpath(*parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(plan.artifacts.joinpath(*parts), target)
                # checked again on the copy that is uploaded: the bundle may have
                # changed since it was validated
                if sha256_file(target) != digest:
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
            _artifact_repository(client, artifact_uri, run_id).log_artifacts(str(staging))
    rep.advance(plan.artifact_bytes)


def _artifact_repository(client: MlflowClient, artifact_uri: str, run_id: str) -> Any:
    """The run's artifact repository, from the URI create_run returned (no extra read)."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    try:
        uri = client._tracking_client.tracking_uri
    except AttributeError:
        uri = None
    try:
        return get_artifact_repository(artifact_uri, tracking_uri=uri)
    except TypeError:  # pragma: no cover - an MLflow without tracking_uri=
        return client._tracking_client._get_artifact_repo(run_id)


def _fix_links(
    client: MlflowClient,
    planned: Mapping[str, Planned],
    resolved: Mapping[str, Run],
    written: Mapping[str, Mapping[str, str]],
) -> None:
    """Point links that were written before their target existed at the imported target."""
    from mlflow.entities import RunTag

    for original, plan in planned.items():
        wanted = _link_tags(plan.spec["tags"], resolved)
        stale = {k: v for k, v in wanted.items() if written[original].get(k) != v}
        if stale:
            client.log_batch(
                resolved[original].identifier, tags=[RunTag(k, v) for k, v in stale.items()]
            )


def _complete(client: MlflowClient, spec: Mapping[str, Any], run_id: str) -> None:
    """Mark a fully written run as imported: the last write an import makes to it."""
    from mlflow.entities import RunTag

    tags = spec["tags"]
    original = spec["identifier"]
    origin = tags.get(_keys.ORIGIN_RUN_ID) or tags.get(_keys.IMPORTED_FROM) or original
    client.log_batch(
        run_id,
        tags=[RunTag(_keys.ORIGIN_RUN_ID, origin), RunTag(_keys.IMPORTED_FROM, original)],
    )
    client.delete_tag(run_id, _keys.IMPORTING)
    if spec.get("lifecycle_stage") == "deleted":
        client.delete_run(run_id)


def _discard(client: MlflowClient, run_id: str) -> None:
    """Remove a run an import did not complete: its artifacts, then the run itself.

    Stores that allow it (SQL, file) lose the run entirely; others (a tracking
    server) keep it as a deleted run without the tags imports look for.
    """
    tracking = getattr(client, "_tracking_client", None)
    try:
        tracking._get_artifact_repo(run_id).delete_artifacts()  # type: ignore[union-attr]
    except Exception:  # noqa: BLE001 - best effort: the original error matters
        pass
    hard_delete = getattr(getattr(tracking, "store", None), "_hard_delete_run", None)
    if hard_delete is not None:
        try:
            hard_delete(run_id)
            return
        except Exception:  # noqa: BLE001 - fall back to MLflow's soft delete
            pass
    for key in (_keys.IMPORTED_FROM, _keys.ORIGIN_RUN_ID, _keys.IMPORTING):
        try:
            # a soft-deleted leftover must not pass for an imported or importing run
            client.delete_tag(run_id, key)
        except Exception:  # noqa: BLE001 - the tag may not be there
            pass
    try:
        client.delete_run(run_id)
    except Exception:  # noqa: BLE001 - best effort
        pass


