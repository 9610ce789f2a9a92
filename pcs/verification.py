"""Compare two runs: did they compute the same thing, and if not, what in their record differs?

The outputs compared are the return value's sha256, every metric's full
history (step by step), params, and the run's own artifacts with their
sha256 (pcs's record under ``pcs/`` is compared as causes, not outputs). The
record compared for causes is the code (snapshot hashes, git commit, dirty
diff), the arguments, the seed, Python, the platform and distributions.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pcs import _keys
from pcs.environment import changed_distributions

if TYPE_CHECKING:  # pragma: no cover
    from pcs.run import Run

__all__ = ["Verification", "Difference", "compare_runs"]

_IGNORED_PARAMS: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Difference:
    """One output that differs between two runs."""

    kind: str  # return_value | metric | param | artifact
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

    @property
    def reproduced(self) -> bool:
        return not self.differences

    @property
    def first_difference(self) -> Difference | None:
        return self.differences[0] if self.differences else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "original": self.original_id,
            "candidate": self.candidate_id,
            "reproduced": self.reproduced,
            "differences": [d.__dict__ for d in self.differences],
            "causes": list(self.causes),
            "compared": list(self.compared),
        }

    def __str__(self) -> str:
        head = f"{self.original_id} -> {self.candidate_id}: "
        if self.reproduced:
            lines = [head + "reproduced", f"  compared: {', '.join(self.compared) or 'nothing'}"]
            return "\n".join(lines)
        lines = [head + "diverged", f"  first difference: {self.differences[0]}"]
        if len(self.differences) > 1:
            lines.append(f"  {len(self.differences) - 1} more difference(s):")
            lines.extend(f"    - {d}" for d in self.differences[1:11])
            if len(self.differences) > 11:
                lines.append(f"    ... and {len(self.differences) - 11} more")
        if self.causes:
            lines.append("  differences in the record that can explain it:")
            lines.extend(f"    - {c}" for c in self.causes)
        else:
            lines.append(
                "  no recorded difference explains it: code, arguments, seed, Python and "
                "distributions are the same. Look for a source of randomness pcs does not "
                "seed (os.urandom, uuid, time, threads, a generator of your own), or input "
                "read from outside the run."
            )
        return "\n".join(lines)


def compare_runs(original: Run, candidate: Run) -> Verification:
    """Compare ``candidate`` with ``original``: outputs first, then the record for causes."""
    report = Verification(original.identifier, candidate.identifier)
    original.refresh()
    candidate.refresh()
    _compare_return_values(original, candidate, report)
    _compare_metrics(original, candidate, report)
    _compare_params(original, candidate, report)
    _compare_artifacts(original, candidate, report)
    report.causes = _record_causes(original, candidate)
    return report


def _compare_return_values(a: Run, b: Run, report: Verification) -> None:
    sha_a = a.tags.get(_keys.RETURN_VALUE_SHA256)
    sha_b = b.tags.get(_keys.RETURN_VALUE_SHA256)
    if sha_a is None and sha_b is None:
        return
    report.compared.append("return value")
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


def _short_values(a: Run, b: Run) -> str:
    from pcs.component_run import ComponentRun
    from pcs.errors import PcsError

    if not (isinstance(a, ComponentRun) and isinstance(b, ComponentRun)):
        return ""
    try:
        va, vb = repr(a.return_value), repr(b.return_value)
    except PcsError:
        return ""
    if len(va) + len(vb) > 160:
        return ""
    return f"{va} vs {vb}"


def _compare_metrics(a: Run, b: Run, report: Verification) -> None:
    keys_a, keys_b = set(a.data.metrics), set(b.data.metrics)
    if keys_a or keys_b:
        report.compared.append(f"{len(keys_a | keys_b)} metric(s), step by step")
    for key in sorted(keys_a | keys_b):
        if key not in keys_b or key not in keys_a:
            where = "the original" if key in keys_a else "the candidate"
            report.differences.append(
                Difference("metric", key, f"metric {key} is logged only in {where}")
            )
            continue
        hist_a = _history(a, key)
        hist_b = _history(b, key)
        for i, ((step_a, value_a), (step_b, value_b)) in enumerate(zip(hist_a, hist_b, strict=False)):
            if step_a != step_b or not _same_number(value_a, value_b):
                where = f"step {step_a}" if step_a == step_b else f"entry {i} (steps {step_a} vs {step_b})"
                report.differences.append(
                    Difference("metric", key, f"metric {key} differs at {where}: {value_a} vs {value_b}")
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


def _history(run: Run, key: str) -> list[tuple[int, float]]:
    from pcs.transfer import metric_history

    return [(m.step, m.value) for m in metric_history(run, key)]


def _same_number(x: float, y: float) -> bool:
    return x == y or (x != x and y != y)  # NaN equals NaN here


def _compare_params(a: Run, b: Run, report: Verification) -> None:
    pa, pb = a.data.params, b.data.params
    if pa or pb:
        report.compared.append(f"{len(set(pa) | set(pb))} param(s)")
    for key in sorted(set(pa) | set(pb)):
        if key in _IGNORED_PARAMS:
            continue
        if pa.get(key) != pb.get(key):
            report.differences.append(
                Difference("param", key, f"param {key} differs: {pa.get(key)!r} vs {pb.get(key)!r}")
            )


def _artifact_hashes(run: Run) -> dict[str, str]:
    """sha256 of every artifact outside pcs's own ``pcs/`` record."""
    from pcs.transfer import list_artifact_paths

    paths = [p for p in list_artifact_paths(run) if not p.startswith(f"{_keys.PCS_ARTIFACT_DIR}/")]
    if not paths:
        return {}
    out: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="pcs-verify-") as tmp:
        for path in paths:
            local = run._download_quietly(path, Path(tmp))
            out[path] = hashlib.sha256(Path(local).read_bytes()).hexdigest()
    return out


def _compare_artifacts(a: Run, b: Run, report: Verification) -> None:
    ha, hb = _artifact_hashes(a), _artifact_hashes(b)
    if ha or hb:
        report.compared.append(f"{len(set(ha) | set(hb))} artifact(s) by sha256")
    for path in sorted(set(ha) | set(hb)):
        if path not in hb:
            report.differences.append(Difference("artifact", path, f"artifact {path} is missing from the candidate"))
        elif path not in ha:
            report.differences.append(Difference("artifact", path, f"artifact {path} is new in the candidate"))
        elif ha[path] != hb[path]:
            report.differences.append(
                Difference("artifact", path, f"artifact {path} differs: sha256 {ha[path][:12]} vs {hb[path][:12]}")
            )


# -- the record: what could explain a difference ------------------------------------------


def _record_causes(a: Run, b: Run) -> list[str]:
    from pcs.component_run import ComponentRun
    from pcs.errors import PcsError

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
    if cmd_a.component.identifier != cmd_b.component.identifier or cmd_a.entry_point != cmd_b.entry_point:
        causes.append(
            f"command: {cmd_a.component.identifier}.{cmd_a.entry_point} vs "
            f"{cmd_b.component.identifier}.{cmd_b.entry_point}"
        )
    causes.extend(_code_causes(a, b, cmd_a.code, cmd_b.code))
    if cmd_a.argument_set != cmd_b.argument_set:
        causes.extend(_argument_causes(cmd_a.argument_set.to_dict(), cmd_b.argument_set.to_dict()))
    if cmd_a.seed != cmd_b.seed:
        causes.append(f"seed: {cmd_a.seed} vs {cmd_b.seed}")
    causes.extend(_environment_causes(a.environment, b.environment))
    return causes


def _code_causes(a: Run, b: Run, code_a: dict, code_b: dict) -> list[str]:
    """Source snapshots that differ, with the git state of those files when both runs have it.

    Git state only explains a difference in a file whose snapshot differs: the
    same text at another commit (or a rerun of the recorded snapshot, which has
    no working tree) computes the same thing.
    """
    causes = []
    changed = []
    for cid in sorted(set(code_a) | set(code_b)):
        ea, eb = code_a.get(cid), code_b.get(cid)
        if ea is None or eb is None:
            causes.append(f"code: component {cid} is in only one of the runs")
        elif ea.get("sha256") != eb.get("sha256"):
            changed.append(cid)
            files = (
                ea.get("file")
                if ea.get("file") == eb.get("file")
                else f"{ea.get('file')} -> {eb.get('file')}"
            )
            causes.append(
                f"code: {files} changed (snapshot sha256 {str(ea.get('sha256'))[:12]} vs "
                f"{str(eb.get('sha256'))[:12]})"
            )
    rec_a = (getattr(a, "code_record", {}) or {}).get("components", {})
    rec_b = (getattr(b, "code_record", {}) or {}).get("components", {})
    for cid in changed:
        ga = (rec_a.get(cid) or {}).get("git") or {}
        gb = (rec_b.get(cid) or {}).get("git") or {}
        if not (ga.get("commit") and gb.get("commit")):
            continue
        if ga["commit"] != gb["commit"]:
            causes.append(f"git commit of {cid}: {ga['commit'][:12]} vs {gb['commit'][:12]}")
        if ga.get("dirty") or gb.get("dirty"):
            where = [
                r["git"]["diff_artifact"]
                for r in (rec_a.get(cid), rec_b.get(cid))
                if r and r["git"].get("diff_artifact")
            ]
            causes.append(
                f"uncommitted changes to {cid}'s file: "
                f"{'dirty' if ga.get('dirty') else 'clean'} vs {'dirty' if gb.get('dirty') else 'clean'}"
                + (f" (diff in {', '.join(sorted(set(where)))})" if where else "")
            )
    return causes


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
    changed = changed_distributions(env_a.get("distributions") or {}, env_b.get("distributions") or {})
    if changed:
        shown = ", ".join(changed[:10]) + (f" and {len(changed) - 10} more" if len(changed) > 10 else "")
        causes.append(f"distributions changed: {shown}")
    if env_a.get("pythonhashseed") != env_b.get("pythonhashseed"):
        causes.append(f"PYTHONHASHSEED: {env_a.get('pythonhashseed')} vs {env_b.get('pythonhashseed')}")
    return causes
