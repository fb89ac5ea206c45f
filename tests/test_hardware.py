"""Topologies, catalogue lookup and local detection."""

from __future__ import annotations

import pytest

from perfscale.errors import TopologyError, UnknownNameError
from perfscale.specs import get_hardware, parse_topology
from perfscale.specs.detect import CpuInfo, ISA_FLAGS, cpu_hardware, detect_local, match_gpu


@pytest.mark.parametrize(
    "text, nodes, per_node",
    [("H100-80GB", 1, 1), ("8xH100-80GB", 1, 8), ("2x8xH100-80GB", 2, 8), ("4xh100", 1, 4), ("8xRTX-4090", 1, 8)],
)
def test_topology_strings(text, nodes, per_node):
    topo = parse_topology(text)
    assert (topo.nodes, topo.devices_per_node, topo.world_size) == (nodes, per_node, nodes * per_node)


def test_topology_label_round_trips():
    assert parse_topology("2x8xH100-80GB").label == "2x8xH100-80GB"
    assert parse_topology("8xH100-80GB").label == "8xH100-80GB"


@pytest.mark.parametrize("bad", ["", "8x", "0xH100-80GB", "2x0xH100-80GB", "1x2x3xH100-80GB", "8xH1OO"])
def test_bad_topology_says_the_format(bad):
    with pytest.raises(TopologyError, match="topology"):
        parse_topology(bad)


def test_unknown_hardware_suggests_closest():
    with pytest.raises(UnknownNameError, match=r"Did you mean: .*H100"):
        get_hardware("H100-80G")


@pytest.mark.parametrize(
    "cuda_name, gib, expected",
    [
        ("NVIDIA H100 80GB HBM3", 79.1, "H100-80GB"),
        ("NVIDIA H100 PCIe", 79.6, "H100-PCIE"),
        ("NVIDIA H100 NVL", 93.1, "H100-NVL"),
        ("NVIDIA A100-SXM4-40GB", 39.4, "A100-40GB"),
        ("NVIDIA A100-SXM4-80GB", 79.1, "A100-80GB"),
        ("NVIDIA A100 80GB PCIe", 79.1, "A100-80GB-PCIE"),
        ("Tesla T4", 14.6, "T4"),
        ("NVIDIA H200", 139.8, "H200"),
        ("Tesla V100-SXM2-16GB", 15.8, "V100-16GB"),
    ],
)
def test_cuda_names_map_to_catalogue(cuda_name, gib, expected):
    match = match_gpu(cuda_name, int(gib * 2**30))
    assert match is not None and match.name == expected


def test_unknown_gpu_has_no_match():
    assert match_gpu("NVIDIA Imaginary 9000", 2**34) is None


def _cpu(**isa) -> CpuInfo:
    flags = dict.fromkeys(ISA_FLAGS, False) | isa
    return CpuInfo("Test CPU", 2, 2, 2**34, 2000.0, flags)


def test_avx2_only_cpu_has_no_bf16_peak():
    """An AVX2 machine emulates bf16 (~100x slower, FIELD-NOTES): its bf16 peak is n/a, not fp32's."""
    hw = cpu_hardware(_cpu(avx=True, avx2=True, fma=True, f16c=True))
    assert hw.peak("fp32") == pytest.approx(2 * 2000e6 * 32)
    assert hw.peak("bf16") is None and "no native bf16" in hw.peak_flops["bf16"].source


def test_avx512_bf16_cpu_has_bf16_peak():
    hw = cpu_hardware(_cpu(avx2=True, fma=True, avx512f=True, avx512_bf16=True))
    assert hw.peak("fp32") == pytest.approx(2 * 2000e6 * 64)
    assert hw.peak("bf16") is not None


def test_cpu_without_fma_gets_no_guess():
    assert cpu_hardware(_cpu()).peak("fp32") is None


def test_local_detection_describes_this_machine():
    machine = detect_local()
    assert machine.cpu.logical_cores >= 1 and machine.cpu.memory_bytes > 2**30
    assert set(machine.cpu.isa) == set(ISA_FLAGS)
    assert get_hardware("local").name == machine.hardware.name
    assert machine.topology.world_size == max(1, len(machine.gpus))
