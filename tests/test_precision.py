"""config/precision.py: the Precision value object is where a precision name is decoded, and only there."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from perfscale.config.precision import MIXED_OF, PRECISIONS, Precision
from perfscale.errors import InvalidConfigError

SRC = Path(__file__).resolve().parents[1] / "src" / "perfscale"
# A comparison of a precision *name* with a literal ("precision == 'fp32'", "precision.name != 'bf16'",
# "precision in ('bf16', 'bf16-mixed')"): decoding the string outside config/precision.py.
NAME_TEST = re.compile(r"""precision(\.name)?["']?\)?\s*(==|!=|\bnot in\b|\bin\b)\s*\(?\s*["'](fp|bf|tf|int)\d""")
# None left (issue 13): every module reads the Precision value object.
KNOWN: set[str] = set()


def test_is_fp32_and_in_dtype_follow_the_table():
    assert [n for n, p in PRECISIONS.items() if p.is_fp32] == ["fp32"]
    assert {n: p.in_dtype("bf16").name for n, p in PRECISIONS.items()} == {
        "fp32": "bf16", "bf16": "bf16", "fp16": "bf16", "bf16-mixed": "bf16-mixed", "fp16-mixed": "bf16-mixed"}
    assert Precision.of("fp16-mixed").in_dtype("fp16") is PRECISIONS["fp16-mixed"]
    assert Precision.of("bf16-mixed").in_dtype("fp32").is_fp32  # no autocast to fp32: plain fp32
    assert MIXED_OF[Precision.of("fp16").weight_dtype] == "fp16-mixed"
    with pytest.raises(InvalidConfigError, match="'int8'.*fp32, bf16, fp16"):
        Precision.of("fp32").in_dtype("int8")


def test_no_module_outside_config_precision_compares_precision_names():
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel == "config/precision.py" or rel in KNOWN:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if NAME_TEST.search(line):
                found.append(f"{rel}:{number}: {line.strip()}")
    assert not found, "read Precision's attributes (config/precision.py) instead of the name:\n" + "\n".join(found)


def test_the_guard_sees_what_it_guards_against():
    for line in ('if run.precision != "fp32":', "if precision.name == 'bf16':", 'if kw.get("precision") in ("bf16", "bf16-mixed"):',
                 'x = "bf16" if settings.precision == "bf16-mixed" else "f32"'):
        assert NAME_TEST.search(line), line
    for line in ('if prec.compute_dtype == "fp16":', 'precision: str = "fp32"', 'if not self.prec.is_fp32:'):
        assert not NAME_TEST.search(line), line
