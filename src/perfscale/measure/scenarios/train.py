"""`train`: full optimizer steps (grad_accum x [forward, loss, backward], optimizer step, zero_grad).

Inputs are token ids drawn with a fixed seed (a timing benchmark of random-weight models does not
depend on the text), served by a torch DataLoader so that workers and pin_memory are measured too.
"""

from __future__ import annotations

import contextlib

from perfscale.config import optimizer as optimizers
from perfscale.config.deepspeed import zero_communication
from perfscale.errors import UnsupportedModelError
from perfscale.measure.scenarios.common import Scenario, build_lm, peak_dtype, train_flops
from perfscale.specs import heads
from perfscale.trace.train_step import make_inputs


def build_optimizer(name: str, params, device: str):
    """The torch optimizer a bench step uses: the one the Trainer builds for `name` on `device`
    (config/optimizer.py; also timed alone by measure/cpu_probe.py)."""
    try:
        return optimizers.build_optimizer(name, params, device)
    except ImportError as exc:
        raise UnsupportedModelError(
            f"optimizer {name} needs bitsandbytes (pip install bitsandbytes; CUDA only): use adamw_torch_fused ({exc})"
        ) from exc
    except ValueError as exc:
        raise UnsupportedModelError(f"optimizer {name!r} is not measurable: {exc}") from exc


def setup(config, device: str) -> Scenario:
    import torch

    run = config.run
    wl = run.workload
    if run.quantization != "none":
        raise UnsupportedModelError(
            f"QLoRA (quantization {run.quantization}) needs bitsandbytes on CUDA; bench train measures full-precision bases: use quantization none"
        )
    spec, model = build_lm(config.model, "train", run.prec, run.attn, device, config.seed)
    model.config.use_cache = False
    if run.checkpointing:
        model.gradient_checkpointing_enable()
    if run.lora:
        from peft import LoraConfig, get_peft_model

        targets = list(run.lora_targets) or None
        model = get_peft_model(model, LoraConfig(r=run.lora_r, lora_alpha=2 * run.lora_r, target_modules=targets))
    model.train()
    rank = 0
    notes = []
    accelerator = None  # strategy deepspeed: accelerate's Accelerator owns backward and the optimizer step
    if config.distributed:  # under torchrun: the process group is up (measure/distributed.py)
        import torch.distributed as dist

        rank = dist.get_rank()
        if config.strategy == "deepspeed":
            params = [p for p in model.parameters() if p.requires_grad]
            optimizer = build_optimizer(run.optimizer, params, device)
            model, optimizer, accelerator = prepare_deepspeed(model, optimizer, config, dist.get_world_size())
            notes.append(f"DeepSpeed ZeRO stage {run.zero} through accelerate "
                         f"(deepspeed {_version('deepspeed')}, accelerate {_version('accelerate')})")
        else:
            model, wrap_notes = wrap_for_strategy(model, config, device)
            notes += wrap_notes
    if accelerator is None:
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = build_optimizer(run.optimizer, params, device)

    vocab = spec.vocab_size
    gen = torch.Generator().manual_seed(config.seed + rank)  # each rank its own batches, as a DistributedSampler gives
    n_batches = max(4, wl.grad_accum)
    choices = (heads.MULTIPLE_CHOICES,) if spec.task == "multiple-choice" else ()
    data = torch.randint(3, vocab, (n_batches * wl.batch, *choices, wl.seq), generator=gen)
    # A head other than a language model's (classification, QA, multiple choice) gets the labels its loss
    # expects (trace/train_step.make_inputs, what trace measures too); a language model learns its inputs.
    labels_gen = torch.Generator().manual_seed(config.seed + 1000 + rank)
    lm = spec.task in (*heads.LM_TASKS, heads.BASE)
    loader = torch.utils.data.DataLoader(
        data, batch_size=wl.batch, shuffle=False, num_workers=config.dataloader_workers,
        pin_memory=config.pin_memory and device == "cuda", persistent_workers=config.dataloader_workers > 0, drop_last=True,
    )
    batches = _cycle(loader)

    forward = torch.compile(model) if run.compile else model
    amp_dtype = run.prec.torch_autocast_dtype()  # None without autocast
    scaler = torch.amp.GradScaler(device) if run.prec.loss_scaling and device == "cuda" else None

    def autocast():
        return torch.autocast(device, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()

    last_loss = []  # the optimizer step's training loss (summed over micro-steps), read after the step

    def step() -> None:
        total = 0.0
        for micro in range(wl.grad_accum):
            ids = next(batches).to(device, non_blocking=True)
            inputs = {"input_ids": ids, "labels": ids} if lm else \
                make_inputs(model, spec, wl.batch, wl.seq, device, ids=ids, generator=labels_gen)
            if accelerator is not None:
                # DeepSpeed divides by its gradient_accumulation_steps itself and steps at the boundary
                # (engine.backward + engine.step inside accelerator.backward), as the Trainer runs it.
                loss = forward(**inputs).loss
                accelerator.backward(loss)
                total = total + loss.detach() / wl.grad_accum
                continue
            with no_sync(micro < wl.grad_accum - 1), autocast():
                loss = forward(**inputs).loss / wl.grad_accum
            if scaler is not None:
                scaler.scale(loss).backward()
            else:
                loss.backward()
            total = total + loss.detach()
        if accelerator is None:  # (DeepSpeed's engine stepped and zeroed its gradients at the boundary)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        last_loss[:] = [total]

    def no_sync(skip: bool):
        """Gradient accumulation without a reduction on all but the last micro-step (what the Trainer and
        accelerate do): DDP's no_sync(), FSDP2's set_requires_gradient_sync(False)."""
        if not skip or not config.distributed:
            return contextlib.nullcontext()
        if config.strategy == "ddp":
            return model.no_sync()
        return _fsdp_no_sync(model)

    tokens = wl.batch * wl.seq * wl.grad_accum
    if run.checkpointing:
        notes.append("MFU counts model FLOPs: checkpointing's recomputed forward is not counted")
    return Scenario(
        step=step, samples_per_iter=wl.batch * wl.grad_accum, tokens_per_iter=tokens,
        flops_per_iter=train_flops(spec, tokens, wl.seq, run.lora), peak_dtype=peak_dtype(run.prec, device),
        setup_metrics={"trainable_params": sum(p.numel() for p in params), "model": spec.name}, notes=notes,
        iteration_metrics=lambda: {"loss": float(last_loss[0])},  # after the timed step: its .item() is not timed
    )


def transformer_blocks(model) -> list:
    """The decoder/encoder layers FSDP shards one by one: modules whose class is in the model's
    `_no_split_modules` (accelerate's TRANSFORMER_BASED_WRAP policy reads the same list)."""
    names = set()
    for module in model.modules():
        names.update(getattr(module, "_no_split_modules", None) or ())
    return [m for m in model.modules() if type(m).__name__ in names]


def fsdp_kwargs(run, device: str) -> tuple[dict, list[str]]:
    """fully_shard's keyword arguments for a RunConfig, and what the result should say about them.

    The knobs are RunConfig's, meaning what the trace (trace/fsdp.py) and the estimate mean by them:
    a "-mixed" precision is accelerate's FSDP2 setup, MixedPrecisionPolicy(param_dtype=16-bit,
    reduce_dtype=fp32) over the fp32 sharded parameters, with the step's autocast on top; offload
    optimizer+params is CPUOffloadPolicy (parameters, gradients and the optimizer step on the CPU);
    fsdp_reshard is reshard_after_forward."""
    import torch
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy

    notes: list[str] = []
    kwargs: dict = {"reshard_after_forward": run.fsdp_reshard}
    if run.prec.mixed:
        kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=run.prec.torch_autocast_dtype(), reduce_dtype=torch.float32)
    if run.offload == "optimizer+params":  # BenchConfig refuses "optimizer" alone: FSDP2 has no such policy
        # pin_memory needs an accelerator; on a CPU device the offload moves nothing (the policy's cost only).
        kwargs["offload_policy"] = CPUOffloadPolicy(pin_memory=device == "cuda")
        if device == "cpu":
            notes.append("offload optimizer+params on CPU: parameters already live in CPU memory; this measures the policy's overhead only")
    return kwargs, notes


def wrap_for_strategy(model, config, device: str):
    """DDP(model), or FSDP2: fully_shard on every transformer block, then on the root (DeepSpeed:
    prepare_deepspeed, which needs the optimizer too)."""
    import torch

    notes: list[str] = []
    if config.strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [torch.cuda.current_device()] if device == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids), notes
    from torch.distributed.fsdp import fully_shard

    kwargs, notes = fsdp_kwargs(config.run, device)
    blocks = transformer_blocks(model)
    if not blocks:
        notes.append("no transformer blocks found (_no_split_modules): the whole model is one FSDP unit")
    for block in blocks:
        fully_shard(block, **kwargs)
    # The root keeps FSDP2's default (None: the root is not resharded after forward, its backward starts at once);
    # an explicit True would reshard it and gather it again (trace/fsdp.py does the same).
    fully_shard(model, **{k: v for k, v in kwargs.items() if k != "reshard_after_forward"})
    return model, notes


def deepspeed_config(config, world_size: int) -> dict:
    """The DeepSpeed config of a bench step: ZeRO stage `run.zero`, the bench's micro-batch and
    accumulation, DeepSpeed's own bf16/fp16 for a mixed precision (fp32 master weights in the optimizer,
    its loss scaler for fp16), the client optimizer the Trainer would build for the `optim` name."""
    run = config.run
    wl = run.workload
    ds: dict = {
        "train_micro_batch_size_per_gpu": wl.batch, "gradient_accumulation_steps": wl.grad_accum,
        "train_batch_size": wl.batch * wl.grad_accum * world_size,
        # the buckets the plan counts and the emitted config sets (config/deepspeed.py; accelerate fills `auto`)
        "zero_optimization": {"stage": run.zero} | zero_communication(run.zero), "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9, "wall_clock_breakdown": False,
    }
    autocast = run.prec.torch_autocast_dtype()
    if autocast is not None:
        import torch

        ds["bf16" if autocast == torch.bfloat16 else "fp16"] = {"enabled": True}
    return ds


def prepare_deepspeed(model, optimizer, config, world_size: int):
    """accelerate's Accelerator with a DeepSpeedPlugin over the process group torchrun started
    (deepspeed.init_distributed reuses it): (engine, optimizer wrapper, accelerator). BenchConfig refused the
    strategy already where deepspeed is not installed (the worker rebuilds and so re-checks it)."""
    from accelerate import Accelerator
    from accelerate.utils import DeepSpeedPlugin

    accelerator = Accelerator(deepspeed_plugin=DeepSpeedPlugin(hf_ds_config=deepspeed_config(config, world_size)))
    model, optimizer = accelerator.prepare(model, optimizer)
    return model, optimizer, accelerator


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "?"


@contextlib.contextmanager
def _fsdp_no_sync(model):
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def _cycle(loader):
    while True:  # re-iterate the loader (itertools.cycle would cache batches and skip the loader)
        yield from loader
