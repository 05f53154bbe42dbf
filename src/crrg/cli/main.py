"""Root of the ``crrg`` command: registers every command group and turns user errors into one line.

Each command module exposes ``register(app)``; adding a command group means adding its module name
to :data:`COMMAND_MODULES`.
"""

from __future__ import annotations

import importlib
import sys

import typer

from crrg import __version__
from crrg.cli.common import CliState, console, setup_logging
from crrg.errors import CrrgError

COMMAND_MODULES = (
    "crrg.cli.data",
    "crrg.cli.text",
    "crrg.cli.label",
    "crrg.cli.evaluate",
    "crrg.cli.synth",
    "crrg.cli.train",
    "crrg.cli.classify",
    "crrg.cli.report",
    "crrg.cli.serve",
    "crrg.cli.models",
)

app = typer.Typer(
    name="crrg",
    help="Chest radiograph report generation and classification.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"crrg {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or status lines (for scripts)."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    ctx.obj = CliState(quiet=quiet)
    setup_logging(quiet)


for _name in COMMAND_MODULES:
    try:
        _module = importlib.import_module(_name)
    except ModuleNotFoundError as exc:
        if exc.name != _name:  # a real missing dependency inside an existing module
            raise
        continue
    _module.register(app)


def main() -> None:
    try:
        app()
    except CrrgError as exc:
        from rich.markup import escape

        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)
