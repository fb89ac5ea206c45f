"""`debug xla`'s result objects: one pass over the input stream (as written or fixed), and the whole check."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class PassResult:
    """One pass over the input stream (as written, or fixed)."""

    name: str
    padding: str  # "longest in batch" | "buckets 16,32,64"
    item_in_step: bool | None  # train: whether loss.item() is read inside the step; None for generate
    cache: str | None  # generate: dynamic | static
    steps: int
    distinct_shapes: int
    compilations: int  # graphs compiled (dynamo: unique graphs; XLA: CompileTime samples)
    per_shape: list[dict[str, Any]]  # {"shape": [b, s], "steps": n, "compilations": n}
    recompile_reasons: list[str]
    graph_breaks: list[dict[str, Any]]
    syncs: list[dict[str, Any]]  # host synchronisations found in one step (SyncProbe), per step
    transfers_from_device: int | None  # XLA: TransferFromDeviceTime samples; None under torch.compile
    fallbacks: list[dict[str, Any]]  # XLA: aten:: ops run on the CPU, with counts; [] under torch.compile
    recompile_limit_hit: bool
    wall_s: float
    steady_step_s: float | None  # median time of the steps that compiled nothing
    tokens: int  # real tokens processed
    padded_tokens: int  # tokens computed, padding included
    step_seconds: list[float] = field(default_factory=list)
    step_compilations: list[int] = field(default_factory=list)
    step_shapes: list[list[int]] = field(default_factory=list)


@dataclass
class XlaDebugResult:
    model: str
    mode: str
    engine: str  # "torch_xla" | "torch.compile"
    device: str
    backend: str | None  # torch.compile backend; None on XLA
    batch: int
    lengths_source: str
    lengths: list[int]
    buckets: list[int]
    new_tokens: int | None
    bound: int | None  # most compilations the fixed pass may have; None: the rule is "none after a shape's first step"
    before: PassResult
    after: PassResult
    verdict: str
    fixes: list[str]
    notes: list[str]
    versions: dict[str, str]

    @property
    def within_bound(self) -> bool:
        if self.bound is not None:
            return self.after.compilations <= self.bound
        first: set[int] = set()  # step indices where a shape appears for the first time
        seen: set[tuple[int, ...]] = set()
        for i, s in enumerate(self.after.step_shapes):
            if tuple(s) not in seen:
                seen.add(tuple(s))
                first.add(i)
        return all(c == 0 for i, c in enumerate(self.after.step_compilations) if i not in first)

    @property
    def bound_rule(self) -> str:
        if self.bound is None:
            return "no compilation after a bucket's first generate() call (XLA compiles generate's prefill, decode and sampling graphs per bucket)"
        if self.mode == "train":
            return f"at most one graph per bucket + 1 (the first step also creates the optimizer's state): {self.bound}"
        return f"at most 2 prefill graphs per bucket (padded / exactly full) + 1 decode graph (runtimes.decoder.graph_bound): {self.bound}"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["within_bound"] = self.within_bound
        data["bound_rule"] = self.bound_rule
        return {"kind": "debug-xla", **data}



def summarise(name: str, padding: str, shapes: list[tuple[int, ...]], step_comp: list[int], step_s: list[float], **extra) -> PassResult:
    per: dict[tuple[int, ...], list[int]] = {}
    for shape, c in zip(shapes, step_comp, strict=True):
        entry = per.setdefault(shape, [0, 0])
        entry[0] += 1
        entry[1] += c
    steady = [s for s, c in zip(step_s, step_comp, strict=True) if c == 0]
    return PassResult(
        name=name, padding=padding, steps=len(shapes), distinct_shapes=len(per), compilations=sum(step_comp),
        per_shape=[{"shape": list(k), "steps": v[0], "compilations": v[1]} for k, v in sorted(per.items())],
        wall_s=sum(step_s), steady_step_s=statistics.median(steady) if steady else None,
        step_seconds=step_s, step_compilations=step_comp, step_shapes=[list(x) for x in shapes], **extra)

