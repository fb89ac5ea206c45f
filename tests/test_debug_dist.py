"""`debug dist`: real torchrun processes on gloo on this machine, healthy and made to fail.

The torchrun runs (2 ranks on one node; 2 single-rank nodes with rank 1 hanging in all_reduce; 2 ranks with
rank 0 exiting in broadcast; 2 ranks with rank 1 sending wrong data to all_gather; and `perfscale debug dist` started by torchrun itself, checking from inside the
job) run at the same time, so the suite pays for one start-up.
Each must end within its timeout with a verdict that names the rank and the step.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from cli_contract import run_in_process
from perfscale.debug.dist import debug_dist, parse_sizes
from perfscale.debug.dist_worker import BUS_FACTOR, EXIT_CODE_INJECTED
from perfscale.errors import InvalidConfigError

TIMEOUT = 90.0  # whole-run limit; the machine is shared and torch's import alone can take 6 s


def _inside_a_job(log_dir):
    """`perfscale debug dist --json` started by torchrun itself (2 ranks): each rank's stdout, parsed."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    perfscale_bin = Path(sys.executable).with_name("perfscale")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--redirects", "3", "--log-dir", str(log_dir),
           "--no-python", str(perfscale_bin), "debug", "dist", "--sizes", "4K", "--iters", "1", "--json"]
    proc = subprocess.run(cmd, capture_output=True, timeout=TIMEOUT, env=os.environ | {"HF_HUB_OFFLINE": "1"})
    docs = [json.loads(p.read_text()) for p in sorted(Path(log_dir).rglob("stdout.log"))]
    return proc.returncode, docs


def _all_three(log_dir):
    runs = {
        "healthy": dict(nproc=2, sizes=(4096, 65536), iters=2),
        "hang": dict(nproc=1, nnodes=2, fault="hang:1:all_reduce", step_timeout=3, sizes=(4096,), iters=1),
        "exit": dict(nproc=2, fault="exit:0:broadcast", step_timeout=3, sizes=(4096,), iters=1),
        "corrupt": dict(nproc=2, fault="corrupt:1:all_gather", sizes=(4096,), iters=1, collectives=("all_reduce", "all_gather")),
    }
    started = time.monotonic()
    with ThreadPoolExecutor(len(runs) + 1) as pool:
        futures = {name: pool.submit(debug_dist, timeout=TIMEOUT, **kw) for name, kw in runs.items()}
        in_job = pool.submit(_inside_a_job, log_dir)
        results = {name: f.result() for name, f in futures.items()}
        in_job = in_job.result()
    return results, in_job, time.monotonic() - started


@pytest.mark.slow
def test_torchrun_gloo_healthy_hung_exited_and_wrong_ranks(tmp_path):
    results, (job_rc, job_docs), wall = _all_three(tmp_path / "job-logs")
    assert wall < TIMEOUT + 15  # never a hang of the tool

    ok = results["healthy"]
    assert ok.ok and ok.verdict.startswith("OK") and ok.world_size == 2, ok.verdict
    assert [r["state"] for r in ok.ranks] == ["ok", "ok"] and all(r["device"] == "cpu" for r in ok.ranks)
    # every collective at every size, values checked on both ranks, busbw = algbw x nccl-tests' factor
    assert {(c["collective"], c["bytes"]) for c in ok.collectives} == {
        (name, size) for name in BUS_FACTOR for size in (4096, 65536)}
    for c in ok.collectives:
        assert c["ok"] and c["complete"] and c["busbw"] == pytest.approx(c["algbw"] * BUS_FACTOR[c["collective"]](2))
    assert "MASTER_ADDR" in ok.env and "lo" in ok.interfaces
    json.dumps(ok.to_dict(), allow_nan=False)

    hung = results["hang"]
    assert not hung.ok and hung.nnodes == 2 and hung.wall_s < TIMEOUT
    states = {r["rank"]: r for r in hung.ranks}
    assert states[1]["state"] == "hung" and states[1]["last_step"] == "all_reduce:4096"
    assert states[0]["state"] == "failed" and "Timed out" in states[0]["error"]
    assert hung.verdict.startswith("FAILED: rank 1 hung in all_reduce (4 KiB)"), hung.verdict

    gone = results["exit"]
    states = {r["rank"]: r for r in gone.ranks}
    assert not gone.ok and states[0]["state"] == "exited" and states[0]["exit_code"] == EXIT_CODE_INJECTED
    assert states[1]["state"] == "failed" and states[1]["last_step"] == "broadcast:4096"
    wrong = results["corrupt"]  # rank 1 sends wrong data to all_gather: every rank ran every step, the values name it
    assert not wrong.ok and [r["state"] for r in wrong.ranks] == ["mismatch", "mismatch"]
    assert [c["ok"] for c in wrong.collectives] == [True, False] and wrong.collectives[1]["wrong_senders"] == [1]
    assert wrong.verdict.startswith("FAILED: all_gather of 4 KiB returned wrong values on ranks 0, 1") and "rank 1." in wrong.verdict

    # inside an existing torchrun job: every rank checks from inside and prints one document with the job's verdict
    assert job_rc == 0 and [d["rank"] for d in job_docs] == [0, 1], (job_rc, job_docs)
    assert all(d["ok"] and d["world_size"] == 2 and d["verdict"].startswith("OK") for d in job_docs)

    # every rank process is gone afterwards (the hung one too: torchrun puts each rank in its own session)
    import psutil

    pids = [r["pid"] for res in results.values() for r in res.ranks if r["pid"]]
    assert len(pids) == 8
    alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert not alive, alive
    assert gone.verdict.startswith(f"FAILED: rank 0 exited with code {EXIT_CODE_INJECTED} during broadcast (4 KiB)"), gone.verdict


def test_bad_input_is_refused_before_any_process():
    import os

    with pytest.raises(InvalidConfigError, match="more than the .* CPU cores"):
        debug_dist(nproc=(os.cpu_count() or 1) + 1)
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(InvalidConfigError, match="nccl needs CUDA"):
            debug_dist(backend="nccl")
    with pytest.raises(InvalidConfigError, match="'mpi' is not one of: gloo, nccl"):
        debug_dist(backend="mpi")
    with pytest.raises(InvalidConfigError, match="--timeout 0"):
        debug_dist(timeout=0)
    with pytest.raises(InvalidConfigError, match="hang:RANK:STEP"):
        debug_dist(fault="sleep:1")
    assert parse_sizes("4K,256K,4M") == (4096, 262144, 4194304) and parse_sizes("12") == (12,)
    with pytest.raises(InvalidConfigError, match="'big' is not a size"):
        parse_sizes("4K,big")


def test_cli_refuses_more_ranks_than_cores(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    code, out, err, _ = run_in_process(["debug", "dist", "--nproc", "4096", "--json"], 60.0)
    assert code == 2 and "CPU cores" in json.loads(out)["error"]["message"] and "Traceback" not in err
