"""Rich rendering of runs, components and reports; the only place pcs formats text."""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pcs import _keys
from pcs._features import provides

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console

    from pcs.component import Component
    from pcs.run import Run

__all__ = [
    "console",
    "print_runs_table",
    "print_run_status",
    "print_component_tree",
    "run_summary",
    "run_details",
    "print_caches",
    "print_clean_result",
    "print_cleanup",
    "fold_sweeps",
    "sweep_summary",
    "print_sweep",
]


def console(stderr: bool = False) -> Console:
    import shutil

    from rich.console import Console

    # piped output has no terminal width; keep full run ids readable there
    width = None if shutil.get_terminal_size((0, 0)).columns else 160
    return Console(soft_wrap=False, width=width, stderr=stderr)


def _status(run: Run) -> str:
    """The run's status; a RUNNING run whose process is gone shows as 'RUNNING (stale)'."""
    status = run.info.status
    if status == "RUNNING" and run.stale_reason is not None:
        return "RUNNING (stale)"
    return status


def _time(ms: int | None) -> str:
    if not ms:
        return "-"
    return _dt.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S")


def _links(run: Run) -> str:
    tags = run.tags
    parts = []
    if tags.get(_keys.PARENT_RUN_ID):
        parts.append(f"inner of {tags[_keys.PARENT_RUN_ID][:8]}")
    deps = run.dependency_ids
    if deps:
        parts.append("depends on " + ", ".join(d[:8] for d in deps))
    if tags.get(_keys.RERUN_OF):
        parts.append(f"rerun of {tags[_keys.RERUN_OF][:8]}")
    if tags.get(_keys.IMPORTED_FROM):
        parts.append(f"imported from {tags[_keys.IMPORTED_FROM][:8]}")
    return "; ".join(parts)


def run_summary(run: Run) -> dict[str, Any]:
    """The facts a status line shows, as plain data (also the CLI's --json)."""
    tags = run.tags
    info = run.info
    return {
        "run_id": run.identifier,
        "name": info.run_name,
        "experiment_id": info.experiment_id,
        "status": _status(run),
        "stale_reason": run.stale_reason,
        "lifecycle_stage": info.lifecycle_stage,
        "start_time": info.start_time,
        "end_time": info.end_time,
        "type": tags.get(_keys.RUN_TYPE, "mlflow"),
        "component": tags.get(_keys.COMPONENT),
        "entry_point": tags.get(_keys.ENTRY_POINT),
        "reproducibility": tags.get(_keys.GRADE),
        "outer_run": tags.get(_keys.PARENT_RUN_ID),
        "depends_on": run.dependency_ids,
        "rerun_of": tags.get(_keys.RERUN_OF),
        "imported_from": tags.get(_keys.IMPORTED_FROM),
        "error": tags.get(_keys.ERROR),
        "verification": tags.get(_keys.VERIFICATION),
        "sweep_id": tags.get(_keys.SWEEP_ID),
    }


def run_details(run: Run) -> dict[str, Any]:
    """Everything ``pcs status RUN_ID --json`` prints."""
    data = run_summary(run)
    data.update(params=run.params, metrics=run.metrics, tags=run.tags)
    return data


def fold_sweeps(runs: Iterable[Run]) -> list[tuple[Run, dict[str, int] | None]]:
    """The rows of a run listing: a sweep is one row with its trials counted; its trials are hidden.

    Returns:
        ``(run, trial counts)`` per row: counts by status of each trial index's
        latest run (``trials`` holds the total) for a sweep, None for other runs.
    """
    listed = list(runs)
    sweeps = {r.identifier for r in listed if r.tags.get(_keys.RUN_TYPE) == "sweep"}
    latest: dict[str, dict[str, tuple[int, str]]] = {}
    rows: list[Run] = []
    for run in listed:
        tags = run.tags
        parent = tags.get(_keys.PARENT_RUN_ID)
        trial = tags.get(_keys.TRIAL)
        if parent in sweeps and trial is not None:
            start = run.info.start_time or 0
            seen = latest.setdefault(parent, {})
            if trial not in seen or seen[trial][0] <= start:
                pruned = run.info.status == "KILLED" and tags.get(_keys.PRUNED)
                seen[trial] = (start, "PRUNED" if pruned else run.info.status)
            continue
        rows.append(run)
    out: list[tuple[Run, dict[str, int] | None]] = []
    for run in rows:
        if run.identifier not in sweeps:
            out.append((run, None))
            continue
        counts: dict[str, int] = {}
        for _, status in latest.get(run.identifier, {}).values():
            counts[status] = counts.get(status, 0) + 1
        seen_count = sum(counts.values())
        planned = run.tags.get(_keys.SWEEP_TRIALS, "")
        # trials planned but with no run (yet): counted, so the row says what is missing
        if planned.isdigit() and int(planned) > seen_count and run.info.status != "RUNNING":
            counts["MISSING"] = int(planned) - seen_count
        total = max(seen_count, int(planned)) if planned.isdigit() else seen_count
        out.append((run, {"trials": total, **dict(sorted(counts.items()))}))
    return out


def _trial_counts_text(counts: dict[str, int]) -> str:
    """``sweep of 20 trials (17 finished, 1 failed, 1 pruned, 1 missing)``; all finished: no list."""
    total = counts.get("trials", 0)
    order = ("FINISHED", "FAILED", "KILLED", "PRUNED", "RUNNING", "MISSING")
    parts = [f"{counts[s]} {s.lower()}" for s in order if counts.get(s)]
    parts += [f"{n} {s.lower()}" for s, n in counts.items() if s not in ("trials", *order)]
    text = f"sweep of {total} trial{'s' if total != 1 else ''}"
    if counts.get("FINISHED", 0) == total:
        return text
    return text + f" ({', '.join(parts)})"


@provides("print_runs_table")
def print_runs_table(
    runs: Iterable[Run],
    out: Console | None = None,
    listing: Any = None,
) -> None:
    """The listing of ``pcs status`` / ``pcs runs``: one aligned line per run, newest first.

    A sweep is one row with its trial count (its trials are hidden). Plain
    aligned columns (like ``docker ps``) rather than a drawn table: a listing of
    10,000 runs prints in a moment. With a ``pcs.browse.RunListing``, its rows
    are printed with its param/metric/tag columns (and an EXPERIMENT column when
    the rows come from several experiments).
    """
    extra: list[str] = list(listing.columns) if listing is not None else []
    by_experiment = listing is not None and listing.several_experiments
    header = (
        "RUN ID", "NAME", *(("EXPERIMENT",) if by_experiment else ()), "STATUS", "STARTED",
        "ENTRY POINT", "GRADE", *(c.partition(".")[2] for c in extra), "LINKS",
    )
    rows: list[tuple[str, ...]] = []
    folded = listing.rows if listing is not None else fold_sweeps(runs)
    for run, trials in folded:
        tags = run.tags
        entry = tags.get(_keys.ENTRY_POINT)
        component = tags.get(_keys.COMPONENT)
        links = _links(run)
        if trials is not None:
            links = "; ".join(p for p in (_trial_counts_text(trials), links) if p)
        experiment = (
            (_clip(listing.experiments.get(run.info.experiment_id, run.info.experiment_id), 30),)
            if by_experiment else ()
        )
        rows.append((
            run.identifier,
            _clip(run.info.run_name or "", 40),
            *experiment,
            _status(run),
            _time(run.info.start_time),
            f"{component}.{entry}" if entry else "-",
            tags.get(_keys.GRADE, "-"),
            *(_listing_cell(listing.value(run, c)) for c in extra),
            links or "-",
        ))
    if not rows:
        if listing is not None and listing.narrowed:
            _write(out, "No runs match the experiment and filter given.")
            return
        _write(out, "No pcs runs in this tracking store yet. Make one with 'pcs run' or Component.run().")
        return
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header) - 1)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
        for row in (header, *rows)
    ]
    _write(out, "\n".join(line.rstrip() for line in lines))


def _write(out: Console | None, text: str) -> None:
    """Plain text to ``out`` (or stdout), no markup: names and tags are printed as they are."""
    if out is not None:
        out.print(text, markup=False, highlight=False, soft_wrap=True)
        return
    import sys

    sys.stdout.write(text + "\n")


def _listing_cell(value: Any) -> str:
    """A param, metric or tag value in a listing (``-`` when the run has none)."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return _clip(str(value), 30)


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def sweep_summary(rows: list[dict[str, Any]]) -> dict[str, int]:
    """``trials`` and the number of trials by status, from a sweep's table."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    return {"trials": len(rows), **dict(sorted(counts.items()))}


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def print_sweep(
    sweep: Any,
    rows: list[dict[str, Any]],
    best: Run | None = None,
    metric: str | None = None,
    out: Console | None = None,
) -> None:
    """A sweep's status line, its table of trials (one row per trial) and its summary."""
    from rich.markup import escape
    from rich.table import Table

    out = out or console()
    print_run_status(sweep, out=out)
    columns = list(rows[0]) if rows else ["trial", "run_id", "status", "seed"]
    table = Table(title=f"trials of sweep {sweep.identifier}")
    for column in columns:
        numeric = column not in ("run_id", "status")
        table.add_column(escape(column), no_wrap=column == "run_id", min_width=min(len(column), 32),
                         justify="right" if numeric else "left", overflow="fold")
    for row in rows:
        cells = [escape(_cell(row.get(c))) for c in columns]
        if row.get("status") in ("FAILED", "KILLED", "MISSING"):
            cells[columns.index("status")] = f"[red]{cells[columns.index('status')]}[/red]"
        table.add_row(*cells)
    out.print(table)
    summary = sweep_summary(rows)
    failed = summary["trials"] - summary.get("FINISHED", 0) - summary.get("PRUNED", 0)
    parts = [f"{summary.get('FINISHED', 0)} finished"]
    parts += [f"{n} {s.lower()}" for s, n in summary.items() if s not in ("trials", "FINISHED")]
    out.print(f"{summary['trials']} trial(s): {', '.join(parts)}")
    if failed:
        out.print(
            f"resume the trials that did not finish with: pcs sweep --resume {sweep.identifier}"
        )
    if best is not None and metric:
        out.print(
            f"best trial by {escape(metric)}: trial {best.tags.get(_keys.TRIAL)} "
            f"({best.identifier}) = {_cell(best.metrics.get(metric))}"
        )
    from pcs.sweep.sweep_run import PLOT_METRIC_TAG

    plotted = sweep.tags.get(PLOT_METRIC_TAG)
    what = (f"table {_keys.SWEEP_TABLE_ARTIFACT}, plot of {escape(plotted)} "
            f"{_keys.SWEEP_PLOT_ARTIFACT}" if plotted else f"table {_keys.SWEEP_TABLE_ARTIFACT}")
    out.print(f"{what}: artifacts of the sweep run (mlflow ui shows them)")


@provides("print_run_status")
def print_run_status(run: Run, detailed: bool = False, out: Console | None = None) -> None:
    from rich.markup import escape
    from rich.table import Table

    out = out or console()
    summary = run_summary(run)
    line = (
        f"[bold]{run.identifier}[/bold]  {escape(summary['name'] or '')}  {summary['status']}"
        + (
            escape(f"  {summary['component']}.{summary['entry_point']}")
            if summary["entry_point"]
            else ""
        )
        + (escape(f"  [{summary['reproducibility']}]") if summary["reproducibility"] else "")
    )
    links = _links(run)
    out.print(line + (f"  ({escape(links)})" if links else ""))
    if not detailed:
        return
    info = Table(title="info", show_header=False)
    for key in ("experiment_id", "status", "lifecycle_stage", "type"):
        info.add_row(key, str(summary[key]))
    info.add_row("start", _time(summary["start_time"]))
    info.add_row("end", _time(summary["end_time"]))
    if summary["stale_reason"]:
        info.add_row("stale", escape(summary["stale_reason"] + " ('pcs cleanup' ends it as KILLED)"))
    if summary["verification"]:
        info.add_row("verification", escape(summary["verification"]))
    out.print(info)
    if summary["error"]:
        out.print(f"[red]error:[/red] {escape(summary['error'])}")
        tail = _traceback_tail(run)
        if tail:
            out.print(escape(tail), highlight=False)
    for title, values in (("params", run.params), ("metrics", run.metrics)):
        if values:
            table = Table(title=title)
            table.add_column("key")
            table.add_column("value", overflow="fold")
            for key, value in sorted(values.items()):
                table.add_row(escape(key), escape(str(value)))
            out.print(table)
    tags = Table(title="tags")
    tags.add_column("key")
    tags.add_column("value", overflow="fold")
    for key, value in sorted(run.tags.items()):
        if key == _keys.GRADE_REASONS:
            try:
                value = "; ".join(json.loads(value))
            except (json.JSONDecodeError, TypeError):
                pass
        tags.add_row(escape(key), escape(value if len(value) < 300 else value[:297] + "..."))
    out.print(tags)
    if run.is_component_run:
        from pcs.component_run import ComponentRun

        if isinstance(run, ComponentRun):
            _print_run_command(run, out)
    link_table = Table(title="links")
    link_table.add_column("link")
    link_table.add_column("runs", overflow="fold")
    link_table.add_row("outer", summary["outer_run"] or "-")
    link_table.add_row("inner", ", ".join(r.identifier for r in run.inner_runs) or "-")
    link_table.add_row("dependencies", ", ".join(summary["depends_on"]) or "-")
    link_table.add_row("dependers", ", ".join(r.identifier for r in run.depender_runs) or "-")
    link_table.add_row("rerun of", summary["rerun_of"] or "-")
    link_table.add_row("reruns", ", ".join(r.identifier for r in run.reruns) or "-")
    out.print(link_table)
    out.print(f"picture of its lineage: pcs graph {run.identifier} -o lineage.html")


def _traceback_tail(run: Run, lines: int = 12) -> str:
    """The last lines of the run's recorded traceback (``pcs/traceback.txt``), or ''."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory(prefix="pcs-status-") as tmp:
        try:
            local = run._download_quietly(_keys.TRACEBACK_ARTIFACT, Path(tmp))
            text = Path(local).read_text(encoding="utf-8", errors="replace")
        except Exception:  # noqa: BLE001 - no traceback recorded
            return ""
    kept = text.rstrip().splitlines()[-lines:]
    return f"traceback ({_keys.TRACEBACK_ARTIFACT}, last {len(kept)} lines):\n" + "\n".join(kept)


def _size(num: int) -> str:
    value = float(num)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def print_caches(summaries: Iterable[Any], out: Console | None = None) -> None:
    """The table of ``pcs cache list``."""
    from rich.table import Table

    out = out or console()
    table = Table(title="pcs caches")
    for column in ("cache", "entries", "size", "path"):
        table.add_column(column, overflow="fold")
    total = 0
    for s in summaries:
        size = s.size_bytes + s.other_bytes
        total += size
        table.add_row(s.kind, str(len(s.entries)), _size(size), str(s.path))
    out.print(table)
    out.print(f"total: {_size(total)}")


def print_clean_result(result: Any, out: Console | None = None) -> None:
    """What ``pcs cache clean`` removed and skipped."""
    out = out or console()
    verb = "would remove" if result.dry_run else "removed"
    for entry in result.removed:
        out.print(f"{verb} {entry.kind}/{entry.name} ({_size(entry.size_bytes)})")
    for entry in result.skipped_in_use:
        out.print(f"skipped {entry.kind}/{entry.name}: in use by a running pcs process")
    out.print(
        f"{'would free' if result.dry_run else 'freed'} {_size(result.freed_bytes)}; "
        f"{len(result.skipped_in_use)} entr{'y' if len(result.skipped_in_use) == 1 else 'ies'} in use"
    )


def print_cleanup(stale: Iterable[Any], dry_run: bool, out: Console | None = None) -> None:
    """What ``pcs cleanup`` ended (or would end)."""
    from rich.markup import escape

    out = out or console()
    count = 0
    for run in stale:
        count += 1
        verb = "would end" if dry_run else "ended"
        out.print(f"{verb} {run.run_id} ({escape(run.name or '')}) as KILLED: {escape(run.reason)}")
    if count == 0:
        out.print("No stale runs: every RUNNING run has a live process or a recent heartbeat.")


def _print_run_command(run: Any, out: Console) -> None:
    from rich.markup import escape
    from rich.table import Table

    from pcs.errors import PcsError

    try:
        command = run.run_command
    except PcsError as exc:
        out.print(f"[red]run command unavailable:[/red] {exc}")
        return
    table = Table(title="run command", show_header=False)
    table.add_row("identifier", command.identifier)
    table.add_row("component", command.component.identifier)
    table.add_row("entry point", command.entry_point)
    table.add_row("seed", str(command.seed))
    table.add_row("arguments", escape(json.dumps(command.argument_set.to_dict(), sort_keys=True)))
    for cid, entry in command.code.items():
        table.add_row(f"code {cid}", f"{entry['file']} sha256 {entry['sha256'][:16]}")
    out.print(table)


@provides("print_component_tree")
def print_component_tree(component: Component, out: Console | None = None) -> None:
    from rich.tree import Tree

    out = out or console()

    def label(c: Component, attr: str | None) -> str:
        where = c.source_label()
        kind = "module" if c.class_name is None else ("instance of " if c.instantiate else "class ") + c.class_name
        prefix = f"{attr} = " if attr else ""
        return f"{prefix}[bold]{c.identifier}[/bold] ({kind}, {where})"

    def add(tree: Tree, c: Component, seen: tuple[str, ...]) -> None:
        for attr, dep in sorted(c.dependencies.items()):
            branch = tree.add(label(dep, attr))
            if dep.identifier not in seen:
                add(branch, dep, seen + (dep.identifier,))

    root = Tree(label(component, None))
    add(root, component, (component.identifier,))
    out.print(root)
