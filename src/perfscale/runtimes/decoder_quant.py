"""Int8 weight-only quantization of a causal LM's linear layers, for generation on CPU.

What it does: every linear layer's weight (nn.Linear, and GPT-2's Conv1D) is stored as int8 with one
scale per output channel (symmetric: scale = max|w| / 127 over the row), activations stay fp32. The
weights take 1/4 of their fp32 bytes (plus 4 bytes of scale per output channel), which is what a
memory-bound decode step (each new token reads every weight once) could gain; the matmul pays for
dequantizing the weight, or for an int8-weight kernel. Whether that is a net gain on a given CPU is
measured by `perfscale tune decoder`, never assumed, and the greedy tokens must match fp32 (the gate in
runtimes/decoder.greedy_agreement): int8 rounding moves the logits, and a model whose top two logits
are close (random weights are the extreme case) picks another token.

Backends (QUANT_BACKENDS):
- torchao: the field's library, `torchao.quantization.quantize_(model, Int8WeightOnlyConfig())` (the
  weight becomes torchao's Int8Tensor subclass; nn.Linear only, so GPT-2's Conv1D layers stay fp32).
  Optional (`pip install torchao`; torchao 0.18.0 declares no torch requirement, so it pulls no other
  torch, and works with torch 2.13.0 here). Not installed by perfscale's test extra: when torchao is
  importable, transformers imports it on *every* model load (transformers.quantizers.quantizer_torchao:
  +1.1 s and four lines of warnings on stderr, measured here), which would reach every verb.
- torch: torch's own int8 weight-only CPU kernel, `torch._weight_int8pack_mm(x, w_int8, scales)` (the
  kernel torchao and gpt-fast call on CPU), through the small module of `_int8_linear_class` below; needs
  nothing but torch.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

from perfscale.errors import InvalidConfigError, choice_error

QUANT_SCHEMES = ("int8-weight-only",)
QUANT_BACKENDS = ("torchao", "torch")
# What each backend needs beyond torch: (module to import, install line); None: torch alone.
REQUIREMENTS: dict[str, tuple[str, str] | None] = {
    "torchao": ("torchao", "pip install 'torchao>=0.18'  (or pip install 'perfscale[torchao]'; it does not pull another torch)"),
    "torch": None,
}
TORCHAO_MIN = (0, 10)  # Int8WeightOnlyConfig (the config-object API of quantize_) appeared in torchao 0.10


def _version_tuple(text: str) -> tuple[int, ...]:
    out = []
    for part in text.split("+")[0].split(".")[:3]:
        digits = "".join(ch for ch in part if ch.isdigit())
        out.append(int(digits) if digits else 0)
    return tuple(out)


@contextlib.contextmanager
def quiet_torchao():
    """torchao's import logs a warning per CUDA extension it cannot load and torch's pytree logs two deprecation
    warnings; its tensor subclass warns once under torch.compile. None of it is the user's business."""
    loggers = [logging.getLogger(name) for name in ("torchao", "torch.utils._pytree")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*_stable_hash_for_caching.*")
            warnings.filterwarnings("ignore", module="torchao")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def backend_problem(backend: str) -> str | None:
    """Why `backend` cannot run here (not installed, too old, fails to import), or None when it can."""
    if backend not in QUANT_BACKENDS:
        raise choice_error("int8 quantization backend", backend, QUANT_BACKENDS, "")
    req = REQUIREMENTS[backend]
    if req is None:
        import torch

        return None if hasattr(torch, "_weight_int8pack_mm") else f"this torch {torch.__version__} has no _weight_int8pack_mm kernel"
    module, install = req
    if importlib.util.find_spec(module) is None:
        return f"{module} is not installed; install it with: {install}"
    try:
        with quiet_torchao():
            mod = importlib.import_module(module)
            from torchao.quantization import Int8WeightOnlyConfig, quantize_  # noqa: F401
    except Exception as exc:  # a broken or mismatched install is a reason to skip, with the reason
        return f"{module} is installed but does not import ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); reinstall with: {install}"
    version = getattr(mod, "__version__", "0")
    if _version_tuple(version) < TORCHAO_MIN:
        return f"torchao {version} is older than {'.'.join(map(str, TORCHAO_MIN))} (no Int8WeightOnlyConfig); upgrade with: {install}"
    return None


def parse_backends(text: str | None, what: str = "quant_backends") -> tuple[str, ...] | None:
    """'torchao,torch' -> ('torchao', 'torch'); 'none' -> (); None -> None (every backend that runs here)."""
    if text is None:
        return None
    names = [x.strip().lower() for x in text.split(",") if x.strip()]
    if names == ["none"]:
        return ()
    if not names or "none" in names:
        raise InvalidConfigError(f"{what} {text!r}: give a comma list of {', '.join(QUANT_BACKENDS)}, or 'none' "
                                 "(or leave it out to try every backend installed).")
    for b in names:
        if b not in QUANT_BACKENDS:
            raise choice_error(f"int8 quantization backend in {what}", b, QUANT_BACKENDS, "Or 'none' to try no quantization.")
    return tuple(dict.fromkeys(names))


def resolve_backends(named: tuple[str, ...] | None) -> tuple[list[str], list[str]]:
    """The backends to try and the notes for the ones skipped.

    `named` None: every backend that runs here; the others are skipped with a note. Named explicitly: an unknown
    name, or one that cannot run here, is the user's mistake (InvalidConfigError: the install line)."""
    if named is None:
        usable, notes = [], []
        for b in QUANT_BACKENDS:
            problem = backend_problem(b)
            if problem:
                notes.append(f"int8 weight-only via {b} skipped: {problem}")
            else:
                usable.append(b)
        return usable, notes
    for b in named:
        if b not in QUANT_BACKENDS:
            raise choice_error("int8 quantization backend", b, QUANT_BACKENDS, "Or give 'none' to try no quantization.")
    for b in named:
        problem = backend_problem(b)
        if problem:
            others = [o for o in QUANT_BACKENDS if o != b and backend_problem(o) is None]
            raise InvalidConfigError(f"Quantization backend {b!r} cannot run here: {problem}. "
                                     f"Or choose from the backends that run here: {', '.join(others) or 'none'}.")
    return list(dict.fromkeys(named)), []


@dataclass
class QuantInfo:
    """What a quantization did to a model."""

    scheme: str
    backend: str
    layers: int  # linear layers whose weight became int8
    params_quantized: int
    params_total: int
    weight_bytes_fp32: int  # of the quantized layers, before
    weight_bytes_int8: int  # the same layers after: int8 weights + fp32 scales
    skipped_layers: list[str] = field(default_factory=list)  # linear-like layers left in fp32, and why

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _int8_linear_class():
    import torch

    class Int8WeightOnlyLinearImpl(torch.nn.Module):
        """y = x @ (w_int8 * scale).T + b with torch's int8-weight kernel; w_int8 [out, in], one fp32 scale per row."""

        def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
            super().__init__()
            w = weight.detach().float().contiguous()  # Conv1D's [out, in] view is a transpose; the kernel wants rows
            scale = (w.abs().amax(dim=1) / 127.0).clamp(min=torch.finfo(torch.float32).tiny)
            self.register_buffer("weight_int8", torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8))
            self.register_buffer("scale", scale)
            self.bias = None if bias is None else torch.nn.Parameter(bias.detach().clone(), requires_grad=False)
            self.in_features, self.out_features = w.shape[1], w.shape[0]

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            shape = x.shape[:-1] + (self.out_features,)
            y = torch._weight_int8pack_mm(x.reshape(-1, self.in_features).to(self.scale.dtype), self.weight_int8, self.scale)
            if self.bias is not None:
                y = y + self.bias
            return y.reshape(shape).to(x.dtype)

        def extra_repr(self) -> str:
            return f"in_features={self.in_features}, out_features={self.out_features}, int8 weight-only (torch._weight_int8pack_mm)"

    return Int8WeightOnlyLinearImpl


def _linear_like(model):
    """(name, module, weight as [out, in]) for every nn.Linear and transformers Conv1D (weight stored [in, out])."""
    import torch

    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover - transformers is a dependency
        Conv1D = ()  # noqa: N806
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear):
            yield name, mod, mod.weight
        elif Conv1D and isinstance(mod, Conv1D):
            yield name, mod, mod.weight.t()


def _replace(model, name: str, new) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def quantize_decoder(model, scheme: str = "int8-weight-only", backend: str = "torchao"):
    """A quantized copy of `model` (the original is untouched) and a QuantInfo. Raises InvalidConfigError when the
    backend cannot run here (with the install line) or quantizes no layer of this model."""
    import copy

    import torch

    if scheme not in QUANT_SCHEMES:
        raise choice_error("quantization scheme", scheme, QUANT_SCHEMES, "")
    problem = backend_problem(backend)
    if problem:
        raise InvalidConfigError(f"Quantization backend {backend!r} cannot run here: {problem}.")
    targets = list(_linear_like(model))
    total = sum(p.numel() for p in model.parameters())
    q = copy.deepcopy(model)
    skipped: list[str] = []
    if backend == "torch":
        cls = _int8_linear_class()
        chosen = targets
        for name, mod, w in targets:
            _replace(q, name, cls(w, getattr(mod, "bias", None)))
    else:
        with quiet_torchao():
            from torchao.quantization import Int8WeightOnlyConfig, quantize_

            linear_names = {name for name, mod, _ in targets if isinstance(mod, torch.nn.Linear)}
            skipped = [f"{name} (Conv1D: torchao quantizes nn.Linear only)" for name, _, _ in targets if name not in linear_names]
            chosen = [t for t in targets if t[0] in linear_names]
            quantize_(q, Int8WeightOnlyConfig(), filter_fn=lambda m, fqn: fqn in linear_names)
    if not chosen:
        raise InvalidConfigError(f"int8 weight-only via {backend} found no linear layer to quantize in this "
                                 f"{type(model).__name__}; skipped: {', '.join(skipped) or 'none'}.")
    n = sum(w.numel() for _, _, w in chosen)
    rows = sum(w.shape[0] for _, _, w in chosen)
    info = QuantInfo(scheme=scheme, backend=backend, layers=len(chosen), params_quantized=n, params_total=total,
                     weight_bytes_fp32=4 * n, weight_bytes_int8=n + 4 * rows, skipped_layers=skipped)
    return q.eval(), info


__all__ = ["QUANT_BACKENDS", "QUANT_SCHEMES", "QuantInfo", "backend_problem", "parse_backends", "quantize_decoder",
           "quiet_torchao", "resolve_backends"]
