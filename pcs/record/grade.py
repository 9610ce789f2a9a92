"""The grade of a record: how far a rerun of it can be trusted to run the same thing.

- ``portable``: the record holds everything the run read (source snapshot,
  arguments, seed); it reruns on any machine with the environment.
- ``local``: something the run depended on is outside the record (a git repo
  at a local path, unpinned requirements, a compiled module, data files read
  next to the code that are too large to keep); it reruns here, where those are.
- ``not-rerunnable``: the source could not be captured.

A grade is decided when the run starts (:func:`grade_at_start`) and can only
be lowered later (:meth:`Grade.lower`), with the reason said each time. It is
stored as the tags ``pcs.grade`` and ``pcs.grade_reasons`` (a JSON list).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from pcs import _keys
from pcs.record.reads import SNAPSHOT_LIMIT_ENV

__all__ = ["GRADES", "Grade", "grade_at_start", "reads_reason"]

GRADES = ("portable", "local", "not-rerunnable")


@dataclass
class Grade:
    """A reproducibility grade, with the reasons for it."""

    level: str
    reasons: list[str] = field(default_factory=list)

    def lower(self, reason: str) -> None:
        """Something found after the start keeps the run from being ``portable``."""
        if self.level == "portable":
            self.level, self.reasons = "local", [reason]
        else:
            self.reasons = self.reasons + [reason]

    def tags(self) -> dict[str, str]:
        """The grade's tags."""
        return {_keys.GRADE: self.level, _keys.GRADE_REASONS: json.dumps(self.reasons)}


def grade_at_start(
    snapshot_problems: Iterable[str], closure_problems: Sequence[str],
    git_problems: Sequence[str], requirements_problems: Sequence[str],
) -> Grade:
    """The grade of a command at record time.

    The modules a component imports from its own repo are in the snapshot (its
    closure), so they do not lower the grade; modules the snapshot cannot hold
    (compiled ones) and relative imports make it ``local``; a source that could
    not be captured makes it ``not-rerunnable``.

    Args:
        snapshot_problems: what each component's snapshot may lack.
        closure_problems: closure modules the snapshot cannot hold.
        git_problems: components pinned to a git repo at a local path.
        requirements_problems: requirements files that do not pin exact versions.
    """
    blocking: list[str] = []
    local: list[str] = []
    for problem in snapshot_problems:
        (local if "imports files next to it" in problem else blocking).append(problem)
    local.extend(closure_problems)
    local.extend(git_problems)
    local.extend(requirements_problems)
    if blocking:
        return Grade("not-rerunnable", blocking + local)
    if local:
        return Grade("local", local)
    return Grade("portable", ["complete source snapshot, recorded arguments and seed"])


def reads_reason(files: Sequence[str], limit: int | None = None) -> str:
    """Why data files read next to the code lower the grade: they are too large to keep.

    Args:
        files: the files, relative to their folder.
        limit: the largest file kept with the record, in bytes.
    """
    kept = f" (over the {limit}-byte limit of {SNAPSHOT_LIMIT_ENV})" if limit is not None else ""
    return (
        "it read data files next to its code that are too large to keep with the record"
        + kept + " ("
        + ", ".join(files[:5]) + (f" and {len(files) - 5} more" if len(files) > 5 else "")
        + "): their sha256 is recorded, and a rerun reads them where they are, so it runs "
        "only where they are"
    )
