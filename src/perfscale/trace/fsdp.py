"""Per-rank memory of FSDP2 (`fully_shard`) at world size N, traced in one process.

A fake process group (torch.testing's FakeStore, backend "fake") lets `fully_shard` shard over N
ranks while only rank 0 runs; collectives return fake tensors of the right size. Each repeated
layer is its own FSDP unit (the usual auto-wrap), the root holds embeddings and head.
Mixed precision follows accelerate's FSDP2 setup: `MixedPrecisionPolicy(param_dtype=16-bit,
reduce_dtype=fp32)` plus autocast; RunConfig.fsdp_reshard is `reshard_after_forward`. `FSDPMemTracker` categorises sharded/unsharded parameters and
gradients and the all-gather / reduce-scatter buffers.
"""

from __future__ import annotations

import contextlib

from perfscale.config.run_config import RunConfig
from perfscale.errors import InvalidConfigError
from perfscale.specs.model import ModelSpec
from perfscale.trace.build import build_fake, decoder_layers, fake_mode_for, new_fake_mode
from perfscale.trace.result import RawTrace
from perfscale.trace.train_step import (
    check_train_config,
    make_inputs,
    make_optimizer,
    FAKE_FAILURES,
    regions_of,
    run_step_loop,
    unsupported,
)

MAX_WORLD = 64


@contextlib.contextmanager
def fake_process_group(world_size: int):
    import torch.distributed as dist
    from torch.testing._internal.distributed.fake_pg import FakeStore

    if dist.is_initialized():
        raise InvalidConfigError("trace --fsdp needs its own fake process group, but torch.distributed is already initialised in this process.")
    dist.init_process_group("fake", rank=0, world_size=world_size, store=FakeStore())
    try:
        yield
    finally:
        dist.destroy_process_group()


def trace_fsdp(spec: ModelSpec, config: RunConfig, device: str, emulation, num_layers: int | None = None,
               program: str | None = None) -> RawTrace:
    """The FSDP2 step per rank; `program`: the device whose program is traced (default: `device`)."""
    from torch.distributed.device_mesh import init_device_mesh

    check_train_config(config)
    n = config.fsdp
    if not 1 <= n <= MAX_WORLD:
        raise InvalidConfigError(f"fsdp {n}: trace covers FSDP world sizes 1..{MAX_WORLD}; use `perfscale plan` beyond.")
    if config.lora:
        raise InvalidConfigError("LoRA with --fsdp is not traced (frozen sharded bases); trace LoRA on one device or use `perfscale plan`.")
    with fake_process_group(n):
        mesh = init_device_mesh(device, (n,))  # outside the fake mode: it reads real rank tensors
        return _trace_sharded(spec, config, device, emulation, num_layers, mesh, program or device)


def _warm_up_sharding_propagation(params: list, config: RunConfig, spec: ModelSpec, program: str) -> None:
    """One untracked optimizer step on zero gradients with a throwaway optimizer.

    DTensor infers each op's output sharding the first time it sees the op, by running it on
    fake tensors of the *global* shape in our fake mode, which the tracker would count as memory
    (measured here: a tiny Llama's first FSDP optimizer step read 5.8x its true peak, later ones
    exact). Warming DTensor's cache first keeps those shape computations out of the trace.
    """
    import torch

    with torch.no_grad():
        for p in params:
            p.grad = torch.zeros_like(p)
    warm = make_optimizer(config.optimizer, params, spec.name, program)
    warm.step()
    del warm
    for p in params:
        p.grad = None


def _trace_sharded(spec: ModelSpec, config: RunConfig, device: str, emulation, num_layers, mesh, program: str) -> RawTrace:
    import torch
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    from perfscale.trace.tracker import region_fsdp_tracker

    n = config.fsdp
    wl = config.workload
    fake_mode = new_fake_mode()
    model = build_fake(spec, config, fake_mode, device, num_layers)
    with fake_mode_for(fake_mode, device):
        layers = decoder_layers(model)
        mp = MixedPrecisionPolicy()
        if config.prec.mixed:
            mp = MixedPrecisionPolicy(param_dtype=config.prec.torch_autocast_dtype(), reduce_dtype=torch.float32)
        reshard = config.fsdp_reshard  # reshard_after_forward of the layers
        for layer in layers:
            fully_shard(layer, mesh=mesh, mp_policy=mp, reshard_after_forward=reshard)
        # The root keeps fully_shard's default (None: not resharded after forward); an explicit True would reshard it.
        fully_shard(model, mesh=mesh, mp_policy=mp)
        params = [p for p in model.parameters() if p.requires_grad]
        _warm_up_sharding_propagation(params, config, spec, program)
        opt = make_optimizer(config.optimizer, params, spec.name, program)
        inputs = make_inputs(model, spec, wl.batch, wl.seq, device)
        tracker = region_fsdp_tracker(model, opt, layers)
        try:
            with emulation():
                tracker.track_inputs(tuple(inputs.values()))  # inside: CUDA rounding applies
                with tracker:
                    run_step_loop(model, opt, inputs, tracker, config, device)
        except FAKE_FAILURES as exc:
            raise unsupported(spec, exc) from exc
    raw = RawTrace(regions=regions_of(tracker), module_peaks=dict(tracker.module_peaks), num_layers=num_layers)
    raw.notes.append(f"FSDP2 fully_shard per layer + root, world size {n}, fake process group; per-rank bytes"
                     + ("" if config.fsdp_reshard else "; reshard_after_forward=False"))
    return raw


__all__ = ["MAX_WORLD", "fake_process_group", "trace_fsdp"]
