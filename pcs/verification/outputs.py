"""The outputs of two runs compared: return value, metrics, params, artifacts, printed output.

Each ``compare_*`` function adds to a :class:`~pcs.verification.report.Verification`
what it compared and the differences it found.
"""

from __future__ import annotations

import fnmatch
import hashlib
import math
import struct
import tempfile
from pathlib import Path
from typing import Any

from pcs import _keys
from pcs._capture import code_folder_as_placeholder, drop_tool_lines
from pcs.component_run import ComponentRun, argument_params
from pcs.errors import ArgumentError, PcsError
from pcs.run import Run
from pcs.specs import content_hash
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


def compare_return_values(a: Run, b: Run, report: Verification) -> None:
    sha_a = a.tags.get(_keys.RETURN_VALUE_SHA256)
    sha_b = b.tags.get(_keys.RETURN_VALUE_SHA256)
    if sha_a is None and sha_b is None:
        return
    if sha_a is not None and sha_b is not None and _is_null_value(a) and _is_null_value(b):
        return  # two None return values: nothing was computed into them
    report.compared.append("return value")
    if sha_a != sha_b and sha_a and sha_b and _equal_unpickled(a, b):
        return  # pickles differ byte for byte (dill pickles classes and sets unstably); values equal
    if sha_a != sha_b:
        detail = "return value differs"
        if sha_a and sha_b:
            detail += f": sha256 {sha_a[:12]} vs {sha_b[:12]}"
            shown = _short_values(a, b)
            if shown:
                detail += f" ({shown})"
        else:
            detail += f": recorded in {'one run' if (sha_a or sha_b) else 'neither'} only"
        report.differences.append(Difference("return_value", "return_value", detail))


def _equal_unpickled(a: Run, b: Run) -> bool:
    """Whether two pickled return values are equal as values (``==``), when both can be loaded."""
    pickled = ("dill", "pickle")
    if not (isinstance(a, ComponentRun) and isinstance(b, ComponentRun)):
        return False
    if a.tags.get(_keys.RETURN_VALUE_FORMAT) not in pickled or (
        b.tags.get(_keys.RETURN_VALUE_FORMAT) not in pickled
    ):
        return False
    try:
        return _same_value(a.return_value, b.return_value)
    except Exception:  # noqa: BLE001 - not loadable here (an imported run's pickle needs trust)
        return False


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


def _short_values(a: Run, b: Run) -> str:
    if not (isinstance(a, ComponentRun) and isinstance(b, ComponentRun)):
        return ""
    try:
        va, vb = repr(a.return_value), repr(b.return_value)
    except PcsError:
        return ""
    if len(va) + len(vb) > 160:
        return ""
    return f"{va} vs {vb}"


def compare_metrics(a: Run, b: Run, report: Verification, patterns: tuple[str, ...]) -> None:
    keys_a = {k for k in a.data.metrics if not k.startswith("system/") and not _ignored(k, patterns)}
    keys_b = {k for k in b.data.metrics if not k.startswith("system/") and not _ignored(k, patterns)}
    if keys_a or keys_b:
        report.compared.append(f"{len(keys_a | keys_b)} metric(s), step by step")
    for key in sorted(keys_a | keys_b):
        if key not in keys_b or key not in keys_a:
            where = "the original" if key in keys_a else "the candidate"
            report.differences.append(
                Difference("metric", key, f"metric {key} is logged only in {where}")
            )
            continue
        hist_a = [(m.step, m.value) for m in a.metric_history(key)]
        hist_b = [(m.step, m.value) for m in b.metric_history(key)]
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
        if pa.get(key) != pb.get(key):
            report.differences.append(
                Difference("param", key, f"param {key} differs: {pa.get(key)!r} vs {pb.get(key)!r}")
            )


def _artifact_hashes(run: Run, wanted: set[str]) -> dict[str, str]:
    """sha256 of every artifact outside pcs's own ``pcs/`` record, plus the ``wanted`` record files."""
    prefix = f"{_keys.PCS_ARTIFACT_DIR}/"
    paths = [p for p in run.artifact_paths() if not p.startswith(prefix) or p in wanted]
    if not paths:
        return {}
    out: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="pcs-verify-") as tmp:
        for path in paths:
            local = run._download_quietly(path, Path(tmp))
            out[path] = hashlib.sha256(Path(local).read_bytes()).hexdigest()
    return out


def compare_artifacts(
    a: Run, b: Run, report: Verification, patterns: tuple[str, ...], compare_stderr: bool
) -> None:
    wanted = {
        path for path, name in _OUTPUT_RECORD_ARTIFACTS.items()
        if not _ignored(name, patterns) and (name != "stderr" or compare_stderr)
    }
    ha, hb = _artifact_hashes(a, wanted), _artifact_hashes(b, wanted)
    files = sorted(p for p in set(ha) | set(hb) if p not in _OUTPUT_RECORD_ARTIFACTS and not _ignored(p, patterns))
    outputs = sorted(p for p in set(ha) | set(hb) if p in _OUTPUT_RECORD_ARTIFACTS)
    if files:
        report.compared.append(f"{len(files)} artifact(s) by sha256")
    for path in outputs:
        name = _OUTPUT_RECORD_ARTIFACTS[path]
        if _is_empty(ha.get(path)) and _is_empty(hb.get(path)):
            continue  # nothing printed on either side
        if ha.get(path) == hb.get(path):
            report.compared.append(name)
            continue
        # compared without the lines MLflow and pcs print on their own
        code_files = _code_files(a) | _code_files(b)
        lines_a = _output_lines(a, path, code_files)
        lines_b = _output_lines(b, path, code_files)
        if not lines_a and not lines_b:
            continue  # only such lines on either side: nothing the code printed
        report.compared.append(name)
        if lines_a != lines_b:
            report.differences.append(
                Difference(name, name, f"{name} differs{_first_line_difference(lines_a, lines_b)}")
            )
    for path in files:
        if path not in hb:
            report.differences.append(Difference("artifact", path, f"artifact {path} is missing from the candidate"))
        elif path not in ha:
            report.differences.append(Difference("artifact", path, f"artifact {path} is new in the candidate"))
        elif ha[path] != hb[path]:
            report.differences.append(
                Difference("artifact", path, f"artifact {path} differs: sha256 {ha[path][:12]} vs {hb[path][:12]}")
            )


_EMPTY_SHA = hashlib.sha256(b"").hexdigest()


def _is_empty(digest: str | None) -> bool:
    return digest is None or digest == _EMPTY_SHA


def _output_lines(run: Run, path: str, files: set[str]) -> list[str]:
    """The lines of a captured output, without those MLflow and pcs print on their own.

    The folder the code ran from is written as a placeholder, so a rerun of the
    recorded snapshot names the same files as the original.
    """
    try:
        with tempfile.TemporaryDirectory(prefix="pcs-verify-") as tmp:
            text = "\n".join(_read_lines(run, path, Path(tmp)))
    except Exception:  # noqa: BLE001 - not readable: compared as nothing printed
        return []
    return code_folder_as_placeholder(drop_tool_lines(text), files).splitlines()


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


def _first_line_difference(lines_a: list[str], lines_b: list[str]) -> str:
    for i, (x, y) in enumerate(zip(lines_a, lines_b, strict=False)):
        if x != y:
            return f" at line {i + 1}: {_clip(x)!r} vs {_clip(y)!r}"
    if len(lines_a) != len(lines_b):
        return f": {len(lines_a)} lines vs {len(lines_b)}"
    return ""


def _read_lines(run: Run, path: str, dst: Path) -> list[str]:
    try:
        local = run._download_quietly(path, dst)
    except Exception:  # noqa: BLE001 - not recorded on this side
        return []
    return Path(local).read_text(encoding="utf-8", errors="replace").splitlines()


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
