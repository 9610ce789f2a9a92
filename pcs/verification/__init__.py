"""Compare two runs: did they compute the same thing, and if not, what in their record differs?

The outputs compared are everything the run caused in the store: the return
value (by value: floats within ``rtol``/``atol``, NumPy arrays NaN for NaN,
dataclasses field by field; a pickled value of an imported run only with
``trust``), a file the entry point returned by path, every metric's full
history (step by step; ``system/*`` metrics never), the params and tags the
code logged (not the arguments, seed and tags pcs or MLflow set: those are the
record), the run's artifacts (also those the code wrote under ``pcs/``), the
LoggedModels it logged, the runs it started (nested runs and inner component
runs, recursively; runs MLflow started for worker threads, as one set), and
the entry point's captured stdout and stderr. Volatile parts (dates, random ids) are
removed first by the rules of :mod:`~pcs.verification.normalise`, unless
``raw``. What was produced and not compared is listed with the reason,
including the files a run wrote and did not log ("written, not recorded"). The
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
:mod:`~pcs.verification.tree` (logged models, child and thread runs),
:mod:`~pcs.verification.normalise` (what is volatile by design),
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
    compare_returned_file,
    compare_tags,
    note_outputs_left_out,
    note_unfinished,
    note_written_files,
    tolerance,
)
from pcs.verification.report import VERDICTS, Difference, Verification
from pcs.verification.tree import compare_children, compare_models, compare_thread_runs

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
    raw: bool = False,
    trust: bool = False,
) -> Verification:
    """Compare ``candidate`` with ``original``: outputs first, then the record for causes.

    Args:
        original: the run to reproduce.
        candidate: a rerun of it, or any run to compare with it.
        rtol, atol: metric values equal within ``math.isclose(rel_tol=rtol,
            abs_tol=atol)`` count as reproduced within tolerance.
        ignore: metric, param, tag, artifact or output names not to compare (glob patterns,
            e.g. ``"time/*"``, ``"stdout"``).
        compare_stderr: compare the captured stderr (the default; ``False``, like
            ``ignore=["stderr"]``, leaves it out). Captured output is compared
            without the lines MLflow and pcs print on their own
            (:func:`pcs._capture.drop_tool_lines`).
        relation: "rerun" or "vs" for the report's first line (default: "rerun"
            when the candidate is a rerun of the original).
        raw: compare artifacts, params and output byte for byte, without removing
            what is volatile by design (dates, random ids; see
            :mod:`pcs.verification.normalise`).
        trust: unpickle a pickled return value of an imported run to compare it
            (unpickling runs code; without trust it is listed as not compared).
    """
    rtol, atol = tolerance(rtol, atol)
    patterns = tuple(str(p) for p in ignore)
    original.refresh()
    candidate.refresh()
    if relation is None:
        relation = "rerun" if candidate.tags.get(_keys.RERUN_OF) == original.identifier else "vs"
    report = Verification(original.identifier, candidate.identifier, rtol=rtol, atol=atol,
                          relation=relation, raw=raw)
    note_unfinished(original, candidate, report)

    def outputs(a: Run, b: Run, into: Verification) -> None:
        compare_return_values(a, b, into, trust)
        compare_returned_file(a, b, into)
        compare_metrics(a, b, into, patterns)
        compare_params(a, b, into, patterns)
        compare_tags(a, b, into, patterns)
        compare_artifacts(a, b, into, patterns, compare_stderr)
        compare_models(a, b, into)

    outputs(original, candidate, report)
    compare_children(original, candidate, report, outputs)
    compare_thread_runs(original, candidate, report)
    note_written_files(original, candidate, report, patterns)
    if patterns:
        report.not_compared_because("outputs matching " + ", ".join(patterns), "ignored as asked")
    compare_endings(original, candidate, report)
    note_outputs_left_out(original, candidate, report)
    report.causes = record_causes(original, candidate)
    if report.differences and not report.causes and not report.notes:
        # a run that never finished explains its differences; nothing to suspect
        report.suspects = suspects(original, candidate)
    return report
