"""Compare two runs: did they compute the same thing, and if not, what in their record differs?

The outputs compared are the return value's sha256, every metric's full
history (step by step; ``system/*`` metrics never), the params the code logged
(not the arguments and seed pcs logged as params: those are the record), the
run's own artifacts by sha256, and the entry point's captured stdout. The
record compared for causes is the code (snapshot hashes, git commit, dirty
diff), the arguments, the seed, Python, the platform, the distributions and
the determinism record (hash seed, thread counts, CPU, GPU).

The verdict is one of:

- ``reproduced``: every output compared is exactly equal;
- ``reproduced within tolerance``: equal up to ``rtol``/``atol`` (the largest
  deviation is reported);
- ``diverged``: an output differs;
- ``unverifiable``: nothing that could differ was compared (no return value,
  metrics, artifacts or output), so equality proves nothing.
"""

from __future__ import annotations

import fnmatch
import hashlib
import math
import struct
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pcs import _keys
from pcs._features import provides
from pcs.component_run import ComponentRun, argument_params
from pcs.errors import ArgumentError, PcsError
from pcs.record.environment import changed_distributions, determinism_suspects
from pcs.run import Run
from pcs.specs import content_hash

__all__ = ["Verification", "Difference", "compare_runs", "VERDICTS"]

VERDICTS = ("reproduced", "reproduced within tolerance", "diverged", "unverifiable")
# pcs's own record is compared as causes; these artifacts of it are outputs
_OUTPUT_RECORD_ARTIFACTS = {
    _keys.STDOUT_ARTIFACT: "stdout",
    _keys.STDERR_ARTIFACT: "stderr",
}


@dataclass(frozen=True)
class Difference:
    """One output that differs between two runs."""

    kind: str  # return_value | metric | param | artifact | stdout | stderr
    key: str
    detail: str

    def __str__(self) -> str:
        return self.detail


@dataclass
class Verification:
    """The comparison of an original run with another (a rerun, or any run for ``pcs diff``)."""

    original_id: str
    candidate_id: str
    differences: list[Difference] = field(default_factory=list)
    causes: list[str] = field(default_factory=list)
    compared: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    suspects: list[str] = field(default_factory=list)
    rtol: float = 0.0
    atol: float = 0.0
    max_deviation: tuple[str, float, float] | None = None  # (what, absolute, relative)
    relation: str = "vs"  # "vs" for pcs diff, "rerun" for a verified rerun

    @property
    def verdict(self) -> str:
        if self.differences:
            return "diverged"
        if not self.compared:
            return "unverifiable"
        if self.max_deviation is not None:
            return "reproduced within tolerance"
        return "reproduced"

    @property
    def reproduced(self) -> bool:
        return self.verdict in ("reproduced", "reproduced within tolerance")

    @property
    def first_difference(self) -> Difference | None:
        return self.differences[0] if self.differences else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "original": self.original_id,
            "candidate": self.candidate_id,
            "verdict": self.verdict,
            "reproduced": self.reproduced,
            "differences": [d.__dict__ for d in self.differences],
            "causes": list(self.causes),
            "suspects": list(self.suspects),
            "notes": list(self.notes),
            "compared": list(self.compared),
            "rtol": self.rtol,
            "atol": self.atol,
            "max_deviation": (
                None if self.max_deviation is None
                else {"where": self.max_deviation[0], "absolute": self.max_deviation[1],
                      "relative": self.max_deviation[2]}
            ),
        }

    def _head(self) -> str:
        if self.relation == "rerun":
            return f"{self.candidate_id} (rerun of {self.original_id})"
        return f"{self.original_id} vs {self.candidate_id}"

    def __str__(self) -> str:
        verdict = self.verdict
        if verdict == "reproduced within tolerance":
            verdict += f" (rtol={self.rtol:g}, atol={self.atol:g})"
        lines = [f"{self._head()}: {verdict}"]
        lines.extend(f"  note: {n}" for n in self.notes)
        if self.differences:
            lines.append(f"  first difference: {self.differences[0]}")
            if len(self.differences) > 1:
                lines.append(f"  {len(self.differences) - 1} more difference(s):")
                lines.extend(f"    - {d}" for d in self.differences[1:11])
                if len(self.differences) > 11:
                    lines.append(f"    ... and {len(self.differences) - 11} more")
        if self.max_deviation is not None:
            where, absolute, relative = self.max_deviation
            lines.append(
                f"  largest deviation: {where} (absolute {absolute:.3g}, relative {relative:.3g})"
            )
        lines.append(f"  compared: {', '.join(self.compared) or 'nothing'}")
        if verdict == "unverifiable":
            lines.append(
                "  nothing that could differ was recorded (no return value, metrics, artifacts "
                "or printed output), so equal runs prove nothing. Return a value, log a metric "
                "or print the result to make the run verifiable."
            )
        if self.causes:
            lines.append("  differences in the record:")
            lines.extend(f"    - {c}" for c in self.causes)
        elif self.differences and not self.notes:
            lines.append(
                "  no recorded difference explains it: code, arguments, seed, Python, "
                "distributions and the determinism record are the same."
            )
        if self.differences and not self.causes and self.suspects:
            lines.append("  suspects, most likely first:")
            lines.extend(f"    - {s}" for s in self.suspects)
        return "\n".join(lines)


@provides("compare_runs")
def compare_runs(
    original: Run,
    candidate: Run,
    rtol: float = 0.0,
    atol: float = 0.0,
    ignore: Iterable[str] = (),
    compare_stderr: bool = False,
    relation: str | None = None,
) -> Verification:
    """Compare ``candidate`` with ``original``: outputs first, then the record for causes.

    Args:
        original: the run to reproduce.
        candidate: a rerun of it, or any run to compare with it.
        rtol, atol: metric values equal within ``math.isclose(rel_tol=rtol,
            abs_tol=atol)`` count as reproduced within tolerance.
        ignore: metric, param or output names not to compare (glob patterns,
            e.g. ``"time/*"``, ``"stdout"``).
        compare_stderr: also compare the captured stderr (warnings vary, so it is
            only kept for the record by default).
        relation: "rerun" or "vs" for the report's first line (default: "rerun"
            when the candidate is a rerun of the original).
    """
    rtol, atol = _tolerance(rtol, atol)
    patterns = tuple(str(p) for p in ignore)
    original.refresh()
    candidate.refresh()
    if relation is None:
        relation = "rerun" if candidate.tags.get(_keys.RERUN_OF) == original.identifier else "vs"
    report = Verification(original.identifier, candidate.identifier, rtol=rtol, atol=atol,
                          relation=relation)
    _note_unfinished(original, candidate, report)
    _compare_return_values(original, candidate, report)
    _compare_metrics(original, candidate, report, patterns)
    _compare_params(original, candidate, report, patterns)
    _compare_artifacts(original, candidate, report, patterns, compare_stderr)
    _compare_endings(original, candidate, report)
    _note_outputs_left_out(original, candidate, report)
    report.causes = _record_causes(original, candidate)
    if report.differences and not report.causes and not report.notes:
        # a run that never finished explains its differences; nothing to suspect
        report.suspects = _suspects(original, candidate)
    return report


def _tolerance(rtol: float, atol: float) -> tuple[float, float]:
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


def _note_unfinished(a: Run, b: Run, report: Verification) -> None:
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


def _compare_endings(a: Run, b: Run, report: Verification) -> None:
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


def _note_outputs_left_out(a: Run, b: Run, report: Verification) -> None:
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


def _compare_return_values(a: Run, b: Run, report: Verification) -> None:
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


def _compare_metrics(a: Run, b: Run, report: Verification, patterns: tuple[str, ...]) -> None:
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


def _compare_params(a: Run, b: Run, report: Verification, patterns: tuple[str, ...]) -> None:
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


def _compare_artifacts(
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
        report.compared.append(name)
        if ha.get(path) != hb.get(path):
            report.differences.append(
                Difference(name, name, f"{name} differs{_first_line_difference(a, b, path)}")
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


def _first_line_difference(a: Run, b: Run, path: str) -> str:
    try:
        with tempfile.TemporaryDirectory(prefix="pcs-verify-") as tmp:
            lines_a = _read_lines(a, path, Path(tmp) / "a")
            lines_b = _read_lines(b, path, Path(tmp) / "b")
    except Exception:  # noqa: BLE001 - the difference stands without the detail
        return ""
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


# -- the record: what could explain a difference ------------------------------------------


def _record_causes(a: Run, b: Run) -> list[str]:
    causes: list[str] = []
    if not (isinstance(a, ComponentRun) and isinstance(b, ComponentRun)):
        if a.tags.get(_keys.SOURCE_GIT_COMMIT) != b.tags.get(_keys.SOURCE_GIT_COMMIT):
            causes.append(
                f"git commit: {a.tags.get(_keys.SOURCE_GIT_COMMIT)} vs {b.tags.get(_keys.SOURCE_GIT_COMMIT)}"
            )
        return causes
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
    causes.extend(_environment_causes(a.environment, b.environment))
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


def _suspects(a: Run, b: Run) -> list[str]:
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
