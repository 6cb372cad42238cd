"""The ``equivcheck`` command line: thin commands over the library API.

Each subcommand lives in its own module and registers itself on :data:`app`.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from equivcheck import __version__


def _flags_without_metavar() -> None:
    """Show flags as plain flags in help (``--json``, not ``--json <bool>``): typer labels every
    option with its type, flags included, and a flag takes no value."""
    try:
        from typer.core import TyperOption
    except ImportError:  # another typer: its own help
        return
    typed = getattr(TyperOption, "display_type_rich", None)
    if typed is None or getattr(typed, "_equivcheck", False):
        return

    def display_type_rich(self, ctx):
        if getattr(self, "is_flag", False) and self.metavar is None:
            return None
        return typed(self, ctx)

    display_type_rich._equivcheck = True
    TyperOption.display_type_rich = display_type_rich


_flags_without_metavar()

app = typer.Typer(
    name="equivcheck",
    help="Formal equivalence checking of ReLU networks stored as ONNX.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"equivcheck {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        Optional[bool],
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit."),
    ] = None,
) -> None:
    """Prove two ReLU networks equivalent on an input domain, or find where they differ."""


def _register() -> None:
    import importlib

    for name in ("prove", "compress", "audit", "regions", "campaign"):
        try:
            importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise


_register()


def main() -> None:
    """Console-script entry point: the command is this process, so ``--timeout`` counts from
    the process start (imports included)."""
    from equivcheck.core.deadline import command_started_with_process

    command_started_with_process()
    app()
