"""The full context of a measurement: hardware, driver, library versions, threads, env vars, commit.

A number without its context is not kept (STYLE.md): every BenchResult carries this dictionary.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

# Environment variables that change speed or memory of a run.
RELEVANT_ENV = (
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "KMP_AFFINITY", "KMP_BLOCKTIME", "GOMP_CPU_AFFINITY",
    "LD_PRELOAD", "DNNL_MAX_CPU_ISA", "ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY",
    "CUDA_VISIBLE_DEVICES", "CUDA_LAUNCH_BLOCKING", "PYTORCH_CUDA_ALLOC_CONF", "NCCL_P2P_DISABLE",
    "TORCHINDUCTOR_FREEZING", "TORCHINDUCTOR_MAX_AUTOTUNE", "TORCH_COMPILE_DEBUG", "TOKENIZERS_PARALLELISM",
    "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
)
PACKAGES = ("torch", "transformers", "accelerate", "peft", "onnxruntime", "onnx", "sentence-transformers", "numpy", "perfscale")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def git_commit() -> dict[str, Any] | None:
    """Commit of the perfscale source tree when it is a git checkout (editable installs), else None."""
    root = Path(__file__).resolve().parents[3]
    if not (root / ".git").exists():
        return None
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if commit.returncode != 0:
        return None
    return {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


def _nvidia_driver() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def collect_environment(device: str = "cpu") -> dict[str, Any]:
    """Everything about this process that a reader needs to reproduce or discount a number."""
    import torch

    from perfscale.specs.detect import detect_cpu

    cpu = detect_cpu()
    env: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "cpu": {
            "model": cpu.model, "physical_cores": cpu.physical_cores, "logical_cores": cpu.logical_cores,
            "memory_bytes": cpu.memory_bytes, "mhz": cpu.mhz, "isa": cpu.isa, "native_bf16": cpu.native_bf16,
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        },
        "threads": {"torch_intra_op": torch.get_num_threads(), "torch_inter_op": torch.get_num_interop_threads()},
        "packages": {p: _version(p) for p in PACKAGES},
        "torch_build": {"version": torch.__version__, "cuda": torch.version.cuda, "debug": torch.version.debug},
        "env": {k: os.environ[k] for k in RELEVANT_ENV if k in os.environ},
        "git": git_commit(),
        "device": device,
        "gpus": [],
        # RunConfig.tf32 as the worker set it (read back here, so a run says what its fp32 matmuls ran as)
        "allow_tf32": {"cuda_matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32},
    }
    if device == "cuda" and torch.cuda.is_available():
        env["gpus"] = [
            {"index": i, "name": torch.cuda.get_device_name(i), "memory_bytes": torch.cuda.get_device_properties(i).total_memory,
             "capability": ".".join(map(str, torch.cuda.get_device_capability(i)))}
            for i in range(torch.cuda.device_count())
        ]
        env["cuda"] = {"driver": _nvidia_driver(), "runtime": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                       "allow_tf32": torch.backends.cuda.matmul.allow_tf32}
    return env


__all__ = ["collect_environment", "git_commit"]
