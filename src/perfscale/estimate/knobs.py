"""The knobs of one configuration as a plain object: what the hot path reads (no validation).

RunConfig validates once where the user builds it; the search builds thousands of these directly.
The slots are the workload's sizes (WORKLOAD_DEFAULTS) plus every RunConfig knob, under the same
names (config/run_config.KNOB_FIELDS): a field added to RunConfig is a slot here without an edit.

Parallel degrees: tp, pp and cp (context parallel: each sequence split over cp ranks, seq / cp tokens each;
RunConfig.cp). A data-parallel replica spans tp x pp x cp devices, so data parallel = world / (tp x pp x cp);
ZeRO and FSDP shard over the data-parallel x cp ranks, world / (tp x pp), which hold the same weights.
"""

from __future__ import annotations

from perfscale.config.optimizer import OPTIMIZER_ALIASES
from perfscale.config.precision import PRECISIONS
from perfscale.config.run_config import KNOB_DEFAULTS, KNOB_FIELDS, KNOB_MODE, RunConfig
from perfscale.specs.workload import InferWorkload, TrainWorkload

# The workload flattened: training uses batch/seq/accum; inference batch/prompt/new_tokens, with
# seq = prompt + new_tokens (the longest context).
WORKLOAD_DEFAULTS = {"mode": "train", "batch": 1, "seq": 512, "accum": 1, "prompt": 0, "new_tokens": 0}
_TRAIN_ONLY_SIZES, _INFER_ONLY_SIZES = ("seq", "accum"), ("prompt", "new_tokens")
DEFAULTS = WORKLOAD_DEFAULTS | {name: KNOB_DEFAULTS[name] for name in KNOB_FIELDS}


class Knobs:
    FIELDS = tuple(DEFAULTS)
    # prec: the decoded `precision` (config/precision.py), one shared object per name, kept in step
    # with `precision` by __init__ and copy (a dict lookup: the hot path builds no Precision).
    __slots__ = FIELDS + ("prec",)

    def __init__(self, **values) -> None:
        unknown = values.keys() - DEFAULTS.keys()
        if unknown:
            raise TypeError(f"Knobs got unknown knobs {', '.join(sorted(unknown))}; valid: {', '.join(Knobs.FIELDS)}")
        for name, default in DEFAULTS.items():
            setattr(self, name, values.get(name, default))
        self.lora_targets = tuple(self.lora_targets)
        self.optimizer = OPTIMIZER_ALIASES.get(self.optimizer, self.optimizer)
        self.prec = PRECISIONS[self.precision]

    def copy(self, **changes) -> Knobs:  # replaced below by the generated, straight-line copy
        """These knobs with `changes` applied (unvalidated: the search's hot path)."""
        raise NotImplementedError

    @classmethod
    def from_run_config(cls, config: RunConfig) -> Knobs:
        wl = config.workload
        new = cls.__new__(cls)
        for name in KNOB_FIELDS:
            setattr(new, name, getattr(config, name))
        new.prec = PRECISIONS[config.precision]
        new.batch = wl.batch
        if config.is_train:
            new.mode, new.seq, new.accum, new.prompt, new.new_tokens = "train", wl.seq, wl.grad_accum, 0, 0
        else:
            new.mode, new.seq, new.accum = "infer", wl.prompt + wl.new_tokens, 1
            new.prompt, new.new_tokens = wl.prompt, wl.new_tokens
        return new

    def to_run_config(self) -> RunConfig:
        """The validated RunConfig of these knobs (raises InvalidConfigError on what the search let through)."""
        if self.mode == "train":
            wl = TrainWorkload(batch=self.batch, seq=self.seq, grad_accum=self.accum)
        else:
            wl = InferWorkload(batch=self.batch, prompt=self.prompt, new_tokens=self.new_tokens)
        return RunConfig(workload=wl, **{name: getattr(self, name) for name in KNOB_FIELDS})

    def as_dict(self) -> dict:
        """The knobs that apply to this mode (RunConfig's train-only / inference-only fields left out of the other)."""
        other = "infer" if self.mode == "train" else "train"
        sizes = _INFER_ONLY_SIZES if self.mode == "train" else _TRAIN_ONLY_SIZES
        data = {name: getattr(self, name) for name in Knobs.FIELDS if KNOB_MODE.get(name) != other and name not in sizes}
        data["lora_targets"] = list(self.lora_targets)
        return data


def _generated_copy():
    """Knobs.copy as straight-line code, one assignment per slot (written from __slots__, as dataclasses
    writes __init__): 1.5 us instead of 3.8 us for a loop of getattr/setattr, measured here; the search
    copies once per configuration it evaluates. An unknown name in `changes` raises AttributeError."""
    lines = ["def copy(self, **changes):", "    new = _new(Knobs)"]
    lines += [f"    new.{name} = self.{name}" for name in Knobs.__slots__]
    lines += [
        "    if changes:",
        "        for name, value in changes.items():",
        "            setattr(new, name, value)",
        "        if 'precision' in changes:",
        "            new.prec = PRECISIONS[new.precision]",
        "        if 'optimizer' in changes:",
        "            new.optimizer = OPTIMIZER_ALIASES.get(new.optimizer, new.optimizer)",
        "    return new",
    ]
    namespace = {"_new": object.__new__, "Knobs": Knobs, "PRECISIONS": PRECISIONS, "OPTIMIZER_ALIASES": OPTIMIZER_ALIASES}
    exec("\n".join(lines), namespace)  # noqa: S102 - source built from the slot names above, nothing external
    copy = namespace["copy"]
    copy.__doc__, copy.__qualname__ = Knobs.copy.__doc__, "Knobs.copy"
    return copy


Knobs.copy = _generated_copy()
