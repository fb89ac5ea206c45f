"""The reference a trace is judged against: the same training step really run, with real weights.

On CPU the measure is the peak of live tensor-storage bytes, tracked by a TorchDispatchMode that is
independent of MemTracker; on CUDA it is `torch.cuda.max_memory_allocated()` above the bytes
allocated before the model existed. The step is built and driven by the trace's own code
(build_meta, make_optimizer, run_step_loop), so both sides run the same program.
"""

from __future__ import annotations

import weakref
from typing import Any

from perfscale.config.run_config import RunConfig
from perfscale.specs.model import ModelSpec


def _live_mode():
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    class LiveStorageBytes(TorchDispatchMode):
        """Sum of the bytes of every live storage seen (registered or created by an op); peak after each op."""

        def __init__(self) -> None:
            super().__init__()
            self.live: dict[int, int] = {}
            self.current = 0
            self.peak = 0

        def add(self, t) -> None:
            st = t.untyped_storage()
            key = st._cdata
            if key in self.live:
                return
            self.live[key] = st.nbytes()
            self.current += st.nbytes()
            weakref.finalize(st, self._free, key)

        def _free(self, key: int) -> None:
            self.current -= self.live.pop(key, 0)

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor) and t.device.type != "meta":
                    self.add(t)
            self.peak = max(self.peak, self.current)
            return out

    return LiveStorageBytes()


def _init_buffers(model: Any, device: str) -> None:
    """Recompute buffers that to_empty left uninitialised (rotary inv_freq, position ids)."""
    import torch

    for module in model.modules():
        if hasattr(module, "inv_freq") and hasattr(module, "rope_init_fn"):
            inv_freq, _ = module.rope_init_fn(module.config, device)
            module.inv_freq.copy_(inv_freq)
        for name in ("position_ids", "token_type_ids"):
            buf = getattr(module, name, None)
            if isinstance(buf, torch.Tensor):
                if name == "position_ids":
                    buf.copy_(torch.arange(buf.shape[-1], device=buf.device).expand_as(buf))
                else:
                    buf.zero_()


def real_model(spec: ModelSpec, config: RunConfig, device: str):
    """The run's model with real random weights on `device`, built like the trace builds it."""
    import torch

    from perfscale.trace.build import build_meta

    torch.manual_seed(0)
    model = build_meta(spec, config)
    model.to_empty(device=device)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
        for b in model.buffers():
            if b.is_floating_point():
                b.zero_()
    model.tie_weights()
    with torch.no_grad():
        _init_buffers(model, device)
    return model


class _Steps:
    step = ""

    def reset_mod_stats(self) -> None:
        pass

    def release_dead_branches(self, loss) -> None:  # noqa: ANN001 (untracked: nothing holds a dead branch)
        pass


def real_train_peak(spec: ModelSpec, config: RunConfig, device: str = "cpu") -> int:
    """Peak bytes of the real training step(s): live storages on CPU, max_memory_allocated on CUDA."""
    import torch

    from perfscale.trace.train_step import make_inputs, make_optimizer, run_step_loop

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        model = real_model(spec, config, device)
        opt = make_optimizer(config.optimizer, [p for p in model.parameters() if p.requires_grad], spec.name, device)
        inputs = make_inputs(model, spec, config.workload.batch, config.workload.seq, device)
        run_step_loop(model, opt, inputs, _Steps(), config, device)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
        del model, opt, inputs
        torch.cuda.empty_cache()
        return int(peak)
    model = real_model(spec, config, device)
    opt = make_optimizer(config.optimizer, [p for p in model.parameters() if p.requires_grad], spec.name, device)
    inputs = make_inputs(model, spec, config.workload.batch, config.workload.seq, device)
    mode = _live_mode()
    for t in [*model.parameters(), *model.buffers(), *inputs.values()]:
        mode.add(t)
    with mode:
        run_step_loop(model, opt, inputs, _Steps(), config, device)
    return int(mode.peak)


__all__ = ["real_model", "real_train_peak"]
