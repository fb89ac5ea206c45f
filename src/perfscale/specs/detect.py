"""Describe this machine: CPU (model, cores, memory, ISA flags) and CUDA devices with their links.

The result maps to a Hardware usable wherever a catalogue name is (`--hardware local`).
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field, replace
from functools import cache
from typing import Any

from perfscale.specs.hardware import DTYPES, Hardware, Link, Sourced, Topology, catalog_hardware

ISA_FLAGS = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni", "amx_bf16", "amx_tile", "amx_int8", "amx_fp16")


@dataclass(frozen=True)
class CpuInfo:
    model: str
    physical_cores: int
    logical_cores: int
    memory_bytes: int
    mhz: float | None
    isa: dict[str, bool]

    @property
    def native_bf16(self) -> bool:
        # bf16 matmuls run natively only with AVX512_BF16 or AMX; else oneDNN emulates them
        # (measured here: ~100x slower than fp32, see FIELD-NOTES).
        return self.isa.get("avx512_bf16", False) or self.isa.get("amx_bf16", False)

    @property
    def native_fp16(self) -> bool:
        return self.isa.get("avx512_fp16", False) or self.isa.get("amx_fp16", False)


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    memory_bytes: int
    capability: str
    catalog_match: str | None


@dataclass(frozen=True)
class LocalMachine:
    cpu: CpuInfo
    gpus: list[GpuInfo]
    gpu_topology: str | None  # `nvidia-smi topo -m` output when present
    hardware: Hardware  # the device a run here would use: GPU 0 if any, else the CPU
    topology: Topology
    os: str = field(default_factory=platform.platform)

    def to_dict(self) -> dict[str, Any]:
        return {
            "cpu": asdict(self.cpu) | {"native_bf16": self.cpu.native_bf16, "native_fp16": self.cpu.native_fp16},
            "gpus": [asdict(g) for g in self.gpus],
            "gpu_topology": self.gpu_topology,
            "os": self.os,
            "hardware": self.hardware.to_dict(),
            "topology": {"label": self.topology.label, "world_size": self.topology.world_size},
        }


def _cpuinfo() -> dict[str, str]:
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return {}
    first = text.split("\n\n")[0]
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in first.splitlines())}


def detect_cpu() -> CpuInfo:
    import psutil

    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    mhz = info.get("cpu MHz")
    return CpuInfo(
        model=info.get("model name") or platform.processor() or platform.machine(),
        physical_cores=psutil.cpu_count(logical=False) or os.cpu_count() or 1,
        logical_cores=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1),
        memory_bytes=psutil.virtual_memory().total,
        mhz=float(mhz) if mhz else None,
        isa={f: f in flags for f in ISA_FLAGS},
    )


def _fp32_flops_per_cycle(isa: dict[str, bool]) -> int | None:
    # Two FMA ports x vector lanes x 2 FLOP per FMA (Intel/AMD optimisation manuals):
    # AVX-512 16 fp32 lanes -> 64, AVX2 8 lanes -> 32. Without FMA we do not guess.
    if isa.get("avx512f") and isa.get("fma"):
        return 64
    if isa.get("avx2") and isa.get("fma"):
        return 32
    return None


def cpu_hardware(cpu: CpuInfo) -> Hardware:
    cores = min(cpu.physical_cores, cpu.logical_cores)
    per_cycle = _fp32_flops_per_cycle(cpu.isa)
    if per_cycle and cpu.mhz:
        fp32 = Sourced(
            cores * cpu.mhz * 1e6 * per_cycle,
            f"derived: {cores} cores x {cpu.mhz:.0f} MHz x {per_cycle} FLOP/cycle ({'AVX-512' if per_cycle == 64 else 'AVX2'}+FMA); theoretical, not measured",
        )
    else:
        fp32 = Sourced(None, "n/a: no FMA vector ISA or clock found")
    bf16 = (
        Sourced(fp32.value, "native bf16 (AVX512_BF16/AMX): at least the fp32 peak; not measured")
        if cpu.native_bf16
        else Sourced(None, "no native bf16 (no avx512_bf16/amx_bf16): emulated, ~100x slower than fp32 measured on AVX2-only CPUs")
    )
    fp16 = (
        Sourced(fp32.value, "native fp16 (AVX512_FP16/AMX): at least the fp32 peak; not measured")
        if cpu.native_fp16
        else Sourced(None, "no native fp16 compute (F16C converts only): emulated")
    )
    peaks = {d: Sourced(None, "n/a on CPU") for d in DTYPES} | {"fp32": fp32, "bf16": bf16, "fp16": fp16}
    return Hardware(
        name="local-cpu",
        kind="cpu",
        vendor=cpu.model.split()[0] if cpu.model else "",
        description=f"{cpu.model} ({cores} cores)",
        memory_bytes=Sourced(cpu.memory_bytes, "detected: psutil.virtual_memory().total"),
        peak_flops=peaks,
        memory_bandwidth=Sourced(None, "n/a: not measured"),
        intra_node=Link("none", Sourced(None, "single CPU socket")),
        node_size=Sourced(1, "detected"),
        inter_node=Link("none", Sourced(None, "n/a")),
        detected={"isa": cpu.isa, "physical_cores": cpu.physical_cores, "logical_cores": cpu.logical_cores},
    )


def _normalise(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def match_gpu(name: str, memory_bytes: int) -> Hardware | None:
    """Catalogue entry for a CUDA device name such as 'NVIDIA H100 80GB HBM3'."""
    key = _normalise(name.replace("NVIDIA", "").replace("Tesla", ""))
    gib = memory_bytes / 2**30
    best: tuple[float, Hardware] | None = None
    for hw in catalog_hardware():
        if hw.kind != "gpu":
            continue
        stem = _normalise(re.split(r"-\d+GB", hw.name)[0].replace("-PCIE", "").replace("-NVL", ""))
        if not stem or stem not in key:
            continue
        if ("PCIE" in hw.name) != ("pcie" in key) or ("NVL" in hw.name) != ("nvl" in key):
            continue
        # Prefer the entry whose memory is closest to what the device reports.
        distance = abs((hw.memory_bytes.value or 0) / 2**30 - gib)
        if best is None or distance < best[0]:
            best = (distance, hw)
    return best[1] if best else None


def detect_gpus() -> list[GpuInfo]:
    import torch

    if not torch.cuda.is_available():
        return []
    gpus = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        match = match_gpu(props.name, props.total_memory)
        gpus.append(GpuInfo(i, props.name, props.total_memory, f"{props.major}.{props.minor}", match.name if match else None))
    return gpus


def _nvidia_topology() -> str | None:
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", "topo", "-m"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def _gpu_hardware(gpu: GpuInfo) -> Hardware:
    base = next((h for h in catalog_hardware() if h.name == gpu.catalog_match), None)
    memory = Sourced(gpu.memory_bytes, "detected: torch.cuda.get_device_properties().total_memory")
    detected = {"cuda_name": gpu.name, "capability": gpu.capability}
    if base is not None:
        return replace(base, memory_bytes=memory, detected=detected)
    unknown = Sourced(None, f"n/a: {gpu.name} is not in the catalogue")
    return Hardware(
        name=gpu.name, kind="gpu", vendor="nvidia", description=gpu.name, memory_bytes=memory,
        peak_flops={d: unknown for d in DTYPES}, memory_bandwidth=unknown,
        intra_node=Link("unknown", unknown), node_size=Sourced(1, "detected"),
        inter_node=Link("unknown", unknown), detected=detected,
    )


@cache
def detect_local() -> LocalMachine:
    cpu = detect_cpu()
    gpus = detect_gpus()
    hardware = _gpu_hardware(gpus[0]) if gpus else cpu_hardware(cpu)
    return LocalMachine(
        cpu=cpu,
        gpus=gpus,
        gpu_topology=_nvidia_topology() if gpus else None,
        hardware=hardware,
        topology=Topology(hardware=hardware, nodes=1, devices_per_node=max(1, len(gpus))),
    )
