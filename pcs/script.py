"""Record and rerun any Python script, with no component to write.

``pcs.run_script("train.py", ["--lr", "0.1"])`` (and ``pcs run train.py --lr
0.1``) runs the script as ``python train.py --lr 0.1`` would, inside a
component run: its code and the helper modules it imports are snapshotted, it
is seeded, its environment, data reads and output are recorded, and what it
parses with argparse or click becomes params under the script's own names.
The run can then be rerun and verified like any component run
(``run.rerun(verify=True)``), or rerun with changed arguments
(``run.rerun(args=["--lr", "0.2"])``), which makes a new run tagged
``pcs.derived_from``. See :mod:`pcs.record.script` for how the script runs.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pcs.argument_set import ArgumentSet
from pcs.component import Component
from pcs.errors import ArgumentError
from pcs.record.script import SCRIPT_ENTRY_POINT, check_argv, protect_argv

if TYPE_CHECKING:  # pragma: no cover
    from pcs.component_run import ComponentRun
    from pcs.run import Run

__all__ = ["run_script", "script_component", "script_arguments", "script_grid", "sweep_script"]


def script_component(script: str | Path | None = None, module: str | None = None) -> Component:
    """The component of a script file, or of a module run as with ``python -m``.

    Args:
        script: the script's path.
        module: instead, a module name (``package.module``; a package runs its ``__main__``).

    Raises:
        ScriptError: no such file or module, a folder, or a file that does not compile.
    """
    if (script is None) == (module is None):
        raise ArgumentError("Give a script's path or a module name (module=...), not both or neither.")
    if module is not None:
        return Component.from_module(module)
    return Component.from_script(script)  # type: ignore[arg-type]


def script_arguments(component: Component, argv: Sequence[str]) -> ArgumentSet:
    """The ArgumentSet of a script run: its ``argv`` for the ``run`` entry point.

    Secret option values (``--token X``, ``--password=X``, ``pcs.secret(...)``)
    are recorded as hashes (see :func:`pcs.record.script.protect_argv`).
    """
    return ArgumentSet({component.name: {SCRIPT_ENTRY_POINT: {"argv": protect_argv(argv)}}})


def run_script(
    script: str | Path | None = None,
    argv: Sequence[str] = (),
    *,
    module: str | None = None,
    seed: int | None = None,
    run_name: str | None = None,
    experiment_id: str | None = None,
) -> ComponentRun:
    """Run a Python script as ``__main__`` inside a recorded, rerunnable run; return the run.

    Args:
        script: the script's path (or give ``module``).
        argv: the script's arguments, as in ``sys.argv[1:]``; the value of an
            option named like a secret (``--token X``, ``--password=X``), or given
            as ``pcs.secret(...)``, is recorded only as a hash.
        module: a module to run as ``python -m module`` does, instead of a path.
        seed: seeds ``random`` (and NumPy, PyTorch, TensorFlow when imported)
            before the script starts; default: drawn and recorded.
        run_name: the MLflow run name (default: MLflow's).
        experiment_id: the MLflow experiment (default: MLflow's current one).

    Returns:
        The finished ``ComponentRun``; ``run.params`` holds what the script parsed.

    Raises:
        ScriptError: the script cannot be run (nothing was recorded).
        ScriptExitError: the script exited with a non-zero code (the run is FAILED).
        Exception: what the script raised (the run is FAILED, with ``pcs.error``).

    Example::

        run = pcs.run_script("train.py", ["--lr", "0.1"], seed=1)
        run.params["lr"]                              # '0.1'
        run.rerun(verify=True).verification.verdict   # 'reproduced'
    """
    component = script_component(script, module)
    args = script_arguments(component, argv)
    return component.run_with_arg_set(  # type: ignore[return-value]
        SCRIPT_ENTRY_POINT, args, seed=seed, run_name=run_name, experiment_id=experiment_id,
    )


def script_grid(grid: Mapping[str, Sequence[Any]], argv: Sequence[str] = ()) -> list[list[str]]:
    """The argv of every combination of ``grid``: ``argv``, then ``--NAME VALUE`` per axis.

    Args:
        grid: option name (``lr``, or a flag as written, ``-n``) -> its values.
        argv: the arguments every trial gets first.

    Example::

        script_grid({"lr": [0.01, 0.1]}, ["--epochs", "2"])
        # [['--epochs', '2', '--lr', '0.01'], ['--epochs', '2', '--lr', '0.1']]
    """
    fixed = check_argv(argv)
    axes: list[tuple[str, list[str]]] = []
    for name, values in grid.items():
        if not isinstance(name, str) or not name.strip("-") or any(c.isspace() for c in name):
            raise ArgumentError(f"A script's grid is keyed by option names like 'lr'; got {name!r}.")
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
            raise ArgumentError(f"Give the values of option {name!r} as a non-empty list; got {values!r:.200}.")
        flag = name if name.startswith("-") else f"--{name}"
        axes.append((flag, [str(v) for v in values]))
    combos = itertools.product(*(values for _, values in axes))
    return [protect_argv(fixed + [part for (flag, _), value in zip(axes, combo, strict=True)
                                  for part in (flag, value)])
            for combo in combos]


def sweep_script(
    script: str | Path | None = None,
    grid: Mapping[str, Sequence[Any]] | None = None,
    *,
    argv: Sequence[str] = (),
    module: str | None = None,
    seeds: Sequence[int | None] = (None,),
    executor: str = "process",
    max_workers: int | None = None,
    run_name: str | None = None,
    **options: Any,
) -> Run:
    """Run a script once per combination of ``grid`` values and seeds, as one sweep.

    Each trial is a script run with the argv ``argv + [--NAME, VALUE, ...]``
    (see :func:`script_grid`); what the script parses is each trial's params.

    Args:
        script: the script's path (or give ``module``).
        grid: option name -> values, e.g. ``{"lr": [0.01, 0.1]}``.
        argv: the arguments every trial gets first.
        module: a module to run as ``python -m`` does, instead of a path.
        seeds: repeat every combination once per seed (None: a drawn seed).
        executor: ``"process"``, ``"serial"`` or ``"ray"``.
        max_workers: parallel trials.
        run_name: the sweep run's name.
        **options: see ``Component.sweep``.

    Returns:
        The finished ``SweepRun``.
    """
    component = script_component(script, module)
    argvs = script_grid(grid or {}, argv)
    axis = f"{component.name}.{SCRIPT_ENTRY_POINT}.argv"
    return component.sweep(SCRIPT_ENTRY_POINT, None, {axis: argvs}, seeds=seeds, executor=executor,
                           max_workers=max_workers, run_name=run_name, **options)
