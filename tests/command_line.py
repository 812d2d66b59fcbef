"""The command line run in-process, for the specs that go through it."""

from typer.testing import CliRunner

from prune_snr.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(result, needle):
    """Exit code 2 and the error in one line, last (plain progress lines of finished phases may come before it)."""
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert result.exit_code == 2, result.output
    assert errors == [lines[-1]] and needle in lines[-1] and "Traceback" not in result.output, result.output
