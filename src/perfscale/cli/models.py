"""`perfscale models [--family F]` and `perfscale models show NAME`."""

from __future__ import annotations

import typer

from perfscale.cli import knobs

from perfscale.report.emit import emit

app = typer.Typer(help="The model catalogue: exact parameter counts per component.", invoke_without_command=True)



@app.callback()
def list_models(
    ctx: typer.Context,
    family: str = typer.Option(None, "--family", help="Only this family (model_type), e.g. llama, gpt2, t5."),
    as_json: bool = knobs.JSON,
) -> None:
    """List the catalogue models with their exact parameter counts."""
    if ctx.invoked_subcommand is not None:
        return
    from perfscale.report.specs_tables import models_table
    from perfscale.specs.listing import list_models as listing

    rows = [spec.to_dict() for spec in listing(family)]
    emit({"models": rows}, as_json, lambda console: console.print(models_table(rows)))


@app.command("show")
def show(
    name: str = typer.Argument(..., help="Catalogue name, local folder or config.json, or hub id."),
    as_json: bool = knobs.JSON,
) -> None:
    """Show one model's architecture and exact parameter counts."""
    from perfscale.report.specs_tables import model_table
    from perfscale.specs.model import load_model_spec

    spec = load_model_spec(name).to_dict()
    emit(spec, as_json, lambda console: console.print(model_table(spec)))
