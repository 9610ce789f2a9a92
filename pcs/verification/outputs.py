"""The outputs of two runs compared: return value, metrics, params, artifacts, printed output.

Each ``compare_*`` function adds to a :class:`~pcs.verification.report.Verification`
what it compared and the differences it found.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import math
import struct
import tempfile
from pathlib import Path
from typing import Any

from pcs import _config, _keys
from pcs._capture import code_folder_as_placeholder, drop_tool_lines
from pcs.component_run import ComponentRun, argument_params
from pcs.errors import ArgumentError, PcsError
from pcs.run import Run
from pcs.specs import content_hash
from pcs.verification.normalise import (
    code_folders_as_placeholder,
    normalise_artifact_paths,
    normalise_file,
    normalise_text,
)
from pcs.verification.report import Difference, Verification

# pcs's own record is compared as causes; these artifacts of it are outputs
_OUTPUT_RECORD_ARTIFACTS = {
    _keys.STDOUT_ARTIFACT: "stdout",
    _keys.STDERR_ARTIFACT: "stderr",
}


def tolerance(rtol: float, atol: float) -> tuple[float, float]:
    for name, value in (("rtol", rtol), ("atol", atol)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not (
            0 <= value < math.inf
        ):
            raise ArgumentError(
                f"{name} must be a finite number >= 0; got {value!r}. Example: rtol=1e-9."
            )
    return float(rtol), float(atol)


def _ignored(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def note_unfinished(a: Run, b: Run, report: Verification) -> None:
    for which, run in (("original", a), ("candidate", b)):
        status = run.status
        if status != "FINISHED":
            ended = {"KILLED": "was killed", "FAILED": "failed", "RUNNING": "is still running"}
            report.notes.append(
                f"the {which} run {run.identifier} {ended.get(status, 'is ' + status)} "
                f"({status}): it never finished, so its outputs are incomplete and differences "
                "say nothing about reproducibility"
                + (f" ({run.tags[_keys.ERROR]})" if run.tags.get(_keys.ERROR) else "")
            )


def compare_endings(a: Run, b: Run, report: Verification) -> None:
    """How the runs ended is an output once either did not finish: another status or error differs."""
    if a.status == "FINISHED" and b.status == "FINISHED":
        return
    report.compared.append("how the run ended")
    if a.status != b.status:
        report.differences.append(
            Difference("status", "status", f"the runs ended differently: {a.status} vs {b.status}")
        )
        return
    error_a, error_b = a.tags.get(_keys.ERROR), b.tags.get(_keys.ERROR)
    if error_a != error_b:
        report.differences.append(Difference(
            "error", "error",
            f"the runs failed differently: {_clip(error_a or 'no error recorded', 100)} vs "
            f"{_clip(error_b or 'no error recorded', 100)}",
        ))


def note_outputs_left_out(a: Run, b: Run, report: Verification) -> None:
    """Say which outputs exist but could not be compared whole, so a match is not over-read."""
    for which, run in (("original", a), ("candidate", b)):
        if run.status == "FINISHED" and run.tags.get(_keys.RETURN_VALUE_FORMAT) == "none":
            report.notes.append(
                f"the {which} run's return value could not be recorded as YAML/JSON, so it was "
                "not compared; record it with return_value_format='dill' to compare it"
            )
        for stream, tag in (("stdout", _keys.STDOUT_CUT), ("stderr", _keys.STDERR_CUT)):
            if run.tags.get(tag) and any(stream in c for c in report.compared):
                report.notes.append(
                    f"the {which} run printed more to {stream} than pcs keeps ({run.tags[tag]} "
                    "bytes were cut); only the part kept was compared"
                )


_WRITTEN_SHOWN = 5  # file names shown in the report line; the JSON report has them all


def note_written_files(a: Run, b: Run, report: Verification, patterns: tuple[str, ...] = ()) -> None:
    """List the files either run wrote and did not record as "written, not recorded".

    A file counts as recorded when an artifact of the run has its name (it was
    logged with ``mlflow.log_artifact``) or when it is the file the entry point
    returned by path (compared on its own). The rest are outputs pcs cannot
    compare, so a verdict does not over-claim: they are named with what to do.
    """
    written: dict[str, None] = {}
    for run in (a, b):
        if not isinstance(run, ComponentRun):
            continue
        record = run._read_yaml(_keys.INPUTS_ARTIFACT)
        files = record.get("written") if isinstance(record, dict) else None
        if not isinstance(files, dict) or not files:
            continue
        logged = {Path(p).name for p in run.artifact_paths()}
        returned = run.tags.get(_keys.RETURNED_FILE)
        for name in files:
            name = str(name)
            if Path(name).name in logged or name == returned or _ignored(name, patterns):
                continue
            written[name] = None
    if not written:
        return
    names = sorted(written)
    shown = ", ".join(names[:_WRITTEN_SHOWN]) + (
        f" and {len(names) - _WRITTEN_SHOWN} more" if len(names) > _WRITTEN_SHOWN else "")
    report.not_compared_because(
        f"written, not recorded: {shown}",
        "the run wrote these files and did not log them, so pcs cannot compare them; log them "
        "(mlflow.log_artifact) or return a file's path from the entry point to compare it",
    )
    report.written_not_recorded = names


def compare_return_values(a: Run, b: Run, report: Verification, trust: bool = False) -> None:
    """The return values: equal bytes, or equal values (floats within ``rtol``/``atol``).

    A pickled value of an imported run is unpickled only with ``trust`` (unpickling
    runs code); without it, it is named as not compared, never called different.
    """
    sha_a = a.tags.get(_keys.RETURN_VALUE_SHA256)
    sha_b = b.tags.get(_keys.RETURN_VALUE_SHA256)
    if sha_a is None and sha_b is None:
        return
    if sha_a is not None and sha_b is not None and _is_null_value(a) and _is_null_value(b):
        return  # two None return values: nothing was computed into them
    if sha_a != sha_b and sha_a and sha_b:
        untrusted = [r for r in (a, b) if _needs_trust(r, trust)]
        if untrusted:
            report.not_compared_because(
                "return value",
                f"pickled in run {untrusted[0].identifier}, imported from a bundle; unpickling "
                "runs code, so it needs --trust (pcs rerun --trust, rerun(trust=True), "
                "compare_runs(trust=True))",
            )
            return
        loaded = _load_values(a, b, trust)
        if loaded is not None:
            report.compared.append(
                "return value" + (" (floats within rtol/atol)" if report.rtol or report.atol else "")
            )
            deviations: list[tuple[str, float, float]] = []
            found = _value_difference(loaded[0], loaded[1], report.rtol, report.atol, deviations)
            if found is None:
                for what, x, y in deviations:
                    _track_deviation(report, f"return value{what}", x, y)
                return
            where, x, y = found
            report.differences.append(Difference(
                "return_value", "return_value",
                f"return value differs{' at ' + where if where else ''}: "
                f"{_clip(_safe_repr(x), 80)} vs {_clip(_safe_repr(y), 80)}",
            ))
            return
    report.compared.append("return value")
    if sha_a != sha_b:
        detail = "return value differs"
        if sha_a and sha_b:
            detail += f": sha256 {sha_a[:12]} vs {sha_b[:12]}"
            shown = _short_values(a, b, trust)
            if shown:
                detail += f" ({shown})"
        else:
            detail += f": recorded in {'one run' if (sha_a or sha_b) else 'neither'} only"
        report.differences.append(Difference("return_value", "return_value", detail))


_PICKLED = ("dill", "pickle")


def compare_returned_file(a: Run, b: Run, report: Verification) -> None:
    """A file the entry point returned by path: its content, hashed when the run ended."""
    path_a, path_b = a.tags.get(_keys.RETURNED_FILE), b.tags.get(_keys.RETURNED_FILE)
    if not path_a and not path_b:
        return
    sha_a, sha_b = a.tags.get(_keys.RETURNED_FILE_SHA256), b.tags.get(_keys.RETURNED_FILE_SHA256)
    if not sha_a or not sha_b:
        outside = path_a if not sha_a else path_b
        report.not_compared_because(
            f"the returned file {outside}",
            "it is outside the run's working folder (or not a regular file), so pcs did not "
            "hash it; return a path inside the folder the run ran in, or log the file",
        )
        return
    report.compared.append(f"the returned file {path_a}")
    if path_a != path_b:
        report.differences.append(Difference(
            "returned_file", "returned_file", f"the returned file differs: {path_a} vs {path_b}"
        ))
    elif sha_a != sha_b:
        report.differences.append(Difference(
            "returned_file", str(path_a),
            f"the returned file {path_a} differs: sha256 {sha_a[:12]} vs {sha_b[:12]}",
        ))


def _needs_trust(run: Run, trust: bool) -> bool:
    return (
        run.tags.get(_keys.RETURN_VALUE_FORMAT) in _PICKLED
        and bool(run.tags.get(_keys.IMPORTED_FROM))
        and not trust
        and not getattr(run, "_trusted", False)
    )


def _load_values(a: Run, b: Run, trust: bool) -> tuple[Any, Any] | None:
    """Both return values, or None when either cannot be loaded here."""
    if not (isinstance(a, ComponentRun) and isinstance(b, ComponentRun)):
        return None
    try:
        return a.return_value_of(trust=trust), b.return_value_of(trust=trust)
    except Exception:  # noqa: BLE001 - not loadable here: compared by sha256
        return None


def _value_difference(
    x: Any, y: Any, rtol: float, atol: float, deviations: list[tuple[str, float, float]],
    where: str = "", depth: int = 0,
) -> tuple[str, Any, Any] | None:
    """Where two values first differ and the two values there, or None when equal.

    The place is ``""`` at the top and ``"[2]['loss']"`` inside.

    Floats anywhere inside lists, tuples, dicts and dataclasses count as equal
    within ``rtol``/``atol`` (each such deviation is added to ``deviations``);
    NumPy arrays are equal with equal shape, dtype and values, NaN where NaN is.
    """
    if depth > 100:
        return (where, x, y)
    if isinstance(x, float) and isinstance(y, float) and not isinstance(x, bool):
        if x == y:
            return None
        if _close(x, y, rtol, atol):
            deviations.append((where, x, y))
            return None
        return (where, x, y)
    tx, ty = type(x), type(y)
    if tx in (dict,) and ty is tx:
        if x.keys() != y.keys():
            return (where, x, y)
        for k in x:
            inner = _value_difference(x[k], y[k], rtol, atol, deviations, f"{where}[{k!r}]", depth + 1)
            if inner is not None:
                return inner
        return None
    if tx in (list, tuple) and ty is tx:
        if len(x) != len(y):
            return (where, x, y)
        for i, (p, q) in enumerate(zip(x, y, strict=True)):
            inner = _value_difference(p, q, rtol, atol, deviations, f"{where}[{i}]", depth + 1)
            if inner is not None:
                return inner
        return None
    if _is_array(x) or _is_array(y):
        return None if _same_array(x, y, rtol, atol, deviations, where) else (where, x, y)
    if dataclasses.is_dataclass(x) and dataclasses.is_dataclass(y) and not isinstance(x, type):
        if (tx.__module__, tx.__qualname__) != (ty.__module__, ty.__qualname__):
            return (where, x, y)
        for f in dataclasses.fields(x):
            inner = _value_difference(
                getattr(x, f.name, None), getattr(y, f.name, None), rtol, atol, deviations,
                f"{where}.{f.name}", depth + 1,
            )
            if inner is not None:
                return inner
        return None
    return None if _same_value(x, y, depth) else (where, x, y)


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception:  # noqa: BLE001 - a value whose repr fails is still different
        return f"<{type(value).__name__}>"


def _is_array(x: Any) -> bool:
    return type(x).__module__ == "numpy" and type(x).__name__ == "ndarray"


def _same_array(x: Any, y: Any, rtol: float, atol: float,
                deviations: list[tuple[str, float, float]], where: str) -> bool:
    import numpy as np

    if not (_is_array(x) and _is_array(y)) or x.shape != y.shape or x.dtype != y.dtype:
        return False
    numeric = np.issubdtype(x.dtype, np.number) and not np.issubdtype(x.dtype, np.complexfloating)
    try:
        if np.array_equal(x, y, equal_nan=numeric and np.issubdtype(x.dtype, np.floating)):
            return True
    except TypeError:
        return bool(np.array_equal(x, y))
    if not (numeric and np.issubdtype(x.dtype, np.floating) and (rtol or atol)):
        return False
    if not np.array_equal(np.isnan(x), np.isnan(y)):
        return False
    if not np.allclose(x, y, rtol=rtol, atol=atol, equal_nan=True):
        return False
    finite = ~np.isnan(x)
    gap = np.abs(x[finite] - y[finite])
    if gap.size:
        i = int(np.argmax(gap))
        deviations.append((f"{where} (array)", float(x[finite][i]), float(y[finite][i])))
    return True


def _same_value(x: Any, y: Any, depth: int = 0) -> bool:
    """Equal values, where classes pickled by value count as one class when their names match.

    dill pickles a class of the component's own module with the value, so the
    original's value comes back as an instance of a copy of the class, and
    ``==`` of most classes compares the class first; their attributes are
    compared instead.
    """
    if depth > 100:
        return False
    tx, ty = type(x), type(y)
    if tx is not ty:
        same_name = (tx.__module__, tx.__qualname__) == (ty.__module__, ty.__qualname__)
        if not (same_name and _state_in_dict(tx) and _state_in_dict(ty)):
            return False
        return _same_value(vars(x), vars(y), depth + 1)
    if _is_array(x) or _is_array(y):
        return _same_array(x, y, 0.0, 0.0, [], "")
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return all(
            _same_value(getattr(x, f.name, None), getattr(y, f.name, None), depth + 1)
            for f in dataclasses.fields(x)
        )
    if tx is dict:
        return x.keys() == y.keys() and all(_same_value(x[k], y[k], depth + 1) for k in x)
    if tx in (list, tuple):
        return len(x) == len(y) and all(
            _same_value(i, j, depth + 1) for i, j in zip(x, y, strict=True)
        )
    try:
        equal = x == y
    except Exception:  # noqa: BLE001 - a value whose == raises is not known to be equal
        return False
    if not isinstance(equal, bool):
        return False  # == gave no single answer (arrays): not known to be equal
    if equal:
        return True
    # a class without its own == compares identity: compare its state instead
    return tx.__eq__ is object.__eq__ and _state_in_dict(tx) and _same_value(
        vars(x), vars(y), depth + 1
    )


def _state_in_dict(cls: type) -> bool:
    """Whether instances of ``cls`` keep all their state in ``__dict__`` (plain Python classes).

    A class built on a C type (``random.Random``, ``dict``) or with ``__slots__``
    keeps state elsewhere, so equal ``__dict__`` would prove nothing.
    """
    # an instance of a plain class is an object header plus, at most, pointers to its
    # __dict__ and weak references; slots and C-level state make it larger
    return cls.__dictoffset__ != 0 and cls.__basicsize__ <= object.__basicsize__ + 2 * _POINTER


_POINTER = struct.calcsize("P")


_NULL_SHA = None


def _is_null_value(run: Run) -> bool:
    global _NULL_SHA
    if _NULL_SHA is None:
        _NULL_SHA = content_hash(None)
    return run.tags.get(_keys.RETURN_VALUE_SHA256) == _NULL_SHA


def _short_values(a: Run, b: Run, trust: bool = False) -> str:
    if not (isinstance(a, ComponentRun) and isinstance(b, ComponentRun)):
        return ""
    try:
        va, vb = repr(a.return_value_of(trust=trust)), repr(b.return_value_of(trust=trust))
    except Exception:  # noqa: BLE001 - the difference stands without the values
        return ""
    if len(va) + len(vb) > 160:
        return ""
    return f"{va} vs {vb}"


def compare_metrics(a: Run, b: Run, report: Verification, patterns: tuple[str, ...]) -> None:
    keys_a = {k for k in a.data.metrics if not k.startswith("system/") and not _ignored(k, patterns)}
    keys_b = {k for k in b.data.metrics if not k.startswith("system/") and not _ignored(k, patterns)}
    if keys_a or keys_b:
        report.compared.append(f"{len(keys_a | keys_b)} metric(s), step by step")
    system = {k for k in set(a.data.metrics) | set(b.data.metrics) if k.startswith("system/")}
    if system:
        report.not_compared_because(
            f"{len(system)} system metric(s)", "measurements of the machine, not of the computation"
        )
    for key in sorted(keys_a | keys_b):
        if key not in keys_b or key not in keys_a:
            where = "the original" if key in keys_a else "the candidate"
            report.differences.append(
                Difference("metric", key, f"metric {key} is logged only in {where}")
            )
            continue
        full_a, full_b = a.metric_history(key), b.metric_history(key)
        _note_unordered(key, full_a, full_b, report)
        hist_a = [(m.step, m.value) for m in full_a]
        hist_b = [(m.step, m.value) for m in full_b]
        for i, ((step_a, value_a), (step_b, value_b)) in enumerate(zip(hist_a, hist_b, strict=False)):
            where = f"step {step_a}" if step_a == step_b else f"entry {i} (steps {step_a} vs {step_b})"
            if step_a == step_b and _same_number(value_a, value_b):
                continue
            if step_a == step_b and _close(value_a, value_b, report.rtol, report.atol):
                _track_deviation(report, f"metric {key} at {where}", value_a, value_b)
                continue
            report.differences.append(
                Difference("metric", key, f"metric {key} differs at {where}: {value_a!r} vs {value_b!r}")
            )
            break
        else:
            if len(hist_a) != len(hist_b):
                report.differences.append(
                    Difference(
                        "metric",
                        key,
                        f"metric {key} has {len(hist_a)} values in the original and "
                        f"{len(hist_b)} in the candidate",
                    )
                )


def _note_unordered(key: str, hist_a: list[Any], hist_b: list[Any], report: Verification) -> None:
    """Name a metric with several values at one step in one millisecond: their order is lost.

    MLflow's stores keep a metric's values by (timestamp, step, value), so the
    order in which two values were logged within a millisecond is not recorded;
    they are compared in the stores' order (by value), and the report says so.
    """
    ties = max(_ties(hist_a), _ties(hist_b))
    if ties:
        report.not_compared_because(
            f"metric {key}: the order of {ties} values logged at one step in one millisecond",
            "the tracking store keeps no order among them (it sorts them by value), so they "
            "were compared as a set",
        )


def _ties(history: list[Any]) -> int:
    seen: dict[tuple[int, int], set[float]] = {}
    for m in history:
        seen.setdefault((m.step, m.timestamp), set()).add(m.value)
    return sum(len(v) for v in seen.values() if len(v) > 1)


def _same_number(x: float, y: float) -> bool:
    return x == y or (x != x and y != y)  # NaN equals NaN here


def _close(x: float, y: float, rtol: float, atol: float) -> bool:
    if not (rtol or atol) or math.isnan(x) or math.isnan(y):
        return False
    return math.isclose(x, y, rel_tol=rtol, abs_tol=atol)


def _track_deviation(report: Verification, where: str, x: float, y: float) -> None:
    absolute = abs(x - y)
    relative = absolute / max(abs(x), abs(y)) if max(abs(x), abs(y)) else 0.0
    current = report.max_deviation
    if current is None or relative > current[2] or (relative == current[2] and absolute > current[1]):
        report.max_deviation = (where, absolute, relative)


def _recorded_params(run: Run) -> set[str]:
    """The params pcs itself logged from the run command (arguments and seed): record, not output."""
    if not isinstance(run, ComponentRun):
        return set()
    try:
        return set(argument_params(run.run_command))
    except PcsError:
        return {_keys.SEED_PARAM}


def compare_params(a: Run, b: Run, report: Verification, patterns: tuple[str, ...]) -> None:
    skip = _recorded_params(a) | _recorded_params(b)
    pa = {k: v for k, v in a.data.params.items() if k not in skip and not _ignored(k, patterns)}
    pb = {k: v for k, v in b.data.params.items() if k not in skip and not _ignored(k, patterns)}
    if pa or pb:
        report.compared.append(f"{len(set(pa) | set(pb))} param(s)")
    for key in sorted(set(pa) | set(pb)):
        va, vb = pa.get(key), pb.get(key)
        if va != vb and va is not None and vb is not None and not report.raw:
            (na, used_a), (nb, used_b) = normalise_text(va), normalise_text(vb)
            if na == nb:
                report.normalised_by(used_a + used_b)
                continue
        if va != vb:
            report.differences.append(
                Difference("param", key, f"param {key} differs: {_clip(repr(va), 200)} vs {_clip(repr(vb), 200)}")
            )


def _user_tags(run: Run, patterns: tuple[str, ...]) -> dict[str, str]:
    """The tags the code set: not pcs's own (``pcs.*``) nor MLflow's (``mlflow.*``)."""
    return {
        k: v for k, v in run.tags.items()
        if not k.startswith(("pcs.", "mlflow.")) and not _ignored(k, patterns)
    }


def compare_tags(a: Run, b: Run, report: Verification, patterns: tuple[str, ...]) -> None:
    ta, tb = _user_tags(a, patterns), _user_tags(b, patterns)
    if ta or tb:
        report.compared.append(f"{len(set(ta) | set(tb))} tag(s)")
    for key in sorted(set(ta) | set(tb)):
        if ta.get(key) != tb.get(key):
            if key not in tb or key not in ta:
                where = "the original" if key in ta else "the candidate"
                detail = f"tag {key} is set only in {where}"
            else:
                detail = f"tag {key} differs: {_clip(repr(ta[key]), 200)} vs {_clip(repr(tb[key]), 200)}"
            report.differences.append(Difference("tag", key, detail))


def _record_artifact(path: str) -> bool:
    """Whether ``path`` is one of pcs's own record files (named in :mod:`pcs._keys`)."""
    return any(
        path == record or path.startswith((record + "/", record + "."))
        for record in _RECORD_PATHS
    )


_RECORD_PATHS = tuple(
    value for name, value in vars(_keys).items()
    if name.isupper() and isinstance(value, str) and value.startswith(f"{_keys.PCS_ARTIFACT_DIR}/")
)


def _artifact_paths(all_paths: list[str], wanted: set[str]) -> list[str]:
    """Every artifact except pcs's own record, plus the ``wanted`` record files (stdout, stderr)."""
    return [p for p in all_paths if not _record_artifact(p) or p in wanted]


def compare_artifacts(
    a: Run, b: Run, report: Verification, patterns: tuple[str, ...], compare_stderr: bool
) -> None:
    wanted = {
        path for path, name in _OUTPUT_RECORD_ARTIFACTS.items()
        if not _ignored(name, patterns) and (name != "stderr" or compare_stderr)
    }
    all_a, all_b = a.artifact_paths(), b.artifact_paths()
    paths_a, paths_b = _artifact_paths(all_a, wanted), _artifact_paths(all_b, wanted)
    if not compare_stderr and not _ignored("stderr", patterns) and any(
        _keys.STDERR_ARTIFACT in paths and _has_content(run, _keys.STDERR_ARTIFACT)
        for run, paths in ((a, all_a), (b, all_b))
    ):
        report.not_compared_because(
            "stderr", "left out as asked (compare_stderr=False); it is kept for the record"
        )
    names_a, used_a = _comparable_names(paths_a, report.raw)
    names_b, used_b = _comparable_names(paths_b, report.raw)
    outputs = set(_OUTPUT_RECORD_ARTIFACTS.values())
    files = sorted(
        n for n in set(names_a) | set(names_b) if n not in outputs and not _ignored(n, patterns)
    )
    ignored = sorted(
        n for n in set(names_a) | set(names_b) if n not in outputs and _ignored(n, patterns)
    )
    if ignored:
        report.not_compared_because(f"{len(ignored)} artifact(s)", "ignored as asked (" + ", ".join(ignored[:5])
                                    + (", ..." if len(ignored) > 5 else "") + ")")
    if files:
        report.compared.append(f"{len(files)} artifact(s)")
    code_files: set[str] | None = None
    folders: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="pcs-verify-") as tmp:
        for path, name in _OUTPUT_RECORD_ARTIFACTS.items():
            if name not in names_a and name not in names_b:
                continue
            text_a = _read_text(a, path if name in names_a else None, Path(tmp) / "a")
            text_b = _read_text(b, path if name in names_b else None, Path(tmp) / "b")
            if not text_a and not text_b:
                continue  # nothing printed on either side
            if text_a != text_b and not report.raw:
                # compared without the lines MLflow and pcs print on their own, and with
                # the folder the code ran from as a placeholder (a rerun of the recorded
                # snapshot runs elsewhere)
                if code_files is None:
                    code_files = _code_files(a) | _code_files(b)
                    folders = _code_folders(a) | _code_folders(b)
                text_a = code_folder_as_placeholder(drop_tool_lines(text_a), code_files)
                text_b = code_folder_as_placeholder(drop_tool_lines(text_b), code_files)
                if text_a != text_b:
                    # a folder printed alone (Path(__file__).parent), naming no code file
                    snapshots = _config.pcs_home() / "sources"  # where a rerun of recorded code runs
                    text_a, rule_a = code_folders_as_placeholder(text_a, folders, snapshots)
                    text_b, rule_b = code_folders_as_placeholder(text_b, folders, snapshots)
                    if text_a == text_b:
                        report.normalised_by(rule_a + rule_b)
                if not text_a.strip() and not text_b.strip():
                    continue  # only such lines on either side: nothing the code printed
            report.compared.append(name)
            if text_a != text_b and not report.raw:
                (na, ua), (nb, ub) = normalise_text(text_a), normalise_text(text_b)
                if na == nb:
                    report.normalised_by(ua + ub)
                    continue
                text_a, text_b = na, nb
            if text_a.splitlines() != text_b.splitlines():
                report.differences.append(
                    Difference(name, name, f"{name} differs{first_line_difference(text_a, text_b)}")
                )
        report.normalised_by(used_a if any(n in files for n in names_a if names_a[n] != n) else [])
        report.normalised_by(used_b if any(n in files for n in names_b if names_b[n] != n) else [])
        for name in files:
            if name not in names_b:
                report.differences.append(Difference("artifact", name, f"artifact {name} is missing from the candidate"))
                continue
            if name not in names_a:
                report.differences.append(Difference("artifact", name, f"artifact {name} is new in the candidate"))
                continue
            detail = _file_difference(
                name, _download_bytes(a, names_a[name], Path(tmp) / "a"),
                _download_bytes(b, names_b[name], Path(tmp) / "b"), report,
            )
            if detail:
                report.differences.append(Difference("artifact", name, f"artifact {name} differs: {detail}"))


def _comparable_names(paths: list[str], raw: bool) -> tuple[dict[str, str], list[str]]:
    """``{name compared: artifact path}``; stdout/stderr under their short names."""
    record = {p: _OUTPUT_RECORD_ARTIFACTS[p] for p in paths if p in _OUTPUT_RECORD_ARTIFACTS}
    rest = [p for p in paths if p not in record]
    if raw:
        names, used = {p: p for p in rest}, list[str]()
    else:
        names, used = normalise_artifact_paths(rest)
    names.update({name: path for path, name in record.items()})
    return names, used


def _code_folders(run: Run) -> set[str]:
    """The folders the run's code ran from: each component's live folder, when it ran from one."""
    if not isinstance(run, ComponentRun):
        return set()
    try:
        components = (run.code_record or {}).get("components") or {}
    except Exception:  # noqa: BLE001 - no code record: nothing to replace
        return set()
    return {str(c["local_dir"]).rstrip("/") for c in components.values()
            if isinstance(c, dict) and isinstance(c.get("local_dir"), str) and len(c["local_dir"]) > 1}


def _code_files(run: Run) -> set[str]:
    """The run's code files relative to their repositories: components and the modules they import."""
    if not isinstance(run, ComponentRun):
        return set()
    try:
        command = run.run_command
    except PcsError:
        return set()
    files: set[str] = set()
    for component in command.component.dependency_list():
        if component.file_path:
            files.add(str(component.file_path))
        files.update(str(e["path"]) for e in command.closure_entries(component.identifier).values()
                     if e.get("path"))
    return files


def _file_difference(name: str, data_a: bytes, data_b: bytes, report: Verification) -> str:
    """How two files differ ("" when equal, after the normalisation rules unless raw)."""
    sha_a, sha_b = _sha(data_a), _sha(data_b)
    if sha_a == sha_b:
        return ""
    if not report.raw:
        (na, used_a), (nb, used_b) = normalise_file(name, data_a), normalise_file(name, data_b)
        if na == nb:
            report.normalised_by(used_a + used_b)
            return ""
    return f"sha256 {sha_a[:12]} vs {sha_b[:12]}" + _text_difference(name, data_a, data_b)


def _text_difference(name: str, data_a: bytes, data_b: bytes) -> str:
    """The first differing line of two text files, or ""."""
    if len(data_a) > 5_000_000 or len(data_b) > 5_000_000 or b"\0" in data_a[:4096] + data_b[:4096]:
        return ""
    try:
        text_a, text_b = data_a.decode("utf-8"), data_b.decode("utf-8")
    except UnicodeDecodeError:
        return ""
    return first_line_difference(text_a, text_b)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _download_bytes(run: Run, path: str, dst: Path) -> bytes:
    return Path(run._download_quietly(path, dst)).read_bytes()


def _read_text(run: Run, path: str | None, dst: Path) -> str:
    if path is None:
        return ""
    try:
        return _download_bytes(run, path, dst).decode("utf-8", errors="replace")
    except Exception:  # noqa: BLE001 - not recorded on this side
        return ""


def _has_content(run: Run, path: str) -> bool:
    with tempfile.TemporaryDirectory(prefix="pcs-verify-") as tmp:
        try:
            return bool(_download_bytes(run, path, Path(tmp)).strip())
        except Exception:  # noqa: BLE001 - not there
            return False


def first_line_difference(text_a: str, text_b: str) -> str:
    """Where two texts first differ: the line, the column, and context on both sides of it.

    ``" at line 3, column 18: '...epoch 2 loss=0.1234 acc...' vs '...epoch 2 loss=0.1299 acc...'"``;
    ``": 4 lines vs 2"`` when one is the other cut short.
    """
    lines_a, lines_b = text_a.splitlines(), text_b.splitlines()
    for i, (x, y) in enumerate(zip(lines_a, lines_b, strict=False)):
        if x != y:
            column = next(
                (j for j, (p, q) in enumerate(zip(x, y, strict=False)) if p != q), min(len(x), len(y))
            )
            return f" at line {i + 1}, column {column + 1}: {_around(x, column)!r} vs {_around(y, column)!r}"
    if len(lines_a) != len(lines_b):
        return f": {len(lines_a)} lines vs {len(lines_b)}"
    return ""


def _around(line: str, column: int, before: int = 25, after: int = 35) -> str:
    """``line`` cut to the text around ``column``, with "..." where it was cut."""
    start, end = max(0, column - before), column + after
    return ("..." if start else "") + line[start:end] + ("..." if end < len(line) else "")


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
