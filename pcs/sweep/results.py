"""A sweep's results: one row per trial, its CSV, its plot, and the best trial.

A row holds ``trial``, ``run_id``, ``status`` and ``seed``, the value of each
varied argument path, and the final value of each metric the trials logged
(MLflow's latest value of it). A trial that has no run yet is ``MISSING``; one
that a search pruned is ``PRUNED`` (its run ended KILLED).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pcs import _keys
from pcs.errors import ArgumentError

if TYPE_CHECKING:  # pragma: no cover
    from pcs.run import Run
    from pcs.sweep.spec import SweepSpec

__all__ = [
    "FIXED_COLUMNS",
    "MISSING",
    "PRUNED",
    "build_table",
    "metric_names",
    "write_csv",
    "write_plot",
    "write_parallel",
    "choose_metric",
    "best_trial",
    "varied_paths_of",
]

FIXED_COLUMNS = ("trial", "run_id", "status", "seed")
MISSING = "MISSING"
PRUNED = "PRUNED"  # a trial its search stopped early (its run ended KILLED, tagged pcs.pruned)


def metric_names(runs: Iterable[Run]) -> list[str]:
    """Every metric the runs logged (system metrics left out), sorted."""
    names: set[str] = set()
    for run in runs:
        names.update(k for k in run.data.metrics if not k.startswith("system/"))
    return sorted(names)


def varied_paths_of(runs: Mapping[int, Run]) -> list[str]:
    """Argument paths whose recorded value differs between trials (when no spec says)."""
    values: dict[str, set[str]] = {}
    for run in runs.values():
        for key, value in run.data.params.items():
            if key != _keys.SEED_PARAM and key.count(".") == 2:
                values.setdefault(key, set()).add(value)
    return sorted(k for k, v in values.items() if len(v) > 1)


def _column(name: str, taken: set[str]) -> str:
    return name if name not in taken else f"metric:{name}"


def build_table(spec: SweepSpec | None, runs: Mapping[int, Run]) -> list[dict[str, Any]]:
    """One row per trial, in trial order (see the module docstring)."""
    if spec is not None:
        varied = spec.varied_paths
        planned = {t.index: t for t in spec.trials}
    else:
        varied = varied_paths_of(runs)
        planned = {}
    indices = sorted(set(planned) | set(runs))
    names = metric_names(runs.values())
    taken = set(FIXED_COLUMNS) | set(varied)
    rows: list[dict[str, Any]] = []
    for index in indices:
        run = runs.get(index)
        trial = planned.get(index)
        seed: int | None = trial.seed if trial is not None else None
        if run is not None and run.tags.get(_keys.SEED, "").isdigit():
            seed = int(run.tags[_keys.SEED])
        row: dict[str, Any] = {
            "trial": index,
            "run_id": run.identifier if run is not None else None,
            "status": _status(run),
            "seed": seed,
        }
        for path in varied:
            if trial is not None:
                row[path] = trial.args.get(path)
            else:
                row[path] = run.data.params.get(path) if run is not None else None
        metrics = run.data.metrics if run is not None else {}
        for name in names:
            row[_column(name, taken)] = metrics.get(name)
        rows.append(row)
    return rows


def _status(run: Run | None) -> str:
    """A trial's status in the table: its run's, ``PRUNED`` for a trial its search stopped."""
    if run is None:
        return MISSING
    if run.status == "KILLED" and run.tags.get(_keys.PRUNED):
        return PRUNED
    return str(run.status)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """Write the table as CSV (lists and mappings as compact JSON, missing values empty)."""
    columns = list(rows[0]) if rows else list(FIXED_COLUMNS)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row.get(c)) for c in columns])


def choose_metric(rows: list[dict[str, Any]], varied: list[str], wanted: str | None) -> str | None:
    """The metric to plot: ``wanted`` when a trial logged it, else the first one logged."""
    fixed = set(FIXED_COLUMNS) | set(varied)
    logged = [
        c for c in (rows[0] if rows else {})
        if c not in fixed and any(_is_number(r.get(c)) for r in rows)
    ]
    if wanted is not None and wanted in logged:
        return wanted
    if wanted is not None and f"metric:{wanted}" in logged:
        return f"metric:{wanted}"
    return logged[0] if logged else None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def write_plot(
    rows: list[dict[str, Any]], varied: list[str], metric: str, path: Path, title: str
) -> None:
    """Draw each varied argument against ``metric``, one point per trial, one colour per seed.

    Numbers are placed on a numeric axis; any other values (strings, lists)
    get one tick each, in the order the grid gives them; the seeds of one value
    stand side by side around it. Each seed's points are
    one SVG group with the id ``pcs-trials-<path>-seed-<seed>``. The SVG holds
    no date and stable ids, so the same table draws the same file.
    """
    import matplotlib
    from matplotlib.figure import Figure

    columns = varied or ["trial"]
    fig = Figure(figsize=(4.2 * len(columns) + 0.8, 3.6), layout="constrained")
    axes = fig.subplots(1, len(columns), squeeze=False)[0]
    plotted = [r for r in rows if _is_number(r.get(metric)) and not _nan(r[metric])]
    seeds = sorted({r["seed"] for r in plotted}, key=lambda s: (s is None, s or 0))
    colours = matplotlib.colormaps["tab10"]
    for ax, column in zip(axes, columns, strict=True):
        values = [r.get(column) for r in rows]
        numeric = all(_is_number(v) for v in values)
        labels: list[str] = []
        positions: dict[str, int] = {}
        for value in values:
            key = json.dumps(value, sort_keys=True)
            if key not in positions:
                positions[key] = len(positions)
                labels.append(_label(value))
        numbers = [float(v) for v in values if isinstance(v, (int, float))]
        span = (max(numbers) - min(numbers)) if len(numbers) > 1 else 1.0
        # seeds side by side around each value, so equal results stay visible as separate points
        step = (0.012 * span if numeric else 0.08) if len(seeds) > 1 else 0.0
        for i, seed in enumerate(seeds):
            mine = [r for r in plotted if r["seed"] == seed]
            dodge = (i - (len(seeds) - 1) / 2) * step
            xs = [
                (float(r[column]) if numeric
                 else positions[json.dumps(r.get(column), sort_keys=True)]) + dodge
                for r in mine
            ]
            ys = [float(r[metric]) for r in mine]
            ax.scatter(xs, ys, s=28, color=colours(i % 10), alpha=0.85,
                       label=f"seed {seed}" if len(seeds) <= 12 else None,
                       gid=f"pcs-trials-{column}-seed-{seed}")
        if not numeric:
            ax.set_xticks(range(len(labels)), labels, rotation=30 if len(labels) > 4 else 0)
        elif len(positions) <= _MAX_VALUE_TICKS:
            # a grid's own values, not matplotlib's round numbers between them
            ticks = sorted({float(v) for v in values if isinstance(v, (int, float))})
            ax.set_xticks(ticks, [_label(_plain_number(t)) for t in ticks],
                          rotation=30 if len(ticks) > 6 else 0)
        ax.set_xlabel(column)
        ax.set_ylabel(metric)
        ax.grid(True, alpha=0.3)
    if 1 < len(seeds) <= 12:
        axes[-1].legend(fontsize="small", frameon=False, loc="best")
    fig.suptitle(title, fontsize="medium")
    with matplotlib.rc_context({"svg.hashsalt": "pcs-sweep", "svg.fonttype": "none"}):
        fig.savefig(path, format="svg", metadata={"Date": None})


_MAX_VALUE_TICKS = 12  # more distinct values than this (a search's) get matplotlib's own ticks


def _plain_number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def write_parallel(
    rows: list[dict[str, Any]], varied: list[str], metric: str, path: Path, title: str,
    mode: str | None = None,
) -> None:
    """Parallel coordinates: one vertical axis per varied argument and one for ``metric``;
    each trial is a line through its values, coloured by its ``metric`` (the best darkest).

    Each axis is scaled to its own range (numbers) or spaced by its values in
    order (anything else), labelled at both ends. Each trial's line is an SVG
    element with the id ``pcs-parallel-trial-<index>``.
    """
    import matplotlib
    from matplotlib.figure import Figure

    columns = [*varied, metric]
    plotted = [r for r in rows if _is_number(r.get(metric)) and not _nan(r[metric])]
    fig = Figure(figsize=(max(4.5, 1.9 * len(columns) + 1.2), 3.8), layout="constrained")
    ax = fig.subplots()
    scales: list[tuple[Any, Any]] = []
    for column in columns:
        values = [r.get(column) for r in plotted]
        if values and all(_is_number(v) for v in values):
            floats = [float(v) for v in values if v is not None]
            low, high = min(floats), max(floats)
            span = (high - low) or 1.0
            scales.append((lambda v, lo=low, sp=span: (float(v or 0.0) - lo) / sp,
                           (_plain_number(low), _plain_number(high))))
        else:
            order: dict[str, int] = {}
            for value in values:
                order.setdefault(json.dumps(value, sort_keys=True), len(order))
            count = max(1, len(order) - 1)
            first = next(iter(order), None)
            last = next(reversed(order), None) if order else None
            scales.append((lambda v, o=order, n=count: o[json.dumps(v, sort_keys=True)] / n,
                           (json.loads(first) if first else "", json.loads(last) if last else "")))
    numbers = [float(r[metric]) for r in plotted]
    low, high = (min(numbers), max(numbers)) if numbers else (0.0, 1.0)
    colours = matplotlib.colormaps["viridis"]
    for row in sorted(plotted, key=lambda r: float(r[metric]) * (1 if mode == "min" else -1),
                      reverse=True):
        ys = [scale(row.get(column)) for column, (scale, _) in zip(columns, scales, strict=True)]
        share = (float(row[metric]) - low) / ((high - low) or 1.0)
        goodness = 1 - share if mode == "min" else share
        ax.plot(range(len(columns)), ys, color=colours(0.9 * (1 - goodness)), alpha=0.8,
                linewidth=1.4, gid=f"pcs-parallel-trial-{row['trial']}")
    for i, (_, (bottom, top)) in enumerate(scales):
        ax.axvline(i, color="#888", linewidth=0.8)
        ax.annotate(_label(bottom), (i, -0.04), ha="center", va="top", fontsize="x-small",
                    annotation_clip=False)
        ax.annotate(_label(top), (i, 1.04), ha="center", va="bottom", fontsize="x-small",
                    annotation_clip=False)
    ax.set_xticks(range(len(columns)), [_label(c) if len(c) <= 18 else c[-18:] for c in columns])
    ax.set_yticks([])
    ax.set_ylim(-0.12, 1.12)
    ax.set_xlim(-0.3, len(columns) - 0.7)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    fig.suptitle(title, fontsize="medium")
    with matplotlib.rc_context({"svg.hashsalt": "pcs-sweep", "svg.fonttype": "none"}):
        fig.savefig(path, format="svg", metadata={"Date": None})


def _nan(value: float) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _label(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return text if len(text) <= 18 else text[:15] + "..."


def best_trial(runs: Mapping[int, Run], metric: str, mode: str, sweep_id: str) -> Run:
    """The finished trial with the best final ``metric`` (ties: the lowest trial index).

    Raises:
        ArgumentError: unknown ``mode``, or no finished trial logged ``metric``.
    """
    if mode not in ("max", "min"):
        raise ArgumentError(f"mode is 'max' or 'min'; got {mode!r}.")
    best: tuple[float, int] | None = None
    for index, run in sorted(runs.items()):
        value = run.data.metrics.get(metric)
        if run.status != "FINISHED" or value is None or _nan(value):
            continue
        key = (-value if mode == "max" else value, index)
        if best is None or key < best:
            best = key
    if best is None:
        logged = metric_names(runs.values())
        raise ArgumentError(
            f"No finished trial of sweep {sweep_id} logged the metric {metric!r}. Its trials "
            f"log: {', '.join(logged) or 'no metrics'}."
        )
    return runs[best[1]]
