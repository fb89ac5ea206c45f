"""`debug overflow`: run real steps with hooks on every module and name where values leave the dtype's range.

transformers' `DebugUnderflowOverflow` (TrainingArguments(debug="underflow_overflow")) prints the last
21 forward frames before the first inf/NaN and leaves the diagnosis to the reader. This runs the same
kind of hooks (forward, and backward too) and returns a verdict: the first module, in execution order,
where a value becomes inf/NaN or leaves its dtype's range, forward or backward, the frames leading to
it, how close every module comes to the range (headroom in powers of two), how much of the gradient
would flush to zero in fp16 without loss scaling, and what would fix it. Fixes for a forward overflow
are checked, not guessed: the same step is run again from the same weights with the module kept in
fp32, and with bf16 instead of fp16, and the result of each says whether the overflow went away.

Training steps follow torch.amp.GradScaler's rules (the loss is multiplied by the loss scale before
backward; a step whose gradients are not finite is skipped, the others are unscaled and applied), so
what is recorded is what a Trainer step at that precision computes. The run stops after the step in
which the first bad value appears (as DebugUnderflowOverflow aborts), so what follows is not garbage.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perfscale.config.precision import TRAIN_PRECISIONS, Precision
from perfscale.debug.data_file import read_data_file
from perfscale.debug.hooks import Frame, Recorder
from perfscale.debug.overflow_verdict import _first, _first_dict, _fixes, _grad_underflow, _headroom, _leading, _pow2, _records, _verdict
from perfscale.debug.quiet import quiet_transformers
from perfscale.errors import InvalidConfigError, UnsupportedModelError

DEFAULT_MODEL = "perfscale-tiny-llama"
# torch.amp.GradScaler's default init_scale (2^16): what a Trainer with fp16=True starts from.
GRADSCALER_INIT = 2.0**16
MAX_STEPS = 1000
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
MAX_TOKENS = 1 << 16  # batch x seq per step: a debugging run, not a training job
# Warnings torch raises for full backward hooks on modules that return ModelOutput dicts or whose
# inputs need no gradient: expected here, kept off the user's terminal.
_HOOK_WARNINGS = ("For backward hooks to be called", "Full backward hook is firing")


@dataclass
class OverflowResult:
    """What `debug_overflow` found. `first` is None when no value left its range."""

    model: str
    precision: str
    mode: str  # train | infer
    device: str
    batch: int
    seq: int
    steps_asked: int
    steps_run: int
    loss_scale: float
    verdict: str
    first: dict[str, Any] | None
    frames: list[dict[str, Any]]  # the frames leading to `first` (oldest first), DebugUnderflowOverflow-style
    headroom: list[dict[str, Any]]  # modules closest to their range, closest first
    grad_underflow: dict[str, Any] | None
    fixes: list[str]
    fix_checks: list[dict[str, Any]]
    records: list[dict[str, Any]]  # per step, phase and module: abs-max / abs-min non-zero / inf / NaN
    skipped_steps: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def overflow(self) -> bool:
        return self.first is not None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "debug-overflow", "overflow": self.overflow, **{k: getattr(self, k) for k in self.__dataclass_fields__}}


# ----- inputs -----
def _check_args(precision: str, steps: int, batch: int, seq: int, loss_scale: float | None, frames: int, seed: int) -> Precision:
    if precision not in TRAIN_PRECISIONS:
        raise InvalidConfigError(f"precision {precision!r} is not one of: {', '.join(TRAIN_PRECISIONS)}. "
                                 "Use e.g. --precision fp16-mixed (the one that overflows most).")
    problems = []
    for name, value, low, high in (("steps", steps, 1, MAX_STEPS), ("batch", batch, 1, MAX_TOKENS),
                                   ("seq", seq, 2, MAX_TOKENS), ("frames", frames, 1, 10_000),
                                   ("seed", seed, 0, 2**63 - 1)):
        if not isinstance(value, int) or not low <= value <= high:
            problems.append(f"--{name} {value!r} must be an integer in {low}..{high}")
    if isinstance(batch, int) and isinstance(seq, int) and batch * seq > MAX_TOKENS:
        problems.append(f"--batch x --seq = {batch * seq} tokens per step is more than {MAX_TOKENS} for a debugging run")
    if loss_scale is not None and not (isinstance(loss_scale, (int, float)) and math.isfinite(loss_scale) and 0 < loss_scale <= 2.0**64):
        problems.append(f"--loss-scale {loss_scale!r} must be a finite number in (0, 2^64] (GradScaler starts at 65536)")
    if problems:
        raise InvalidConfigError("; ".join(problems) + ".")
    return Precision.of(precision)


def load_token_ids(path: str | Path, vocab_size: int, tokenizer_dir: str | None = None) -> list[int]:
    """Token ids from a --data file (debug/data_file.py: JSON token ids, or text tokenized with the model's
    own tokenizer when its folder has one), as one stream, cut into batches."""
    data = read_data_file(path, tokenizer_dir)
    if data.rows is None:
        raise InvalidConfigError(f"--data {data.path!r} is text, but the model has no tokenizer in its folder. "
                                 "Give token ids as a .json file ([[1, 2, 3], ...]), or a model folder with a tokenizer.")
    ids = [i for row in data.rows for i in row]
    if not ids:
        raise InvalidConfigError(f"--data {data.path!r} holds no tokens. Give at least one line of text or one token id.")
    bad = [i for i in ids if not 0 <= i < vocab_size]
    if bad:
        raise InvalidConfigError(f"--data {data.path!r}: token id {bad[0]} is outside the model's vocabulary 0..{vocab_size - 1}.")
    return ids


def _batches(ids: list[int] | None, vocab: int, batch: int, seq: int, steps: int, seed: int):
    """One (batch, seq) tensor of token ids per step: the data stream cut in order (repeated when it
    is shorter), or ids drawn with a fixed seed."""
    import torch

    n = batch * seq
    if ids is None:
        gen = torch.Generator().manual_seed(seed)
        return [torch.randint(min(3, vocab - 1), vocab, (batch, seq), generator=gen) for _ in range(steps)]
    stream = torch.tensor(ids, dtype=torch.long)
    reps = -(-n * steps // len(stream))
    stream = stream.repeat(reps)[: n * steps]
    return list(stream.view(steps, batch, seq))


# ----- the model -----
def _resolve_model(model, precision: Precision, device: str, seed: int):
    """(name, module, vocab size, folder) for a model name/folder or a torch module given as is."""
    import torch

    if isinstance(model, torch.nn.Module):
        if isinstance(model, torch.jit.ScriptModule):
            Recorder(model)  # raises the 'cannot be hooked' error
        vocab = getattr(getattr(model, "config", None), "vocab_size", None)
        if not vocab:
            raise UnsupportedModelError(f"{type(model).__name__} has no config.vocab_size: debug overflow drives a language "
                                        "model (input_ids, labels). Pass a transformers model.")
        model.to(device=device, dtype=precision.torch_weight_dtype())
        return type(model).__name__, model, int(vocab), None
    if not isinstance(model, str) or not model.strip():
        raise InvalidConfigError(f"--model {model!r} must be a catalogue name, a local folder or a hub id. "
                                 "List the catalogue with `perfscale models`.")
    from perfscale.measure.scenarios.common import build_lm, lm_auto_class
    from perfscale.specs import load_model_spec

    spec = load_model_spec(model)
    # a local model's location is its config.json: its weights, when saved, sit next to it
    folder = spec.location if os.path.isdir(spec.location) else os.path.dirname(spec.location)
    torch.manual_seed(seed)
    if spec.source == "local" and any(os.path.exists(os.path.join(folder, f)) for f in _WEIGHT_FILES):
        import transformers

        auto = getattr(transformers, lm_auto_class(spec, "train"))
        try:
            with quiet_transformers():
                module = auto.from_pretrained(folder, dtype=precision.torch_weight_dtype()).to(device)
        except (OSError, ValueError) as exc:
            raise UnsupportedModelError(f"Cannot load the weights of {folder!r}: {exc}") from exc
    else:
        with quiet_transformers():
            spec, module = build_lm(model, "train", precision, "eager", device, seed)
    return spec.name, module, spec.vocab_size, folder


def _device(device: str) -> str:
    from perfscale.measure.scenarios.common import resolve_device

    if device not in ("auto", "cpu", "cuda"):
        raise InvalidConfigError(f"--device {device!r} is not one of: auto, cpu, cuda.")
    return resolve_device(device)


# ----- one run -----
def _run(module, precision: Precision, device: str, batches, *, infer: bool, loss_scale: float, stop_at_first: bool,
         keep_fp32: str | None = None):
    """Run the steps under a Recorder; returns (recorder, steps run, skipped steps)."""
    import torch

    from perfscale.config.optimizer import build_optimizer

    amp = precision.torch_autocast_dtype()
    compute = precision.compute_dtype if precision.mixed else None
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = None if infer else build_optimizer("adamw_torch", params, device)
    restore = _keep_in_fp32(module, keep_fp32, device) if keep_fp32 is not None else None
    module.train(not infer)
    skipped, steps_run = [], 0
    try:
        with Recorder(module, compute_dtype=compute, loss_scale=1.0 if infer else loss_scale, backward=not infer) as rec, \
                warnings.catch_warnings():
            for message in _HOOK_WARNINGS:
                warnings.filterwarnings("ignore", message=message)
            for step, ids in enumerate(batches):
                rec.step = step
                ids = ids.to(device)
                grad = contextlib.nullcontext() if not infer else torch.no_grad()
                cast = torch.autocast(device, dtype=amp) if amp is not None else contextlib.nullcontext()
                with grad, cast:
                    out = module(input_ids=ids, labels=None if infer else ids)
                if not infer:
                    (out.loss.float() * loss_scale).backward()
                    grads = [p.grad for p in params if p.grad is not None]
                    if all(bool(torch.isfinite(g).all()) for g in grads):
                        for g in grads:
                            g.div_(loss_scale)
                        optimizer.step()
                        rec.check_parameters()  # an update can leave a weight inf/NaN (fp16 Adam's eps is 0)
                    else:
                        skipped.append(step)  # GradScaler skips a step with inf/NaN gradients
                    optimizer.zero_grad(set_to_none=True)
                steps_run += 1
                if stop_at_first and any(f.first_bad for f in rec.frames if f.step == step):
                    break
    finally:
        if restore:
            restore()
    return rec, steps_run, skipped


def _keep_in_fp32(root, name: str, device: str):
    """Run submodule `name` in fp32 outside autocast (its parameters and floating inputs cast up), the way
    transformers' `_keep_in_fp32_modules` keeps a module out of 16-bit; returns the undo."""
    import torch

    target = root.get_submodule(name) if name else root
    original_forward, original_dtype = target.forward, next(target.parameters(), torch.empty(0)).dtype
    target.float()

    def forward(*args, **kwargs):
        up = lambda v: v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() else v  # noqa: E731
        with torch.autocast(device, enabled=False):
            out = original_forward(*[up(a) for a in args], **{k: up(v) for k, v in kwargs.items()})
        if original_dtype == torch.float32:
            return out  # autocast casts what follows as it needs
        # pure 16-bit weights: what follows expects its own dtype back (values beyond its range become inf there)
        down = lambda v: v.to(original_dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v  # noqa: E731
        return down(out) if isinstance(out, torch.Tensor) else type(out)(down(v) for v in out) if isinstance(out, tuple) else out

    target.forward = forward

    def undo() -> None:
        del target.forward
        target.to(original_dtype)  # deleting the instance attribute brings the class's forward back

    return undo


def debug_overflow(
    model: Any = DEFAULT_MODEL, *, precision: str = "fp16-mixed", steps: int = 2, batch: int = 2, seq: int = 32,
    infer: bool = False, data: str | Path | None = None, loss_scale: float | None = None, device: str = "auto",
    seed: int = 0, frames: int = 21, check_fixes: bool = True,
) -> OverflowResult:
    """Run `steps` training steps (or forward passes with `infer`) of `model` at `precision` with hooks on
    every module, and say where values first leave their dtype's range, how close the others come, and
    what would fix it.

    `model`: a catalogue name, local folder (its weights are loaded) or hub id, or a `torch.nn.Module`
    language model (cast in place to the precision's weight dtype). `loss_scale`: the factor the loss is
    multiplied by before backward; default GradScaler's 2^16 under fp16-mixed, else 1. `frames`: how
    many frames before the first bad value to keep (DebugUnderflowOverflow keeps 21). `check_fixes`:
    re-run a forward overflow's step from the same weights with the module in fp32, and with bf16.
    """
    prec = _check_args(precision, steps, batch, seq, loss_scale, frames, seed)
    scale = float(loss_scale) if loss_scale is not None else (GRADSCALER_INIT if prec.loss_scaling else 1.0)
    dev = _device(device)
    name, module, vocab, folder = _resolve_model(model, prec, dev, seed)
    max_positions = getattr(getattr(module, "config", None), "max_position_embeddings", None)
    if isinstance(max_positions, int) and seq > max_positions:
        raise InvalidConfigError(f"--seq {seq} is longer than {name}'s max_position_embeddings {max_positions}: use --seq {max_positions} or less.")
    ids = load_token_ids(data, vocab, folder) if data is not None else None
    batches = _batches(ids, vocab, batch, seq, steps, seed)
    initial = copy.deepcopy(module.state_dict()) if check_fixes else None

    rec, steps_run, skipped = _run(module, prec, dev, batches, infer=infer, loss_scale=scale, stop_at_first=True)
    first = _first(rec.frames)
    headroom = _headroom(rec.frames, against_fp16=prec.compute_dtype != "fp16")
    underflow = None if infer else _grad_underflow(rec.frames, scale)
    notes = []
    if data is None:
        notes.append(f"inputs: token ids drawn with seed {seed} (give real data with --data)")
    if underflow and prec.compute_dtype == "fp16" and scale == 1.0:
        notes.append("the gradients were computed in fp16 without loss scaling: values that flushed to zero read as zeros "
                     "(fraction_zero_as_computed); run with --loss-scale 65536 to see them")
    fix_checks: list[dict[str, Any]] = []
    if first is not None and check_fixes and prec.compute_dtype == "fp16":
        fix_checks = _check_fixes(module, initial, prec, dev, batches[: first.step + 1], infer, scale, first)
    fixes = _fixes(prec, first, headroom, underflow, scale, infer, fix_checks)
    verdict = _verdict(prec, first, headroom, underflow, scale, infer, steps_run)
    return OverflowResult(
        model=name, precision=prec.name, mode="infer" if infer else "train", device=dev, batch=batch, seq=seq,
        steps_asked=steps, steps_run=steps_run, loss_scale=scale, verdict=verdict,
        first=_first_dict(first) if first else None,
        frames=[f.to_dict() for f in _leading(rec.frames, first, frames)] if first else [],
        headroom=headroom, grad_underflow=underflow, fixes=fixes, fix_checks=fix_checks,
        records=_records(rec.frames), skipped_steps=skipped, notes=notes,
    )


def _check_fixes(module, initial, prec: Precision, device: str, batches, infer: bool, scale: float, first: Frame):
    """Re-run the failing step(s) from the same initial weights with each candidate fix."""
    checks = []
    bf16 = prec.in_dtype("bf16")
    candidates = [(f"--precision {bf16.name} instead of {prec.name}", bf16, None, 1.0)]
    if first.phase == "forward":
        candidates.insert(0, (f"keep {first.module or '(model)'} in fp32", prec, first.module, scale))
    elif scale > 1:
        # GradScaler's answer to an inf gradient: halve the scale and retry the step (here from the same weights)
        scales = [scale / 2**k for k in range(1, 17) if scale / 2**k >= 1] or [1.0]
        candidates[:0] = [(f"--loss-scale {_pow2(s)}", prec, None, s) for s in scales]
    found_scale = False
    for label, p, keep, s in candidates:
        if found_scale and label.startswith("--loss-scale"):
            continue
        module.load_state_dict(initial)
        module.to(p.torch_weight_dtype())
        try:
            rec, _, _ = _run(module, p, device, batches, infer=infer, loss_scale=s, stop_at_first=True, keep_fp32=keep)
        except Exception as exc:  # noqa: BLE001 - a fix that cannot run is reported, not raised
            checks.append({"fix": label, "ok": False, "result": f"could not run: {type(exc).__name__}: {exc}"})
            continue
        again = _first(rec.frames)
        if again is None:
            found_scale = found_scale or label.startswith("--loss-scale")
            checks.append({"fix": label, "ok": True, "result": "no value left its range", "loss_scale": s})
        else:
            where = f"{again.phase} {again.module or '(model)'} ({again.first_bad.kind})"
            checks.append({"fix": label, "ok": False, "result": f"still overflows: first at {where}", "loss_scale": s})
    module.load_state_dict(initial)
    module.to(prec.torch_weight_dtype())
    return checks


__all__ = ["DEFAULT_MODEL", "GRADSCALER_INIT", "OverflowResult", "debug_overflow", "load_token_ids"]
