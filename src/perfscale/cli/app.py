"""`perfscale` entry point: the Typer app, its verbs, and the mapping of errors to exit codes.

Exit codes: 0 ok, 2 a user's mistake (bad value, unknown name, offline), 1 an internal error.
"""

from __future__ import annotations

import sys

import typer

from perfscale import __version__
from perfscale.cli import hardware, models, plan
from perfscale.cli import bench, compare, results
from perfscale.cli import tune
from perfscale.cli import trace

app = typer.Typer(
    name="perfscale",
    help="Will it fit, how fast will it be, what should I change: memory and speed of transformers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(models.app, name="models")
app.add_typer(hardware.app, name="hardware")
app.command("bench")(bench.bench)
app.command("compare")(compare.compare)
app.command("results")(results.results)
app.command("tune")(tune.tune)
app.command("trace")(trace.trace)
app.command("plan")(plan.plan)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"perfscale {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """perfscale: estimate, trace and measure transformer memory and speed."""


def main(argv: list[str] | None = None) -> int:
    import click

    from perfscale.errors import PerfscaleError

    try:
        # standalone_mode=False: typer returns (not raises) the code of typer.Exit(code) and of Ctrl-C.
        code = app(args=argv, standalone_mode=False)
    except PerfscaleError as exc:
        typer.echo(f"error: {exc}", err=True)
        return 2
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        typer.echo("Aborted.", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except KeyboardInterrupt:
        typer.echo("Interrupted.", err=True)
        return 130
    except Exception as exc:  # an internal error: say so, keep the traceback for a bug report
        import traceback

        traceback.print_exc()
        typer.echo(f"internal error: {type(exc).__name__}: {exc}. Please report it with the command you ran.", err=True)
        return 1
    return code if isinstance(code, int) else 0


def run() -> None:
    sys.exit(main())
