"""The shipped catalogues: real checkpoints with exact counts vs published sizes; sourced hardware."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from perfscale.specs import catalog
from perfscale.specs.hardware import DTYPES, catalog_hardware
from perfscale.specs.listing import list_models
from perfscale.specs.param_cache import count_entry, describe_entry
from perfscale.specs.param_count import fingerprint

REQUIRED_MODELS = {
    "gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "bert-base-uncased", "bert-large-uncased", "roberta-large",
    "t5-small", "t5-base", "t5-large", "t5-3b", "t5-11b", "llama-2-7b", "llama-2-13b", "llama-2-70b",
    "llama-3.1-8b", "llama-3.1-70b", "llama-3.1-405b", "llama-3.2-1b", "llama-3.2-3b", "mistral-7b",
    "mixtral-8x7b", "mixtral-8x22b", "qwen2.5-0.5b", "qwen2.5-72b", "gemma-2-2b", "gemma-2-9b", "gemma-2-27b",
    "phi-3-mini", "phi-3-medium", "falcon-7b", "falcon-40b", "gpt-neox-20b", "opt-1.3b", "opt-66b", "pythia-160m",
}
REQUIRED_HARDWARE = {
    "V100-16GB", "V100-32GB", "T4", "A10G", "L4", "L40S", "A100-40GB", "A100-80GB", "A100-40GB-PCIE",
    "A100-80GB-PCIE", "H100-80GB", "H100-PCIE", "H100-NVL", "H200", "B200", "RTX-3090", "RTX-4090", "MI250X",
    "MI300X", "TPU-v4", "TPU-v5e", "TPU-v5p", "CPU",
}
DEFAULT_TOLERANCE = 0.01  # the bar: exact count within 1% of the published size


def test_catalogue_has_the_required_checkpoints():
    names = set(catalog.model_names())
    assert len(names) >= 30
    assert REQUIRED_MODELS <= names, REQUIRED_MODELS - names


@pytest.mark.parametrize("entry", catalog.model_entries(), ids=lambda e: e["name"])
def test_exact_count_matches_published_size(entry):
    """Each checkpoint's exact count (real class on the meta device) vs the number its authors publish.

    A wider tolerance is allowed only where the entry says why (Falcon publishes rounded names only).
    """
    _, counts = count_entry(entry)
    if entry["published_params"] is None:  # perfscale's own built-in model: nothing published
        assert entry["name"].startswith("perfscale-")
        return
    assert entry["published_source"], "every published number needs its source"
    tolerance = entry.get("published_tolerance", DEFAULT_TOLERANCE)
    if tolerance != DEFAULT_TOLERANCE:
        assert entry.get("published_tolerance_reason"), "a wider tolerance must say why"
    error = abs(counts["total"] - entry["published_params"]) / entry["published_params"]
    assert error <= tolerance, f"{entry['name']}: {counts['total']:,} vs published {entry['published_params']:,}"


def test_shipped_count_cache_is_what_the_classes_count():
    cache = catalog.param_count_cache()
    assert len(cache) == len(catalog.model_entries())
    for entry in catalog.model_entries():
        key, counts, spec_fields = describe_entry(entry)
        assert key in cache, f"{entry['name']}: stale cache, run python -m perfscale.specs.param_cache"
        assert {k: v for k, v in cache[key].items() if not k.startswith("_")} == counts
        assert cache[key]["_spec"] == spec_fields, entry["name"]  # what plan reads without transformers


def test_a_catalogue_spec_from_the_cache_equals_one_read_off_the_config_class():
    """The cached fast path and the transformers path describe every catalogue model identically."""
    from perfscale.specs import config_file
    from perfscale.specs import model as model_spec

    for entry in catalog.model_entries():
        src = config_file.resolve_config(entry["name"])
        fast = model_spec.spec_from_source(src)
        slow = model_spec.spec_from_source(dataclasses.replace(src, kind="local"))  # no cache: transformers reads it
        assert dataclasses.replace(slow, source="catalog") == fast, entry["name"]


def test_plan_on_a_catalogue_model_imports_neither_transformers_nor_torch():
    code = ("import sys; from perfscale.tune.plan import plan; from perfscale.specs import parse_topology; "
            "plan('llama-3.1-8b', parse_topology('H100-80GB')); "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_listing_uses_the_counts_and_filters_by_family():
    llamas = list_models("llama")
    assert llamas and all(s.model_type == "llama" for s in llamas)
    by_name = {s.name: s for s in llamas}
    assert by_name["llama-3.1-8b"].params.total == 8_030_261_248  # Meta's published exact count


def test_fingerprint_changes_with_config():
    entry = catalog.find_model("gpt2")
    changed = dict(entry["config"], n_layer=13)
    assert fingerprint(entry["config"], "GPT2LMHeadModel") != fingerprint(changed, "GPT2LMHeadModel")


def test_hardware_catalogue_is_complete_and_sourced():
    devices = {hw.name: hw for hw in catalog_hardware()}
    assert REQUIRED_HARDWARE <= set(devices), REQUIRED_HARDWARE - set(devices)
    for hw in devices.values():
        numbers = [hw.memory_bytes, hw.memory_bandwidth, hw.node_size, hw.intra_node.bandwidth, hw.inter_node.bandwidth]
        numbers += [hw.peak_flops[d] for d in DTYPES]
        for number in numbers:
            assert number.source.strip(), f"{hw.name}: a number without a source"
            assert number.value is None or number.value > 0
        assert hw.memory > 0


def test_known_datasheet_values():
    devices = {hw.name: hw for hw in catalog_hardware()}
    h100 = devices["H100-80GB"]
    # NVIDIA H100 SXM datasheet: 989 TFLOPS dense bf16 (1,979 with sparsity), 3.35 TB/s HBM3.
    assert h100.peak("bf16") == pytest.approx(989e12, rel=0.01)
    assert h100.memory_bandwidth.value == pytest.approx(3.35e12, rel=0.01)
    a100 = devices["A100-80GB"]
    assert a100.peak("bf16") == pytest.approx(312e12, rel=0.01)  # A100 datasheet, dense
    assert devices["V100-32GB"].peak("bf16") is None  # Volta has no bf16
