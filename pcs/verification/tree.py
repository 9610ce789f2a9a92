"""What a run caused in the store beyond its own data: logged models, child runs, thread runs.

- **Logged models**: MLflow 3 keeps a model from ``mlflow.<flavor>.log_model``
  as a LoggedModel whose source run is the run, outside the run's artifacts.
  Models are matched by name (then order of logging) and compared file by file
  after the normalisation rules, with their params; the environment files
  MLflow infers for them are named as not compared (see ``_ENVIRONMENT_FILES``).
- **Child runs**: runs tagged ``mlflow.parentRunId`` = the run (``mlflow.start_run(
  nested=True)``, pcs inner component runs), matched by run name and order of
  start (the rest by order), each compared as a run is, recursively.
- **Thread runs**: ``mlflow.log_metric`` called in a worker thread with no run
  of its own makes MLflow start a fresh top-level run in that thread. pcs finds
  them by what they are: untagged by pcs, with no parent, started by the same
  user within the run's lifetime in its experiment, and left RUNNING (nothing
  ends them). Which worker
  logs what is up to the scheduler, so their metrics and params are compared
  as one set, not run by run.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pcs import _keys
from pcs.run import Run
from pcs.verification.outputs import _file_difference
from pcs.verification.report import Difference, Verification

CompareOutputs = Callable[[Run, Run, Verification], None]


def compare_models(a: Run, b: Run, report: Verification, prefix: str = "") -> None:
    models_a, models_b = _logged_models(a), _logged_models(b)
    if not models_a and not models_b:
        return
    pairs, only_a, only_b = _match(models_a, models_b, lambda m: m.name)
    report.compared.append(f"{len(pairs) + len(only_a) + len(only_b)} logged model(s), file by file")
    for model in only_a:
        report.differences.append(
            Difference("model", model.name, f"{prefix}logged model {model.name!r} is missing from the candidate")
        )
    for model in only_b:
        report.differences.append(
            Difference("model", model.name, f"{prefix}logged model {model.name!r} is new in the candidate")
        )
    for label, ma, mb in pairs:
        _compare_model(a, b, ma, mb, f"{prefix}logged model {label}", report)


def _logged_models(run: Run) -> list[Any]:
    try:
        found = run._client.search_logged_models(
            experiment_ids=[run.experiment_id],
            filter_string=f"source_run_id = '{run.identifier}'",
        )
    except Exception:  # noqa: BLE001 - a store without logged models (MLflow 2 servers)
        return []
    return sorted(found, key=lambda m: (m.creation_timestamp or 0, m.model_id))


def _compare_model(a: Run, b: Run, ma: Any, mb: Any, label: str, report: Verification) -> None:
    params_a, params_b = dict(ma.params or {}), dict(mb.params or {})
    if params_a != params_b:
        report.differences.append(Difference(
            "model", label, f"{label}: params differ: {params_a} vs {params_b}"[:400]
        ))
    with tempfile.TemporaryDirectory(prefix="pcs-verify-model-") as tmp:
        try:
            root_a = _download_model(a, ma, Path(tmp) / "a")
            root_b = _download_model(b, mb, Path(tmp) / "b")
        except Exception as exc:  # noqa: BLE001 - say it was not compared, never call it equal
            report.not_compared_because(label, f"its files could not be read ({exc})"[:300])
            return
        files_a = {p.relative_to(root_a).as_posix() for p in root_a.rglob("*") if p.is_file()}
        files_b = {p.relative_to(root_b).as_posix() for p in root_b.rglob("*") if p.is_file()}
        guessed = (files_a | files_b) & _ENVIRONMENT_FILES
        if guessed:
            report.not_compared_because(
                f"{label}: {', '.join(sorted(guessed))}",
                "MLflow's guess at the environment, not the model: pcs records the run's "
                "environment itself and compares it as a cause, while MLflow's guess varies "
                "(it falls back to a shorter list when its probe fails)",
            )
        for name in sorted((files_a | files_b) - _ENVIRONMENT_FILES):
            if name not in files_b or name not in files_a:
                where = "the original" if name in files_a else "the candidate"
                report.differences.append(
                    Difference("model", f"{label}/{name}", f"{label}: file {name} is only in {where}")
                )
                continue
            detail = _file_difference(name, (root_a / name).read_bytes(), (root_b / name).read_bytes(), report)
            if detail:
                report.differences.append(
                    Difference("model", f"{label}/{name}", f"{label}: {name} differs: {detail}")
                )


# at a model's root: the requirements MLflow infers for it, not the model
_ENVIRONMENT_FILES = {"requirements.txt", "conda.yaml", "python_env.yaml"}


def _download_model(run: Run, model: Any, dst: Path) -> Path:
    from mlflow.artifacts import download_artifacts

    dst.mkdir(parents=True, exist_ok=True)
    uri = run._client._tracking_client.tracking_uri
    return Path(download_artifacts(artifact_uri=model.artifact_location, dst_path=str(dst), tracking_uri=uri))


def compare_children(
    a: Run, b: Run, report: Verification, compare_outputs: CompareOutputs, prefix: str = "",
    depth: int = 0,
) -> None:
    """Compare the runs ``a`` and ``b`` started (nested runs, inner component runs), recursively."""
    if depth > 20:
        return
    kids_a, kids_b = _children(a), _children(b)
    if not kids_a and not kids_b:
        return
    pairs, only_a, only_b = _match(kids_a, kids_b, _run_name)
    if depth == 0:
        report.compared.append(f"{len(pairs) + len(only_a) + len(only_b)} child run(s)")
    for run in only_a:
        report.differences.append(Difference(
            "child_run", _run_name(run), f"{prefix}child run {_run_name(run)!r} is missing from the candidate"
        ))
    for run in only_b:
        report.differences.append(Difference(
            "child_run", _run_name(run), f"{prefix}child run {_run_name(run)!r} is new in the candidate"
        ))
    for label, ka, kb in pairs:
        where = f"{prefix}child run {label}: "
        sub = Verification(ka.identifier, kb.identifier, rtol=report.rtol, atol=report.atol, raw=report.raw)
        compare_outputs(ka, kb, sub)
        if ka.status != kb.status:
            sub.differences.append(Difference("status", "status", f"ended {ka.status} vs {kb.status}"))
        compare_children(ka, kb, sub, compare_outputs, "", depth + 1)
        _merge(report, sub, where)


def _children(run: Run) -> list[Run]:
    found = run._client.search_runs(
        [run.experiment_id], filter_string=f"tags.`{_keys.PARENT_RUN_ID}` = '{run.identifier}'",
        max_results=1000,
    )
    return [Run.from_existing_run_id(r.info.run_id) for r in sorted(found, key=_started)]


def compare_thread_runs(a: Run, b: Run, report: Verification) -> None:
    """Compare what worker threads logged into runs MLflow started for them, as one set."""
    threads_a, threads_b = _thread_runs(a), _thread_runs(b)
    if not threads_a and not threads_b:
        return
    report.compared.append(
        f"what {len(threads_a)}+{len(threads_b)} thread run(s) logged, as one set "
        "(which worker logs what is scheduling)"
    )
    logged_a, logged_b = _thread_logs(a, threads_a), _thread_logs(b, threads_b)
    for key in sorted(set(logged_a) | set(logged_b)):
        va, vb = logged_a.get(key, []), logged_b.get(key, [])
        if va != vb:
            shown = f"{va[:5]} vs {vb[:5]}"
            report.differences.append(Difference(
                "thread_runs", key, f"{key} logged from worker threads differs: {shown}"[:400]
            ))


def _thread_runs(run: Run) -> list[Any]:
    info = run.info
    start, end = info.start_time, info.end_time
    if start is None:
        return []
    tags = run.tags
    clauses = [f"attributes.start_time >= {start}"]
    if end is not None:
        clauses.append(f"attributes.start_time <= {end}")
    found = run._client.search_runs([run.experiment_id], filter_string=" and ".join(clauses), max_results=1000)
    out = []
    for other in found:
        t = other.data.tags
        if other.info.run_id == run.identifier or _keys.PARENT_RUN_ID in t:
            continue
        if any(k.startswith("pcs.") for k in t):
            continue
        if t.get(_keys.USER) != tags.get(_keys.USER) or other.info.status != "RUNNING":
            continue  # MLflow never ends a worker thread's run: one that ended is someone's own
        if end is not None and other.info.start_time >= end:
            continue
        out.append(other)
    return sorted(out, key=_started)


def _thread_logs(run: Run, threads: list[Any]) -> dict[str, list[Any]]:
    """``{"metric k": sorted (step, value) list, "param p": sorted values}`` over all thread runs."""
    out: dict[str, list[Any]] = {}
    for thread in threads:
        for key in thread.data.metrics:
            history = run._client.get_metric_history(thread.info.run_id, key)
            out.setdefault(f"metric {key}", []).extend((m.step, m.value) for m in history)
        for key, value in thread.data.params.items():
            out.setdefault(f"param {key}", []).append(value)
    return {k: sorted(v, key=repr) for k, v in out.items()}


def _started(run: Any) -> tuple[int, str]:
    return (run.info.start_time or 0, run.info.run_id)


def _run_name(run: Run) -> str:
    return run.tags.get(_keys.RUN_NAME) or run.identifier


def _match(
    items_a: list[Any], items_b: list[Any], name: Callable[[Any], str]
) -> tuple[list[tuple[str, Any, Any]], list[Any], list[Any]]:
    """Pair items by name and order within a name; the rest, whose names differ, by order.

    Returns (label, a, b) pairs, then the items of either side left without a partner.
    """
    by_a: dict[str, list[Any]] = {}
    by_b: dict[str, list[Any]] = {}
    for item in items_a:
        by_a.setdefault(name(item), []).append(item)
    for item in items_b:
        by_b.setdefault(name(item), []).append(item)
    pairs: list[tuple[str, Any, Any]] = []
    rest_a: list[Any] = []
    rest_b: list[Any] = []
    for key in by_a:
        left, right = by_a[key], by_b.get(key, [])
        for i, (x, y) in enumerate(zip(left, right, strict=False)):
            pairs.append((repr(key) + (f" #{i + 1}" if len(left) > 1 else ""), x, y))
        rest_a.extend(left[len(right):])
        rest_b.extend(right[len(left):])
    for key in by_b:
        if key not in by_a:
            rest_b.extend(by_b[key])
    rest_a.sort(key=lambda x: items_a.index(x))
    rest_b.sort(key=lambda x: items_b.index(x))
    for x, y in zip(rest_a, rest_b, strict=False):
        pairs.append((f"{name(x)!r} / {name(y)!r}", x, y))
    n = min(len(rest_a), len(rest_b))
    return pairs, rest_a[n:], rest_b[n:]


def _merge(report: Verification, sub: Verification, where: str) -> None:
    """Add a child's comparison to its parent's report, each line saying which child."""
    for d in sub.differences:
        report.differences.append(Difference(d.kind, f"{where}{d.key}", f"{where}{d.detail}"))
    for line in sub.not_compared:
        report.not_compared.append(f"{where}{line}")
    report.normalised_by(sub.normalised)
    if sub.max_deviation is not None:
        what, absolute, relative = sub.max_deviation
        current = report.max_deviation
        if current is None or relative > current[2]:
            report.max_deviation = (f"{where}{what}", absolute, relative)
