"""What a sweep records before its first trial, and the helpers that build it.

The sweep run holds ``pcs/sweep.yaml`` (the :class:`~pcs.sweep.spec.SweepSpec`),
``pcs/sweep_commands.yaml`` (a registry of every trial's run command, with its
components and repos) and ``pcs/source/<sha256>.py`` (the source snapshot the
trials run), so it can be rerun and resumed from the tracking store alone.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pcs import _keys
from pcs.errors import ArgumentError
from pcs.sweep import results
from pcs.sweep.spec import SweepSpec, TrialSpec

if TYPE_CHECKING:  # pragma: no cover
    from pcs.component import Component
    from pcs.component_run import ComponentRun
    from pcs.run_command import RunCommand

__all__ = [
    "SPEC_ARTIFACT",
    "COMMANDS_ARTIFACT",
    "stage",
    "spec_params",
    "commands_registry",
    "commands_text",
    "sources_of",
    "requirements_of",
    "check_runnable_in",
    "rerun_spec",
    "absolute_tracking_uri",
    "warn_local_store_on_ray",
]

SPEC_ARTIFACT = _keys.SWEEP_SPEC_ARTIFACT
COMMANDS_ARTIFACT = _keys.SWEEP_COMMANDS_ARTIFACT
_PARAM_VALUE_LIMIT = 6000


def stage(root: Path, spec: SweepSpec, commands_yaml: str, sources: Mapping[str, str]) -> None:
    """Write the sweep's record into ``root``, laid out as its artifacts."""
    from pcs.record.code import source_artifact_name
    from pcs.specs import dump_yaml

    (root / _keys.SOURCE_ARTIFACT_DIR).mkdir(parents=True)
    (root / SPEC_ARTIFACT).write_text(dump_yaml(spec.to_dict()), encoding="utf-8")
    (root / COMMANDS_ARTIFACT).write_text(commands_yaml, encoding="utf-8")
    for digest, source in sources.items():
        target = root / _keys.SOURCE_ARTIFACT_DIR / source_artifact_name(digest)
        target.write_text(source, encoding="utf-8")


def spec_params(spec: SweepSpec) -> dict[str, str]:
    """The sweep run's params, for the MLflow UI: each grid path's values, the seeds, the draw."""
    from pcs.component_run import _short_yaml
    from pcs.specs import content_hash

    params: dict[str, str] = {"executor": spec.executor}
    for path, values in spec.grid:
        text = _short_yaml(values)
        params[f"grid.{path}"] = (
            text if len(text) <= _PARAM_VALUE_LIMIT else f"sha256:{content_hash(values)}"
        )
    params["seeds"] = _short_yaml(spec.seeds)
    if spec.samples is not None:
        params["samples"] = str(spec.samples)
        params["sample_seed"] = str(spec.sample_seed)
    return params


def commands_registry(commands: Sequence[RunCommand]) -> dict[str, Any]:
    """A registry holding every trial's run command (with its components and repos), as data."""
    from pcs.registry import InMemoryRegistry

    registry = InMemoryRegistry()
    seen: set[str] = set()
    for command in commands:
        if command.identifier in seen:
            continue
        seen.add(command.identifier)
        command.to_registry(registry)
    return registry.to_dict()


def commands_text(commands: Sequence[RunCommand]) -> str:
    """:func:`commands_registry` as the YAML of ``pcs/sweep_commands.yaml``."""
    from pcs.specs import dump_yaml

    return dump_yaml(commands_registry(commands))


def sources_of(commands: Sequence[RunCommand]) -> dict[str, str]:
    sources: dict[str, str] = {}
    for command in commands:
        sources.update(command.sources)
    return sources


def requirements_of(commands: Sequence[RunCommand]) -> dict[str, str]:
    out: dict[str, str] = {}
    for command in commands:
        for component in command.component.dependency_list():
            if component._requirements_override is not None:
                out[component.identifier] = component._requirements_override
    return out


def check_runnable_in(executor: str, component: Component,
                       commands: Sequence[RunCommand]) -> dict[str, Any] | None:
    """Live commands for a serial sweep of a class captured from ``__main__``; refuse it elsewhere.

    Such a class runs as itself in this process; a worker process can only
    run its captured source, which must then be complete.
    """
    inline = [c for c in component.dependency_list() if c.is_inline]
    if not inline:
        return None
    if executor == "serial":
        return {c.identifier: c for c in commands}
    problems = [p for c in inline for p in c.snapshot_problems()]
    if problems or any(not entry.get("sha256") for c in commands for entry in c.code.values()):
        raise ArgumentError(
            f"Component {component.identifier!r} is a class defined in __main__ whose source pcs "
            f"could not capture completely ({'; '.join(problems)}), so worker processes cannot "
            "run it. Use executor='serial', or define the class in a module file."
        )
    return None


def rerun_spec(old: SweepSpec | None, old_runs: Mapping[int, ComponentRun],
                commands: Mapping[int, RunCommand], executor: str,
                max_workers: int | None) -> SweepSpec:
    """The spec of a rerun: the original's, with the new commands (and executor)."""
    if old is not None:
        trials = [
            TrialSpec(t.index, t.args, commands[t.index].seed, commands[t.index].identifier)
            for t in old.trials if t.index in commands
        ]
        return old.replace(trials=trials, executor=executor, max_workers=max_workers)
    first = commands[min(commands)]
    varied = results.varied_paths_of(old_runs)
    trials = [
        TrialSpec(i, {p: old_runs[i].data.params.get(p) for p in varied}, c.seed, c.identifier)
        for i, c in sorted(commands.items())
    ]
    return SweepSpec(
        component=first.component.identifier, entry_point=first.entry_point,
        arg_set={}, grid=[], samples=None, sample_seed=None, seeds=[None],
        executor=executor, max_workers=max_workers, plot_metric=None, trials=trials,
    )


def warn_local_store_on_ray(uri: str, ray_address: str | None) -> None:
    """Warn when Ray trials on other machines would write to a store only this one has."""
    import logging
    import socket

    local = uri.startswith(("sqlite:", "file:")) or "://" not in uri
    if not local:
        return
    others: list[str] = []
    try:
        import ray

        here = {"127.0.0.1", ray.util.get_node_ip_address()}
        with __import__("contextlib").suppress(OSError):
            here.add(socket.gethostbyname(socket.gethostname()))
        others = sorted({n.get("NodeManagerAddress", "") for n in ray.nodes()
                         if n.get("Alive")} - here)
    except Exception:  # noqa: BLE001 - the warning is a courtesy
        pass
    if others or (ray_address and ray_address not in ("local", "auto")):
        where = f" (nodes at {', '.join(others[:5])})" if others else ""
        logging.getLogger("pcs.sweep").warning(
            "pcs: the sweep's Ray trials write to the local store %s; trials that run on other "
            "machines of the cluster%s would write to a file of that name there, not here. Use a "
            "tracking server every node reaches: pcs --tracking-uri http://HOST:5000 sweep ... "
            "(or MLFLOW_TRACKING_URI).", uri, where,
        )


def absolute_tracking_uri() -> str:
    """The caller's tracking URI, with a relative SQLite or file path made absolute.

    Workers may start in another folder (Ray's do), and must write to the same store.
    """
    from pcs import _config

    uri = _config.tracking_uri()
    if uri.startswith("sqlite:///"):
        rest = uri[len("sqlite:///"):]
        path, sep, query = rest.partition("?")
        if path and path != ":memory:" and not os.path.isabs(path):
            return f"sqlite:///{os.path.abspath(path)}{sep}{query}"
        return uri
    if uri.startswith("file:") or "://" in uri:
        return uri
    return os.path.abspath(uri)
