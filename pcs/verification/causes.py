"""The record of two runs compared: what could explain a difference in their outputs.

Causes are differences in the record (code, arguments, seed, data files read,
environment variables read, artifacts of dependency runs, datasets logged with
``mlflow.log_input``, Python, platform, distributions); suspects are the usual
sources of nondeterminism, listed when nothing recorded explains a divergence.
"""

from __future__ import annotations

from typing import Any

from pcs import _keys
from pcs.component_run import ComponentRun
from pcs.errors import PcsError
from pcs.record.environ import is_secret, shown_value
from pcs.record.environment import changed_distributions, determinism_suspects
from pcs.run import Run


def record_causes(a: Run, b: Run) -> list[str]:
    causes: list[str] = []
    if not (isinstance(a, ComponentRun) and isinstance(b, ComponentRun)):
        if a.tags.get(_keys.SOURCE_GIT_COMMIT) != b.tags.get(_keys.SOURCE_GIT_COMMIT):
            causes.append(
                f"git commit: {a.tags.get(_keys.SOURCE_GIT_COMMIT)} vs {b.tags.get(_keys.SOURCE_GIT_COMMIT)}"
            )
        return causes + _dataset_causes(a, b)  # MLflow's record of log_input, any run has it
    try:
        cmd_a, cmd_b = a.run_command, b.run_command
    except PcsError as exc:
        return [f"the record cannot be read: {exc}"]
    # a --code git rerun pins components to commits (name==sha): the code line says that
    if cmd_a.component.name != cmd_b.component.name or cmd_a.entry_point != cmd_b.entry_point:
        causes.append(
            f"command: {cmd_a.component.name}.{cmd_a.entry_point} vs "
            f"{cmd_b.component.name}.{cmd_b.entry_point}"
        )
    causes.extend(_code_causes(a, b, cmd_a.code, cmd_b.code))
    if cmd_a.argument_set != cmd_b.argument_set:
        causes.extend(_argument_causes(cmd_a.argument_set.to_dict(), cmd_b.argument_set.to_dict()))
    if cmd_a.seed != cmd_b.seed:
        causes.append(f"seed: {cmd_a.seed} vs {cmd_b.seed}")
    causes.extend(_input_causes(inputs_record(a), inputs_record(b)))
    causes.extend(_dataset_causes(a, b))
    causes.extend(_environment_causes(a.environment, b.environment))
    return causes


def inputs_record(run: ComponentRun) -> dict[str, Any] | None:
    """The run's ``pcs/inputs.yaml`` (data files, environment variables, other runs' artifacts
    it read), or None for a run recorded before pcs kept it."""
    data = run._read_yaml(_keys.INPUTS_ARTIFACT)
    return data if isinstance(data, dict) else None


def _data_by_path(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Data entries keyed by path, components' versions (``name==sha``) and keys set aside."""
    out: dict[str, dict[str, Any]] = {}
    for component, files in (record.get("data") or {}).items():
        if not isinstance(files, dict):
            continue
        name = str(component).split("==", 1)[0]
        for path, entry in files.items():
            if isinstance(entry, dict):
                out.setdefault(str(path), {**entry, "component": name})
    return out


def _input_causes(a: dict[str, Any] | None, b: dict[str, Any] | None) -> list[str]:
    """Data files, environment variables and other runs' artifacts the two runs read differently."""
    if a is None or b is None:
        return []  # a run recorded before pcs kept its inputs
    causes: list[str] = []
    data_a, data_b = _data_by_path(a), _data_by_path(b)
    for path in sorted(set(data_a) | set(data_b)):
        ea, eb = data_a.get(path), data_b.get(path)
        if ea is None or eb is None:
            causes.append(f"data: {path} read only by the {'original' if ea else 'candidate'}")
        elif ea.get("sha256") != eb.get("sha256"):
            causes.append(
                f"data: {path} changed (sha {str(ea.get('sha256'))[:4]} → {str(eb.get('sha256'))[:4]})"
            )
    env_a, env_b = a.get("env") or {}, b.get("env") or {}
    for name in sorted(set(env_a) & set(env_b)):
        va, vb = env_a[name], env_b[name]
        if va == vb:
            continue
        if is_secret(name) or isinstance(va, dict) or isinstance(vb, dict):
            causes.append(f"env: {name} changed ({shown_value(va)} -> {shown_value(vb)})")
        else:
            causes.append(f"env: {name} {shown_value(va)} -> {shown_value(vb)}")
    runs_a, runs_b = a.get("runs") or {}, b.get("runs") or {}
    for run_id in sorted(set(runs_a) & set(runs_b)):
        fa, fb = runs_a[run_id] or {}, runs_b[run_id] or {}
        changed = [p for p in sorted(set(fa) | set(fb)) if fa.get(p) != fb.get(p)]
        if changed:
            shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
            causes.append(f"dependency run {run_id[:8]}: {shown} changed")
    only_a, only_b = sorted(set(runs_a) - set(runs_b)), sorted(set(runs_b) - set(runs_a))
    if only_a or only_b:
        causes.append(
            "dependency runs: " + (", ".join(r[:8] for r in only_a) or "none") + " vs "
            + (", ".join(r[:8] for r in only_b) or "none")
        )
    return causes


def _datasets(run: Run) -> dict[str, str]:
    """``{name (context): digest}`` of the datasets logged with ``mlflow.log_input``, from MLflow's own record."""
    try:
        inputs = run._mlflow_run.inputs
    except Exception:  # noqa: BLE001 - a store that keeps no inputs
        return {}
    found: list[tuple[str, str | None, str]] = []
    for item in getattr(inputs, "dataset_inputs", None) or []:
        dataset = item.dataset
        context = next((t.value for t in item.tags or [] if t.key == "mlflow.data.context"), None)
        found.append((str(dataset.name), context, str(dataset.digest)))
    names = [name for name, _, _ in found]
    # a name logged once is enough; the same name in several contexts is told apart by them
    return {
        (f"{name} ({context})" if names.count(name) > 1 and context else name): digest
        for name, context, digest in found
    }


def _dataset_causes(a: Run, b: Run) -> list[str]:
    da, db = _datasets(a), _datasets(b)
    causes = []
    for label in sorted(set(da) | set(db)):
        if label not in da or label not in db:
            causes.append(f"dataset {label}: logged only by the {'original' if label in da else 'candidate'}")
        elif da[label] != db[label]:
            causes.append(f"dataset {label}: digest {da[label]} -> {db[label]}")
    return causes


def _code_causes(a: ComponentRun, b: ComponentRun, code_a: dict, code_b: dict) -> list[str]:
    """One line for the code: which files changed, and across which commits when git knows.

    Git state only explains a difference in a file whose snapshot differs: the
    same text at another commit (or a rerun of the recorded snapshot, which has
    no working tree) computes the same thing.
    """
    causes = []
    changed: list[str] = []
    changed_ids: list[tuple[str | None, str | None]] = []
    by_a, by_b = _by_component_name(code_a), _by_component_name(code_b)
    for key in sorted(set(by_a) | set(by_b)):
        (cid_a, ea), (cid_b, eb) = by_a.get(key, (None, None)), by_b.get(key, (None, None))
        if ea is None or eb is None:
            entry = ea or eb or {}
            where = "the original" if ea is not None else "the candidate"
            causes.append(f"code: {_file_name(entry.get('file') or key)} is only in {where}")
        elif ea.get("sha256") != eb.get("sha256"):
            changed_ids.append((cid_a, cid_b))
            changed.append(_file_name(ea.get("file") or eb.get("file") or key))
    if not changed:
        return causes
    rec_a = a.code_record.get("components", {})
    rec_b = b.code_record.get("components", {})
    commits: set[tuple[str, str]] = set()
    dirty = False
    for cid_a, cid_b in changed_ids:
        ga = (rec_a.get(_component_of(cid_a)) or {}).get("git") or {}
        gb = (rec_b.get(_component_of(cid_b)) or {}).get("git") or {}
        if ga.get("commit") and gb.get("commit") and ga["commit"] != gb["commit"]:
            commits.add((ga["commit"], gb["commit"]))
        dirty = dirty or bool(ga.get("dirty") or gb.get("dirty"))
    files = ", ".join(dict.fromkeys(changed))
    if len(commits) == 1:
        old, new = next(iter(commits))
        causes.append(f"code: commit {old[:7]} -> {new[:7]} ({files} changed)")
    else:
        edits = " (uncommitted edits)" if dirty else ""
        causes.append(f"code: {files} changed{edits}")
    return causes


def _component_of(code_key: str | None) -> str:
    """The component identifier of a code map key (``agent`` or ``agent:helpers``)."""
    return (code_key or "").split(":", 1)[0]


def _by_component_name(code: dict) -> dict[str, tuple[str, dict]]:
    """Code map entries keyed without versions: ``agent==1a2b:helpers`` -> ``agent:helpers``.

    A rerun with ``code="git"`` pins components to commits (``name==sha``); the
    same file of the same component must still be compared with itself.
    """
    out: dict[str, tuple[str, dict]] = {}
    for key, entry in code.items():
        component, _, module = key.partition(":")
        name = component.split("==", 1)[0]
        out[f"{name}:{module}" if module else name] = (key, entry)
    return out


def _file_name(label: str) -> str:
    """``repo_id:path/to/file.py`` -> ``path/to/file.py``."""
    return label.split(":", 1)[-1]


def _argument_causes(args_a: dict, args_b: dict) -> list[str]:
    flat_a, flat_b = _flatten(args_a), _flatten(args_b)
    causes = []
    for key in sorted(set(flat_a) | set(flat_b)):
        if flat_a.get(key, "<unset>") != flat_b.get(key, "<unset>"):
            causes.append(f"argument {key}: {flat_a.get(key, '<unset>')!r} vs {flat_b.get(key, '<unset>')!r}")
    return causes


def _flatten(args: dict) -> dict[str, Any]:
    return {
        f"{comp}.{fn}.{name}": value
        for comp, fns in args.items()
        for fn, kwargs in fns.items()
        for name, value in kwargs.items()
    }


def _environment_causes(env_a: dict, env_b: dict) -> list[str]:
    causes = []
    py_a, py_b = env_a.get("python") or {}, env_b.get("python") or {}
    for key in ("implementation", "version"):
        if py_a.get(key) != py_b.get(key):
            causes.append(f"Python {key}: {py_a.get(key)} vs {py_b.get(key)}")
    pl_a, pl_b = env_a.get("platform") or {}, env_b.get("platform") or {}
    for key in ("system", "machine"):
        if pl_a.get(key) != pl_b.get(key):
            causes.append(f"platform {key}: {pl_a.get(key)} vs {pl_b.get(key)}")
    changed = changed_distributions(_distributions(env_a, env_b), _distributions(env_b, env_a))
    if changed:
        shown = ", ".join(changed[:10]) + (f" and {len(changed) - 10} more" if len(changed) > 10 else "")
        causes.append(f"distributions changed: {shown}")
    return causes


def _distributions(env: dict, other: dict) -> dict[str, str]:
    """The distributions that can explain a difference: the ones the run used, when both runs
    recorded them (an unused distribution changes nothing), else every installed one."""
    if env.get("used_distributions") is not None and other.get("used_distributions") is not None:
        return {**(env.get("required_distributions") or {}), **env["used_distributions"]}
    return dict(env.get("distributions") or {})


def suspects(a: Run, b: Run) -> list[str]:
    """The usual sources of nondeterminism, in order, for a divergence nothing recorded explains.

    First what differed between the two runs' determinism records (hash seed,
    thread counts, CPU, GPU), then the risks both share, then randomness pcs
    cannot see.
    """
    env_a = a.environment if isinstance(a, ComponentRun) else {}
    env_b = b.environment if isinstance(b, ComponentRun) else {}
    suspects = determinism_suspects(env_a.get("determinism") or {}, env_b.get("determinism") or {})
    suspects.append(
        "randomness pcs does not seed: os.urandom, uuid, time, a generator of your own, or "
        "input read from outside the run"
    )
    return suspects
