"""Forward and backward hooks on every module that record the range of what flows through it.

One `Frame` per module call (forward) and per module gradient (backward), in execution order (a global
counter): the fully qualified module name, its class, and for each floating tensor it saw the abs-max of
the finite values, the abs-min of the non-zero finite values, and how many elements are inf or NaN.
Forward frames hold the module's own parameters, its tensor inputs (positional `input[i]` and keyword
`name`) and its outputs, as `transformers.debug_utils.DebugUnderflowOverflow`'s frames do (its hook
runs after `forward`, so children come before their parent). Backward frames hold the gradients with
respect to the module's outputs and positional inputs (`register_full_backward_hook`) and, in their own
frames, each parameter's gradient once it is accumulated (`register_post_accumulate_grad_hook`).

Gradients are recorded as computed (multiplied by the loss scale) and also counted against fp16's
smallest subnormal *after* dividing by the loss scale: the values that would flush to zero in fp16
without loss scaling (Micikevicius et al. 2018, "Mixed Precision Training", fig. 3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from perfscale.debug.ranges import RANGES, dtype_name
from perfscale.errors import UnsupportedModelError


@dataclass(slots=True)
class TensorStats:
    role: str  # weight | bias | input[0] | hidden_states | output | output[0] | grad_output[0] | grad_input[0] | grad
    dtype: str  # fp16 | bf16 | fp32: the tensor's own dtype
    range_dtype: str  # the dtype whose range it is checked against (a weight under fp16 autocast: fp16)
    numel: int
    abs_max: float | None  # largest finite |x| (None: no finite value)
    abs_min_nonzero: float | None  # smallest finite non-zero |x| (None: all zero or non-finite)
    n_inf: int
    n_nan: int
    # gradients only: elements whose true (unscaled) magnitude lies below fp16's smallest subnormal / normal
    n_below_fp16_subnormal: int | None = None
    n_below_fp16_normal: int | None = None
    n_zero: int | None = None

    @property
    def out_of_range(self) -> bool:
        """Holds inf/NaN, or a finite value too large for range_dtype."""
        return bool(self.n_inf or self.n_nan) or (self.abs_max is not None and self.abs_max > RANGES[self.range_dtype].max)

    @property
    def kind(self) -> str | None:
        if self.n_nan:
            return "nan"
        if self.n_inf:
            return "inf"
        if self.out_of_range:
            return f"beyond {self.range_dtype} range"
        return None

    def to_dict(self) -> dict[str, Any]:
        data = {k: getattr(self, k) for k in self.__slots__}
        return {k: v for k, v in data.items() if v is not None or k in ("abs_max", "abs_min_nonzero")}


@dataclass(slots=True)
class Frame:
    index: int  # execution order across the whole run
    step: int
    phase: str  # forward | backward | optimizer (parameters after the update)
    module: str  # fully qualified name ("" is the model itself)
    cls: str
    tensors: list[TensorStats] = field(default_factory=list)

    @property
    def first_bad(self) -> TensorStats | None:
        return next((t for t in self.tensors if t.out_of_range), None)

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "step": self.step, "phase": self.phase, "module": self.module or "(model)",
                "class": self.cls, "tensors": [t.to_dict() for t in self.tensors]}


def tensor_stats(t, role: str, range_dtype: str | None = None, loss_scale: float | None = None) -> TensorStats | None:
    """The range summary of one tensor; None for tensors without a floating range (ints, fp64)."""
    import torch

    name = dtype_name(t.dtype)
    if name is None:
        return None
    with torch.no_grad():
        a = t.detach().abs().float()
        finite = torch.isfinite(a)
        n_nan = int(torch.isnan(a).sum())
        n_inf = int((~finite).sum()) - n_nan
        fa = torch.where(finite, a, 0.0)
        has_finite = bool(finite.any())
        abs_max = float(fa.max()) if has_finite and a.numel() else None
        nonzero = fa > 0
        abs_min = float(torch.where(nonzero, fa, math.inf).min()) if bool(nonzero.any()) else None
        stats = TensorStats(role, name, range_dtype or name, a.numel(), abs_max, abs_min, n_inf, n_nan)
        if loss_scale is not None:  # a gradient: count what fp16 would lose without loss scaling
            fp16 = RANGES["fp16"]
            stats.n_zero = int((a == 0).sum())
            stats.n_below_fp16_subnormal = int((nonzero & (fa < fp16.smallest_subnormal * loss_scale)).sum())
            stats.n_below_fp16_normal = int((nonzero & (fa < fp16.smallest_normal * loss_scale)).sum())
    return stats


def _tensors(value, prefix: str):
    """(role, tensor) pairs of a module's input or output: tensors, tuples/lists of them, ModelOutput dicts."""
    import torch

    if isinstance(value, torch.Tensor):
        yield prefix, value
    elif isinstance(value, (tuple, list)):
        for i, v in enumerate(value):
            if isinstance(v, torch.Tensor) or isinstance(v, (tuple, list)):
                yield from _tensors(v, f"{prefix}[{i}]")
    elif isinstance(value, dict):  # transformers ModelOutput (an OrderedDict): logits, loss, ...
        for k, v in value.items():
            if isinstance(v, torch.Tensor):
                yield f"{prefix}.{k}", v


class Recorder:
    """Installs the hooks on `model` (every module, every trainable parameter) and keeps the frames.

    `compute_dtype`: under autocast the 16-bit dtype the matmuls run in; parameters are checked against
    its range too (autocast casts them to it). `loss_scale`: the factor the loss was multiplied by before
    backward. Use as a context manager: the hooks are removed on exit.
    """

    def __init__(self, model, *, compute_dtype: str | None = None, loss_scale: float = 1.0, backward: bool = True):
        import torch

        if not isinstance(model, torch.nn.Module):
            raise UnsupportedModelError(f"debug overflow hooks a torch.nn.Module; got {type(model).__name__}. "
                                        "Pass the model object (or a model name/folder to the CLI).")
        if isinstance(model, torch.jit.ScriptModule):
            raise UnsupportedModelError(f"{type(model).__name__} is a TorchScript module: its layers cannot be hooked "
                                        "(register_forward_hook is not supported on ScriptModules). Pass the eager "
                                        "model it was scripted from.")
        self.model = model
        self.compute_dtype = compute_dtype
        self.loss_scale = float(loss_scale)
        self.backward = backward
        self.frames: list[Frame] = []
        self.step = 0
        self.names = {m: name for name, m in model.named_modules()}  # shared modules: the first name
        self._handles: list[Any] = []
        self._counter = 0

    # ----- installation -----
    def __enter__(self) -> Recorder:
        for module in self.names:
            self._handles.append(module.register_forward_hook(self._forward, with_kwargs=True))
            if self.backward:
                self._handles.append(module.register_full_backward_hook(self._backward))
        if self.backward:
            seen = set()
            for module, mod_name in self.names.items():
                for pname, p in module.named_parameters(recurse=False):
                    if p.requires_grad and id(p) not in seen:  # frozen parameters refuse hooks
                        seen.add(id(p))
                        self._handles.append(p.register_post_accumulate_grad_hook(self._param_grad(module, mod_name, pname)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def check_parameters(self) -> None:
        """After an optimizer step: one 'optimizer' frame for each module whose parameters became inf/NaN."""
        import torch

        for module in self.names:
            params = [(pname, p) for pname, p in module.named_parameters(recurse=False)
                      if p.dtype.is_floating_point and not bool(torch.isfinite(p.detach()).all())]
            if params:
                frame = self._frame("optimizer", module)
                for pname, p in params:
                    self._add(frame, p, pname)

    # ----- hooks -----
    def _frame(self, phase: str, module) -> Frame:
        frame = Frame(self._counter, self.step, phase, self.names.get(module, "?"), type(module).__name__)
        self._counter += 1
        self.frames.append(frame)
        return frame

    def _add(self, frame: Frame, tensor, role: str, range_dtype: str | None = None, grad: bool = False) -> None:
        stats = tensor_stats(tensor, role, range_dtype, self.loss_scale if grad else None)
        if stats is not None:
            frame.tensors.append(stats)

    def _forward(self, module, args, kwargs, output) -> None:
        frame = self._frame("forward", module)
        for pname, p in module.named_parameters(recurse=False):
            # autocast runs the matmuls on a 16-bit copy of the fp32 weight: check it against that range
            self._add(frame, p, pname, self.compute_dtype if self.compute_dtype and p.dtype.is_floating_point else None)
        for role, t in _tensors(args, "input"):
            self._add(frame, t, role)
        for key, value in kwargs.items():
            if "mask" in key:  # additive attention masks hold -finfo.max by design: not values that flow
                continue
            for role, t in _tensors(value, key):
                self._add(frame, t, role)
        for role, t in _tensors(output, "output"):
            self._add(frame, t, role)

    def _backward(self, module, grad_input, grad_output) -> None:
        frame = self._frame("backward", module)
        for role, t in _tensors(grad_output, "grad_output"):
            self._add(frame, t, role, grad=True)
        for role, t in _tensors(grad_input, "grad_input"):
            self._add(frame, t, role, grad=True)

    def _param_grad(self, module, mod_name: str, pname: str):
        def hook(p) -> None:
            if p.grad is None:
                return
            frame = Frame(self._counter, self.step, "backward", mod_name, type(module).__name__)
            self._counter += 1
            self.frames.append(frame)
            self._add(frame, p.grad, f"grad:{pname}", grad=True)

        return hook


__all__ = ["Frame", "Recorder", "TensorStats", "tensor_stats"]
