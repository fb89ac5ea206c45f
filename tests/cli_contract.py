"""The command line's contract, and hostile inputs to hold it to (shared by the property test and
benchmarks/cli_hostile.py).

Contract (README): a user's mistake exits 2 with one message and no traceback; success exits 0;
with --json, stdout holds exactly one JSON document either way. The options of every verb are read
from the Typer app itself, so a new flag is fuzzed without editing this file.
"""

from __future__ import annotations

import contextlib
import io
import json
import signal
import time
import typing
from dataclasses import dataclass
from pathlib import Path

# Verbs whose valid inputs start real work (processes, minutes): they run with a base that keeps a
# valid invocation short, and the sweep only feeds them values that must be refused or are cheap.
CHEAP_BASE: dict[tuple[str, ...], list[str]] = {
    ("bench",): ["--scenario", "train", "--batch", "1", "--seq", "16", "--min-iters", "2", "--min-time", "0",
                 "--max-time", "1", "--warmup", "1", "--time-limit", "120"],
    ("compare",): ["--scenario", "train", "--batch", "1", "--seq", "16", "--min-iters", "2", "--min-time", "0",
                   "--max-time", "1", "--warmup", "1", "--time-limit", "120", "--repeats", "1"],
    ("tune",): ["--hardware", "8xH100-80GB"],
    ("tune", "encoder"): ["--quick", "--backends", "eager"],
    ("tune", "decoder"): ["--quick", "--new-tokens", "2", "--prompt-lengths", "4"],
    ("debug", "overflow"): ["--steps", "1", "--batch", "1", "--seq", "8", "--no-check-fixes"],
    ("debug", "dist"): ["--nproc", "1", "--sizes", "4", "--iters", "1", "--timeout", "60"],
    ("debug", "profile"): ["--batch", "1", "--seq", "8", "--steps", "1", "--warmup", "0"],
    # debug xla (issue 20): a 1-layer llama config, one step of one length per pass (two compiled graphs)
    ("debug", "xla"): ["--model", str(Path(__file__).parent / "data" / "debug_xla_tiny"), "--batches", "1", "--batch", "1",
                       "--lengths", "4", "--buckets", "8", "--new-tokens", "1", "--no-probe"],
    # place needs a machine; the default (tiny) model places in well under a second
    ("place",): ["--hardware", "2xA100-80GB"],
    # hpo: one trial of one step on a short block; a valid draw trains once (a launcher + ~10 s)
    ("hpo",): ["--trials", "1", "--steps", "1", "--eval-steps", "1", "--seq", "16", "--max-eval-blocks", "4", "--no-plots",
               "--no-baseline", "--threads", "1"],
}
# Flags that would turn a cheap base into minutes of measuring.
# plan --calibrate times this CPU's operations (valid, and tens of seconds on a loaded box: its own tests).
# tune encoder/decoder search for a minute even with --quick: only their values are fuzzed (hostile
# ones), not the switches or folders that are valid whatever they are.
SKIP_OPTIONS: dict[tuple[str, ...], set[str]] = {
    ("tune",): {"--infer", "--quick", "--resume"}, ("plan",): {"--calibrate"}, (): {"--version"},
    ("tune", "encoder"): {"--quick", "--compile", "--cache-dir", "--backends"},
    ("tune", "decoder"): {"--quick", "--compile"},
    ("debug", "profile"): {"--compile"},  # torch.compile of the model: tens of seconds, valid whatever it is
    ("hpo",): {"--plots"},  # writes a 5 MB HTML file, valid whatever it is
}


# A valid value for each positional argument, so that an option can be fuzzed on its own.
VALID_POSITIONAL = {("models", "show"): ["gpt2"], ("hardware", "show"): ["H100-80GB"],
                    ("compare",): ["precision=fp32", "precision=bf16-mixed"]}


@dataclass(frozen=True)
class Param:
    name: str
    flag: str | None  # "--batch"; None for a positional argument
    kind: type  # int | float | str | bool | Path | list
    is_flag: bool


def verbs() -> dict[tuple[str, ...], list[Param]]:
    """Every command path of the app (("plan",), ("models", "show"), ...) with its parameters."""
    import typer.main

    from perfscale.cli.app import app

    found: dict[tuple[str, ...], list[Param]] = {}

    def walk(command, path: tuple[str, ...]) -> None:
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, (*path, name))
        if command.callback is None:
            return
        hints = typing.get_type_hints(command.callback)
        params = []
        for p in command.params:
            if p.name == "ctx":
                continue
            kind = hints.get(p.name, str)
            kind = list if typing.get_origin(kind) is list else kind
            is_option = p.param_type_name == "option"
            params.append(Param(p.name, p.opts[0] if is_option else None, kind, bool(getattr(p, "is_flag", False))))
        found[path] = params

    walk(typer.main.get_command(app), ())
    return found


def hostile_files(tmp: Path) -> dict[str, str]:
    """Paths a user might pass by mistake, made once under tmp."""
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "empty_dir").mkdir(exist_ok=True)
    files = {
        "malformed.json": "{not json",
        "list.json": "[1, 2, 3]",
        "unknown_type/config.json": json.dumps({"model_type": "no-such-arch", "hidden_size": 64}),
        "negative_layers/config.json": json.dumps({"model_type": "llama", "hidden_size": 64, "num_hidden_layers": -3,
                                                   "num_attention_heads": 4, "vocab_size": 128,
                                                   "intermediate_size": 128}),
        "zero_layers/config.json": json.dumps({"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 0,
                                               "num_attention_heads": 4, "vocab_size": 128, "intermediate_size": 128}),
        "bad_heads/config.json": json.dumps({"model_type": "llama", "hidden_size": 32, "num_hidden_layers": 2,
                                             "num_attention_heads": 7, "vocab_size": 128, "intermediate_size": 64}),
        "string_field/config.json": json.dumps({"model_type": "llama", "hidden_size": "big", "num_hidden_layers": 2,
                                                "num_attention_heads": 4, "vocab_size": 128}),
        "garbage.sqlite": "this is not a database",
    }
    for name, text in files.items():
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return {name: str(tmp / name) for name in files} | {"empty_dir": str(tmp / "empty_dir")}


def hostile_values(kind: type, files: dict[str, str]) -> list[str]:
    """What a user might type into an option of this type by mistake (or on purpose, at the edges)."""
    common = ["", "\u00fc\u00f1\u00ef\u00e7\u00f8d\u00e9 \u2603", "x" * 3000]
    if kind is int:
        return ["0", "-1", str(10**24), "abc", "1.5", "nan"] + common[:1]
    if kind is float:
        return ["0", "-1", "nan", "inf", "-inf", "1e308", "abc"] + common[:1]
    paths = [files["empty_dir"], files["malformed.json"], str(Path(files["empty_dir"]) / "missing" / "x.json"),
             "/proc/version", files["garbage.sqlite"]]
    if kind is Path:
        return paths + common
    # strings: names, paths and model folders with broken configs
    models = [files[k].rsplit("/", 1)[0] for k in ("unknown_type/config.json", "negative_layers/config.json",
                                                   "zero_layers/config.json", "bad_heads/config.json",
                                                   "string_field/config.json")]
    return common + ["-1", "0", "nan", "none", "a/b/c/d", "/" + "y" * 300, "/" + "/".join(["z" * 250] * 20)] + paths + models


def hostile_invocations(tmp: Path, verbs: list[str] | None = None):
    """Every verb x every option x every hostile value (one hostile value per invocation)."""
    files = hostile_files(tmp / "inputs")
    store = str(tmp / "store.sqlite")
    for path, params in _verbs_cached().items():
        if not path or (verbs and path[0] not in verbs):
            continue
        base = list(CHEAP_BASE.get(path, []))
        if any(p.flag == "--store" for p in params):
            base += ["--store", store]
        skip = SKIP_OPTIONS.get(path, set())
        filler = VALID_POSITIONAL.get(path, [])
        tail = ["--", *filler] if filler else []  # positionals after '--' so that '-1' stays a value
        for p in params:
            if p.flag in skip or p.flag == "--json":
                continue
            if p.flag is None:
                for value in hostile_values(p.kind, files):
                    yield [*path, *base, "--json", "--", value, *filler[1:]]
            elif p.is_flag:
                yield [*path, *base, p.flag, "--json", *tail]
            else:
                for value in hostile_values(p.kind, files):
                    yield [*path, *base, p.flag, value, "--json", *tail]


_VERBS: dict | None = None


def _verbs_cached() -> dict[tuple[str, ...], list[Param]]:
    global _VERBS
    if _VERBS is None:
        _VERBS = verbs()
    return _VERBS


def judge(argv: list[str], code, stdout: str, stderr: str) -> str:
    """'ok' when one invocation keeps the contract, else what broke."""
    if code not in (0, 2):
        return f"exit {code}"
    if "Traceback" in stderr:
        return "traceback"
    if "--json" in argv:
        try:
            json.loads(stdout)
        except ValueError:
            return "json" if stdout.strip() else "no json"
    return "ok"


class Hang(BaseException):
    """Raised by the alarm: not an Exception, so the CLI's internal-error handler cannot swallow it."""


def _alarm(_signum, _frame):
    raise Hang()


def run_in_process(argv: list[str], timeout: float) -> tuple[int | str, str, str, float]:
    """perfscale.cli.app.main(argv) with stdout/stderr captured and a wall-clock limit ('hang' past it).

    In-process because the verbs are thin wrappers and a fresh interpreter per call spends ~5 s on imports.
    """
    from perfscale.cli.app import main

    out, err = io.StringIO(), io.StringIO()
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code: int | str = main(argv)
    except Hang:
        code = "hang"
    except SystemExit as exc:
        code = f"SystemExit({exc.code})"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    return code, out.getvalue(), err.getvalue(), time.perf_counter() - start
