"""Sweeps: one record for many trials of a component, each a rerunnable component run.

``Component.sweep(...)`` (:func:`run_sweep`) runs an entry point over a grid
of argument values and seeds, serially, in a pool of worker processes, or as
Ray tasks, and returns a :class:`SweepRun`: the outer run of the sweep, with
one ``ComponentRun`` per trial. ``sweep.table()``, ``sweep.best(metric)``,
``sweep.rerun(verify=True)`` and ``sweep.resume_trials()`` work from the
tracking store alone.

Parts: :mod:`pcs.sweep.spec` (what a sweep is and how it is planned),
:mod:`pcs.sweep.search` (adaptive search with Optuna),
:mod:`pcs.sweep.record` (what a sweep records before its first trial),
:mod:`pcs.sweep.sweep_run` (the run), :mod:`pcs.sweep.executors` (where trials
run), :mod:`pcs.sweep._zygote` (the preloaded server that forks process workers),
:mod:`pcs.sweep._worker` (running one trial), :mod:`pcs.sweep.results`
(table, CSV, plot, best) and :mod:`pcs.sweep.verify` (verified reruns).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pcs._features import provides
from pcs.sweep.search import intrange, loguniform, uniform
from pcs.sweep.spec import EXECUTORS
from pcs.sweep.spec import SweepSpec as SweepSpec
from pcs.sweep.spec import TrialSpec as TrialSpec
from pcs.sweep.sweep_run import SweepRun
from pcs.sweep.verify import SweepVerification
from pcs.sweep.verify import TrialCheck as TrialCheck

if TYPE_CHECKING:  # pragma: no cover
    from pcs.argument_set import ArgumentSet
    from pcs.component import Component

# SweepSpec, TrialSpec and TrialCheck (data of a sweep's record) are importable from here too
__all__ = [
    "SweepRun",
    "SweepVerification",
    "run_sweep",
    "EXECUTORS",
    "loguniform",
    "uniform",
    "intrange",
]


@provides("sweep")
def run_sweep(
    component: Component,
    entry_point: str | None = None,
    arg_set: ArgumentSet | Mapping[str, Any] | None = None,
    grid: Mapping[str, Sequence[Any]] | None = None,
    samples: int | None = None,
    seeds: Sequence[int | None] = (None,),
    executor: str = "process",
    max_workers: int | None = None,
    run_name: str | None = None,
    **options: Any,
) -> SweepRun:
    """Sweep ``entry_point`` of ``component`` (what ``Component.sweep`` does).

    Args:
        component, entry_point, arg_set, grid, samples, seeds, executor,
        max_workers, run_name: see :meth:`SweepRun.from_component`.
        **options: everything else :meth:`SweepRun.from_component` takes (``space``,
            ``search``, ``n_trials``, ``metric``, ``mode``, ``seed``, ``prune``,
            ``resources``, ``max_retries``, ``ray_address``, ``progress``, ...).

    Returns:
        The ended sweep run.
    """
    return SweepRun.from_component(
        component, entry_point, arg_set, grid, samples, seeds, executor, max_workers,
        run_name, **options,
    )
