"""`perfscale hardware [--local]` and `perfscale hardware show NAME`."""

from __future__ import annotations

import typer

from perfscale.cli import knobs

from perfscale.report.emit import emit

app = typer.Typer(help="The hardware catalogue (with sources) and this machine.", invoke_without_command=True)



def _show_local(as_json: bool) -> None:
    from perfscale.report.specs_tables import hardware_table, local_tables
    from perfscale.specs.detect import detect_local

    machine = detect_local()
    document = machine.to_dict()

    def render(console) -> None:
        for table in local_tables(document):
            console.print(table)
        console.print(hardware_table(machine.hardware))

    emit(document, as_json, render)


@app.callback()
def list_hardware(
    ctx: typer.Context,
    local: bool = typer.Option(False, "--local", help="Describe this machine instead of the catalogue."),
    as_json: bool = knobs.JSON,
) -> None:
    """List the hardware catalogue, or with --local describe this machine."""
    if ctx.invoked_subcommand is not None:
        return
    if local:
        _show_local(as_json)
        return
    from perfscale.report.specs_tables import hardware_list_table
    from perfscale.specs.hardware import catalog_hardware

    items = catalog_hardware()
    emit({"hardware": [hw.to_dict() for hw in items]}, as_json, lambda console: console.print(hardware_list_table(items)))


@app.command("show")
def show(
    name: str = typer.Argument(..., help="Catalogue name or alias, a topology such as 8xH100-80GB, a TPU slice such as v5e-16, or `local`."),
    as_json: bool = knobs.JSON,
) -> None:
    """Show one device (or topology) with the source of every number."""
    if name.lower() == "local":
        _show_local(as_json)
        return
    from perfscale.report.specs_tables import hardware_table
    from perfscale.specs.lookup import parse_topology

    topology = parse_topology(name)

    def render(console) -> None:
        if topology.hardware.torus is not None:
            from perfscale.report.tpu_tables import tpu_slice_table

            console.print(tpu_slice_table(topology))
        elif topology.world_size > 1:
            console.print(f"[bold]{topology.label}[/]: {topology.nodes} node(s) x {topology.devices_per_node} devices = {topology.world_size}")
        console.print(hardware_table(topology.hardware))

    emit(topology.to_dict(), as_json, render)
