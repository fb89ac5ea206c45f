"""The winner of a training tune in the formats people run: its Trainer snippet on the result, and files.

The decide layer (tune/) finds and proves the winner; writing it as code is this layer's job, so the
tuner returns a RunConfig and this module turns it into the snippet and the emitted files.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from perfscale.config.run_config import RunConfig
from perfscale.export.emit import emit_files
from perfscale.export.trainer import trainer_snippet


def _winner(result, options):
    """(RunConfig, topology, model id, config to build from) of the tune's winner, or None when nothing won.

    A hub id or a local folder loads with from_pretrained; a catalogue model without a hub id (the built-in
    perfscale-tiny-llama) is no name from_pretrained knows, so the snippet builds it from its config."""
    if not result.winner or not result.winner.get("run_config"):
        return None
    from perfscale.specs import load_model_spec
    from perfscale.tune.train import resolve_topology

    spec = load_model_spec(options.model, task=getattr(options, "task", None), num_labels=getattr(options, "num_labels", None))
    headed = getattr(options, "task", None) is not None or getattr(options, "num_labels", None) is not None  # --task: that head
    build_from = dict(spec.config) if spec.source == "catalog" and spec.hub_id is None else None
    if headed:  # the config the trials trained: the head, and the pad token a classifier needs (tune/train.head_model)
        import json

        from perfscale.tune.train import head_model

        build_from = json.loads((Path(head_model(options, spec)) / "config.json").read_text())
    config, topology = RunConfig.from_dict(result.winner["run_config"]), resolve_topology(options)
    launch = result.winner.get("launch") or {}
    if topology.hardware.kind == "cpu" and launch:  # measured here (an estimated winner has no launch)
        # What was measured is what is emitted: the ranks (torchrun --nproc_per_node, accelerate num_processes)
        # and the threads each rank ran with (OMP_NUM_THREADS, torch.set_num_threads).
        if (launch.get("processes") or 1) > 1:
            topology = replace(topology, nodes=1, devices_per_node=launch["processes"])
        if launch.get("threads_per_rank"):
            config = replace(config, torch_num_threads=int(launch["threads_per_rank"]))
    return config, topology, spec.hub_id or options.model, build_from


def add_trainer_snippet(result, options):
    """Set `result.snippet` to the winner as a Trainer snippet to paste (unchanged when nothing won); returns result."""
    winner = _winner(result, options)
    if winner is not None:
        result.snippet = trainer_snippet(*winner)
    return result


def emit_winner(result, formats: tuple[str, ...], out_dir: Path, options) -> list[dict[str, str]]:
    """The winner's Trainer / accelerate / DeepSpeed / FSDP / torchrun files under out_dir (none when nothing won)."""
    winner = _winner(result, options)
    if winner is None:
        return []
    written = emit_files(*winner[:2], out_dir, formats, *winner[2:])
    return [{"format": f.format, "path": f.path, "description": f.description} for f in written]


__all__ = ["add_trainer_snippet", "emit_winner"]
