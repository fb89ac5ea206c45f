"""The results store: an embedded SQLite file, one row per finished run, written as each run ends.

Rows are only ever inserted (never updated or replaced), so a later run cannot overwrite an earlier
one. The schema carries a version; a store written by a newer perfscale is refused, not misread.
Default location: $XDG_CACHE_HOME/perfscale/results.sqlite, else ~/.cache/perfscale/results.sqlite.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perfscale.errors import InvalidConfigError
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
    """`Store(path).add(result)` inserts; `runs(...)` filters; `find(fingerprint)` serves tune's resume."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path else default_store_path()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), timeout=30)
            self._db.executescript(_SCHEMA)
            row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        except (OSError, sqlite3.DatabaseError) as exc:
            raise InvalidConfigError(f"Cannot open the results store {self.path}: {exc}. Pass another file with --store PATH.") from exc
        if row is None:
            with self._db:
                self._db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif int(row[0]) > SCHEMA_VERSION:
            raise InvalidConfigError(
                f"The results store {self.path} has schema version {row[0]}, newer than this perfscale understands "
                f"({SCHEMA_VERSION}). Upgrade perfscale, or pass another file with --store PATH."
            )

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
        """Insert a finished run (committed at once); returns its row id. Never replaces a row."""
        median, lo, hi, unit = headline(result)
        doc = result.to_dict()
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
        result.store_id = cur.lastrowid
        return cur.lastrowid

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


__all__ = ["SCHEMA_VERSION", "Store", "StoredRun", "default_store_path", "headline", "store_summary_rows"]
