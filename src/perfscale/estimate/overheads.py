"""Device memory that is not in any tensor: shown as labelled lines, never folded into the peak."""

from __future__ import annotations

MiB = 2**20

# Each line: (label, bytes, source). Only for GPUs; a CPU run has none of these.
CUDA_OVERHEADS = (
    ("CUDA context", 500 * MiB,
     "typical CUDA 12 context with lazy module loading (CUDA_MODULE_LOADING=LAZY, the default since "
     "CUDA 11.7): 300-600 MiB per process depending on driver and GPU; not measured here"),
    ("cuBLAS workspace", 32 * MiB,
     "PyTorch CUDA semantics docs: default CUBLAS_WORKSPACE_CONFIG ':4096:8' = 8 x 4 MiB per handle "
     "and stream"),
)
# PyTorch caching allocator: reserved minus allocated. Not a tensor; it varies with the allocation
# pattern. 10% of the peak is a planning margin, not a measurement (PyTorch "CUDA memory management"
# notes; expandable_segments reduces it).
FRAGMENTATION = 0.10


def overheads(hardware_kind: str, peak_bytes: float) -> list[tuple[str, float, str]]:
    if hardware_kind != "gpu":
        return []
    lines = [(label, float(b), src) for label, b, src in CUDA_OVERHEADS]
    lines.append(("allocator fragmentation (planning margin)", FRAGMENTATION * peak_bytes,
                  "PyTorch caching allocator: reserved exceeds allocated; 10% margin, not measured"))
    return lines
