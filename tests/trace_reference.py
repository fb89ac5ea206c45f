"""Reference for the trace tests: the same training step really run on the CPU, with the peak of
live tensor storage bytes measured by an independent TorchDispatchMode (not MemTracker)."""

from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class LiveStorageBytes(TorchDispatchMode):
    """Sum of the bytes of every live storage seen (pre-registered or created by an op); peak after each op."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.current = 0
        self.peak = 0

    def add(self, t: torch.Tensor) -> None:
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


def real_train_peak(spec, config) -> int:
    """Peak live bytes of ITERATIONS real steps, built and driven exactly as trace_train drives fake ones."""
    from perfscale.trace.build import build_meta
    from perfscale.trace.train_step import make_inputs, make_optimizer, run_step_loop

    torch.manual_seed(0)
    model = build_meta(spec, config)
    model.to_empty(device="cpu")
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
        for name, b in model.named_buffers():
            if b.is_floating_point():
                b.zero_()
    model.tie_weights()
    _fix_buffers(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(config.optimizer, params, spec.name)
    inputs = make_inputs(model, spec, config.workload.batch, config.workload.seq, "cpu")
    mode = LiveStorageBytes()
    for p in model.parameters():
        mode.add(p)
    for b in model.buffers():
        mode.add(b)
    for t in inputs.values():
        mode.add(t)

    class _Steps:
        step = ""

        def reset_mod_stats(self):
            pass

    with mode:
        run_step_loop(model, opt, inputs, _Steps(), config, "cpu")
    return mode.peak


def _fix_buffers(model) -> None:
    """Recompute buffers that to_empty left uninitialised (rotary inv_freq, position ids)."""
    for module in model.modules():
        if hasattr(module, "inv_freq") and hasattr(module, "rope_init_fn"):
            inv_freq, _ = module.rope_init_fn(module.config, "cpu")
            module.inv_freq.copy_(inv_freq)
        if hasattr(module, "position_ids") and isinstance(getattr(module, "position_ids"), torch.Tensor):
            module.position_ids.copy_(torch.arange(module.position_ids.shape[-1]).expand_as(module.position_ids))
        if hasattr(module, "token_type_ids") and isinstance(getattr(module, "token_type_ids"), torch.Tensor):
            module.token_type_ids.zero_()
