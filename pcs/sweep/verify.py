"""Verifying a rerun sweep: every trial against the trial it reruns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from pcs.verification import Difference, Verification

__all__ = ["TrialCheck", "SweepVerification"]


@dataclass
class TrialCheck:
    """One trial of a verified sweep rerun: its two runs and their comparison."""

    index: int
    original_id: str | None
    candidate_id: str | None
    verification: Verification | None = None
    note: str | None = None  # why the trial could not be compared

    @property
    def verdict(self) -> str:
        if self.verification is not None:
            return self.verification.verdict
        if self.candidate_id is None:
            return "diverged"  # the rerun has no run for a trial the original ran
        return "unverifiable"

    @property
    def reproduced(self) -> bool:
        return self.verdict in ("reproduced", "reproduced within tolerance")

    @property
    def first_difference(self) -> str:
        if self.verification is not None and self.verification.first_difference is not None:
            return str(self.verification.first_difference)
        if self.verification is not None and self.verification.notes:
            return self.verification.notes[0]
        return self.note or self.verdict

    def to_dict(self) -> dict[str, Any]:
        return {
            "trial": self.index,
            "original": self.original_id,
            "candidate": self.candidate_id,
            "verdict": self.verdict,
            "note": self.note,
            "verification": self.verification.to_dict() if self.verification is not None else None,
        }


@dataclass
class SweepVerification:
    """A rerun sweep compared trial by trial with the sweep it reruns.

    The verdict is ``reproduced`` only when every trial reproduced exactly;
    ``reproduced within tolerance`` when every trial reproduced and some only
    within tolerance; ``diverged`` when any trial diverged (or has no run in
    the rerun); ``unverifiable`` otherwise (a trial with nothing to compare).
    """

    original_id: str
    candidate_id: str
    trials: list[TrialCheck] = field(default_factory=list)
    relation: str = "rerun"  # "research": a search run again from its seed
    notes: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        verdicts = [t.verdict for t in self.trials]
        if not verdicts:
            return "unverifiable"
        if "diverged" in verdicts:
            return "diverged"
        if "unverifiable" in verdicts:
            return "unverifiable"
        if "reproduced within tolerance" in verdicts:
            return "reproduced within tolerance"
        return "reproduced"

    @property
    def reproduced(self) -> bool:
        return self.verdict in ("reproduced", "reproduced within tolerance")

    @property
    def diverged(self) -> list[TrialCheck]:
        """The trials that did not reproduce, in trial order."""
        return [t for t in self.trials if not t.reproduced]

    @property
    def first_difference(self) -> Difference | str | None:
        for check in self.diverged:
            if check.verification is not None and check.verification.first_difference is not None:
                return check.verification.first_difference
            return check.first_difference
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "original": self.original_id,
            "candidate": self.candidate_id,
            "verdict": self.verdict,
            "reproduced": self.reproduced,
            "trials": [t.to_dict() for t in self.trials],
            "diverged": [t.index for t in self.diverged],
            "relation": self.relation,
            "notes": list(self.notes),
        }

    def __str__(self) -> str:
        total = len(self.trials)
        bad = self.diverged
        how = "search run again from the seed of" if self.relation == "research" else "rerun of"
        head = f"sweep {self.candidate_id} ({how} {self.original_id}): {self.verdict}"
        notes = [f"  note: {n}" for n in self.notes]
        if not bad:
            return "\n".join([head, *notes, f"  all {total} trial(s) reproduced"])
        lines = [head, *notes, f"  {len(bad)} of {total} trial(s) did not reproduce:"]
        for check in bad[:50]:
            pair = f"{(check.original_id or '-')[:8]} -> {(check.candidate_id or '-')[:8]}"
            lines.append(f"    trial {check.index} ({pair}): {check.verdict}: {check.first_difference}")
        if len(bad) > 50:
            lines.append(f"    ... and {len(bad) - 50} more")
        return "\n".join(lines)
