"""The results store: an embedded SQLite file, one row per finished run, written as each run ends.

Rows are only ever inserted (never updated or replaced), so a later run cannot overwrite an earlier
one. The schema carries a version; a store written by a newer perfscale is refused, not misread.
Default location: $XDG_CACHE_HOME/perfscale/results.sqlite, else ~/.cache/perfscale/results.sqlite.

Faults: a path that cannot hold a store (its parent is a file, it is a directory, a name too long),
a file that is not a perfscale store (garbage, another program's database) and a store that cannot
be written (read-only file, directory or file system) raise StoreError before anything is measured
(`check_writable`), and such a file is never written to. A store that fails later, when a result
is added, does not lose the result: `keep` writes it to a fallback JSON file and `restore` adds
that file to a store afterwards.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perfscale.errors import InvalidConfigError, StoreError
from perfscale.measure.result import STATUSES, BenchResult
from perfscale.user_cache import user_cache_dir

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL UNIQUE,
    grp TEXT,
    created_at REAL NOT NULL,
    scenario TEXT NOT NULL,
    model TEXT NOT NULL,
    backend TEXT NOT NULL,
    label TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status TEXT NOT NULL,
    device TEXT,
    throughput_median REAL,
    throughput_ci_low REAL,
    throughput_ci_high REAL,
    throughput_unit TEXT,
    peak_memory_bytes INTEGER,
    config_json TEXT NOT NULL,
    result_json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_fingerprint ON runs (fingerprint);
CREATE INDEX IF NOT EXISTS runs_grp ON runs (grp);
"""


def default_store_path() -> Path:
    return user_cache_dir() / "results.sqlite"


def headline(result: BenchResult) -> tuple[float | None, float | None, float | None, str | None]:
    """(median, ci_low, ci_high, unit) of the configuration's main rate."""
    h = result.headline()
    return h["median"], h["ci_low"], h["ci_high"], h["unit"] if h["median"] is not None else None


@dataclass(frozen=True)
class StoredRun:
    id: int
    created_at: float
    status: str
    label: str
    result: BenchResult


class Store:
    """`Store(path).add(result)` inserts; `runs(...)` filters; `find(fingerprint)` serves tune's resume.

    `create=False` refuses a path that holds no store yet (for readers, which should not create one).
    """

    def __init__(self, path: str | os.PathLike | None = None, *, create: bool = True):
        self.path = Path(path) if path else default_store_path()
        self.unsaved: list[tuple[BenchResult, Path, str]] = []  # (result, fallback file, why) of failed adds
        where = f"Pass another file with --store PATH (default {default_store_path()})."
        try:
            if self.path.is_dir():
                raise StoreError(f"The results store {self.path} is a directory, not a file. {where}")
            if not self.path.exists():
                if not create:
                    raise StoreError(f"There is no results store at {self.path}. {where}")
                blocker = next((p for p in self.path.parents if p.exists() and not p.is_dir()), None)
                if blocker is not None:
                    raise StoreError(f"Cannot create the results store {self.path}: {blocker} is a file, not a folder. {where}")
                self.path.parent.mkdir(parents=True, exist_ok=True)
            # A file that exists must already be a perfscale store (or empty): anything else is left untouched.
            fresh = not self.path.exists() or self.path.stat().st_size == 0
            foreign = not fresh and not _is_perfscale_store(self.path)
        except OSError as exc:
            raise StoreError(f"Cannot use {self.path} as the results store: {_why(exc)}. {where}") from exc
        except sqlite3.DatabaseError as exc:  # not an SQLite file at all
            raise StoreError(
                f"{self.path} is not a perfscale results store ({exc}); it was left untouched. Move it away, or pass "
                "another file with --store PATH."
            ) from exc
        if foreign:
            raise StoreError(
                f"{self.path} is an SQLite database but not a perfscale results store (no perfscale schema); it was "
                f"left untouched. {where}"
            )
        try:
            self._db = sqlite3.connect(str(self.path), timeout=30)
            if fresh:  # tables and version in one transaction: a reader never sees a half-made store
                self._db.executescript(f"BEGIN;\n{_SCHEMA}\nINSERT OR IGNORE INTO meta VALUES ('schema_version', "
                                       f"'{SCHEMA_VERSION}');\nCOMMIT;")
            else:
                self._db.executescript(_SCHEMA)
            row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"Cannot open the results store {self.path}: {_why(exc)}. {where}") from exc
        if row is None:
            try:
                with self._db:
                    self._db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            except sqlite3.Error as exc:
                raise StoreError(f"Cannot write the results store {self.path}: {_why(exc)}. {where}") from exc
        elif int(row[0]) > SCHEMA_VERSION:
            raise StoreError(
                f"The results store {self.path} has schema version {row[0]}, newer than this perfscale understands "
                f"({SCHEMA_VERSION}). Upgrade perfscale, or pass another file with --store PATH."
            )

    def check_writable(self) -> None:
        """Raise StoreError unless a row could be written now (read-only file, directory or file system,
        locked by another program): called before measuring, so a run is never measured for nothing."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('write_check', ?)", (str(time.time()),))
            self._db.execute("ROLLBACK")
        except sqlite3.Error as exc:
            if self._db.in_transaction:
                self._db.rollback()
            raise StoreError(
                f"The results store {self.path} cannot be written: {_why(exc)}. Nothing was measured. Make it writable, "
                f"or pass another file with --store PATH."
            ) from exc

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0])

    def add(self, result: BenchResult) -> int:
        """Insert a finished run (committed at once); returns its row id. Never replaces a row.

        StoreError when the file cannot be written; sqlite3.IntegrityError when the run is already stored."""
        median, lo, hi, unit = headline(result)
        doc = result.to_dict()
        try:
            with self._db:
                cur = self._db.execute(
                    "INSERT INTO runs (run_id, grp, created_at, scenario, model, backend, label, fingerprint, status, device,"
                    " throughput_median, throughput_ci_low, throughput_ci_high, throughput_unit, peak_memory_bytes, config_json, result_json)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        result.run_id, result.group, time.time(), result.config.scenario, result.config.model, result.config.backend,
                        result.config.display, result.config.fingerprint(), result.status, result.device, median, lo, hi, unit,
                        result.peak_memory_bytes, json.dumps(result.config.to_dict(), sort_keys=True),
                        json.dumps(doc, default=str),
                    ),
                )
        except sqlite3.IntegrityError:
            raise
        except sqlite3.Error as exc:
            raise StoreError(f"Cannot write the results store {self.path}: {_why(exc)}.") from exc
        result.store_id = cur.lastrowid
        return cur.lastrowid

    def keep(self, result: BenchResult) -> int | None:
        """`add`, and when the store fails, save the result to a fallback JSON file instead (listed in
        `self.unsaved`, for the caller to report): a measured result is never lost to a broken store.
        Returns the row id, or None when the result went to the fallback file."""
        try:
            return self.add(result)
        except StoreError as exc:
            path = save_unsaved(result, self.path, str(exc))
            self.unsaved.append((result, path, str(exc)))
            return None

    def restore(self, path: str | os.PathLike) -> int:
        """Add a result that `keep` saved to a fallback file; returns its row id."""
        try:
            doc = json.loads(Path(path).read_text())
            result = BenchResult.from_dict(doc["result"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"{path} is not a result file written by perfscale when its store failed: {exc}.") from exc
        return self.add(result)

    def runs(
        self, *, scenario: str | None = None, model: str | None = None, status: str | None = None, label: str | None = None,
        group: str | None = None, fingerprint: str | None = None, since: float | None = None, limit: int | None = None,
    ) -> list[StoredRun]:
        """Stored runs, newest first, filtered by exact fields (label: substring)."""
        if status is not None and status not in STATUSES:
            raise InvalidConfigError(f"Unknown status {status!r}. Choose from: {', '.join(STATUSES)}.")
        where, args = [], []
        for column, value in (("scenario", scenario), ("model", model), ("status", status), ("grp", group), ("fingerprint", fingerprint)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if label is not None:
            where.append("label LIKE ?")
            args.append(f"%{label}%")
        if since is not None:
            where.append("created_at >= ?")
            args.append(since)
        sql = "SELECT id, created_at, status, label, result_json FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))
        out = []
        for row_id, created, st, lab, doc in self._db.execute(sql, args):
            result = BenchResult.from_dict(json.loads(doc))
            result.store_id = row_id
            out.append(StoredRun(row_id, created, st, lab, result))
        return out

    def find(self, fingerprint: str) -> list[BenchResult]:
        """Every stored run of a configuration (by BenchConfig.fingerprint()), oldest first: tune resumes from it."""
        return [r.result for r in reversed(self.runs(fingerprint=fingerprint))]

    def latest_group(self, prefix: str) -> str | None:
        """The newest group name starting with `prefix` (tune finds the session to resume by it)."""
        row = self._db.execute(
            "SELECT grp FROM runs WHERE substr(grp, 1, ?) = ? ORDER BY id DESC LIMIT 1", (len(prefix), prefix)
        ).fetchone()
        return row[0] if row else None

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM runs").fetchone()[0])


def _why(exc: BaseException) -> str:
    """The reason of an OS or SQLite error in words a user can act on."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower() + (f" ({exc.filename})" if exc.filename else "")
    text = str(exc)
    if "readonly" in text or "unable to open database file" in text:
        return f"{text} (a read-only file, directory or file system?)"
    return text


def _is_perfscale_store(path: Path) -> bool:
    """Whether an existing SQLite file holds perfscale's schema (sqlite3.DatabaseError if it is no SQLite file)."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables:
            return True  # an empty database: perfscale writes its schema into it
        return {"meta", "runs"} <= tables and con.execute("SELECT 1 FROM meta WHERE key='schema_version'").fetchone() is not None
    finally:
        con.close()


def save_unsaved(result: BenchResult, store_path: Path, error: str) -> Path:
    """Write a result that its store refused to a JSON file: next to the store, else in the current
    directory, else in the temp directory. StoreError (with the result in it) if all of them fail."""
    doc = {"perfscale_unsaved_result": 1, "store": str(store_path), "error": error, "saved_at": time.time(),
           "result": result.to_dict()}
    text = json.dumps(doc, indent=1, default=str)
    name = f"perfscale-unsaved-{result.run_id[:12]}.json"
    tried = []
    for folder in (Path(store_path).parent, Path.cwd(), Path(tempfile.gettempdir())):
        target = folder / name
        tmp = folder / (name + ".tmp")
        try:
            tmp.write_text(text)
            os.replace(tmp, target)
            return target
        except OSError as exc:
            tried.append(f"{folder}: {_why(exc)}")
            try:
                tmp.unlink()
            except OSError:
                pass
    raise StoreError(f"{error} The result could not be saved anywhere either ({'; '.join(tried)}); here it is: {text}")


def store_summary_rows(runs: list[StoredRun]) -> list[dict[str, Any]]:
    """Flat rows (for tables, CSV and Markdown): one per run."""
    rows = []
    for r in runs:
        res = r.result
        median, lo, hi, unit = headline(res)
        mfu = res.mfu.get("value") if res.mfu else None
        rows.append({
            "id": r.id, "created": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.created_at)), "group": res.group,
            "scenario": res.config.scenario, "model": res.config.model, "label": r.label, "status": r.status, "device": res.device,
            "throughput": median, "ci_low": lo, "ci_high": hi, "unit": unit, "peak_memory_bytes": res.peak_memory_bytes,
            "mfu": mfu, "stop_reason": res.stop_reason, "reason": res.reason, "fingerprint": res.config.fingerprint(),
        })
    return rows


__all__ = ["SCHEMA_VERSION", "Store", "StoredRun", "default_store_path", "headline", "save_unsaved", "store_summary_rows"]
