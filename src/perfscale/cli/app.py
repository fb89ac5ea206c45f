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
from perfscale.cli import hpo
from perfscale.cli import debug
from perfscale.cli import checkpoint, place
from perfscale.cli import report  # issue 19: perfscale report (cli/report.py)

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
app.add_typer(tune.app, name="tune")
app.command("trace")(trace.trace)
app.command("plan")(plan.plan)
app.command("hpo")(hpo.hpo)
app.add_typer(debug.app, name="debug")
app.add_typer(checkpoint.app, name="checkpoint")
app.command("report")(report.report)  # issue 19
app.command("place")(place.place)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"perfscale {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """perfscale: estimate, trace and measure transformer memory and speed."""


def _wants_json(argv: list[str]) -> bool:
    """Whether the user asked for --json, read from the words typed (the parse may have failed)."""
    return "--json" in argv[: argv.index("--")] if "--" in argv else "--json" in argv


def _fail(message: str, kind: str, code: int, as_json: bool, usage: str | None = None) -> int:
    """Report an error: the human message on stderr; with --json also one error document on stdout."""
    if usage:
        typer.echo(usage, err=True)
    typer.echo(f"error: {message}", err=True)
    if as_json:
        from perfscale.report.emit import print_json

        print_json({"error": {"type": kind, "message": message, "exit_code": code}})
    return code


def main(argv: list[str] | None = None) -> int:
    from perfscale.errors import PerfscaleError

    argv = list(sys.argv[1:] if argv is None else argv)
    as_json = _wants_json(argv)
    try:
        # standalone_mode=False: typer returns (not raises) the code of typer.Exit(code) and of Ctrl-C.
        code = app(args=argv, prog_name="perfscale", standalone_mode=False)
    except PerfscaleError as exc:
        return _fail(str(exc), type(exc).__name__, 2, as_json)
    except typer.Exit as exc:
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt) as exc:
        # SIGTERM (bench/compare turn it into runner.Terminated, a KeyboardInterrupt) exits 128 + 15.
        terminated = type(exc).__name__ == "Terminated"
        return _fail(f"interrupted by {'SIGTERM' if terminated else 'Ctrl-C'}.", "Interrupted", 143 if terminated else 130,
                     as_json)
    except typer.TyperException as exc:
        # typer 0.29 bundles its own click (typer._click): its usage errors (unknown option, bad
        # value, missing argument, unknown verb) all derive from TyperException; exit code 2.
        ctx = getattr(exc, "ctx", None)
        usage = ctx.get_usage() if ctx is not None else None
        hint = f"\nTry '{ctx.command_path} --help' for help." if ctx is not None else ""
        option = getattr(exc, "option_name", "") or ""
        if option[1:2].isdigit() or option[1:2] == ".":
            # "-1xH100-80GB" parses as an option: a value that starts with '-' goes after '--'.
            typed = next((word for word in argv if word.startswith(option)), option)
            hint += f"\nA value that starts with '-' goes after '--', e.g. `{ctx.command_path if ctx else 'perfscale'} -- {typed}`."
        code = getattr(exc, "exit_code", 2) or 2
        return _fail(exc.format_message() + hint, type(exc).__name__, code, as_json, usage)
    except Exception as exc:  # an internal error: say so, keep the traceback for a bug report
        import traceback

        traceback.print_exc()
        message = f"internal error: {type(exc).__name__}: {exc}. Please report it with the command you ran."
        typer.echo(message, err=True)
        if as_json:
            from perfscale.report.emit import print_json

            print_json({"error": {"type": type(exc).__name__, "message": message, "exit_code": 1}})
        return 1
    return code if isinstance(code, int) else 0


def run() -> None:
    sys.exit(main())
