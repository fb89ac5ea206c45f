"""Where a study lives: Optuna's RDB storage (a SQLite file by default, any SQLAlchemy URL such as
PostgreSQL for many machines) or its journal storage (a file).

What `--storage` may be:
  (nothing)                     $XDG_CACHE_HOME/perfscale/hpo.db (a SQLite file)
  PATH.db / PATH.sqlite / PATH  a SQLite file (created when missing)
  sqlite:///PATH, postgresql://user@host/db, mysql+pymysql://...  any SQLAlchemy URL
  journal:PATH  or  PATH.journal / PATH.log   Optuna's JournalStorage over a file (file-locked)

RDB storages get heartbeats: every running trial is marked alive every HEARTBEAT_S seconds; one not
marked for GRACE_S (its perfscale was killed) is marked failed by the next worker or `--resume`, and
RetryHeartbeatStaleTrialCallback (Optuna 5's name for RetryFailedTrialCallback) enqueues the same
parameters again. Journal storage has no heartbeat in
Optuna: there a trial whose perfscale process on this machine is gone is failed and retried the same
way (study.py, `fail_dead_trials`).
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from perfscale.errors import StoreError

# Heartbeats: a dead worker's trial is noticed within GRACE_S. Chosen, not measured: well above a
# heartbeat write on a loaded 2-core machine (ms), short enough that a resume waits seconds, not minutes.
HEARTBEAT_S = 5
GRACE_S = 20
MAX_RETRY = 2  # a killed trial is re-run at most twice (then its parameters are left failed)
SQLITE_TIMEOUT_S = 60  # several processes write to one SQLite file: wait for its lock, do not fail


def retry_callback():
    """Optuna's retry of a failed trial (RetryHeartbeatStaleTrialCallback, the successor of
    RetryFailedTrialCallback in Optuna 5): a WAITING copy of its parameters, at most MAX_RETRY times."""
    import warnings

    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)


def default_storage_path() -> Path:
    from perfscale.user_cache import user_cache_dir

    return user_cache_dir() / "hpo.db"


@dataclass(frozen=True)
class StorageSpec:
    kind: str  # rdb | journal
    url: str  # the SQLAlchemy URL, or the journal file path
    sqlite_path: str | None = None  # a local SQLite file: used for the cross-process ask lock

    @property
    def label(self) -> str:
        return self.url if self.kind == "rdb" else f"journal:{self.url}"

    @property
    def lock_path(self) -> str | None:
        local = self.sqlite_path or (self.url if self.kind == "journal" else None)
        return local + ".perfscale-lock" if local else None


def parse_storage(text: str | None) -> StorageSpec:
    if text is None or not str(text).strip():
        path = default_storage_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        return StorageSpec("rdb", f"sqlite:///{path}", str(path))
    text = str(text).strip()
    if text.startswith("journal:"):
        return StorageSpec("journal", str(Path(text[len("journal:"):]).expanduser().resolve()))
    if "://" in text:
        if text.startswith("sqlite:///"):
            path = text[len("sqlite:///"):]
            return StorageSpec("rdb", text, None if path in ("", ":memory:") else str(Path(path).resolve()))
        return StorageSpec("rdb", text)
    path = Path(text).expanduser().resolve()
    if path.suffix in (".journal", ".log"):
        return StorageSpec("journal", str(path))
    return StorageSpec("rdb", f"sqlite:///{path}", str(path))


def _check_sqlite_file(path: str) -> None:
    """Refuse a file that is not an Optuna SQLite database (opening it would add Optuna's tables to it)."""
    p = Path(path)
    if p.is_dir():
        raise StoreError(f"--storage {path!r} is a folder: give a file path, e.g. {p / 'hpo.db'}.")
    if not p.parent.is_dir():
        raise StoreError(f"Cannot open --storage {path!r}: the folder {str(p.parent)!r} does not exist. Create it or give another path.")
    if not p.exists() or p.stat().st_size == 0:
        if not os.access(p.parent, os.W_OK):
            raise StoreError(f"Cannot create --storage {path!r}: the folder is not writable. Give a writable path.")
        return
    try:
        con = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
        try:
            tables = {r[0] for r in con.execute("select name from sqlite_master where type='table'")}
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"--storage {path!r} is not a SQLite database ({exc}): give a new file or an Optuna storage.") from exc
    if tables and not {"studies", "trials"} <= tables:
        raise StoreError(f"--storage {path!r} is a SQLite database of something else (tables: {', '.join(sorted(tables)[:6])}); "
                         "perfscale will not add Optuna's tables to it. Give a new file, e.g. hpo.db.")


def open_storage(spec: StorageSpec | str | None, *, heartbeat: bool = True):
    """An Optuna storage for `spec`; StoreError (with the next step) when it cannot be opened."""
    import optuna

    if not isinstance(spec, StorageSpec):
        spec = parse_storage(spec)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if spec.kind == "journal":
        p = Path(spec.url)
        if not p.parent.is_dir():
            raise StoreError(f"Cannot open the journal {spec.url!r}: the folder {str(p.parent)!r} does not exist.")
        if p.is_dir():
            raise StoreError(f"The journal {spec.url!r} is a folder: give a file path, e.g. {p / 'hpo.journal'}.")
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

        try:
            return optuna.storages.JournalStorage(JournalFileBackend(spec.url, lock_obj=JournalFileOpenLock(spec.url)))
        except Exception as exc:  # noqa: BLE001 - OSError, a corrupt log (JSON errors), ...
            raise StoreError(f"Cannot open the journal {spec.url!r}: {type(exc).__name__}: {exc}. Give a new file or an Optuna journal.") from exc
    if spec.sqlite_path:
        _check_sqlite_file(spec.sqlite_path)
    kwargs = {}
    if heartbeat:
        kwargs = {"heartbeat_interval": HEARTBEAT_S, "grace_period": GRACE_S, "heartbeat_stale_trial_callback": retry_callback()}
    engine = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}} if spec.url.startswith("sqlite") else None
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeat_interval is "experimental"
            return optuna.storages.RDBStorage(spec.url, engine_kwargs=engine, **kwargs)
    except ImportError as exc:
        raise StoreError(f"--storage {spec.url!r} needs a database driver that is not installed ({exc}): install it "
                         "(e.g. pip install psycopg2-binary for PostgreSQL) or use a SQLite file.") from exc
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy's many errors (bad URL, no server, not a database)
        first = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        raise StoreError(f"Cannot open --storage {spec.label!r}: {type(exc).__name__}: {first}. "
                         "Check the URL (e.g. sqlite:///hpo.db or postgresql://user:pass@host/db) and that the database is reachable.") from exc


__all__ = ["GRACE_S", "HEARTBEAT_S", "MAX_RETRY", "StorageSpec", "default_storage_path", "open_storage", "parse_storage",
           "retry_callback"]
