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

__all__ = ["console", "print_runs_table", "print_run_status", "print_component_tree", "run_summary"]


def console() -> Console:
    import shutil

    from rich.console import Console

    # piped output has no terminal width; keep full run ids readable there
    width = None if shutil.get_terminal_size((0, 0)).columns else 160
    return Console(soft_wrap=False, width=width)


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
        "status": info.status,
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
    }


@provides("print_runs_table")
def print_runs_table(runs: Iterable[Run], out: Console | None = None) -> None:
    from rich.markup import escape
    from rich.table import Table

    out = out or console()
    table = Table(title="pcs runs (newest first)")
    table.add_column("run id", no_wrap=True)
    for column in ("name", "status", "started", "entry point", "grade", "links"):
        table.add_column(column, overflow="fold")
    count = 0
    for run in runs:
        count += 1
        tags = run.tags
        entry = tags.get(_keys.ENTRY_POINT)
        component = tags.get(_keys.COMPONENT)
        table.add_row(
            run.identifier,
            escape(run.info.run_name or ""),
            run.info.status,
            _time(run.info.start_time),
            escape(f"{component}.{entry}") if entry else "-",
            tags.get(_keys.GRADE, "-"),
            escape(_links(run)),
        )
    if count == 0:
        out.print("No pcs runs in this tracking store yet. Make one with 'pcs run' or Component.run().")
        return
    out.print(table)


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
    out.print(info)
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
