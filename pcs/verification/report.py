"""The report of a comparison: what differed, what was compared, and the verdict."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Verification", "Difference", "VERDICTS"]

VERDICTS = ("reproduced", "reproduced within tolerance", "diverged", "unverifiable")


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
    # outputs the runs produced that were not compared, each with the reason
    not_compared: list[str] = field(default_factory=list)
    # the normalisation rules that changed an output before it was compared
    normalised: list[str] = field(default_factory=list)
    raw: bool = False  # bytes compared as they are, no normalisation
    # files a run wrote (in its folder or next to its code) and neither logged nor returned
    written_not_recorded: list[str] = field(default_factory=list)

    def normalised_by(self, rules: list[str]) -> None:
        """Note that ``rules`` (see :mod:`pcs.verification.normalise`) changed a compared output."""
        self.normalised.extend(r for r in rules if r not in self.normalised)

    def not_compared_because(self, what: str, reason: str) -> None:
        """Note an output that exists but was not compared, and why."""
        line = f"{what}: {reason}"
        if line not in self.not_compared:
            self.not_compared.append(line)

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
            "not_compared": list(self.not_compared),
            "written_not_recorded": list(self.written_not_recorded),
            "normalised": list(self.normalised),
            "raw": self.raw,
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
        if self.normalised:
            lines.append(f"  compared after removing: {', '.join(self.normalised)} (pcs diff --raw compares bytes)")
        if self.not_compared:
            lines.append("  not compared:")
            lines.extend(f"    - {n}" for n in self.not_compared)
        if verdict == "unverifiable" and self.not_compared:
            lines.append("  nothing was compared: what the runs produced is listed as not compared above.")
        elif verdict == "unverifiable":
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
