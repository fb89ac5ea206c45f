"""What keeps a study whole across workers that die: the lock one worker at a time asks under, and
failing (then re-enqueueing) running trials whose heartbeat went stale or whose process is gone."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import threading
import warnings
from typing import Any

ATTR = "perfscale"  # user attributes: perfscale_status, perfscale_reason, ...


class StudyLock:
    """One worker at a time counts trials and asks for the next one: a thread lock, and fcntl's lock
    on a file next to a local storage file (independent invocations on one SQLite file)."""

    def __init__(self, path: str | None):
        self._thread = threading.Lock()
        self._path = path

    @contextlib.contextmanager
    def __call__(self):
        with self._thread:
            if self._path is None:
                yield
                return
            with open(self._path, "a+") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(fh, fcntl.LOCK_UN)


def _process_started(pid: int) -> float | None:
    try:
        import psutil

        return psutil.Process(pid).create_time()
    except Exception:  # noqa: BLE001 - gone
        return None


def owner() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": _process_started(os.getpid())}


def _owner_dead(owner: Any) -> bool:
    if not isinstance(owner, dict) or owner.get("host") != socket.gethostname():
        return False  # another machine: its heartbeats decide
    started = _process_started(int(owner.get("pid", -1)))
    return started is None or (owner.get("started") is not None and abs(started - float(owner["started"])) > 1.0)


def retry(study, trial_number: int) -> None:
    from perfscale.hpo.storage import retry_callback

    frozen = next((t for t in study.get_trials(deepcopy=False) if t.number == trial_number), None)
    if frozen is not None:
        retry_callback()(study, frozen)


def fail_dead_trials(study) -> int:
    """Fail (and re-enqueue) running trials whose heartbeat went stale or whose perfscale process on
    this machine is gone. Returns how many this call failed."""
    import optuna
    from optuna.trial import TrialState

    before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optuna.storages.fail_stale_trials(study)
    n = len(before - {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))})
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if _owner_dead(t.user_attrs.get(f"{ATTR}_owner")):
            try:
                study._storage.set_trial_user_attr(t._trial_id, f"{ATTR}_status", "dead-worker")
                study._storage.set_trial_user_attr(t._trial_id, f"{ATTR}_reason", "its perfscale process is gone (killed): failed and retried")
                study.tell(t.number, state=TrialState.FAIL)
            except (optuna.exceptions.UpdateFinishedTrialError, ValueError, RuntimeError):
                continue  # another worker got there first
            retry(study, t.number)
            n += 1
    return n


__all__ = ["ATTR", "StudyLock", "fail_dead_trials", "owner", "retry"]
