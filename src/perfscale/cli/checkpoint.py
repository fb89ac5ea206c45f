"""`perfscale checkpoint inspect|convert`: big-model checkpoints without loading their weights.

Thin wrappers over perfscale.bigmodel; the Rich views of their results are drawn here.
"""

from __future__ import annotations

from typing import Any

import typer

from perfscale.cli import knobs
from perfscale.report.emit import emit

app = typer.Typer(help="Checkpoints: inspect shards and dtypes from headers, convert .bin to sharded safetensors.",
                  no_args_is_help=True)

PATH = typer.Argument(..., help="A model folder (config.json + weights), a .safetensors/.bin/index json file, or a hub id.")


@app.command("inspect")
def inspect(
    path: str = PATH,
    no_model: bool = typer.Option(False, "--no-model", help="Skip the comparison with the config's model class "
                                  "(saves the ~10 s import of the model code)."),
    as_json: bool = knobs.JSON,
) -> None:
    """Shards, bytes and parameters per shard and dtype, tied tensors, and the total against the config's exact
    count, read from headers (no weight is loaded)."""
    from perfscale.bigmodel.inspection import inspect_checkpoint

    result = inspect_checkpoint(path, check_model=not no_model)
    document = result.to_dict()
    emit(document, as_json, lambda console: _render_inspect(console, document))


def _bytes(n: int | None) -> str:
    from perfscale.units import gib

    if n is None:
        return "n/a"
    return f"{n:,} B" if n < 2**20 else f"{gib(n)} ({n:,} B)"


def _render_inspect(console, d: dict[str, Any]) -> None:
    from rich.table import Table

    from perfscale.units import count

    table = Table(title=f"{d['path']}: {len(d['shards'])} shard(s), {d['format']}")
    for column in ("file", "format", "file bytes", "tensors", "params", "dtypes"):
        table.add_column(column, justify="left" if column in ("file", "format", "dtypes") else "right")
    for s in d["shards"]:
        dtypes = ", ".join(f"{k} {count(v['params'])}" for k, v in s["dtypes"].items())
        table.add_row(s["file"], s["format"], _bytes(s["file_bytes"]), str(s["tensors"]), f"{s['params']:,}", dtypes)
    console.print(table)
    totals = Table(title="Totals", show_header=False)
    totals.add_column("what")
    totals.add_column("value")
    totals.add_row("safety", d["safety"])
    totals.add_row("tensors", f"{d['tensors']:,}")
    totals.add_row("parameters", f"{d['params']:,} ({count(d['params'])})")
    totals.add_row("tensor bytes", _bytes(d["tensor_bytes"]))
    totals.add_row("file bytes", _bytes(d["file_bytes"]))
    totals.add_row("largest shard", _bytes(d["largest_shard_bytes"]))
    if d["index_file"]:
        totals.add_row(f"{d['index_file']} total_size", _bytes(d["index_total_size"]))
    for dtype, c in d["dtypes"].items():
        totals.add_row(f"  {dtype}", f"{c['tensors']} tensors, {c['params']:,} params, {_bytes(c['bytes'])}")
    for group in d["shared"]:
        totals.add_row("shared storage", f"{' = '.join(group['names'])} ({_bytes(group['bytes'])}, stored once)")
    m = d["model"]
    if m:
        totals.add_section()
        totals.add_row("model class", f"{m['architecture']} ({m['model']})")
        verdict = "matches" if m["matches"] else f"differs by {m['checkpoint_params'] - m['config_params']:+,}"
        totals.add_row("config's exact count", f"{m['config_params']:,} ({verdict})")
        totals.add_row("key layout", m["layout"])
        totals.add_row("missing", _names(m["missing"]))
        totals.add_row("unexpected", _names(m["unexpected"]))
        if m["ignored_unexpected"]:
            totals.add_row("ignored by from_pretrained", _names(m["ignored_unexpected"]))
        for t in m["tied"]:
            totals.add_row("tied", f"{' = '.join(t['names'])} (stored: {', '.join(t['stored']) or 'none'})")
    for note in d["notes"]:
        totals.add_row("note", note)
    totals.add_row("read in", f"{d['read_seconds']:.2f} s (files)" + (f", {d['seconds']:.2f} s with the model comparison"
                                                                     if d["model"] else ""))
    console.print(totals)


def _names(names: list[str]) -> str:
    if not names:
        return "none"
    shown = ", ".join(names[:5])
    return shown + (f" (+{len(names) - 5} more)" if len(names) > 5 else "")


@app.command("convert")
def convert(
    path: str = typer.Argument(..., help="A model folder (config.json + .bin or safetensors weights), or a weights file."),
    to: str = typer.Option(..., "--to", help="The new folder to write (must not exist, or be empty)."),
    max_shard_size: str = typer.Option("5GB", "--max-shard-size", help="Largest shard: 5GB (10^9 bytes), 5GiB (2^30 bytes), "
                                       "500MB, or bytes. A tensor larger than this gets a shard of its own."),
    dtype: str = typer.Option("auto", "--dtype", help="Cast floating-point tensors: bf16 | fp16 | fp32; auto keeps each "
                              "tensor's dtype."),
    no_verify: bool = typer.Option(False, "--no-verify", help="Skip reading every written tensor back and comparing it."),
    no_probe: bool = typer.Option(False, "--no-probe", help="Skip the from_pretrained check (loads source and output once "
                                  "each: needs twice the model in RAM)."),
    as_json: bool = knobs.JSON,
) -> None:
    """Convert to sharded safetensors, one tensor at a time, with the index transformers writes; verify the output
    loads bit-identically. Pickles that need more than weights_only=True are refused."""
    from perfscale.bigmodel.convert import convert_checkpoint

    result = convert_checkpoint(path, to, max_shard_size=max_shard_size, dtype=dtype, verify=not no_verify,
                                probe=not no_probe)
    document = result.to_dict()
    emit(document, as_json, lambda console: _render_convert(console, document))


def _render_convert(console, d: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"{d['source']} -> {d['destination']} ({d['dtype'] or 'dtype kept'})")
    for column in ("file", "tensors", "bytes", "over max_shard_size"):
        table.add_column(column, justify="left" if column == "file" else "right")
    for s in d["shards"]:
        table.add_row(s["file"], str(s["tensors"]), _bytes(s["file_bytes"]), "yes (one tensor)" if s["over_limit"] else "")
    console.print(table)
    facts = Table(show_header=False)
    facts.add_column("what")
    facts.add_column("value")
    facts.add_row("index", d["index_file"] or "none (one file)")
    facts.add_row("total_size", _bytes(d["total_size"]))
    facts.add_row("parameters", f"{d['total_parameters']:,}")
    for a in d["dropped_aliases"]:
        facts.add_row("tied, stored once", f"{a['dropped']} = {a['kept']}")
    facts.add_row("largest shard / tensor", f"{_bytes(d['largest_shard_bytes'])} / {_bytes(d['largest_tensor_bytes'])}")
    rise = d["peak_rss_bytes"] - d["baseline_rss_bytes"]
    facts.add_row("host RSS while writing", f"peak {_bytes(d['peak_rss_bytes'])} = baseline {_bytes(d['baseline_rss_bytes'])} "
                  f"+ {_bytes(rise)}")
    facts.add_row("written in", f"{d['write_seconds']:.2f} s")
    verify = d["verify"]
    if "tensors" in verify:
        facts.add_row("read back", f"{verify['tensors']['compared']} tensors bit-identical to the source")
    if "probe" in verify:
        p = verify["probe"]
        facts.add_row("from_pretrained probe", f"{p['class']} {p['dtype']}: outputs bit-identical on input {p['input_shape']}")
    for note in d["notes"]:
        facts.add_row("note", note)
    console.print(facts)


@app.command("load")
def load(
    folders: list[str] = typer.Argument(..., help="One or more model folders (config.json + weights): e.g. the same model "
                                        "as safetensors, sharded safetensors and .bin, to compare them."),
    paths: str = typer.Option("defaults,dtype,offload", "--paths", help="Loading paths, comma-separated: defaults "
                              "(from_pretrained as is), dtype (explicit --dtype), offload (device_map='auto' with CPU/disk "
                              "offload)."),
    dtype: str = typer.Option("bf16", "--dtype", help="The dtype of the `dtype` path: bf16 | fp16 | fp32."),
    repeats: int = typer.Option(1, "--repeats", help="Fresh processes per folder and path (interleaved), 1-50."),
    timeout: float = typer.Option(600.0, "--timeout", help="Seconds one load may take before it is reported as timed out."),
    as_json: bool = knobs.JSON,
) -> None:
    """Measure from_pretrained's load time and peak host RSS (device memory on a GPU) for each loading path, each in a
    fresh process; RSS is compared with the checkpoint's bytes."""
    from perfscale.bigmodel.loading import measure_loading
    from perfscale.errors import InvalidConfigError

    if not (0 < timeout <= 86400):
        raise InvalidConfigError(f"--timeout {timeout!r} must be from 0 to 86400 seconds (e.g. --timeout 600).")
    chosen = [p.strip() for p in paths.split(",") if p.strip()]
    result = measure_loading(list(folders), paths=chosen, dtype=dtype, repeats=repeats, timeout_s=timeout)
    document = result.to_dict()
    emit(document, as_json, lambda console: _render_load(console, document))


def _render_load(console, d: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"from_pretrained, each in a fresh process ({d['repeats']} repeat(s), medians)")
    for column in ("folder", "format", "shards", "path", "load", "RSS peak added", "RSS resident added", "x checkpoint",
                   "devices"):
        table.add_column(column, justify="left" if column in ("folder", "format", "path", "devices") else "right")
    for r in d["runs"]:
        if r["failed"]:
            table.add_row(r["folder"], r["format"], str(r["shards"]), r["path"], "failed", r["failed"][:60], "", "", "")
            continue
        table.add_row(r["folder"], r["format"], str(r["shards"]), r["path"], f"{r['median_load_s']:.2f} s",
                      _bytes(r["median_rss_load_bytes"]), _bytes(r["median_rss_resident_bytes"]),
                      f"{r['rss_ratio']:.2f}" if r["rss_ratio"] is not None else "n/a", ", ".join(r["devices"]) or "cpu")
    console.print(table)
    console.print("x checkpoint: the larger of the two RSS rises over the checkpoint's tensor bytes (about 1 with mmap).")
