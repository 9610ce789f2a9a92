"""``pcs freeze``: pin a component and its dependencies to git commits."""

from __future__ import annotations

import click

from pcs.cli._common import emit_json, json_option, working

__all__ = ["freeze"]


@click.command()
@click.argument("component")
@click.option("-r", "--registry-file", default="components.yaml", show_default=True,
              type=click.Path(dir_okay=False),
              help="Registry YAML that defines the component (relative paths in it resolve "
                   "against its own folder).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Where to write the frozen registry.")
@click.option("--force", is_flag=True, help="Freeze files with uncommitted changes at their last commit.")
@json_option
def freeze(component: str, registry_file: str, output: str, force: bool, as_json: bool) -> None:
    """Pin COMPONENT and its dependencies to git commits; write a registry that runs anywhere.

    Each component is pinned to the commit of its file and to the URL of the
    repository's remote, so others can clone it; the notes say when a commit is
    not pushed or a repository has no remote.
    """
    from pcs.component import Component
    from pcs.freeze import freeze_components

    with working(as_json):
        result = freeze_components(Component.from_registry_file(registry_file, component), force=force)
        result.registry.to_yaml(output)
    if as_json:
        emit_json({"output": output, "notes": list(result.notes)})
        return
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(f"wrote {output}")
