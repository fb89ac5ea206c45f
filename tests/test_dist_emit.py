"""The emitted accelerate config carries the whole layout or refuses (issue 18): each file is loaded by
accelerate itself and read back into a layout that must equal the RunConfig it came from."""

from __future__ import annotations

import pytest

from perfscale.config import RunConfig
from perfscale.errors import InvalidConfigError
from perfscale.export import emit_files
from perfscale.export.launch import layout_of_accelerate
from perfscale.specs import parse_topology
from perfscale.specs.workload import TrainWorkload

CASES = [  # (topology, knobs): plain DDP, FSDP over all ranks, hybrid FSDP, TP x FSDP, TP alone, ZeRO-3 + offload
    ("2x8xH100-80GB", {}),
    ("8xH100-80GB", {"fsdp": 8, "checkpointing": True, "precision": "bf16-mixed"}),
    ("2x8xH100-80GB", {"fsdp": 8, "offload": "optimizer+params"}),
    ("8xH100-80GB", {"tp": 4, "fsdp": 2, "precision": "bf16-mixed"}),
    ("8xH100-80GB", {"tp": 8}),
    ("2x8xH100-80GB", {"zero": 3, "offload": "optimizer"}),
]


@pytest.mark.parametrize(("topology", "knobs"), CASES)
def test_accelerate_config_round_trips_the_layout(tmp_path, topology, knobs):
    from accelerate.commands.config.config_args import load_config_from_file

    config = RunConfig(TrainWorkload(batch=2, seq=512), **knobs)
    topo = parse_topology(topology)
    emit_files(config, topo, tmp_path, ("accelerate",), "m")
    layout = layout_of_accelerate(load_config_from_file(str(tmp_path / "accelerate_config.yaml")))
    assert layout["num_processes"] == topo.world_size and layout["num_machines"] == topo.nodes
    assert layout["tp"] == config.tp
    assert layout["fsdp"] == config.fsdp
    assert layout["deepspeed"] == ("ds_config.json" if config.zero else None)
    if config.fsdp or config.tp > 1:
        assert layout["offload_params"] == (config.offload != "none") and layout["checkpointing"] == config.checkpointing
    assert layout["mixed_precision"] == (config.prec.autocast_dtype or "no")


def test_layouts_accelerate_cannot_run_are_refused(tmp_path):
    topo = parse_topology("8xH100-80GB")
    with pytest.raises(InvalidConfigError, match="pipeline parallel .pp 2. has no runtime under accelerate"):
        emit_files(RunConfig(TrainWorkload(1, 512), tp=4, pp=2), topo, tmp_path, ("accelerate",), "m")
    with pytest.raises(InvalidConfigError, match="does not divide the 8 processes"):
        emit_files(RunConfig(TrainWorkload(1, 512), tp=3), topo, tmp_path, ("accelerate",), "m")
    with pytest.raises(InvalidConfigError, match="ZeRO stage 3 with tensor parallel 2"):
        emit_files(RunConfig(TrainWorkload(1, 512), zero=3, tp=2), topo, tmp_path, ("accelerate",), "m")
