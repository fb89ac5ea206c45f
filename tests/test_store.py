"""The SQLite results store and `perfscale results`."""

from __future__ import annotations

import json
import sqlite3

import pytest

from perfscale.cli.app import main
from perfscale.errors import InvalidConfigError, StoreError
from perfscale.measure.bench_config import BenchConfig
from perfscale.measure.result import BenchResult
from perfscale.measure.store import Store, default_store_path


def _result(status="ok", samples=(0.10, 0.11, 0.09, 0.10, 0.12), label=None, scenario="train") -> BenchResult:
    return BenchResult(
        config=BenchConfig(scenario=scenario, label=label), status=status, samples=list(samples), samples_per_iter=4,
        tokens_per_iter=512, device="cpu", memory={"cpu_peak_rss": 123_456_789}, mfu={"value": 0.2},
    )


def test_add_never_overwrites_and_round_trips(tmp_path):
    with Store(tmp_path / "r.sqlite") as db:
        first, second = _result(), _result()
        id1, id2 = db.add(first), db.add(second)
        assert id1 != id2 and db.count() == 2
        runs = db.runs()
        assert [r.id for r in runs] == [id2, id1]  # newest first
        back = runs[-1].result
        assert back.samples == first.samples and back.config == first.config and back.run_id == first.run_id
        assert len(db.find(first.config.fingerprint())) == 2
        with pytest.raises(sqlite3.IntegrityError):  # the same run can never be written twice
            db.add(first)


def test_filters(tmp_path):
    with Store(tmp_path / "r.sqlite") as db:
        db.add(_result(label="alpha"))
        db.add(_result(status="oom", samples=(), label="beta"))
        db.add(_result(scenario="generate", label="gamma"))
        assert [r.label for r in db.runs(status="oom")] == ["beta"]
        assert [r.label for r in db.runs(scenario="generate")] == ["gamma"]
        assert [r.label for r in db.runs(label="alp")] == ["alpha"]
        assert len(db.runs(limit=2)) == 2
        with pytest.raises(InvalidConfigError, match="Unknown status"):
            db.runs(status="great")


def test_written_immediately_visible_to_another_connection(tmp_path):
    path = tmp_path / "r.sqlite"
    db = Store(path)
    db.add(_result())
    other = sqlite3.connect(path)
    assert other.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 1
    db.close()


def test_schema_version_newer_is_refused(tmp_path):
    path = tmp_path / "r.sqlite"
    Store(path).close()
    con = sqlite3.connect(path)
    with con:
        con.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    con.close()
    with pytest.raises(StoreError, match="schema version 99"):
        Store(path)


def test_default_path_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_store_path() == tmp_path / "perfscale" / "results.sqlite"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_store_path().parts[-3:] == (".cache", "perfscale", "results.sqlite")


def test_results_cli_exports(tmp_path, capsys):
    path = tmp_path / "r.sqlite"
    with Store(path) as db:
        db.add(_result(label="alpha"))
        db.add(_result(status="timeout", samples=(), label="beta"))
    assert main(["results", "--store", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["label"] for r in doc["runs"]] == ["beta", "alpha"]
    assert doc["runs"][1]["median"] == pytest.approx(512 / 0.10)
    assert main(["results", "--store", str(path), "--format", "csv", "--status", "ok"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("id,created,scenario") and len(lines) == 2 and ",alpha,ok," in lines[1]
    assert main(["results", "--store", str(path), "--format", "markdown"]) == 0
    md = capsys.readouterr().out
    assert md.startswith("| id |") and "| beta |" in md and "timeout" in md
    out = tmp_path / "x.md"
    assert main(["results", "--store", str(path), "-f", "markdown", "-o", str(out)]) == 0
    assert out.read_text() == md
    assert main(["results", "--store", str(path), "--format", "xml"]) == 2
    assert "xml" in capsys.readouterr().err
