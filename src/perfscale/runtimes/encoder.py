"""Sentence-embedding encoders behind one interface: `load_encoder(model, settings).encode(list[str])`.

Backends: PyPI transformers in eager mode, the same under `torch.compile`, ONNX Runtime on an
exported graph (optionally with ORT's transformer fusions and int8 dynamic quantization), and OpenVINO
on the same graph (runtimes/openvino.py: fp32, bf16, NNCF int8). onnxruntime and openvino are optional
packages: `backend_missing(name)` says which are absent and how to install them. Every
backend pools and normalises exactly as sentence-transformers does for all-MiniLM-L6-v2
(mean over the attention mask, then L2), so embeddings are comparable across backends.

What each knob costs or buys (measured numbers: benchmarks/LOG.md, ../shared/FIELD-NOTES.md):
- sort_by_length: batches hold sentences of similar token length, so less padding is computed
  (sentence-transformers does the same, by characters).
- pad_multiple: round each batch's length up to a multiple: a little more padding, far fewer
  distinct shapes (what keeps torch.compile from recompiling per shape).
- threads: intra-op threads; more than the free cores only adds contention.
- quantization: int8 weights, activations quantized per batch at run time (dynamic); per-channel
  scales and reduce_range (7-bit) trade speed for accuracy; the tuner keeps only what passes its gate.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from perfscale.errors import InvalidConfigError, UnsupportedModelError, choice_error
from perfscale.runtimes.onnx_export import onnx_model_for
from perfscale.config.precision import Precision
from perfscale.runtimes.source import EncoderSource, load_tokenizer, load_torch_model, resolve_encoder

BACKENDS = ("eager", "compile", "onnxruntime", "openvino")
# The packages each optional backend imports (both export through torch's dynamo ONNX exporter, which needs
# onnx and onnxscript), and the line that installs them. NNCF (openvino's int8) is checked where it is used.
OPTIONAL_BACKENDS = {
    "onnxruntime": (("onnxruntime", "onnx", "onnxscript"), "pip install onnxruntime onnx onnxscript (or pip install 'perfscale[infer]')"),
    "openvino": (("openvino", "onnxruntime", "onnx", "onnxscript"), "pip install openvino nncf onnxruntime onnx onnxscript "
                 "(or pip install 'perfscale[openvino]')"),
}
# int8-static: OpenVINO + NNCF post-training quantization (activations' scales calibrated once); the others
# are ONNX Runtime's dynamic schemes (int8-dynamic also torch's quantize_dynamic).
QUANTIZATIONS = ("none", "int8-dynamic", "int8-per-channel", "int8-reduce-range", "int8-per-channel-reduce-range", "int8-static")
# The precision names of RunConfig (config/precision.py): the weights stay fp32 and "bf16-mixed" runs
# the forward under bf16 autocast. "bf16" (bf16 weights in RunConfig's vocabulary) was this field's
# earlier name for autocast: read as bf16-mixed, so settings saved before keep their meaning.
PRECISIONS = ("fp32", "bf16-mixed")
_PRECISION_ALIASES = {"bf16": "bf16-mixed"}
ENGINES = ("perfscale", "sentence-transformers")


@dataclass(frozen=True)
class EncoderSettings:
    """How to run an encoder. Validated when built; serialises with to_dict/from_dict."""

    backend: str = "eager"
    """eager | compile | onnxruntime | openvino."""
    quantization: str = "none"
    """none | int8-dynamic (per-tensor) | int8-per-channel | int8-reduce-range | int8-per-channel-reduce-range.
    onnxruntime takes the dynamic ones; openvino takes none or int8-static (NNCF, calibrated); eager and
    compile take none or int8-dynamic (torch quantize_dynamic)."""
    precision: str = "fp32"
    """fp32 | bf16-mixed (torch backends: fp32 weights, bf16 autocast; openvino: bf16 inference precision;
    fast only on CPUs with avx512_bf16/AMX)."""
    fusions: bool = False
    """ONNX Runtime transformer graph fusions (attention, layer norm, GELU) before quantization."""
    threads: int | None = None
    """Intra-op threads; None keeps the runtime's default."""
    batch_size: int = 32
    sort_by_length: bool = True
    """Length bucketing: batch sentences of similar token length together."""
    pad_multiple: int | None = None
    """Pad each batch's token length up to a multiple of this (fewer distinct shapes)."""
    inference_mode: bool = True
    """torch.inference_mode() instead of torch.no_grad() (torch backends)."""
    max_length: int | None = None
    """Truncate sentences to this many tokens; None: the model's own maximum (256 for MiniLM)."""
    opset: int = 18
    """ONNX opset for export (onnxruntime backend)."""
    engine: str = "perfscale"
    """perfscale | sentence-transformers: the latter is the baseline a user has today,
    `SentenceTransformer(folder).encode(sentences)` with its defaults (backend eager, fp32 only)."""

    def __post_init__(self) -> None:
        problems: list[str] = []
        object.__setattr__(self, "precision", _PRECISION_ALIASES.get(self.precision, self.precision))
        if self.engine not in ENGINES:
            raise choice_error("encoder engine", self.engine, ENGINES, "")
        if self.engine == "sentence-transformers" and (
            self.backend != "eager" or self.quantization != "none" or not self.prec.is_fp32
        ):
            problems.append("engine 'sentence-transformers' is the plain baseline: backend eager, fp32, no quantization")
        if self.backend not in BACKENDS:
            raise choice_error("encoder backend", self.backend, BACKENDS, "See `perfscale tune encoder --help`.")
        if self.quantization not in QUANTIZATIONS:
            raise choice_error("quantization", self.quantization, QUANTIZATIONS, "Use none for full precision.")
        if self.precision not in PRECISIONS:
            raise choice_error("precision", self.precision, PRECISIONS, "")
        if self.backend == "openvino":
            if self.quantization not in ("none", "int8-static"):
                problems.append(f"quantization {self.quantization!r} is ONNX Runtime's or torch's: backend 'openvino' takes none or int8-static")
        elif self.quantization == "int8-static":
            problems.append("quantization 'int8-static' (NNCF, calibrated) needs backend 'openvino'")
        elif self.backend != "onnxruntime" and self.quantization not in ("none", "int8-dynamic"):
            problems.append(f"quantization {self.quantization!r} needs backend 'onnxruntime' (torch backends take none or int8-dynamic)")
        if self.backend == "onnxruntime" and not self.prec.is_fp32:
            problems.append("precision bf16-mixed applies to the torch backends and openvino; onnxruntime runs fp32 or int8 "
                            "(its CPU provider has no bf16 GEMM on x86)")
        if self.fusions and self.backend != "onnxruntime":
            problems.append("fusions are ONNX Runtime graph fusions: use them with backend 'onnxruntime'")
        # OpenVINO runs an int8 model's remaining (unquantized) ops at its inference precision: bf16 there is a real mix.
        if self.quantization != "none" and not self.prec.is_fp32 and self.backend != "openvino":
            problems.append("int8 quantization and bf16-mixed cannot be combined (except on backend 'openvino')")
        for name in ("batch_size",):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                problems.append(f"{name} must be a positive integer, got {v!r}")
        for name in ("threads", "pad_multiple", "max_length"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                problems.append(f"{name} must be a positive integer or None, got {v!r}")
        if not isinstance(self.opset, int) or not 14 <= self.opset <= 23:
            problems.append(f"opset must be an integer in 14..23, got {self.opset!r}")
        if problems:
            raise InvalidConfigError("Bad encoder settings: " + "; ".join(problems) + ".")

    @property
    def prec(self) -> Precision:
        """The precision decoded (config/precision.py): fp32, or bf16 autocast over fp32 weights."""
        return Precision.of(self.precision)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EncoderSettings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidConfigError(f"Unknown encoder setting(s): {', '.join(unknown)}. Known: {', '.join(sorted(known))}.")
        return cls(**data)

    def label(self) -> str:
        """Short human name, e.g. 'onnxruntime+fusions int8-per-channel b64 t2'."""
        if self.engine == "sentence-transformers":
            return "sentence-transformers" + (f" b{self.batch_size}" if self.batch_size != 32 else "") + (f" t{self.threads}" if self.threads else "")
        parts = [self.backend + ("+fusions" if self.fusions else "")]
        if self.quantization != "none":
            parts.append(self.quantization)
        if not self.prec.is_fp32:
            parts.append(self.precision)
        parts.append(f"b{self.batch_size}")
        if self.threads:
            parts.append(f"t{self.threads}")
        if self.pad_multiple:
            parts.append(f"pad{self.pad_multiple}")
        if not self.sort_by_length:
            parts.append("unsorted")
        if not self.inference_mode and self.backend in ("eager", "compile"):
            parts.append("no_grad")
        return " ".join(parts)


class Encoder:
    """Tokenise, batch by length, run the backend, pool and normalise. Call `encode(list[str])`."""

    def __init__(self, source: EncoderSource, settings: EncoderSettings, tokenizer, run_batch, onnx_path: str | None = None) -> None:
        self.source = source
        self.onnx_path = onnx_path  # the ONNX file the backend runs (onnxruntime, openvino); None for the torch ones
        self.settings = settings
        self.tokenizer = tokenizer
        self._run_batch = run_batch  # dict of int64 arrays -> float32 token embeddings [b, s, h]
        self.max_length = settings.max_length or source.max_length
        self.input_names = list(getattr(tokenizer, "model_input_names", ["input_ids", "attention_mask"]))
        self.shapes_seen: set[tuple[int, int]] = set()

    def __repr__(self) -> str:
        return f"Encoder({self.source.name!r}, {self.settings.label()!r})"

    def encode(self, sentences: list[str]) -> np.ndarray:
        """Embeddings [len(sentences), hidden] as float32, in the input order."""
        if isinstance(sentences, str):
            sentences = [sentences]
        sentences = list(sentences)
        if not sentences:
            return np.zeros((0, self.source.hidden_size), dtype=np.float32)
        if getattr(self._run_batch, "whole_list", False):
            return self._run_batch(sentences)
        tokens = self.tokenizer(sentences, truncation=True, max_length=self.max_length, padding=False)
        ids = tokens["input_ids"]
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i])) if self.settings.sort_by_length else list(range(len(ids)))
        out = np.empty((len(ids), self.source.hidden_size), dtype=np.float32)
        bs = self.settings.batch_size
        for start in range(0, len(order), bs):
            chunk = order[start : start + bs]
            batch = self._pad(tokens, chunk)
            self.shapes_seen.add(batch["input_ids"].shape)
            hidden = self._run_batch(batch)
            out[chunk] = pool(hidden, batch["attention_mask"], self.source.pooling, self.source.normalize)
        return out

    def _pad(self, tokens, chunk: list[int]) -> dict[str, np.ndarray]:
        length = max(len(tokens["input_ids"][i]) for i in chunk)
        m = self.settings.pad_multiple
        if m:
            length = min(-(-length // m) * m, max(self.max_length, length))
        pad_id = self.tokenizer.pad_token_id or 0
        batch: dict[str, np.ndarray] = {}
        for name in self.input_names:
            if name not in tokens:
                continue
            fill = pad_id if name == "input_ids" else 0
            arr = np.full((len(chunk), length), fill, dtype=np.int64)
            for row, i in enumerate(chunk):
                seq = tokens[name][i]
                arr[row, : len(seq)] = seq
            batch[name] = arr
        if "attention_mask" not in batch:
            mask = np.zeros((len(chunk), length), dtype=np.int64)
            for row, i in enumerate(chunk):
                mask[row, : len(tokens["input_ids"][i])] = 1
            batch["attention_mask"] = mask
        return batch


def pool(hidden: np.ndarray, mask: np.ndarray, pooling: str, normalize: bool) -> np.ndarray:
    """sentence-transformers' Pooling + Normalize: mean over unmasked tokens (or CLS), then L2."""
    hidden = hidden.astype(np.float32, copy=False)
    if pooling == "cls":
        emb = hidden[:, 0]
    else:
        m = mask[..., None].astype(np.float32)
        emb = (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
    if normalize:
        emb = emb / np.clip(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12, None)
    return emb


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Set torch's intra-op threads for the block, then restore them."""
    import torch

    if not n:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _torch_runner(source: EncoderSource, settings: EncoderSettings):
    import torch

    model = load_torch_model(source)
    if settings.quantization == "int8-dynamic":
        from torch.ao.quantization import quantize_dynamic

        model = quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    forward = model
    if settings.backend == "compile":
        forward = torch.compile(model)
    grad_ctx = torch.inference_mode if settings.inference_mode else torch.no_grad
    autocast = Precision.of(settings.precision).torch_autocast_dtype()

    def run(batch: dict[str, np.ndarray]) -> np.ndarray:
        inputs = {k: torch.from_numpy(v) for k, v in batch.items()}
        with torch_threads(settings.threads), grad_ctx(), torch.autocast("cpu", dtype=autocast or torch.bfloat16,
                                                                         enabled=autocast is not None):
            hidden = forward(**inputs).last_hidden_state
        return hidden.float().numpy()

    return run


def _ort_runner(source: EncoderSource, settings: EncoderSettings, tokenizer, cache_dir):
    """(batch function, the ONNX file it runs)."""
    import onnxruntime as ort

    path = onnx_model_for(source, settings, input_names=list(tokenizer.model_input_names), cache_dir=cache_dir)
    opts = ort.SessionOptions()
    if settings.threads:
        opts.intra_op_num_threads = settings.threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    wanted = [i.name for i in session.get_inputs()]

    def run(batch: dict[str, np.ndarray]) -> np.ndarray:
        feed = {}
        for name in wanted:
            feed[name] = batch[name] if name in batch else np.zeros_like(batch["input_ids"])
        return session.run(None, feed)[0]

    return run, str(path)


def _sentence_transformers_runner(source: EncoderSource, settings: EncoderSettings):
    """The baseline: SentenceTransformer(folder).encode(sentences), its defaults (batch 32, sorted by characters)."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise UnsupportedModelError("The sentence-transformers baseline needs: pip install sentence-transformers (or perfscale[infer]).") from exc
    model = SentenceTransformer(source.path, device="cpu")

    def run(sentences: list[str]) -> np.ndarray:
        with torch_threads(settings.threads):
            return np.asarray(model.encode(sentences, batch_size=settings.batch_size, show_progress_bar=False), dtype=np.float32)

    run.whole_list = True  # type: ignore[attr-defined]
    return run


def backend_missing(backend: str) -> str | None:
    """None when the backend's package imports here; else the line that installs it."""
    import importlib.util

    def absent(package: str) -> bool:
        try:
            return importlib.util.find_spec(package) is None
        except (ImportError, ValueError):  # a broken install, or a module blocked in sys.modules
            return True

    packages, install = OPTIONAL_BACKENDS.get(backend, ((), None))
    return install if any(absent(p) for p in packages) else None


def require_backend(backend: str) -> None:
    """Raise (exit 2 at the CLI) when a backend the user named is not installed, with its install line."""
    install = backend_missing(backend)
    if install:
        have = [b for b in BACKENDS if backend_missing(b) is None]
        raise InvalidConfigError(f"Backend {backend!r} is not installed here: {install}. Installed backends: {', '.join(have)}.")


def load_encoder(model: str | EncoderSource = "minilm", settings: EncoderSettings | None = None, cache_dir=None,
                 calibration: list[str] | None = None) -> Encoder:
    """An encoder ready to `encode(list[str])`.

    `model`: 'minilm' or a local folder (Hugging Face / sentence-transformers layout).
    `cache_dir`: where exported ONNX files go; default $XDG_CACHE_HOME/perfscale or ~/.cache/perfscale.
    `calibration`: sentences that calibrate a static int8 model (openvino int8-static) when none is cached.
    """
    settings = settings or EncoderSettings()
    source = model if isinstance(model, EncoderSource) else resolve_encoder(model)
    if settings.engine == "perfscale":
        require_backend(settings.backend)
    tokenizer = load_tokenizer(source)
    onnx_path = None
    if settings.engine == "sentence-transformers":
        run = _sentence_transformers_runner(source, settings)
    elif settings.backend == "onnxruntime":
        run, onnx_path = _ort_runner(source, settings, tokenizer, cache_dir)
    elif settings.backend == "openvino":
        from perfscale.runtimes.openvino import openvino_runner

        run, onnx_path = openvino_runner(source, settings, tokenizer, cache_dir, calibration)
    else:
        run = _torch_runner(source, settings)
    return Encoder(source, settings, tokenizer, run, onnx_path=onnx_path)
