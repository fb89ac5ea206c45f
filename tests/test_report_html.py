"""`perfscale report`: every kind of result as one self-contained HTML file, rendered in a real headless
browser (Debian's chromium, which .ci/run installs) offline: no JavaScript error, every plot drawn (an
SVG in each plot's div, its axis titles in the page), screenshots kept under build/test-artifacts/report/.
Plus the bad inputs: a JSON that is not a result, an error document, an empty store, an unwritable output."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from perfscale.config import RunConfig
from perfscale.measure.bench_config import BenchConfig
from perfscale.measure.result import BenchResult
from perfscale.measure.store import Store
from perfscale.specs.workload import TrainWorkload

from cli_helpers import assert_user_error, run_cli

ARTIFACTS = Path(__file__).resolve().parents[1] / "build" / "test-artifacts" / "report"
BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")


def _bench_results(store_path: Path, group: str) -> list[BenchResult]:
    """Two configurations x two processes of recorded per-iteration samples, in a store."""
    out = []
    with Store(store_path) as store:
        for label, level in (("fp32", 0.50), ("bf16-mixed", 0.40)):
            cfg = BenchConfig(scenario="train", model="perfscale-tiny-llama", label=label,
                              run=RunConfig(TrainWorkload(batch=2, seq=32), precision=label))
            for rep in range(2):
                r = BenchResult(config=cfg, status="ok", group=group, repeat=rep, samples=[level * (1 + 0.03 * ((i * 7) % 5)) for i in range(12)],
                                tokens_per_iter=64, samples_per_iter=2, device="cpu", environment={"torch": "2.13.0", "host": "test"})
                r.store_id = store.add(r)
                out.append(r)
    return out


def _documents(tmp_path: Path) -> dict[str, dict]:
    """A document of every kind, from the verbs' own result types (plan and trace computed, measurements recorded)."""
    from perfscale.report.store_summary import summarize_group
    from perfscale.specs import parse_topology
    from perfscale.specs.workload import InferWorkload
    from perfscale.trace import trace
    from perfscale.tune.infer import EncoderTuneResult, Variant
    from perfscale.tune.infer_decoder import DecoderTuneResult, DecoderVariant
    from perfscale.tune.plan import plan
    from perfscale.tune.result import TrainTuneResult, TrialRecord

    docs = {"plan": plan("perfscale-tiny-llama", parse_topology("H100-80GB"), TrainWorkload(batch=4, seq=128), top=6).to_dict(),
            "trace": trace("perfscale-tiny-llama", RunConfig(TrainWorkload(batch=2, seq=32))).to_dict()}
    store = tmp_path / "store.sqlite"
    _bench_results(store, "g1")
    with Store(store) as s:
        compare = summarize_group(s.runs(group="g1"), "g1", str(store))
    compare["configurations"][1]["speedup_vs_first"] = {"ratio": 1.25, "ci_low": 1.12, "ci_high": 1.38, "significant": True}
    docs["compare"] = compare
    docs["bench"] = {k: v for k, v in compare.items() if k != "group"} | {"repeats": 2}

    def rec(name, base, rates, **kw):
        return TrialRecord(name=name, knobs={}, status="measured", baseline=base, estimate={"peak_bytes": 3e8},
                           rungs=[{"rung": i, "tokens_per_s": r, "ci_low": r * 0.9, "ci_high": r * 1.1} for i, r in enumerate(rates)], **kw)
    sp = {"ratio": 1.21, "ci_low": 1.12, "ci_high": 1.31, "significant": True, "challenger": "mb8x1 bf16-mixed",
          "verdict": "mb8x1 bf16-mixed is 1.21x the speed of the Trainer defaults [1.12, 1.31]"}
    docs["tune-train"] = TrainTuneResult(
        model="perfscale-tiny-llama", hardware="this CPU", measured_here=True, ranking="measured",
        workload={"seq": 128, "global_batch": 8}, space={}, winner={"name": "mb8x1 bf16-mixed"}, baseline={"name": "mb8x1 fp32"},
        speedup=sp, why=["precision: fp32 -> bf16-mixed (+21% tokens/s [+12%, +31%], the final paired comparison)"], runners_up=[],
        trials=[rec("mb8x1 fp32", True, [100, 104]), rec("mb8x1 bf16-mixed", False, [130, 125]), rec("mb4x2 fp32", False, [90])],
        notes=["a note"], session={}, timing={}, environment={"torch": "2.13.0"}).to_dict()
    enc = [Variant(label="sentence-transformers", settings={}, stage="baseline", status="ok", screen_rate=60.0,
                   measured={"throughput": {"unit": "sentences/s", "median": 58.0, "ci_low": 55.0, "ci_high": 61.0}}),
           Variant(label="onnxruntime+fusions int8-per-channel b32", settings={}, stage="runtime", status="ok", screen_rate=240.0,
                   accuracy={"mean_cosine": 0.993, "min_cosine": 0.98, "passed": True},
                   measured={"throughput": {"unit": "sentences/s", "median": 230.0, "ci_low": 220.0, "ci_high": 240.0}}),
           Variant(label="onnxruntime+fusions int8-dynamic b32", settings={}, stage="runtime", status="inaccurate", screen_rate=260.0,
                   accuracy={"mean_cosine": 0.94, "min_cosine": 0.85, "passed": False}, reason="gate")]
    docs["tune-encoder"] = EncoderTuneResult(model="minilm", model_path="x", gate={}, corpus_sentences=512, variants=enc,
                                             winner=enc[1].label, winner_settings={}, speedup=None, verdict="4x", measurement={}).to_dict()
    summary = {"median": 900.0, "ci_low": 850.0, "ci_high": 950.0}
    dec = [DecoderVariant(label="eager", settings={}, tokens_per_s=summary),
           DecoderVariant(label="static cache", settings={}, status="slower", tokens_per_s={k: v * 0.8 for k, v in summary.items()})]
    docs["tune-decoder"] = DecoderTuneResult(model="perfscale-tiny-llama", prompt_lengths=[12, 40], new_tokens=16, variants=dec,
                                             winner="eager", winner_settings={}, verdict="eager", recompiles={}, passes=3).to_dict()
    docs["hpo"] = {"study_name": "s", "model": "perfscale-tiny-llama", "directions": ["minimize"], "notes": [],
                   "trials": [{"number": i, "status": "complete", "values": [3.0 - 0.1 * i], "params": {"lr": 1e-4 * (i + 1)}} for i in range(5)]}
    _ = InferWorkload  # (inference plans are the same section)
    return docs | {"_store": str(store)}


@pytest.fixture(scope="module")
def documents(tmp_path_factory):
    return _documents(tmp_path_factory.mktemp("report-docs"))


def test_every_kind_is_detected_and_drawn(documents):
    from perfscale.report.html import KINDS, detect_kind, render_html

    docs = dict(documents)
    store = docs.pop("_store")
    assert {detect_kind(d) for d in docs.values()} == set(KINDS) and all(detect_kind(d) == k for k, d in docs.items())
    from perfscale.cli.report import stored_runs

    text, plots = render_html([(k, k, d) for k, d in docs.items()], runs=stored_runs(store))
    names = {p["name"] for p in plots}
    assert {"plan-pareto", "plan-memory", "trace-breakdown", "trace-phases", "trace-modules", "bench-distribution", "bench-medians",
            "compare-distribution", "compare-forest", "tune-trials", "tune-final", "tune-encoder-screen", "tune-encoder-measured",
            "tune-decoder-variants", "hpo-trials"} <= names
    assert text.count("<script type='text/javascript'>") == 1  # plotly.js embedded once
    assert not re.search(r"<script[^>]+src=", text) and not re.search(r"<link[^>]+href=", text)  # nothing fetched when it opens
    assert "environment of these numbers" in text and "1.21x the speed" in text
    estimated = docs["tune-train"] | {"ranking": "estimated", "trials": [], "runners_up": [{"name": "b", "estimated_tokens_per_s": 9e3}],
                                      "winner": {"name": "a", "estimated_tokens_per_s": 1e4, "estimated_peak_bytes": 5e10}}
    assert [p["name"] for p in render_html([("e", "tune-train", estimated)])[1]] == ["tune-estimated", "tune-final"]


def _user_error(capsys, argv, *fragments):
    """In-process (no interpreter start-up): exit 2, the fragments on stderr, no traceback."""
    from perfscale.cli.app import main

    assert main(argv) == 2, argv
    err = capsys.readouterr().err
    assert "Traceback" not in err and all(f in err for f in fragments), (argv, err)


def test_cli_writes_the_file_and_bad_inputs_exit_2(documents, tmp_path, capsys):
    docs = dict(documents)
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(docs["plan"]))
    out = tmp_path / "r.html"
    ok = run_cli("report", str(plan), "--out", str(out), "--json")  # as a user runs it
    assert ok.returncode == 0 and ok.stderr == "", ok.stderr
    doc = json.loads(ok.stdout)
    assert doc["path"] == str(out) and out.stat().st_size == doc["bytes"] and [i["kind"] for i in doc["inputs"]] == ["plan"]
    foreign = tmp_path / "package.json"
    foreign.write_text(json.dumps({"name": "left-pad", "version": "1.0"}))
    assert_user_error(run_cli("report", str(foreign)), "not a perfscale result", "name, version", "plan", "--json")
    error_doc = tmp_path / "err.json"
    error_doc.write_text(json.dumps({"error": {"type": "X", "message": "efficiency 0.0 is out of range", "exit_code": 2}}))
    _user_error(capsys, ["report", str(error_doc)], "error document", "efficiency 0.0")
    garbage = tmp_path / "g.json"
    garbage.write_text("{not json")
    _user_error(capsys, ["report", str(garbage)], "is not JSON")
    _user_error(capsys, ["report", str(tmp_path / "missing.json")], "Cannot read")
    _user_error(capsys, ["report", str(plan), "--out", str(tmp_path / "no" / "such" / "dir.html")], "does not exist")
    _user_error(capsys, ["report", str(plan), "--out", str(tmp_path)], "is a folder")
    empty = tmp_path / "empty.sqlite"
    Store(empty).close()
    _user_error(capsys, ["report", "--results", "--store", str(empty), "--out", str(out)], "is empty")
    _user_error(capsys, ["report", "--results", "--store", str(tmp_path / "none.sqlite"), "--out", str(out)], "none.sqlite")
    _user_error(capsys, ["report"], "Nothing to report")
    _user_error(capsys, ["report", str(plan), "--group", "g1"], "--results")
    # --results: the newest group of a store, drawn like a compare
    store = docs["_store"]
    assert run_cli("report", "--results", "--store", store, "--out", str(out)).returncode == 0
    assert "time per iteration" in out.read_text()


@pytest.mark.slow  # ~12 s of browser time idle, 30 s on a busy box
@pytest.mark.skipif(BROWSER is None, reason="no chromium here: `.ci/run` installs Debian's chromium (apt-get), which this machine lacks")
def test_reports_render_in_headless_chromium_offline(documents, tmp_path):
    from perfscale.cli.report import stored_runs
    from perfscale.report.html import write_report

    docs = dict(documents)
    store = docs.pop("_store")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "report.html"
    result = write_report([(k, k, d) for k, d in docs.items()], path, runs=stored_runs(store))
    profile = tmp_path / "chrome-profile"
    flags = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
             "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",  # offline: any network fetch would fail
             "--virtual-time-budget=15000"]
    started = time.perf_counter()
    dom = subprocess.run([*flags, "--dump-dom", path.as_uri()], capture_output=True, text=True, timeout=180)
    assert dom.returncode == 0, dom.stderr[-2000:]
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    assert not [c for c in console if re.search(r"error|uncaught|failed", c, re.I)], console
    html = dom.stdout
    assert re.search(r"<pre id=\"report-errors\"[^>]*></pre>", html), "a JavaScript error was recorded in the page"
    assert f'data-plots-rendered="{len(result.plots)}"' in html, re.findall(r"data-plots-rendered=\"\d+\"", html)
    divs = re.findall(r"<div class=\"plot\" data-plot=\"([\w-]+)\"( data-rendered=\"1\")?", html)
    assert len(divs) == len(result.plots) and all(rendered for _, rendered in divs), divs
    for title in ("memory per device (GiB)", "ms per iteration", "speed-up (x)", "tokens/s", "module"):
        assert re.search(r'class="(x|y)title"[^>]*>' + re.escape(title), html), title  # axis labels drawn as SVG text
    shot = ARTIFACTS / "report-all-kinds.png"
    done = subprocess.run([*flags, "--hide-scrollbars", "--window-size=1280,9000", f"--screenshot={shot}", path.as_uri()],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0 and shot.stat().st_size > 50_000, done.stderr[-2000:]
    assert time.perf_counter() - started < 120


def test_terminal_breakdowns_gain_inline_bars(documents):
    from rich.console import Console

    from perfscale.report.bars import bar
    from perfscale.report.trace_tables import breakdown_table

    assert bar(0.5, 4) == "██  " and bar(1.0, 4) == "████" and bar(0.0, 3) == "   " and bar(None, 2) == "  "
    assert bar(0.33, 20).startswith("██████▋") and len(bar(0.33, 20)) == 20 and bar(7.0, 5) == "█████"
    doc = documents["trace"]
    console = Console(record=True, width=140, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(breakdown_table(doc))
    text = console.export_text()
    top = max((k for k, v in doc["breakdown"].items() if v), key=lambda k: doc["breakdown"][k])
    share = doc["breakdown"][top] / doc["peak_bytes"]
    assert "█" * int(share * 20) in text and "█" * 20 in text  # the largest part's bar, and the peak's full bar


def test_verbs_write_their_report_directly(documents, tmp_path, capsys):
    """--report on plan and trace (in-process, as the CLI runs them), and the same writer on bench/compare
    documents: the file holds the verb's plots; a bad path is refused before the work; a failure after it
    keeps the result (report_error, exit 2 after printing)."""
    import typer

    from perfscale.cli.app import main
    from perfscale.cli.report import emit_with_report, write_or_say

    out = tmp_path / "plan.html"
    argv = ["plan", "--model", "perfscale-tiny-llama", "--hardware", "H100-80GB", "--train", "--batch", "4", "--seq", "128", "--top", "3"]
    assert main([*argv, "--report", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["report"] == str(out)
    assert all(f"data-plot='{p}'" in out.read_text() for p in ("plan-pareto", "plan-memory"))
    out = tmp_path / "trace.html"
    assert main(["trace", "--train", "--batch", "2", "--seq", "32", "--report", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().err and "data-plot='trace-breakdown'" in out.read_text()
    _user_error(capsys, ["trace", "--train", "--batch", "2", "--seq", "32", "--report", str(tmp_path / "no" / "t.html")],
                "--report", "does not exist")
    # one bench run: its row names one store id (compare rows name several); the samples come from that store
    row = {k: v for k, v in documents["compare"]["configurations"][0].items() if k != "store_ids"}
    single = {"store": documents["_store"], "configurations": [row | {"store_id": documents["compare"]["configurations"][0]["store_ids"][0]}]}
    assert write_or_say(single, str(tmp_path / "bench.html"), as_json=True) and single["report"] == str(tmp_path / "bench.html")
    assert "data-plot='bench-distribution'" in (tmp_path / "bench.html").read_text()
    doc = dict(documents["compare"])
    with pytest.raises(typer.Exit) as stop:
        emit_with_report(doc, True, None, str(tmp_path))  # a folder: refused after the (already computed) result
    printed = json.loads(capsys.readouterr().out)
    assert stop.value.exit_code == 2 and "is a folder" in printed["report_error"] and printed["configurations"] == doc["configurations"]
