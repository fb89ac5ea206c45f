"""Goal check for issue 17: `perfscale hpo --workers 2`, killed with SIGKILL mid-trial, then `--resume`.

    python benchmarks/hpo_kill_resume.py [--trials 8] [--steps 10] [--out benchmarks/results/hpo_kill_resume.json]

1. `perfscale hpo --workers 2` on a fresh SQLite file; once two trials are training, one trial process
   (a worker of this run) is killed with SIGKILL: the run records it `killed`, retries it, goes on.
2. Once a later trial is training, the whole `perfscale hpo` (its launcher and trials with it) is killed
   with SIGKILL.
3. `perfscale hpo --resume` (same flags): its trials left RUNNING are failed at once (their process is gone)
   and retried; the study ends with exactly --trials finished trials.
Checks: finished == trials; every killed/dead trial is FAIL and has exactly one retry with its parameters;
no parameters finished twice except through a retry. Writes one JSON file.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _study(db: str):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    names = optuna.get_all_study_names(f"sqlite:///{db}")
    return optuna.load_study(study_name=names[0], storage=f"sqlite:///{db}") if names else None


def _training(db: str, pid: int | None = None) -> list:
    import optuna

    study = _study(db)
    if study is None:
        return []
    out = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        owner = t.user_attrs.get("perfscale_owner") or {}
        if t.user_attrs.get("perfscale_run_config") and (pid is None or owner.get("pid") == pid):
            out.append(t)
    return out


def _trial_pids(parent: int) -> list[int]:
    """Trial processes: forked children of the launcher, itself a child of perfscale."""
    import psutil

    kids = psutil.Process(parent).children(recursive=True)
    return [p.pid for p in kids if p.ppid() != parent]  # forked by the launcher (same command line as it)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--out", default="benchmarks/results/hpo_kill_resume.json")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="hpo-kill-"))
    db = str(tmp / "hpo.db")
    cmd = [sys.executable, "-c", "from perfscale.cli.app import run; run()", "hpo", "--trials", str(args.trials), "--steps",
           str(args.steps), "--eval-steps", str(max(1, args.steps // 3)), "--workers", "2", "--threads", "1", "--storage", db,
           "--study-name", "killed", "--no-plots", "--out", str(tmp / "out"), "--json"]
    t0 = time.time()
    run1 = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        return _run(args, db, cmd, run1, t0)
    finally:
        try:
            os.killpg(run1.pid, signal.SIGKILL)  # never leave the first run behind (a failed check above)
        except ProcessLookupError:
            pass


def _run(args, db: str, cmd: list[str], run1: subprocess.Popen, t0: float) -> int:
    events = []
    # 1. kill one trial process of the run
    pids: list[int] = []
    while time.time() - t0 < 1800 and (len(_training(db, run1.pid)) < 2 or len(pids) < 2):
        time.sleep(1)
        pids = _trial_pids(run1.pid)  # forked once the launcher is ready (the trials are marked before)
    time.sleep(5)  # mid-trial: past the trial's own start-up
    victim_trial = max(t.number for t in _training(db, run1.pid))
    os.kill(pids[0], signal.SIGKILL)
    events.append({"t": time.time() - t0, "what": f"SIGKILL to trial process {pids[0]} (one of {len(pids)} running)"})
    # 2. kill the whole run once a later trial trains
    while time.time() - t0 < 1800:
        later = [t for t in _training(db, run1.pid) if t.number > victim_trial + 1]
        if later:
            break
        time.sleep(1)
    os.killpg(run1.pid, signal.SIGKILL)
    run1.wait()
    study = _study(db)
    events.append({"t": time.time() - t0, "what": "SIGKILL to the whole perfscale hpo run",
                   "states": {s: sum(t.state.name == s for t in study.trials) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")}})
    # 3. resume
    t1 = time.time()
    done = subprocess.run([*cmd, "--resume"], capture_output=True, text=True)
    events.append({"t": time.time() - t0, "what": f"--resume exited {done.returncode} after {time.time() - t1:.0f} s"})
    doc = json.loads(done.stdout)
    trials = doc["trials"]
    finished = [t for t in trials if t["state"] in ("COMPLETE", "PRUNED")]
    dead = [t for t in trials if t["status"] in ("killed", "dead-worker", "interrupted")]
    retries = {t["retry_of"]: t for t in trials if t["retry_of"] is not None}
    checks = {
        "finished_equals_trials": len(finished) == args.trials,
        "every_dead_trial_failed": all(t["state"] == "FAIL" for t in dead),
        "every_dead_trial_retried_once_same_params": all(
            sum(r["retry_of"] == t["number"] for r in trials) == 1 and retries[t["number"]]["params"] == t["params"] for t in dead),
        "no_duplicates": len({t["number"] for t in trials}) == len(trials),
    }
    result = {"trials": args.trials, "steps": args.steps, "events": events, "counts": doc["counts"], "checks": checks,
              "rows": [{k: t[k] for k in ("number", "state", "status", "retry_of", "reason")} for t in trials],
              "wall_s": time.time() - t0, "load_average": os.getloadavg()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"checks": checks, "counts": doc["counts"], "events": events}, indent=2))
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
