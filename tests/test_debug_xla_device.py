"""debug xla on a real XLA device (torch_xla, PJRT CPU in CI): its own environment with torch 2.9 + torch-xla 2.9
(docs/xla.md); skipped in the main one, where torch_xla cannot be installed beside torch 2.13.
Run: PJRT_DEVICE=CPU python -m pytest -m xla tests/test_debug_xla_device.py"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("PJRT_DEVICE", "CPU")  # torch_xla's own variable: this test runs on the CPU client unless told otherwise
torch_xla = pytest.importorskip("torch_xla", reason="torch_xla is not installed (it needs torch 2.9: docs/xla.md)")

from test_debug_xla import BUCKETS, LENGTHS, toy_lm  # noqa: E402

pytestmark = pytest.mark.xla


def fallback_lm():
    """The toy LM with one op XLA does not lower (logcumsumexp): it must run on the CPU and be reported, not crash."""
    import torch

    model = toy_lm()
    forward = model.forward

    def with_fallback(input_ids, attention_mask=None, labels=None):
        out = forward(input_ids, attention_mask=attention_mask, labels=labels)
        out.loss = out.loss + 0.0 * torch.logcumsumexp(out.logits.mean(-1), dim=1).mean()
        return out

    model.forward = with_fallback
    return model


@pytest.fixture(scope="module")
def result():
    from perfscale.debug.xla import debug_xla

    return debug_xla(toy_lm(), mode="train", lengths=LENGTHS, batches=len(LENGTHS), batch=1, buckets=BUCKETS, device="xla", log_every=4)


def test_xla_counts_compilations_per_shape_and_transfers(result):
    b, a = result.before, result.after
    assert result.engine == "torch_xla" and result.versions["torch_xla"].startswith("2.9")
    assert b.distinct_shapes == 5 and a.distinct_shapes == 2
    # a shape seen before compiles nothing, the graph comes from XLA's cache; except the first step's shape: that
    # step's graph also created AdamW's state, so the steady step of that shape compiles once more
    seen = set()
    for i, (n, c) in enumerate(zip(LENGTHS, b.step_compilations, strict=True)):
        assert (c == 0) == (n in seen), (LENGTHS, b.step_compilations)
        if i > 0:
            seen.add(n)
    # .item() in the step: one device-to-host transfer per step, and it cuts the step's graph in two
    assert b.transfers_from_device >= len(LENGTHS) and b.compilations > b.distinct_shapes
    assert any(s["kind"] == ".item()" and s["in"] == "your code" for s in b.syncs)
    # fixed: .item() every 4 steps outside the step, buckets: at most one graph per bucket + the first step's
    assert a.transfers_from_device == len(LENGTHS) // 4
    assert a.compilations <= result.bound == len(BUCKETS) + 1 and result.within_bound
    assert a.fallbacks == []


def test_an_op_xla_cannot_lower_is_a_reported_cpu_fallback():
    from perfscale.debug.xla import debug_xla

    r = debug_xla(fallback_lm(), mode="train", lengths=[3, 5], batches=2, batch=1, buckets=[8], device="xla", probe=False)
    ops = {f["op"] for f in r.after.fallbacks}
    assert any("logcumsumexp" in op for op in ops), r.after.fallbacks
    assert any("ops XLA did not lower ran on the CPU" in f and "logcumsumexp" in f for f in r.fixes)


def test_xla_generate_compiles_nothing_after_a_buckets_first_call():
    from pathlib import Path

    from perfscale.debug.xla import debug_xla

    tiny = str(Path(__file__).parent / "data" / "debug_xla_tiny")
    r = debug_xla(tiny, mode="generate", lengths=[3, 6], batches=2, buckets=[16], new_tokens=2, device="xla", probe=False)
    assert r.bound is None and r.within_bound and r.after.step_compilations[1] == 0
    assert r.before.step_compilations[1] > 0 < r.before.compilations  # a new prompt length compiles again
    assert r.after.compilations < r.before.compilations
    assert r.after.transfers_from_device > 0  # generate reads back each token (and checks for EOS)
