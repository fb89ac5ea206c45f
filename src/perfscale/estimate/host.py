"""Host (CPU) memory per node: where CPU offload puts optimizer states, gradients and parameters.

A nominal capacity per node, since a device catalogue entry says nothing about the host it sits in.
Default for GPU nodes: 2 TiB, an NVIDIA DGX H100 (datasheet: "System Memory 2TB", 32 x 64 GB
DIMMs = 2 TiB) with 8 GPUs; a DGX A100 640GB has the same 2 TB. Override per call
(`host_memory=` / `perfscale plan --host-memory-gib`). Other device kinds: unknown (None), and
then host memory is not checked unless given.
"""

from __future__ import annotations

TiB = 2**40
HOST_MEMORY_PER_NODE = {"gpu": 2 * TiB}
HOST_MEMORY_SOURCE = "nominal 2 TiB per node: NVIDIA DGX H100 datasheet, 2 TB system memory for 8 GPUs"


def host_capacity(hw, override: float | None = None) -> float | None:
    """Host RAM per node in bytes: the override when given, else the nominal value for the kind."""
    if override is not None:
        return float(override)
    return HOST_MEMORY_PER_NODE.get(hw.kind)
