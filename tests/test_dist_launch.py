"""The emitted torchrun command is launched, not only written (issue 18): `perfscale tune --emit torchrun`'s
line for two CPU nodes x one rank is run twice on this machine (two agents, c10d rendezvous at
$MASTER_ADDR:$MASTER_PORT = 127.0.0.1 and a free port) with a user's train script
(tests/dist_train_script.py); both agents finish, the job has two ranks with the threads the line
set, and the loss goes down."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from perfscale.config import RunConfig
from perfscale.export.launch import torchrun_command
from perfscale.measure.multiprocess import free_port
from perfscale.specs import parse_topology
from perfscale.specs.workload import TrainWorkload

SCRIPT = Path(__file__).with_name("dist_train_script.py")


def test_emitted_line_names_the_measured_threads_and_a_settable_port():
    line = torchrun_command(RunConfig(TrainWorkload(2, 32)), parse_topology("2x1xlocal"), threads_per_rank=1)
    assert line.startswith("OMP_NUM_THREADS=1 torchrun --nnodes=2 --nproc_per_node=1 ")
    assert "--rdzv_endpoint=$MASTER_ADDR:${MASTER_PORT:-29500}" in line
    unmeasured = torchrun_command(RunConfig(TrainWorkload(2, 32)), parse_topology("2x1xlocal"))
    assert unmeasured.startswith("OMP_NUM_THREADS=${THREADS_PER_RANK:-1} ")


@pytest.mark.slow
def test_emitted_two_node_torchrun_command_trains_on_localhost(tmp_path):
    line = torchrun_command(RunConfig(TrainWorkload(2, 32)), parse_topology("2x1xlocal"), script=str(SCRIPT), threads_per_rank=1)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = os.environ | {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "HF_HUB_OFFLINE": "1",
                        "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
                        "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    command = line.strip() + " --strategy ddp --steps 6"
    agents = [subprocess.Popen(["bash", "-c", command], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               cwd=tmp_path, start_new_session=True) for _ in range(2)]
    outputs = []
    try:
        for agent in agents:
            out, err = agent.communicate(timeout=400)
            assert agent.returncode == 0, (shlex.split(command), err[-3000:])
            outputs.append(out)
    finally:
        for agent in agents:
            if agent.poll() is None:
                os.killpg(agent.pid, 9)
                agent.wait()
    docs = [json.loads(text) for out in outputs for text in out.splitlines() if text.startswith("{")]
    assert len(docs) == 1, outputs  # rank 0 lives on one of the two agents
    doc = docs[0]
    assert doc["world_size"] == 2 and doc["omp"] == "1" and doc["threads"] == 1
    assert doc["losses"][-1] < doc["losses"][0], doc["losses"]
