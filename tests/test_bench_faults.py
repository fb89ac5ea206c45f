"""Faults become results: oom (with the size asked), timeout (killed), failed (stderr tail), Ctrl-C keeps
what finished, bad values fail before anything runs. Uses the harness's own `selftest` scenario.

Faults of perfscale and its store (issue 12, docs/reliability.md): SIGTERM and SIGKILL of the
parent, a store that cannot be written (before and after measuring), a store replaced by garbage."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from perfscale.errors import StoreError
from perfscale.measure.bench_config import BenchConfig, MeasureOptions
from perfscale.measure.compare import compare
from perfscale.measure.result import BenchResult
from perfscale.measure.runner import measure
from perfscale.measure.stats import StopRule
from perfscale.measure.store import Store
from perfscale.measure.worker import parse_oom

from cli_helpers import assert_user_error, run_cli

FAST = MeasureOptions(stop=StopRule(min_iters=3, min_time=0.1, max_time=1.0), warmup=1, gate=False, profile_memory=False)


def _selftest(**extra) -> BenchConfig:
    return BenchConfig(scenario="selftest", extra=extra)


def test_parse_oom_messages():
    cpu = "RuntimeError: DefaultCPUAllocator: can't allocate memory: you tried to allocate 1152921504606846976 bytes. Error code 12"
    assert parse_oom(cpu) == (True, 1152921504606846976)
    cuda = "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total capacity of 79.1 GiB"
    assert parse_oom(cuda) == (True, 20 * 2**30)
    assert parse_oom("ValueError: shapes do not match") == (False, None)


def test_oom_timeout_and_crash_are_results_and_stored(tmp_path):
    with Store(tmp_path / "r.sqlite") as db:
        oom = measure(_selftest(fault="oom"), FAST, store=db)
        assert oom.status == "oom" and oom.oom_bytes == 1 << 60
        assert "can't allocate memory" in oom.reason

        t0 = time.monotonic()
        hang = measure(_selftest(fault="hang"), MeasureOptions(stop=FAST.stop, warmup=1, time_limit=4, gate=False), store=db)
        assert hang.status == "timeout" and "killed" in hang.reason
        assert time.monotonic() - t0 < 30

        crash = measure(_selftest(fault="crash"), FAST, store=db)
        assert crash.status == "failed" and "exit code 3" in crash.reason
        assert "crashing on purpose" in crash.stderr_tail

        err = measure(_selftest(fault="error"), FAST, store=db)
        assert err.status == "failed" and "step failed on purpose" in err.reason
        assert "Traceback" in err.stderr_tail

        assert [r.status for r in db.runs()] == ["failed", "failed", "timeout", "oom"]


def test_ctrl_c_in_compare_keeps_finished_runs(tmp_path):
    store = Store(tmp_path / "r.sqlite")
    seen = []

    def interrupt_after_first(result):
        seen.append(result)
        raise KeyboardInterrupt

    res = compare([_selftest(size=32), _selftest(size=64)], FAST, repeats=2, store=store, on_result=interrupt_after_first)
    assert res.interrupted and len(seen) == 1
    assert store.count() == 1 and store.runs()[0].result.run_id == seen[0].run_id
    assert res.rows[0].runs and not res.rows[1].runs


def test_sigint_to_the_cli_stops_cleanly_and_keeps_finished(tmp_path):
    """A real Ctrl-C (SIGINT) to `perfscale compare`: exit 130, no traceback, finished runs stored, worker killed."""
    slow = tmp_path / "slow.json"
    slow.write_text(json.dumps(_selftest(sleep=0.05).to_dict()))
    store = tmp_path / "r.sqlite"
    env = os.environ | {"HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-c", "from perfscale.cli.app import run; run()", "compare", str(slow), str(slow), "--repeats", "3",
           "--min-iters", "3", "--min-time", "0.1", "--max-time", "1", "--warmup", "1", "--store", str(store), "--json"]
    # A shell's background jobs inherit SIGINT ignored; restore the default so Python raises KeyboardInterrupt.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if store.exists() and Store(store).count() >= 1:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    doc = json.loads(out)
    assert doc["interrupted"] is True
    finished = Store(store).count()
    assert finished >= 1 and finished < 6
    assert sum(row["runs"] for row in doc["configurations"]) == finished


@pytest.mark.parametrize("args, fragments", [
    (["bench", "--scenario", "infer"], ["scenario", "train, encode, generate"]),
    (["bench", "--precision", "fp64"], ["precision 'fp64'"]),
    (["bench", "--scenario", "generate", "--backend", "onnxruntime"], ["onnxruntime is for the encode scenario"]),
    (["bench", "--scenario", "generate", "--seq", "64"], ["--seq and --grad-accum are training flags"]),
    (["bench", "--min-iters", "1"], ["min_iters"]),
    (["compare", "backend=eager"], ["at least two configurations"]),
    (["compare", "backend=eager", "bakend=compile"], ["did you mean"]),
])
def test_bad_values_fail_before_anything_runs(args, fragments, tmp_path):
    t0 = time.monotonic()
    result = run_cli(*args, "--store", str(tmp_path / "r.sqlite"))
    assert_user_error(result, *fragments)
    assert time.monotonic() - t0 < 20  # no worker process was started
    assert not (tmp_path / "r.sqlite").exists() or Store(tmp_path / "r.sqlite").count() == 0


# ----- faults of perfscale itself and of its store (issue 12): real processes, bounded time -----
CLI = [sys.executable, "-c", "from perfscale.cli.app import run; run()"]
QUICK = ["--min-iters", "3", "--min-time", "0.1", "--max-time", "1", "--warmup", "1"]
LONG = ["--min-iters", "200", "--min-time", "20", "--max-time", "40", "--warmup", "1"]  # ~40 s unless stopped


def _config_file(tmp_path, name="slow", **extra) -> str:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(_selftest(**extra).to_dict()))
    return str(path)


def _env(tmp_path) -> dict:
    temp = tmp_path / "tmp"  # the runs' temp folders go here, so a test can see what is left
    temp.mkdir(exist_ok=True)
    return os.environ | {"HF_HUB_OFFLINE": "1", "TMPDIR": str(temp)}


def _leftovers(tmp_path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "tmp").glob("perfscale-*"))


def _start(tmp_path, *args, cwd=None) -> subprocess.Popen:
    return subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(tmp_path),
                            cwd=cwd)


def _workers(proc: subprocess.Popen, timeout: float = 90) -> list[psutil.Process]:
    """The measurement worker processes under `proc` (waits for one to start)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            found = [c for c in psutil.Process(proc.pid).children(recursive=True)
                     if "perfscale.measure.worker" in " ".join(c.cmdline())]
        except psutil.Error:
            found = []
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError("no worker process started")


def _rows(store) -> list[str]:
    return [r.status for r in Store(store).runs()] if store.exists() else []


@pytest.mark.parametrize("verb", ["bench", "compare"])
def test_sigterm_mid_measurement_is_handled_like_ctrl_c(verb, tmp_path):
    """SIGTERM (systemd, kill, a CI timeout): the running configuration is stored as `interrupted`,
    finished ones are kept, the worker is gone, no temp folder is left, exit 143, no traceback."""
    store = tmp_path / "r.sqlite"
    slow = _config_file(tmp_path, sleep=0.2)
    if verb == "bench":
        proc = _start(tmp_path, "bench", "--config", slow, *LONG, "--store", str(store), "--json")
    else:  # a fast configuration that finishes, then a slow one (3 s a step, >= 3 steps) that is interrupted
        fast, slow = _config_file(tmp_path, "fast"), _config_file(tmp_path, sleep=3.0)
        proc = _start(tmp_path, "compare", fast, slow, "--repeats", "2", *QUICK, "--store", str(store), "--json")
    workers = _workers(proc)
    if verb == "compare":
        while _rows(store) != ["ok"]:
            assert proc.poll() is None
            time.sleep(0.1)
        workers = _workers(proc)
    time.sleep(1.0)  # mid-measurement
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and "Interrupted by SIGTERM" in err
    doc = json.loads(out)  # exactly one JSON document
    assert doc["interrupted"] is True
    assert _rows(store) == (["interrupted"] if verb == "bench" else ["interrupted", "ok"])
    assert "interrupted by SIGTERM" in Store(store).runs()[0].result.reason
    _, alive = psutil.wait_procs(workers, timeout=5)
    assert not alive
    assert _leftovers(tmp_path) == []


def test_sigkill_of_bench_leaves_no_orphan_and_no_temp_folder(tmp_path):
    """perfscale killed outright: the worker sees its parent die (pipe EOF / PR_SET_PDEATHSIG), removes
    the temp folder and kills its own process group. Lost: the run in progress only (it never finished)."""
    proc = _start(tmp_path, "bench", "--config", _config_file(tmp_path, sleep=0.2), *LONG,
                  "--store", str(tmp_path / "r.sqlite"), "--json")
    workers = _workers(proc)
    family = workers + [c for w in workers for c in w.children(recursive=True)]
    time.sleep(1.0)
    assert _leftovers(tmp_path)  # the run's temp folder exists while it runs
    proc.kill()
    proc.communicate(timeout=30)
    _, alive = psutil.wait_procs(family, timeout=5)
    assert not alive, [p.cmdline() for p in alive]
    deadline = time.monotonic() + 5
    while _leftovers(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _leftovers(tmp_path) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_parent_death_signal_alone_stops_an_orphaned_worker(tmp_path):
    """The kernel's parent-death signal works without the pipe (a parent that forked and leaked it)."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    job = {"config": _selftest(fault="hang").to_dict(), "options": FAST.to_dict(), "mode": "measure",
           "result_path": str(workdir / "r.json"), "outputs_path": None}
    job_path = workdir / "job.json"
    job_path.write_text(json.dumps(job))
    middle = (
        "import json, os, subprocess, sys, time\n"
        f"job = json.load(open({str(job_path)!r}))\n"
        f"job['parent'] = {{'pid': os.getpid(), 'pipe_fd': None, 'workdir': {str(workdir)!r}, 'files': []}}\n"
        f"json.dump(job, open({str(job_path)!r}, 'w'))\n"
        f"w = subprocess.Popen([sys.executable, '-m', 'perfscale.measure.worker', {str(job_path)!r}], start_new_session=True)\n"
        "print(w.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", middle], stdout=subprocess.PIPE, text=True, env=_env(tmp_path))
    worker = psutil.Process(int(proc.stdout.readline()))
    time.sleep(3.0)  # the worker is in the hanging step by now
    assert worker.is_running()
    proc.kill()
    proc.wait(timeout=10)
    _, alive = psutil.wait_procs([worker], timeout=5)
    assert not alive
    assert not workdir.exists()


def _chattr(flag: str, *paths) -> bool:
    return shutil.which("chattr") is not None and subprocess.run(["chattr", flag, *map(str, paths)], capture_output=True).returncode == 0


def _fill_store(path) -> bytes:
    with Store(path) as db:
        db.add(BenchResult(config=_selftest(), status="ok", samples=[0.1, 0.1, 0.1]))
    return path.read_bytes()


@pytest.mark.parametrize("kind", ["parent-is-a-file", "directory", "immutable-file", "read-only-file-system"])
def test_unwritable_store_is_found_before_measuring(kind, tmp_path):
    """Root ignores permission bits, so these are faults that stop root too; each is found before
    any worker starts (a second or two), exit 2, and an existing store is left as it was."""
    config = _config_file(tmp_path)
    store, before, prefix = tmp_path / "r.sqlite", None, []
    if kind == "parent-is-a-file":
        (tmp_path / "file").write_text("x")
        store = tmp_path / "file" / "r.sqlite"
    elif kind == "directory":
        store.mkdir()
    elif kind == "immutable-file":
        before = _fill_store(store)
        if not _chattr("+i", store):
            pytest.skip("chattr +i is not available here")
    else:
        folder = tmp_path / "ro"
        folder.mkdir()
        store = folder / "r.sqlite"
        before = _fill_store(store)
        probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount --bind {folder} {folder} && mount -o remount,bind,ro {folder} {folder}"],
                               capture_output=True) if shutil.which("unshare") else None
        if probe is None or probe.returncode:
            pytest.skip("no user namespaces to mount a read-only file system")
        prefix = ["unshare", "-rm", "sh", "-c",
                  f'mount --bind {folder} {folder} && mount -o remount,bind,ro {folder} {folder} && exec "$@"', "sh"]
    try:
        t0 = time.monotonic()
        result = subprocess.run([*prefix, *CLI, "bench", "--config", config, *QUICK, "--store", str(store), "--json"],
                                capture_output=True, text=True, env=_env(tmp_path), timeout=120)
        elapsed = time.monotonic() - t0
    finally:
        if kind == "immutable-file":
            _chattr("-i", store)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert json.loads(result.stdout)["error"]["type"] == "StoreError"
    assert str(store) in result.stderr and "--store PATH" in result.stderr
    if before is not None:
        assert "cannot be written" in result.stderr and "Nothing was measured" in result.stderr
        assert store.read_bytes() == before
    assert elapsed < 30  # refused before any worker process
    assert _leftovers(tmp_path) == []


def test_store_failing_at_the_end_keeps_the_result_in_a_file(tmp_path):
    """The store becomes unwritable while measuring (chattr +i on its folder): the result goes to a
    fallback JSON file (said on stderr, exit 2), and Store.restore puts it back. Nothing lost."""
    folder = tmp_path / "store"
    folder.mkdir()
    store = folder / "r.sqlite"
    _fill_store(store)
    if not _chattr("+i", folder):
        pytest.skip("chattr +i is not available here")
    _chattr("-i", folder)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    proc = _start(tmp_path, "bench", "--config", _config_file(tmp_path, sleep=0.05), "--min-iters", "40", "--min-time", "1",
                  "--max-time", "5", "--warmup", "1", "--store", str(store), "--json", cwd=cwd)
    try:
        _workers(proc)  # the store was checked writable before this worker started
        assert _chattr("+i", folder, store)
        out, err = proc.communicate(timeout=120)
    finally:
        _chattr("-i", folder, store)
    assert proc.returncode == 2, err
    assert "Traceback" not in err and "nothing measured is lost" in err
    doc = json.loads(out)
    saved = Path(doc["unsaved"][0]["file"])
    assert saved.parent == cwd and saved.is_file() and str(saved) in err  # the store's folder refused it too
    assert doc["configurations"][0]["status"] == "ok"
    with Store(store) as db:
        assert db.count() == 1
    # as a user restores it: `perfscale results --restore FILE` adds the saved run and lists the store
    from perfscale.cli.app import main

    assert main(["results", "--store", str(store), "--restore", str(saved), "--json"]) == 0
    with Store(store) as db:
        assert [r.status for r in db.runs()] == ["ok", "ok"]
        assert db.runs()[0].result.run_id == doc["configurations"][0]["run_id"]


def test_store_failing_at_the_end_in_process(tmp_path, monkeypatch):
    """The same without chattr: any StoreError from add() sends the result to the fallback file."""
    db = Store(tmp_path / "r.sqlite")

    def broken(result):
        raise StoreError("Cannot write the results store: disk I/O error.")

    monkeypatch.setattr(db, "add", broken)
    result = measure(_selftest(), FAST, store=db)
    assert result.ok and result.store_id is None
    [(kept, path, why)] = db.unsaved
    assert kept is result and path.parent == tmp_path and "disk I/O error" in why
    with Store(tmp_path / "other.sqlite") as other:
        other.restore(path)
        assert other.runs()[0].result.run_id == result.run_id


@pytest.mark.parametrize("kind", ["garbage", "foreign-sqlite"])
def test_store_replaced_by_something_else_is_refused_untouched(kind, tmp_path):
    store = tmp_path / "r.sqlite"
    if kind == "garbage":
        store.write_bytes(b"this is not a database\n" + bytes(range(256)) * 64)
    else:
        con = sqlite3.connect(store)
        with con:
            con.execute("CREATE TABLE users (name TEXT)")
            con.execute("INSERT INTO users VALUES ('ada')")
        con.close()
    digest = hashlib.sha256(store.read_bytes()).hexdigest()
    t0 = time.monotonic()
    result = run_cli("bench", "--config", _config_file(tmp_path), *QUICK, "--store", str(store))
    assert_user_error(result, "not a perfscale results store", "left untouched", str(store))
    assert time.monotonic() - t0 < 30
    assert hashlib.sha256(store.read_bytes()).hexdigest() == digest
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("r.sqlite")) == ["r.sqlite"]  # no journal left


def test_stale_temp_folders_are_swept(tmp_path):
    """A temp folder whose perfscale died while no worker ran is removed by the next measurement."""
    from perfscale.measure.runner import OWNER_FILE, sweep_stale_workdirs

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale, alive, foreign = tmp_path / "perfscale-bench-stale", tmp_path / "perfscale-bench-alive", tmp_path / "perfscale-other"
    for folder in (stale, alive, foreign):
        folder.mkdir()
    (stale / OWNER_FILE).write_text(json.dumps({"pid": dead.pid, "started": 1.0}))
    (alive / OWNER_FILE).write_text(json.dumps({"pid": os.getpid(), "started": psutil.Process().create_time()}))
    assert sweep_stale_workdirs(tmp_path) == [stale]
    assert not stale.exists() and alive.exists() and foreign.exists()
