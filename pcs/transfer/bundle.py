"""The bundle format: a run's record, how it is checked, hashed and cleaned of secrets.

A bundle is a registry (``registry.yaml``: runs, run commands, components,
repos, argument sets) plus ``artifacts/<run id>/`` for every run exported
with its artifacts. A run's record (:func:`run_spec`) holds its info, params,
full metric histories (value, step, timestamp), tags, the ids of its inner
runs, its run command's id and, with artifacts, ``{path: sha256}`` of every
artifact file.

Import checks a record with :func:`validate_run` before anything is written:
specs well formed, names and values MLflow accepts, artifacts present with the
recorded sha256, no path leaving its folder. Export removes credentials from
what it writes (:func:`redact_tags`, :func:`redact_artifacts`,
:func:`redact_specs`) before it hashes the files, so a bundle's checks hold.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from pcs import _keys
from pcs._redact import redact_text, redact_url
from pcs._yaml import load_yaml
from pcs.errors import BundleError, FormatVersionError, InputLimitError, PcsError, RegistryError
from pcs.registry import InMemoryRegistry, Registry
from pcs.specs import NON_FINITE as _NON_FINITE
from pcs.specs import check_format_version, decode_value, encode_value
from pcs.transfer import _histories

if TYPE_CHECKING:  # pragma: no cover
    from mlflow.entities import Metric

    from pcs.progress import ProgressCallback, Reporter
    from pcs.run import Run

__all__ = [
    "LINK_TAGS",
    "REWRITTEN_TAGS",
    "RUN_ID_RE",
    "STATUSES",
    "MAX_EXPANSION",
    "MIN_UNPACKED_LIMIT",
    "Planned",
    "metric_history",
    "list_artifact_paths",
    "run_spec",
    "encode_value",
    "decode_value",
    "validate_run",
    "upward_links",
    "depends",
    "sha256_file",
    "hash_tree",
    "safe_join",
    "load_registry",
    "bundle_root",
    "unpacked_limit",
    "accepts_progress",
    "redact_tags",
    "redact_artifacts",
    "redact_specs",
]

RUN_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
# tags holding one run id each; pcs.depends_on holds a JSON list of them
LINK_TAGS = (_keys.PARENT_RUN_ID, _keys.RERUN_OF)
# tags naming a run that are rewritten to the imported run's id (a sweep names itself)
REWRITTEN_TAGS = (*LINK_TAGS, _keys.SWEEP_ID)
STATUSES = ("RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED")
_CHUNK = 1 << 20

# Real bundles (YAML, source, model files) unpack to a few times their size; an
# archive that unpacks to hundreds of times its size is a decompression bomb.
MAX_EXPANSION = 200
MIN_UNPACKED_LIMIT = 256 * 1024**2


# -- a run's record -----------------------------------------------------------------------


def metric_history(run: Run, key: str) -> list[Metric]:
    """Every logged value of a metric, in logging order (step, then timestamp).

    Args:
        run: the run.
        key: the metric's name.

    Returns:
        MLflow ``Metric`` entities.
    """
    return run.metric_history(key)


def list_artifact_paths(run: Run, path: str | None = None) -> list[str]:
    """Every artifact file of a run (recursive), as paths relative to the artifact root.

    Args:
        run: the run.
        path: only the files under this artifact folder.

    Returns:
        The sorted paths.
    """
    return run.artifact_paths(path)


def run_spec(
    run: Run,
    inner_run_ids: list[str] | None = None,
    experiment_names: dict[str, str | None] | None = None,
    histories: Path | None = None,
) -> dict[str, Any]:
    """The serializable record of one run (without artifacts), credentials removed.

    Args:
        run: the run.
        inner_run_ids: its inner runs' ids, when already known (else searched).
        experiment_names: a cache of experiment names by id, filled as needed.
        histories: the run's carried folder, where histories longer than
            ``INLINE_POINTS`` are written as JSON-lines files (None: all inline).

    Returns:
        The run's record, as registries store it (``Registry.get_run_record``);
        ``Registry.get_run_spec`` answers it in ``Run.to_spec()``'s shape.
    """
    from pcs.transfer._histories import STREAMED_RUN_FORMAT, export_history

    info = run.info
    metrics: dict[str, Any] = {}
    inline = 0
    for key in sorted(run.data.metrics):
        metrics[key] = export_history(run, key, histories, inline)
        inline += len(metrics[key]) if isinstance(metrics[key], list) else 0
    streamed = any(isinstance(h, dict) for h in metrics.values())
    names = experiment_names if experiment_names is not None else {}
    if info.experiment_id not in names:
        experiment = run.client.get_experiment(info.experiment_id)
        names[info.experiment_id] = experiment.name if experiment else None
    if inner_run_ids is None:
        inner_run_ids = [r.identifier for r in run.inner_runs]
    return {
        "identifier": run.identifier,
        "pcs_format": STREAMED_RUN_FORMAT if streamed else _keys.FORMAT_VERSION,
        "experiment_name": names[info.experiment_id],
        # what Run.to_spec() says of the run beyond what an import needs, so a registry
        # answers get_run_spec(id) == run.to_spec() (AgentOS); the importer ignores them
        "experiment_id": info.experiment_id,
        "user_id": info.user_id,
        "artifact_uri": redact_url(info.artifact_uri) if info.artifact_uri else info.artifact_uri,
        "latest_metrics": {k: encode_value(v) for k, v in sorted(run.data.metrics.items())},
        "run_name": info.run_name,
        "status": info.status,
        "start_time": info.start_time,
        "end_time": info.end_time,
        "lifecycle_stage": info.lifecycle_stage,
        "params": dict(sorted(run.data.params.items())),
        "tags": redact_tags(dict(sorted(run.data.tags.items()))),
        "metrics": metrics,
        "inner_runs": sorted(inner_run_ids),
        "run_command": run.tags.get(_keys.RUN_COMMAND_ID),
    }


def upward_links(tags: Mapping[str, str]) -> list[str]:
    """The runs a run points at, which should exist before it: outer, rerun-of, dependencies."""
    return [tags[k] for k in LINK_TAGS if tags.get(k)] + depends(tags)


def depends(tags: Mapping[str, str]) -> list[str]:
    """The run ids of a run's ``pcs.depends_on`` tag (none when it is malformed)."""
    try:
        ids = json.loads(tags.get(_keys.DEPENDS_ON) or "[]")
    except json.JSONDecodeError:
        return []
    return [str(i) for i in ids] if isinstance(ids, list) else []


# -- credentials ----------------------------------------------------------------------------

# tags that hold a git remote (MLflow's current and older names)
_URL_TAGS = frozenset({_keys.SOURCE_GIT_REPO_URL, "mlflow.gitRepoURL"})
# keys of recorded YAML whose value is a URL
_URL_KEYS = frozenset({"url", "remote_url", "repo_url", "repoURL"})


def redact_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """``tags`` with credentials removed from the values pcs and MLflow record.

    Runs recorded before pcs cleaned URLs may hold a token in their git remote
    (``mlflow.source.git.repoURL``) or in a recorded error message. User tags
    (neither ``mlflow.`` nor ``pcs.``) are the user's data and stay as they are.

    Args:
        tags: a run's tags.

    Returns:
        The cleaned tags (a new dict).
    """
    out: dict[str, str] = {}
    for key, value in tags.items():
        if isinstance(value, str) and key in _URL_TAGS:
            value = redact_url(value)
        elif isinstance(value, str) and key.startswith(("mlflow.", "pcs.")):
            value = redact_text(value)
        out[key] = value
    return out


def _redact_data(data: Any, key: str | None = None) -> Any:
    if isinstance(data, str):
        return redact_url(data) if key in _URL_KEYS else redact_text(data)
    if isinstance(data, dict):
        return {k: _redact_data(v, k if isinstance(k, str) else None) for k, v in data.items()}
    if isinstance(data, list):
        return [_redact_data(v, key) for v in data]
    return data


def _redact_yaml_file(path: Path) -> bool:
    """Rewrite a recorded YAML file without credentials; whether it changed."""
    from pcs.specs import dump_yaml

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    try:
        data = load_yaml(text, f"the recorded {path.name}", BundleError)
    except PcsError:  # not YAML pcs can read (or too large to expand): clean it as text
        data = None
        cleaned_text = redact_text(text)
    else:
        cleaned = _redact_data(data)
        cleaned_text = text if cleaned == data else dump_yaml(cleaned)
    if cleaned_text == text:
        return False
    _replace_text(path, cleaned_text)
    return True


def _redact_text_file(path: Path) -> bool:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    cleaned = redact_text(text)
    if cleaned == text:
        return False
    _replace_text(path, cleaned)
    return True


def _replace_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.pcs-{os.getpid()}-redact")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def redact_artifacts(folder: Path) -> list[str]:
    """Remove credentials from the records pcs keeps among a run's artifacts, in place.

    Cleans ``pcs/*.yaml`` (``code.yaml``'s git remotes, ``run_command.yaml``'s
    repo URLs, ...) and ``pcs/requirements/*`` (index URLs). Source snapshots
    and everything the run itself logged are left byte for byte. Hash the
    folder afterwards, so the bundle lists what it holds.

    Args:
        folder: a run's downloaded artifact folder.

    Returns:
        The artifact paths that were rewritten.
    """
    changed: list[str] = []
    pcs_dir = folder / _keys.PCS_ARTIFACT_DIR
    if not pcs_dir.is_dir():
        return changed
    for path in sorted(pcs_dir.iterdir()):
        if path.is_file() and not path.is_symlink() and path.suffix in (".yaml", ".yml"):
            if _redact_yaml_file(path):
                changed.append(path.relative_to(folder).as_posix())
    requirements = folder / _keys.REQUIREMENTS_DIR
    if requirements.is_dir():
        for path in sorted(requirements.rglob("*")):
            if path.is_file() and not path.is_symlink() and _redact_text_file(path):
                changed.append(path.relative_to(folder).as_posix())
    return changed


def redact_specs(registry: InMemoryRegistry) -> None:
    """Remove credentials from the repo URLs of a registry's specs, in place."""
    for identifier in registry.identifiers("repos"):
        spec = registry.get_repo_spec(identifier)
        cleaned = _redact_data(spec)
        if cleaned != spec:
            registry.add_repo_spec(cleaned, force=True)


# -- files and hashes -----------------------------------------------------------------------


def sha256_file(path: Path, rep: Reporter | None = None) -> str:
    """The sha256 (hex) of a file, read in chunks; ``rep`` counts the bytes read."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
            if rep is not None:
                rep.advance(len(chunk))
    return digest.hexdigest()


def hash_tree(folder: Path, rep: Reporter | None = None) -> dict[str, str]:
    """``{relative posix path: sha256}`` of every file under ``folder``."""
    return {
        PurePosixPath(path.relative_to(folder)).as_posix(): sha256_file(path, rep)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def safe_join(folder: Path, rel: str, where: str) -> Path:
    """``folder/rel``, refusing paths (or symlinks) that lead out of ``folder``.

    Raises:
        BundleError: the path is absolute, has a ``..`` part, or resolves outside.
    """
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


# -- reading a bundle -------------------------------------------------------------------------


def load_registry(path: Path) -> InMemoryRegistry:
    """The registry of a bundle's ``registry.yaml``.

    Raises:
        BundleError: it cannot be read or is not a registry.
        FormatVersionError: it was written by a newer pcs.
    """
    try:
        return InMemoryRegistry.from_yaml(path)
    except (BundleError, FormatVersionError):
        raise
    except RegistryError as exc:
        raise BundleError(f"The bundle's {path.name} cannot be read: {exc}") from None


def bundle_root(folder: Path) -> Path:
    """The folder of an unpacked archive that holds ``registry.yaml`` (it, or its one child)."""
    if (folder / "registry.yaml").is_file():
        return folder
    children = [p for p in folder.iterdir() if p.is_dir()]
    if len(children) == 1 and (children[0] / "registry.yaml").is_file():
        return children[0]
    raise BundleError("The archive holds no registry.yaml; it is not a pcs bundle.")


def unpacked_limit(archive: Path) -> int:
    """The most bytes an archive may unpack to before it counts as a decompression bomb."""
    return max(MIN_UNPACKED_LIMIT, archive.stat().st_size * MAX_EXPANSION)


def accepts_progress(method: Any) -> bool:
    """Whether a registry method takes ``progress=`` (the web registry's do)."""
    try:
        return "progress" in inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False


# -- validation -------------------------------------------------------------------------------


@dataclass
class Planned:
    """A validated run spec, the registry it came from, and its verified artifacts' folder."""

    spec: dict[str, Any]
    registry: Registry
    artifacts: Path | None
    artifact_bytes: int = 0


def validate_run(
    registry: Registry,
    run_id: str,
    spec: dict[str, Any] | None = None,
    rep: Reporter | None = None,
    progress: ProgressCallback | None = None,
) -> Planned:
    """The run's spec, checked so that writing it cannot fail on its content.

    Args:
        registry: where the run's record and artifacts are.
        run_id: the run's (original) id.
        spec: its spec when already read (it is normalised in place).
        rep: counts the artifact bytes hashed.
        progress: passed on to a registry that downloads the artifacts (a web registry).

    Returns:
        The checked plan.

    Raises:
        BundleError: the record is malformed, the artifacts are missing, changed or unsafe.
        FormatVersionError: the record was written by a newer pcs.
    """
    where = f"Run {run_id} in the registry"
    if spec is None:
        spec = registry.get_run_record(run_id)
    _check_run_format(spec, where)
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
        if isinstance(name, str) and isinstance(history, Mapping):
            continue  # a history in a file: checked with the files below
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
    if run_id in upward_links(spec["tags"]) or run_id in inner:
        raise BundleError(
            f"{where} links to itself (as its own outer run, dependency, inner run or the run it "
            "reruns); a run's links always name other runs. The bundle is damaged or forged."
        )
    for key in ("start_time", "end_time"):
        if spec.get(key) is not None and not (_is_int(spec[key]) and spec[key] >= 0):
            raise BundleError(f"{where} has {key} {spec[key]!r}; expected milliseconds since 1970.")
    if spec.get("status", "FINISHED") not in STATUSES:
        raise BundleError(
            f"{where} has status {spec.get('status')!r}; MLflow knows {', '.join(STATUSES)}."
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
    histories = _histories.file_histories(spec)
    if artifacts is None and not histories:
        return Planned(spec, registry, None)
    if artifacts is None:
        artifacts = {}  # carried only for its histories
    if not isinstance(artifacts, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in artifacts.items()
    ):
        raise BundleError(f"{where} has a malformed artifact list; expected path: sha256.")
    if not artifacts and not histories:
        return Planned(spec, registry, None)  # a run without artifacts needs no folder
    if progress is not None and accepts_progress(registry.run_artifacts_dir):
        folder = registry.run_artifacts_dir(run_id, progress=progress)  # type: ignore[call-arg]
    else:
        folder = registry.run_artifacts_dir(run_id)
    if folder is None:
        raise BundleError(
            f"{where} lists {len(artifacts)} artifact(s) and {len(histories)} metric "
            f"histories but the bundle has no artifacts folder for it (artifacts/{run_id}/). "
            "The bundle is incomplete; export it again."
        )
    for key, ref in histories.items():
        _histories.check_history_file(folder, key, ref, where)
    paths = {rel: safe_join(folder, rel, where) for rel in artifacts}
    for rel, path in paths.items():
        if not path.is_file():
            raise BundleError(
                f"{where}: artifact {rel} is missing from the bundle; it is truncated. "
                "Export it again."
            )
    size = sum(path.stat().st_size for path in paths.values())
    if rep is not None:
        rep.set_total((rep.total or 0) + size)
    for rel, digest in artifacts.items():
        if sha256_file(paths[rel], rep) != digest:
            raise BundleError(
                f"{where}: artifact {rel} does not match its recorded sha256; the bundle is "
                "damaged. Export it again."
            )
    if command_id and _keys.RUN_COMMAND_ARTIFACT in artifacts:
        _check_run_command_artifact(folder / _keys.RUN_COMMAND_ARTIFACT, command_id, where)
    return Planned(spec, registry, folder, size)


def _check_run_format(spec: dict[str, Any], where: str) -> None:
    """Refuse a run spec of a newer pcs; run format 2 (histories in files) is read here."""
    from pcs.transfer._histories import STREAMED_RUN_FORMAT

    if spec.get("pcs_format") == STREAMED_RUN_FORMAT:
        return
    check_format_version(spec, where)


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
            if not isinstance(history, list):
                _validate_metric(key, 0.0, 0, 0)  # its points are checked as the file is read
                continue
            for value, step, timestamp in history[:1]:
                _validate_metric(key, decode_value(value), timestamp, step)
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
    try:
        data = load_yaml(path.read_bytes(), f"{where}: {_keys.RUN_COMMAND_ARTIFACT}", BundleError)
        _check_run_command(
            InMemoryRegistry(data), command_id, f"{where} ({_keys.RUN_COMMAND_ARTIFACT})"
        )
    except InputLimitError as exc:
        raise BundleError(str(exc)) from None
    except (BundleError, FormatVersionError):
        raise
    except RegistryError as exc:
        raise BundleError(f"{where}: {_keys.RUN_COMMAND_ARTIFACT} is damaged: {exc}") from None
