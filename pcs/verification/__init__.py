"""Compare two runs: did they compute the same thing, and if not, what in their record differs?

The outputs compared are the return value's sha256, every metric's full
history (step by step; ``system/*`` metrics never), the params the code logged
(not the arguments and seed pcs logged as params: those are the record), the
run's own artifacts by sha256, and the entry point's captured stdout and stderr. The
record compared for causes is the code (snapshot hashes, git commit, dirty
diff), the arguments, the seed, the inputs the run read (data files by
sha256, environment variables, dependency runs' artifacts, ``log_input``
datasets by digest), Python, the platform, the distributions and the
determinism record (hash seed, thread counts, CPU, GPU).

The verdict is one of:

- ``reproduced``: every output compared is exactly equal;
- ``reproduced within tolerance``: equal up to ``rtol``/``atol`` (the largest
  deviation is reported);
- ``diverged``: an output differs;
- ``unverifiable``: nothing that could differ was compared (no return value,
  metrics, artifacts or output), so equality proves nothing.

The package: :mod:`~pcs.verification.report` (the report and its text),
:mod:`~pcs.verification.outputs` (the outputs compared),
:mod:`~pcs.verification.causes` (the record differences and suspects).
"""

from __future__ import annotations

from collections.abc import Iterable

from pcs import _keys
from pcs._features import provides
from pcs.run import Run
from pcs.verification.causes import record_causes, suspects
from pcs.verification.outputs import (
    compare_artifacts,
    compare_endings,
    compare_metrics,
    compare_params,
    compare_return_values,
    note_outputs_left_out,
    note_unfinished,
    tolerance,
)
from pcs.verification.report import VERDICTS, Difference, Verification

__all__ = ["Verification", "Difference", "compare_runs", "VERDICTS"]


@provides("compare_runs")
def compare_runs(
    original: Run,
    candidate: Run,
    rtol: float = 0.0,
    atol: float = 0.0,
    ignore: Iterable[str] = (),
    compare_stderr: bool = True,
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
        compare_stderr: compare the captured stderr (the default; ``False``, like
            ``ignore=["stderr"]``, leaves it out). Captured output is compared
            without the lines MLflow and pcs print on their own
            (:func:`pcs._capture.drop_tool_lines`).
        relation: "rerun" or "vs" for the report's first line (default: "rerun"
            when the candidate is a rerun of the original).
    """
    rtol, atol = tolerance(rtol, atol)
    patterns = tuple(str(p) for p in ignore)
    original.refresh()
    candidate.refresh()
    if relation is None:
        relation = "rerun" if candidate.tags.get(_keys.RERUN_OF) == original.identifier else "vs"
    report = Verification(original.identifier, candidate.identifier, rtol=rtol, atol=atol,
                          relation=relation)
    note_unfinished(original, candidate, report)
    compare_return_values(original, candidate, report)
    compare_metrics(original, candidate, report, patterns)
    compare_params(original, candidate, report, patterns)
    compare_artifacts(original, candidate, report, patterns, compare_stderr)
    compare_endings(original, candidate, report)
    note_outputs_left_out(original, candidate, report)
    report.causes = record_causes(original, candidate)
    if report.differences and not report.causes and not report.notes:
        # a run that never finished explains its differences; nothing to suspect
        report.suspects = suspects(original, candidate)
    return report
