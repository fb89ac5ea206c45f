"""Trace training steps: forward, backward, optimizer step, on fake tensors, >= 2 iterations.

Iteration 1 creates the optimizer state; iteration 2 runs forward and backward with it alive,
which is where a real run peaks. With gradient accumulation each iteration runs `grad_accum`
micro-steps whose gradients persist between them.
"""

from __future__ import annotations

import contextlib
import inspect
from typing import Any

from perfscale.config.run_config import RunConfig
from perfscale.errors import InvalidConfigError, UnsupportedModelError
from perfscale.specs.model import ModelSpec
from perfscale.config.optimizer import build_optimizer, optimizer_choices_text
from perfscale.trace.build import build_fake, decoder_layers, fake_mode_for, new_fake_mode
from perfscale.trace.result import RawTrace
from perfscale.trace.tracker import RegionMemTracker, to_breakdown

ITERATIONS = 2
# What model code raises when it cannot run on fake tensors: data-dependent shapes or control flow,
# or a kernel whose meta implementation rejects the inputs (e.g. grouped_mm in fp32).
FAKE_FAILURES = (RuntimeError, NotImplementedError)


def check_train_config(config: RunConfig) -> None:
    """Knob combinations the trace cannot run, with the reason and what to do instead."""
    if config.optimizer == "adafactor" and config.lora:
        raise InvalidConfigError(
            "optimizer 'adafactor' with LoRA (a frozen base model): Adafactor's factored second moments only "
            "apply to the full weight matrices, which LoRA freezes; use optimizer adamw_torch_fused (adapters are small)."
        )
    if config.optimizer == "adamw_bnb_8bit":
        try:
            import bitsandbytes  # noqa: F401
        except ImportError as exc:
            raise InvalidConfigError(
                "optimizer 'adamw_bnb_8bit' (adamw-8bit) needs bitsandbytes, which is not importable here "
                f"({exc}). Install it (pip install bitsandbytes) or choose adamw_torch_fused / adamw_torch / sgd / adafactor."
            ) from exc
    if config.quantization != "none":
        raise InvalidConfigError(
            f"quantization {config.quantization!r}: the trace engine builds fake weights and cannot run "
            "bitsandbytes kernels; use `perfscale plan` (estimate engine) for QLoRA."
        )
    for name, value in (("tp", config.tp), ("pp", config.pp)):
        if value != 1:
            raise InvalidConfigError(f"{name}={value}: trace covers one device and FSDP (--fsdp); use `perfscale plan` for tensor/pipeline parallel.")
    if config.zero:
        raise InvalidConfigError("zero stages are traced as FSDP full shard: use --fsdp N instead of --zero, or `perfscale plan`.")
    if config.offload != "none":
        raise InvalidConfigError("offload: the trace engine tracks device memory without CPU offload; use `perfscale plan`.")
    if not config.fsdp_reshard and not config.fsdp:
        raise InvalidConfigError("--no-fsdp-reshard (FSDP2 reshard_after_forward=False) applies to FSDP: add --fsdp N, or drop it.")


def make_optimizer(name: str, params: list, model_name: str, program: str):
    """The optimizer the Trainer builds for `name` as it runs on the `program` device ("cuda" | "cpu"):
    adamw_torch is foreach on CUDA and the per-parameter loop on CPU (config/optimizer.py)."""
    if not params:
        raise InvalidConfigError(f"{model_name}: no trainable parameters (everything is frozen), so {name!r} has nothing to update.")
    try:
        return build_optimizer(name, params, program)
    except ValueError as exc:
        raise InvalidConfigError(f"optimizer {name!r} is not traced: choose one of {optimizer_choices_text()}.") from exc


def _forward_target(model: Any):
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base


def make_inputs(model: Any, spec: ModelSpec, batch: int, seq: int, device: str, ids: Any = None,
                generator: Any = None) -> dict[str, Any]:
    """The batch a Trainer step feeds this head (specs/heads.py), with the labels its loss expects.
    `ids`: the token ids to use (a DataLoader's batch, of the head's input shape) instead of random ones;
    `generator`: the torch generator the random labels are drawn with (CPU).

    causal / masked / seq2seq LM: token labels (b, s) (a masked LM's -100 positions change values, not
    shapes: its loss runs over every position); sequence classification: (b,) class ids, (b,) floats for
    one-label regression, (b, num_labels) floats for regression or multi-label classification
    (problem_type, as transformers picks it); token classification: (b, s) class ids; question
    answering: start and end positions (b,); multiple choice: (b, choices, s) inputs and (b,) choices.
    """
    import torch

    from perfscale.specs import heads

    task = spec.task
    shape = (batch, heads.MULTIPLE_CHOICES, seq) if task == "multiple-choice" else (batch, seq)
    ids = torch.randint(0, spec.vocab_size, shape, device=device) if ids is None else ids

    def randint(high: int, size: tuple) -> Any:
        return torch.randint(0, high, size, generator=generator).to(device)

    params = inspect.signature(_forward_target(model).forward).parameters
    inputs: dict[str, Any] = {"input_ids": ids}
    labels = None
    if task in heads.LM_TASKS:
        labels = ids
    elif task == "sequence-classification":
        n = spec.num_labels or 1
        problem = heads.problem_type(spec.config)
        if problem == "single_label_classification":
            labels = randint(n, (batch,))
        else:  # regression (b,) for one label, (b, n) otherwise; multi-label targets are floats too
            labels = torch.rand((batch,) if n == 1 else (batch, n), generator=generator,
                                dtype=torch.get_default_dtype()).to(device)
    elif task == "token-classification":
        labels = randint(spec.num_labels or 1, (batch, seq))
    elif task == "multiple-choice":
        labels = randint(heads.MULTIPLE_CHOICES, (batch,))
    elif task == "question-answering":
        inputs["start_positions"] = randint(seq, (batch,))
        inputs["end_positions"] = randint(seq, (batch,))
    if labels is not None and "labels" in params:
        inputs["labels"] = labels
    if getattr(spec, "is_encoder_decoder", False) and "decoder_input_ids" in params:
        inputs["decoder_input_ids"] = ids  # as long as the target; no shift needing decoder_start_token_id
    return inputs


def loss_from(out: Any):
    loss = getattr(out, "loss", None)
    if loss is None:  # a base model without a head: a scalar of its first output
        loss = out[0].mean()
    return loss


def loss_of(model: Any, inputs: dict[str, Any]):
    return loss_from(model(**inputs))


class _NoHandle:
    def remove(self) -> None:
        pass


def skip_frozen(tracker: Any, model: Any) -> None:
    """MemTracker hooks every parameter; frozen ones (a LoRA base) refuse hooks."""
    for p in model.parameters():
        if not p.requires_grad:
            tracker._param_to_grad_hook_handles[p] = (_NoHandle(), _NoHandle())


def autocast_context(config: RunConfig, device: str):
    import torch

    if not config.prec.mixed:
        return contextlib.nullcontext()
    return torch.autocast(device, dtype=config.prec.torch_autocast_dtype())


def run_step_loop(model, opt, inputs, tracker, config: RunConfig, device: str) -> None:
    accum = config.workload.grad_accum
    # Micro-steps after the second repeat it byte for byte (the gradients exist and accumulate in
    # place), so two of them give the step's peak: the trace's cost is bounded by the input's size,
    # not by --grad-accum's value (60,887 micro-steps ran for minutes).
    for it in range(ITERATIONS):
        for micro in range(min(accum, 2)):
            tracker.step = f"iter{it}/micro{micro}"
            if it or micro:
                tracker.reset_mod_stats()
            with autocast_context(config, device):
                if config.loop == "custom":
                    # `outputs = model(**batch)`: the previous step's outputs stay bound until this
                    # forward returns, and these through backward and the optimizer step
                    outputs = model(**inputs)
                    loss = loss_from(outputs)
                else:  # the Trainer: compute_loss returns the loss alone, the outputs are freed
                    loss = loss_of(model, inputs)
            tracker.release_dead_branches(loss)
            (loss / accum if accum > 1 else loss).backward()
            del loss
        opt.step()
        opt.zero_grad(set_to_none=True)


def regions_of(tracker: Any) -> dict[tuple, tuple[int, dict[str, int]]]:
    return {key: (total, to_breakdown(snap)) for key, (total, snap) in tracker.regions.items()}


def trace_train(spec: ModelSpec, config: RunConfig, device: str, emulation, num_layers: int | None = None,
                program: str | None = None) -> RawTrace:
    """One traced run of ITERATIONS optimizer steps. `emulation` is a context manager factory;
    `program`: the device whose program is traced (default: the fake tensors' device)."""

    check_train_config(config)
    wl = config.workload
    fake_mode = new_fake_mode()
    model = build_fake(spec, config, fake_mode, device, num_layers)
    with fake_mode_for(fake_mode, device):
        params = [p for p in model.parameters() if p.requires_grad]
        opt = make_optimizer(config.optimizer, params, spec.name, program or device)
        inputs = make_inputs(model, spec, wl.batch, wl.seq, device)
        tracker = RegionMemTracker(model, decoder_layers(model))
        skip_frozen(tracker, model)
        try:
            with emulation():
                tracker.track_external(model, opt, *inputs.values())  # inside: CUDA rounding applies
                with tracker:
                    run_step_loop(model, opt, inputs, tracker, config, device)
        except FAKE_FAILURES as exc:
            raise unsupported(spec, exc) from exc
    return RawTrace(regions=regions_of(tracker), module_peaks=dict(tracker.module_peaks), num_layers=num_layers)


def unsupported(spec: ModelSpec, exc: Exception) -> UnsupportedModelError:
    first = (str(exc).strip().splitlines() or [""])[0][:200]
    return UnsupportedModelError(
        f"{spec.name} ({spec.architecture}) cannot run under fake tensors with this configuration: its code needs "
        f"tensor values (data-dependent shapes or control flow, e.g. MoE routing) or a kernel that fake tensors "
        f"cannot run ({type(exc).__name__}: {first}). "
        "Use the estimate engine instead: `perfscale plan` with the same flags."
    )


__all__ = ["ITERATIONS", "check_train_config", "make_optimizer", "trace_train", "unsupported"]
