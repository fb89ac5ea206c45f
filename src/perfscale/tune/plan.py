"""plan(): enumerate the open knobs, drop what does not fit, rank, and say why in words.

The decide layer's search over estimates: each candidate is one configuration that the estimate
engine (perfscale.estimate) evaluates; the space comes from tune/space.py, the order from tune/rank.py.
"""

from __future__ import annotations

import itertools
import math
import time as _time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from perfscale.config.run_config import KNOB_CORE, KNOB_DEFAULTS, KNOB_FIELDS, KNOB_SEARCH, MODES
from perfscale.errors import InvalidConfigError, TopologyError
from perfscale.estimate import cpu_step
from perfscale.estimate.core import constants_for, evaluate, hardware_problems, layout_problems, to_estimate
from perfscale.estimate.inference import largest_batch, longest_context
from perfscale.estimate.knobs import Knobs
from perfscale.estimate.result import Estimate, Evaluation
from perfscale.specs.positions import check_workload_length
from perfscale.tune import rank as ranking
from perfscale.tune import space
from perfscale.tune.advice import advice_lines, nothing_fits_message, other_ways_to_fit

# What plan(**fixed) accepts: every RunConfig knob, and grad_accum (the search splits the batch into
# micro-batch x accumulation unless it is given).
KNOB_NAMES = (*KNOB_FIELDS, "grad_accum")


@dataclass(frozen=True)
class PlanResult:
    """A ranked search: the top configurations that fit, and why."""

    model: str
    topology: str
    hardware_detected: bool  # True when --hardware was omitted and this machine was used
    mode: str
    objective: str
    evaluated: int
    feasible: int
    seconds: float
    open_knobs: tuple[str, ...]
    configs: tuple[Estimate, ...]
    advice: tuple[str, ...]
    extras: dict[str, Any] = field(default_factory=dict)  # e.g. largest batch / longest context
    # TPU slices, training: the best configuration of each strategy in TPU_STRATEGIES (fit or not), in that order
    strategies: tuple[Estimate, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "topology": self.topology,
            "hardware_detected": self.hardware_detected,
            "mode": self.mode,
            "objective": self.objective,
            "evaluated": self.evaluated,
            "feasible": self.feasible,
            "seconds": self.seconds,
            "open_knobs": list(self.open_knobs),
            "configs": [c.to_dict() for c in self.configs],
            "advice": list(self.advice),
            "extras": self.extras,
            "strategies": [dict(c.to_dict(), strategy=strategy_of(c.knobs)) for c in self.strategies],
        }


def _resolve_topology(topology) -> tuple[Any, bool]:
    from perfscale.specs import Topology, get_hardware, parse_topology

    if topology is None:
        return Topology(hardware=get_hardware("local")), True
    if isinstance(topology, str):
        return parse_topology(topology), False
    return topology, False


def _resolve_model(model):
    if isinstance(model, str):
        from perfscale.specs import load_model_spec

        return load_model_spec(model)
    return model


# Knobs that define a configuration (RunConfig's _knob(core=True), per mode searched): when all are given,
# plan evaluates that one configuration instead of searching, and the secondary knobs left open (the other
# searched knobs) take their field defaults (SECONDARY_DEFAULTS). A default of None is no value to pin: fsdp
# stays open, and zero pinned at 0 is what keeps FSDP out of the space.
CORE_KNOBS = {mode: tuple(name for name in KNOB_FIELDS if name in KNOB_CORE and mode in KNOB_SEARCH[name]) for mode in MODES}
SECONDARY_DEFAULTS = {name: KNOB_DEFAULTS[name] for name in KNOB_FIELDS
                      if name in KNOB_SEARCH and name not in KNOB_CORE and KNOB_DEFAULTS[name] is not None}


def pin_secondary_knobs(fixed: dict[str, Any], workload) -> dict[str, Any]:
    """Every core knob given: one configuration exactly as stated, the open secondary knobs at their defaults
    (ZeRO stays open beside a given FSDP degree, which replaces it). Otherwise `fixed` unchanged."""
    mode = "train" if workload is None else workload.mode
    if not all(fixed.get(name) is not None for name in CORE_KNOBS[mode]):
        return fixed
    pinned = dict(fixed)
    for name, value in SECONDARY_DEFAULTS.items():
        if pinned.get(name) is None and not (name == "zero" and pinned.get("fsdp")):
            pinned[name] = value
    if mode == "train" and pinned.get("grad_accum") is None:
        pinned["grad_accum"] = workload.grad_accum if workload is not None else 1
    return pinned


def _check_number(what: str, value, valid: str, upper: float | None = None, inclusive_upper: bool = False,
                  allow_zero: bool = False) -> None:
    """None (not given) or a finite number in range; NaN, inf, 0 or negatives name the valid range."""
    if value is None:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value >= 0 if allow_zero else value > 0)
    ok = ok and (upper is None or value < upper or (inclusive_upper and value == upper))
    if not ok:
        raise InvalidConfigError(f"{what} {value!r} is out of range: give {valid}.")


def plan(model, topology=None, workload=None, objective: str = "throughput", top: int = 5,
         efficiency: float | None = None, token_budget: float | None = None,
         price_per_device_hour: float | None = None, host_memory: float | None = None, calibration=None,
         prepare_calibration: Callable[[Any, list[tuple[str, int]]], None] | None = None,
         allow_optimizer_change: bool = False, global_batch: int | None = None, allow_lora: bool = False,
         **fixed: Any) -> PlanResult:
    """Search the open knobs (those not given in `fixed`) and rank what fits.

    model: ModelSpec or name/dir/hub id; topology: Topology, "2x8xH100-80GB" or None (this machine);
    workload: TrainWorkload / InferWorkload; fixed: knob=value for knobs the user gave
    (KNOB_NAMES: RunConfig's fields and grad_accum). host_memory: host RAM per node in bytes, for CPU
    offload (default: estimate/host.py, 2 TiB per GPU node). calibration: operation times measured on
    this CPU (estimate/calibration.py); prepare_calibration(spec, needed) is called with the (signature,
    size) pairs the candidates run that it lacks, before they are evaluated (the CLI passes the CPU probe).
    allow_optimizer_change: also search optimizers other than AdamW (Adafactor, SGD, 8-bit AdamW), which
    change what is trained; by default only AdamW's implementations are searched, as in `tune`.
    allow_lora: when full fine-tuning fits nowhere, search LoRA (r=16 on every linear layer), which trains
    an adapter instead of the model; without it the error says what LoRA and the other ways would need.
    global_batch: sequences per optimizer step over all data-parallel replicas (training), held fixed
    across layouts (space.train_space); the workload's batch and accumulation are then searched, not given.
    """
    from perfscale.specs.workload import DEFAULT_TRAIN

    started = _time.perf_counter()
    if objective not in ranking.OBJECTIVES:
        raise InvalidConfigError(f"Unknown objective: {objective!r}. Choose from: {', '.join(ranking.OBJECTIVES)}.")
    if not isinstance(top, int) or top < 1:
        raise InvalidConfigError(f"top must be a positive integer, got {top!r}.")
    _check_number("efficiency", efficiency, "a fraction of peak FLOP/s in (0, 1], e.g. --efficiency 0.45",
                  upper=1.0, inclusive_upper=True)
    _check_number("token budget", token_budget, "a positive number of tokens, e.g. --token-budget 1e9")
    _check_number("price per device-hour", price_per_device_hour, "a positive price, e.g. --price 2.5", allow_zero=True)
    unknown = sorted(set(fixed) - set(KNOB_NAMES))
    if unknown:
        raise InvalidConfigError(f"Unknown knobs: {', '.join(unknown)}. Valid knobs: {', '.join(KNOB_NAMES)}.")
    if global_batch is not None:
        if isinstance(global_batch, bool) or not isinstance(global_batch, int) or not 1 <= global_batch <= 2**24:
            raise InvalidConfigError(f"global batch {global_batch!r} is out of range: give the sequences per optimizer "
                                     "step over all replicas, an integer from 1 to 16,777,216 (e.g. --global-batch 2048).")
        if workload is not None and workload.mode != "train":
            raise InvalidConfigError("--global-batch is a training size (sequences per optimizer step); for --infer "
                                     "use --batch.")
    fixed = pin_secondary_knobs({k: v for k, v in fixed.items() if v is not None}, workload)
    if host_memory is not None and (isinstance(host_memory, bool) or not isinstance(host_memory, (int, float))
                                    or not math.isfinite(host_memory) or host_memory <= 0):
        raise InvalidConfigError(f"host memory per node must be a positive number of bytes, got {host_memory!r} "
                                 "(CLI: --host-memory-gib 2048).")
    spec = _resolve_model(model)
    topo, detected = _resolve_topology(topology)
    workload = workload or DEFAULT_TRAIN
    length_note = check_workload_length(spec, workload)
    mc = constants_for(spec)
    hw, nodes, per_node, world = topo.hardware, topo.nodes, topo.devices_per_node, topo.world_size
    train = workload.mode == "train"

    # Validate the fixed knobs once through RunConfig (the choices in every message).
    probe_fields = {k: v for k, v in fixed.items() if k != "grad_accum"}
    if "lora_targets" in probe_fields:
        probe_fields["lora_targets"] = tuple(probe_fields["lora_targets"])
    from perfscale.config.run_config import RunConfig

    probe = Knobs.from_run_config(RunConfig(workload=workload, **probe_fields))
    if train:
        base = probe.copy(accum=workload.grad_accum)
        fixed.setdefault("grad_accum", None)
        if fixed.get("grad_accum") is None and workload.grad_accum != 1:
            fixed["grad_accum"] = workload.grad_accum
    else:
        base = probe
    problems = layout_problems(mc, probe.copy(tp=fixed.get("tp", 1), pp=fixed.get("pp", 1),
                                              pp_virtual=fixed.get("pp_virtual", 1), cp=fixed.get("cp", 1),
                                              accum=base.accum), world)
    # With tp/pp open the search picks a layout that works (e.g. tp 8 for one request on 8 GPUs);
    # only a layout the user fixed can be impossible up front.
    if problems and ("tp" in fixed or "pp" in fixed or "pp_virtual" in fixed or "cp" in fixed):
        raise TopologyError("Impossible layout:\n  - " + "\n  - ".join(problems))
    unrunnable = hardware_problems(hw, probe)
    if unrunnable and "precision" in fixed:
        raise InvalidConfigError(" ".join(unrunnable))
    if fixed.get("fsdp") is not None and (fixed["fsdp"] > world or world % fixed["fsdp"]):
        raise TopologyError(f"FSDP shard degree {fixed['fsdp']} must divide the {world} devices of {topo.label} (it shards "
                            f"over data-parallel ranks): use --fsdp one of {', '.join(map(str, space.divisors(world)))}.")

    def candidates(with_lora: bool):
        if train:
            b = base.copy(lora_r=16, lora_targets=tuple(mc.lora_dims)) if with_lora else base
            return space.train_space(b, fixed, mc.heads, mc.layers, world, per_node, hw, allow_optimizer_change,
                                     global_batch)
        return space.infer_space(base, fixed, mc.heads, world, per_node, hw)

    calibrating = prepare_calibration is not None and cpu_step.calibration_applies(calibration, hw, world, efficiency)

    def evaluate_k(k: Knobs) -> Evaluation:
        return evaluate(mc, k, hw, nodes, per_node, efficiency, host_memory, calibration)

    def evaluate_on(k: Knobs, nodes_: int, per_node_: int) -> Evaluation:  # the same device, another count (advice)
        return evaluate(mc, k, hw, nodes_, per_node_, efficiency, host_memory, calibration)

    def prepare(knobs_list) -> None:
        if not calibrating:
            return
        needed = {need for k in knobs_list if not cpu_step.unsupported(mc, k) for need in cpu_step.probe_list(mc, k)}
        missing = sorted(n for n in needed if not calibration.has(*n))
        if missing:
            prepare_calibration(spec, missing)

    evaluated, fitting, smallest = 0, [], None
    used_lora = False
    tpu_best: dict[str, tuple[Evaluation, Knobs]] = {}  # TPU slices: the best configuration of each sharding strategy
    single = list(itertools.islice(candidates(False), 2))
    if len(single) == 1:  # every knob given: evaluate that one configuration, fit or not
        k = single[0]
        prepare([k, k.copy(precision="fp32")])  # the advice compares mixed precision with fp32
        numbers = evaluate_k(k)
        est = to_estimate(mc, k, topo, numbers, token_budget, price_per_device_hour)
        words = advice_lines(mc, topo, workload, [(numbers, k)] if numbers.fits else [], [(numbers, k)], False,
                             evaluate_fn=evaluate_k)
        if not numbers.fits:
            words = (nothing_fits_message(mc, topo, numbers, k, train, single=True),) + tuple(words)
        if detected:
            words = (f"No --hardware given: planned for this machine ({hw.description}).",) + tuple(words)
        words = ((length_note,) if length_note else ()) + tuple(words)
        return PlanResult(model=mc.name, topology=topo.label, hardware_detected=detected, mode=workload.mode,
                          objective=objective, evaluated=1, feasible=int(numbers.fits),
                          seconds=_time.perf_counter() - started, open_knobs=(), configs=(est,), advice=tuple(words))
    for attempt in ((False, True) if train and allow_lora and "lora_r" not in fixed else (False,)):
        attempt_candidates = candidates(attempt)
        if calibrating:  # probe what the whole space runs before ranking it, so every candidate is timed alike
            attempt_candidates = list(attempt_candidates)
            prepare(attempt_candidates)
        for candidate in attempt_candidates:
            for k in space.memory_savers(candidate, fixed, hw):  # stop at the first that fits
                numbers = evaluate_k(k)
                evaluated += 1
                if hw.kind == "tpu" and train:
                    _keep_strategy(tpu_best, numbers, k)
                if numbers.fits:
                    fitting.append((numbers, k))
                    break
            else:
                if smallest is None or numbers.short < smallest[0].short:
                    smallest = (numbers, k)
        if fitting:
            used_lora = attempt
            break
    if not fitting:
        if smallest is None:
            given = ", ".join(f"{name}={value}" for name, value in sorted(fixed.items()) if value is not None) or "none"
            raise TopologyError(f"No layout of {world} device(s) of {topo.label} works with the knobs given ({given}) for "
                                f"{mc.name} ({mc.heads} heads, {mc.layers} layers, batch {workload.batch}): loosen a "
                                "fixed knob, or change the batch or the number of devices.")
        other = other_ways_to_fit(mc, topo, smallest[1], smallest[0], evaluate_k, None if calibrating else evaluate_on)
        raise InvalidConfigError(nothing_fits_message(mc, topo, smallest[0], smallest[1], train)
                                 + (" " + other if other else ""))
    best = ranking.rank(fitting, objective, top)
    estimates = tuple(to_estimate(mc, k, topo, n, token_budget, price_per_device_hour) for n, k in best)
    extras: dict[str, Any] = {}
    if not train:
        k0 = best[0][1]
        cap = hw.memory_bytes.value - sum(o[1] for o in best[0][0].over)
        extras["largest_batch"] = largest_batch(mc, k0, cap)
        extras["longest_context"] = longest_context(mc, k0, cap)
    words = advice_lines(mc, topo, workload, fitting, best, used_lora, evaluate_fn=evaluate_k,
                         evaluate_on=None if calibrating else evaluate_on)
    if detected:
        words = (f"No --hardware given: planned for this machine ({hw.description}).",) + tuple(words)
    words = ((length_note,) if length_note else ()) + tuple(words)
    open_knobs = tuple(n for n in (space.TRAIN_OPEN if train else space.INFER_OPEN) if fixed.get(n if n != "micro_batch" else "grad_accum") is None)
    strategies = tuple(to_estimate(mc, tpu_best[name][1], topo, tpu_best[name][0], token_budget, price_per_device_hour)
                       for name in TPU_STRATEGIES if name in tpu_best)
    return PlanResult(
        model=mc.name, topology=topo.label, hardware_detected=detected, mode=workload.mode, objective=objective,
        evaluated=evaluated, feasible=len(fitting), seconds=_time.perf_counter() - started, open_knobs=open_knobs,
        configs=estimates, advice=tuple(words), extras=extras, strategies=strategies,
    )


# On a TPU slice plan also reports the best configuration of each way to shard (issue 20): memory per chip and
# step time of data parallel, FSDP (XLA SPMD, ZeRO-3-like) and tensor sharding (with or without FSDP beside it).
TPU_STRATEGIES = ("data-parallel", "fsdp", "tensor")


def strategy_of(knobs: Knobs | dict) -> str | None:
    """data-parallel | fsdp | tensor (tensor parallel, with or without FSDP beside it); None for other layouts."""
    get = knobs.get if isinstance(knobs, dict) else (lambda name, default=None: getattr(knobs, name, default))
    if get("pp", 1) > 1 or get("zero", 0) in (1, 2) or get("offload", "none") != "none":
        return None
    if get("tp", 1) > 1:
        return "tensor"
    return "fsdp" if (get("fsdp") or get("zero", 0) == 3) else "data-parallel"


def _keep_strategy(best: dict, numbers: Evaluation, k: Knobs) -> None:
    """Keep, per strategy, the fastest configuration that fits, else the one closest to fitting."""
    name = strategy_of(k)
    if name is None:
        return
    held = best.get(name)
    key = (not numbers.fits, numbers.short if not numbers.fits else numbers.step)
    if held is None or key < (not held[0].fits, held[0].short if not held[0].fits else held[0].step):
        best[name] = (numbers, k)
