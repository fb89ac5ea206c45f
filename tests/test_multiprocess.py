"""Multi-process measurement under torchrun (issue 18, docs/multi-process.md).

Fast: the layout fields of BenchConfig (validation, fingerprints, compare's keys), how the rank
results are merged and failures named, the CLI's refusals. With processes (kept few: each torchrun
job starts 2-3 Python processes): the harness's selftest on two localhost "nodes" with a rank that
crashes, a parent killed while its ranks hang, and (slow) DDP vs FSDP2 training of the tiny llama.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from perfscale.errors import InvalidConfigError, UnsupportedModelError
from perfscale.cli.inline_config import parse_inline
from perfscale.measure.bench_config import BenchConfig, MeasureOptions
from perfscale.measure.multiprocess import hang_report, merge
from perfscale.measure.stats import StopRule

from cli_helpers import assert_user_error, run_cli

FAST = MeasureOptions(stop=StopRule(min_iters=3, min_time=0.1, max_time=1.0), warmup=1, gate=False, profile_memory=False)


# ----- the layout in BenchConfig -----
def test_layout_fields_validate_and_keep_old_fingerprints():
    assert BenchConfig().fingerprint() == "613fac6e6fe4ec1f"  # one process: as before the fields existed
    assert "nproc" not in BenchConfig().to_dict()
    two = BenchConfig(nproc=2)
    assert two.strategy == "ddp" and two.world_size == 2 and two.distributed
    assert two.fingerprint() != BenchConfig().fingerprint()
    assert BenchConfig.from_dict(two.to_dict()) == two
    fsdp = parse_inline("strategy=fsdp2,fsdp_reshard=false,precision=bf16-mixed,offload=optimizer+params,nnodes=2", two)
    assert (fsdp.strategy, fsdp.run.fsdp_reshard, fsdp.run.precision, fsdp.run.offload, fsdp.world_size) == (
        "fsdp2", False, "bf16-mixed", "optimizer+params", 4)
    assert "fsdp2x4 (2 nodes) fsdp_reshard=False offload=optimizer+params" in fsdp.display and "bf16-mixed" in fsdp.display
    assert BenchConfig.from_dict(fsdp.to_dict()) == fsdp
    layouts = {replace(fsdp, run=replace(fsdp.run, **change)).fingerprint()
               for change in ({}, {"fsdp_reshard": True}, {"offload": "none"}, {"precision": "fp32"})}
    assert len(layouts) == 4  # each FSDP2 knob is part of what is measured
    run = two.run
    for bad, fragment in [({"nproc": 0}, "nproc must be an integer from 1 to 256"), ({"strategy": "zero3"}, "ddp, fsdp2"),
                          ({"nproc": 2, "run": replace(run, fsdp_reshard=False)}, "fsdp_reshard=False apply to strategy fsdp2 only"),
                          ({"nproc": 2, "run": replace(run, offload="optimizer+params")}, "apply to strategy fsdp2 only"),
                          ({"strategy": "fsdp2", "run": replace(run, offload="optimizer")}, "use offload optimizer[+]params"),
                          ({"nproc": 2, "strategy": "fsdp"}, "use --strategy fsdp2, the same full shard"),
                          ({"nnodes": 99}, "nnodes must be an integer from 1 to 16")]:
        with pytest.raises(InvalidConfigError, match=fragment):
            BenchConfig(**bad)
    with pytest.raises(InvalidConfigError, match="measure training"):
        BenchConfig(scenario="generate", nproc=2)
    with pytest.raises(UnsupportedModelError, match="--strategy fsdp2"):  # RunConfig's layout knobs point here
        BenchConfig(run=BenchConfig().run.__class__(BenchConfig().run.workload, fsdp=2))


# ----- merging what the ranks wrote -----
def _payload(rank: int, step: float, **over) -> dict:
    return {"status": "ok", "device": "cpu", "samples": [0.2, 0.21, 0.2], "tokens_per_iter": 64, "samples_per_iter": 2,
            "memory": {"cpu_peak_rss": 100 + rank, "peak_live_tensor_bytes": 50 - rank},
            "mfu": {"flops_per_iter": 1e9, "peak_flops": 1e11, "value": 0.1},
            "rank": {"rank": rank, "node": rank, "local_rank": 0, "backend": "gloo", "threads": 1,
                     "samples": [step] * 3, "comm": {"seconds": 0.05, "ops": {}}}} | over


def test_merge_counts_every_rank_and_names_the_failed_one():
    config = BenchConfig(nproc=1, nnodes=2, strategy="ddp")
    args = ["--nnodes=2", "--nproc-per-node=1", "--max-restarts=0", "--rdzv-backend=c10d", "-m", "perfscale.measure.worker", "x"]
    ok = merge(config, {0: _payload(0, 0.1), 1: _payload(1, 0.2)}, [{"args": args}, {}], "", {"config": config})
    # what was measured, to run again with a user's script
    assert ok.distributed["torchrun"] == "OMP_NUM_THREADS=1 torchrun --nnodes=2 --nproc-per-node=1 --rdzv-backend=c10d train.py"
    assert ok.ok and ok.tokens_per_iter == 128 and ok.samples_per_iter == 4
    assert [r["tokens_per_s"] for r in ok.ranks] == pytest.approx([640, 320])  # each rank's own step time
    assert ok.memory["cpu_peak_rss"] == 101 and ok.memory["peak_live_tensor_bytes"] == 50  # the largest rank
    assert ok.mfu["flops_per_iter"] == 2e9 and ok.mfu["devices"] == 1  # CPU ranks share one machine's peak
    assert ok.headline()["median"] == pytest.approx(128 / 0.2)
    assert ok.distributed["world_size"] == 2 and ok.to_dict()["ranks"][1]["node"] == 1

    # The first rank to fail is the cause; a peer's broken connection comes after it.
    first = _payload(1, 0.1, status="failed", reason="RuntimeError: step failed", failed_at=10.0)
    then = _payload(0, 0.1, status="failed", reason="Connection closed by peer", failed_at=11.0)
    bad = merge(config, {0: then, 1: first}, [{}, {}], "", {"config": config})
    assert bad.status == "failed" and bad.reason.startswith("rank 1: RuntimeError") and "then rank 0 failed" in bad.reason

    # No result from a rank: torchrun's record names it; the agent's SIGTERM of the others is a consequence.
    nodes = [{"failures": [{"rank": 0, "exitcode": -15, "signal": "SIGTERM"}]}, {"failures": [{"rank": 1, "exitcode": 3}]}]
    died = merge(config, {}, nodes, "", {"config": config})
    assert died.status == "failed" and died.reason == "rank 1 died without a result (exit code 3; then rank 0 killed by SIGTERM)"
    killed = merge(config, {}, [{"failures": [{"rank": 0, "exitcode": -9, "signal": "SIGKILL"}]}, None], "", {"config": config})
    assert killed.status == "oom" and "OOM killer" in killed.reason


def test_hang_report_names_the_rank_outside_torch(tmp_path):
    template = str(tmp_path / "job.result.json")
    Path(f"{template}.rank0.stack").write_text(
        'Current thread 0x1 (most recent call first):\n  File "/x/site-packages/torch/distributed/distributed_c10d.py", line 3 in all_reduce\n')
    Path(f"{template}.rank1.stack").write_text(
        'Thread 0x2 (most recent call first):\n  File "/x/threading.py", line 1 in wait\n\n'
        'Current thread 0x1 (most recent call first):\n  File "/work/perfscale/measure/faults.py", line 23 in inject_fault\n')
    text = hang_report(template, 3, {})
    assert text.startswith("rank 1 hung outside torch") and "faults.py" in text and "rank 2: no stack" in text


def test_cli_refuses_bad_layouts():
    base = ["bench", "--batch", "1", "--seq", "16", "--max-time", "1"]
    assert_user_error(run_cli(*base, "--nproc", "0"), "nproc must be an integer from 1 to 256")
    assert_user_error(run_cli(*base, "--nproc", "2", "--strategy", "zero", "--json"), "ddp, fsdp2")
    assert_user_error(run_cli(*base, "--no-fsdp-reshard"), "fsdp_reshard=False apply to strategy fsdp2 only")
    # the removed BenchConfig flags name what replaced them
    assert_user_error(run_cli(*base, "--fsdp-offload"), "--fsdp-offload was removed: use --offload optimizer+params")
    assert_user_error(run_cli(*base, "--fsdp-mp", "bf16", "--json"), "--fsdp-mp bf16 was removed: use --precision bf16-mixed")


# ----- with processes -----
def _no_rank_left(marker: str, within: float = 15.0) -> list[str]:
    """Command lines of processes still running with `marker` in them after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        left = []
        for p in psutil.process_iter(["cmdline"]):
            try:
                line = " ".join(p.info["cmdline"] or [])
            except psutil.Error:
                continue
            if marker in line and p.pid != os.getpid():
                left.append(line)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.3)


def test_two_localhost_nodes_with_a_rank_that_crashes(tmp_path):
    """Two torchrun agents joined by a c10d rendezvous on 127.0.0.1 (a free port), one rank each; rank 1
    dies hard (os._exit) mid-step: the result names rank 1, not rank 0 that lost its peer, and nothing
    is left running. (The same two-node layout trains in the slow test below.)"""
    from perfscale.measure.runner import measure

    crash = measure(BenchConfig(scenario="selftest", nnodes=2, nproc=1, extra={"fault": "crash", "fault_rank": 1}), FAST,
                    workdir=tmp_path)
    assert crash.status == "failed" and crash.reason.startswith("rank 1 died without a result (exit code 3"), crash.reason
    assert [r["rank"] for r in crash.ranks] in ([], [0])  # rank 0 may have written its peer error first
    assert not _no_rank_left(str(tmp_path))
    assert not list(tmp_path.glob("perfscale-*"))  # the temp folder went too


def test_a_killed_parent_leaves_no_rank_running(tmp_path):
    """SIGKILL of the perfscale process while two ranks hang: the agent and both ranks end themselves."""
    script = textwrap.dedent(f"""
        from perfscale.measure.bench_config import BenchConfig, MeasureOptions
        from perfscale.measure.runner import measure
        from perfscale.measure.stats import StopRule
        measure(BenchConfig(scenario="selftest", nproc=2, extra={{"fault": "hang"}}),
                MeasureOptions(stop=StopRule(min_iters=3, min_time=0.1, max_time=1.0), warmup=1, time_limit=300),
                workdir={str(tmp_path)!r})
    """)
    parent = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("perfscale-*/*.rank*.pid"))) < 2:  # both ranks started
        assert time.monotonic() < deadline and parent.poll() is None, "the ranks did not start"
        time.sleep(0.2)
    time.sleep(1.0)  # into the hanging step
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    left = _no_rank_left(str(tmp_path))
    assert not left, left
    deadline = time.monotonic() + 10
    while list(tmp_path.glob("perfscale-*")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not list(tmp_path.glob("perfscale-*"))


@pytest.mark.slow
def test_ddp_and_two_node_fsdp2_train_the_tiny_llama(tmp_path):
    """bench's train step under torchrun on gloo, 2 ranks: DDP on one node, FSDP2 over two localhost
    nodes (two agents, c10d rendezvous on 127.0.0.1), compared (one process each). Per-rank stats,
    tokens/s of both ranks, the loss goes down, and FSDP2 holds less per rank than DDP (parameters,
    gradients and AdamW state halved, the gathered parameters on top: 98.7 vs 113.6 MB here)."""
    from perfscale.measure.compare import compare

    base = BenchConfig(run=parse_inline("batch=2,seq=32", BenchConfig()).run, nproc=2)
    opts = MeasureOptions(stop=StopRule(min_iters=6, min_time=0.5, max_time=4.0), warmup=1, gate=False)
    result = compare([base, parse_inline("strategy=fsdp2,nproc=1,nnodes=2", base)], opts, repeats=1, workdir=str(tmp_path))
    ddp, fsdp = (row.runs[0] for row in result.rows)
    for r in (ddp, fsdp):
        assert r.ok, (r.reason, r.stderr_tail)
        assert r.tokens_per_iter == 2 * 2 * 32 and len(r.ranks) == 2
        assert all(row["tokens_per_s"] > 0 and row["peak_live_tensor_bytes"] > 0 for row in r.ranks)
        assert all(row["comm_s"] > 0 for row in r.ranks)  # gloo collectives in the profiled iteration
        loss = r.loss()
        assert loss["last"] < loss["first"], loss
    assert [row["node"] for row in fsdp.ranks] == [0, 1] and [row["node"] for row in ddp.ranks] == [0, 0]
    assert max(x["peak_live_tensor_bytes"] for x in fsdp.ranks) < 0.92 * min(x["peak_live_tensor_bytes"] for x in ddp.ranks)
    # Per rank against the plan (CPU program, 2 local ranks), issue 18's 5%: DDP is the one-process step; FSDP2's plan
    # counts one of gloo's root-sized collective temporaries, and at times a second one is alive on one rank
    # (benchmarks/LOG.md 2026-12-02 04:00 and 16:40), so the lighter rank is held to 5% and the heavier to one more root.
    from perfscale.estimate import estimate
    from perfscale.specs import load_model_spec, parse_topology

    def planned(fsdp):
        return estimate(load_model_spec("perfscale-tiny-llama"), replace(base.run, fsdp=fsdp), parse_topology("2xlocal")).memory.peak_bytes

    assert all(abs(x["peak_live_tensor_bytes"] / planned(None) - 1) < 0.01 for x in ddp.ranks), ddp.ranks
    fsdp_peaks = sorted(x["peak_live_tensor_bytes"] for x in fsdp.ranks)
    assert abs(fsdp_peaks[0] / planned(2) - 1) < 0.05 and fsdp_peaks[1] < 1.25 * planned(2), (fsdp_peaks, planned(2))
    assert any("all_gather" in op or "allgather" in op for op in fsdp.ranks[0]["comm_ops"]), fsdp.ranks[0]["comm_ops"]
    assert result.rows[1].speedup is not None  # compare's ratio and verdict work on torchrun rows
    json.dumps(result.to_dict())


def test_preflight_warns_when_ranks_share_cores_and_refuses_what_cannot_start(monkeypatch):
    from types import SimpleNamespace

    import psutil as ps

    from perfscale.measure import preflight as pf
    from perfscale.measure.multiprocess import cores

    many = BenchConfig(scenario="selftest", nproc=cores() + 1, device="cpu")
    notes = pf._check_distributed(many)
    assert notes and f"{cores() + 1} ranks x 1 thread(s) on {cores()} cores" in notes[0]
    # one rank gets every core as its threads: nothing shared, nothing to say
    assert pf._check_distributed(BenchConfig(scenario="selftest", nproc=1, strategy="ddp", device="cpu")) == []
    monkeypatch.setattr(ps, "virtual_memory", lambda: SimpleNamespace(available=3 * pf.RANK_BASE_BYTES, total=2**40))
    with pytest.raises(InvalidConfigError, match="8 ranks need at least .* use at most --nproc 3"):
        pf._check_distributed(BenchConfig(scenario="selftest", nproc=8, device="cpu"))
