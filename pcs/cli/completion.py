"""``pcs completion bash|zsh|fish``: the shell code that completes pcs's commands and options."""

from __future__ import annotations

import click

__all__ = ["completion"]


@click.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the completion script for SHELL; load it from your shell's startup file.

    \b
    bash: eval "$(pcs completion bash)"   (in ~/.bashrc)
    zsh:  eval "$(pcs completion zsh)"    (in ~/.zshrc)
    fish: pcs completion fish > ~/.config/fish/completions/pcs.fish
    """
    from click.shell_completion import get_completion_class

    root = ctx.find_root().command
    klass = get_completion_class(shell)
    if klass is None:  # pragma: no cover - click ships all three
        raise click.UsageError(f"click has no completion for {shell}.")
    click.echo(klass(root, {}, "pcs", "_PCS_COMPLETE").source())
