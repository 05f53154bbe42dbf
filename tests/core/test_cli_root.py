from __future__ import annotations

import subprocess
import sys

import typer
from typer.testing import CliRunner

from crrg.cli.main import app


def test_help_lists_every_command_group():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("data", "text", "label", "evaluate", "synth", "train", "classify", "report", "serve", "models"):
        assert command in result.output


def test_quiet_reaches_commands_through_the_context():
    from crrg.cli.common import is_quiet

    probe = typer.Typer()
    seen = []

    @probe.callback()
    def root(ctx: typer.Context, quiet: bool = typer.Option(False, "--quiet")):
        from crrg.cli.common import CliState

        ctx.obj = CliState(quiet=quiet)

    @probe.command()
    def cmd():
        seen.append(is_quiet())

    CliRunner().invoke(probe, ["--quiet", "cmd"])
    CliRunner().invoke(probe, ["cmd"])
    assert seen == [True, False]


def test_user_error_is_one_line_with_exit_code_2(tmp_path):
    result = subprocess.run([sys.executable, "-m", "crrg", "data", "stats", str(tmp_path / "missing.jsonl")],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "missing.jsonl" in result.stderr
